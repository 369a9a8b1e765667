// The SSD read cache: 4 KiB blocks of flushed volume data kept in the cache device's read-cache region, so repeated
// reads of data that already lives in backend objects are served by the SSD instead of ranged backend reads
// (docs/architecture.md, "The read path"; region bounds: docs/format.md, "Cache device layout").
//
// Read cache invariants:
// - The index lives in memory only and starts empty: nothing on the device is trusted across a restart, so a
//   stale block can never be served after a crash.
// - A block is indexed only after its data is on the device, and only if no write or trim touched the volume since
//   the backend read that produced it (`epoch`); every write and trim removes the blocks it overlaps before it is
//   acknowledged, so an indexed block always equals what the volume holds.
// - A slot is reused only after it leaves the index; a reader that raced with the reuse sees the slot's generation
//   change and falls back to the backend.
// - Memory is bounded by the region: one index entry and 9 bytes of slot state per 4 KiB block.

import { PAGE_BYTES, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";

export class ReadCache {
  readonly slotCount: number;
  /** slot -> block number it holds, or -1. */
  private readonly slotBlocks: Float64Array;
  /** slot -> bumped on every reuse, so readers can tell their slot was taken. */
  private readonly slotGenerations: Uint32Array;
  /** slot -> clock reference bit. */
  private readonly referenced: Uint8Array;
  /** block number (LBA / 8) -> slot. */
  private readonly index = new Map<number, number>();
  private hand = 0;
  /** Bumped by every invalidation: a backend read older than the newest invalidation is not cached. */
  private epoch = 0;
  hits = 0;
  misses = 0;
  inserts = 0;

  constructor(
    private readonly device: CacheDevice,
    private readonly pool: AlignedPool,
    private readonly startBytes: number,
    bytes: number,
  ) {
    assert(startBytes % PAGE_BYTES === 0 && bytes % PAGE_BYTES === 0, "read cache region is page aligned");
    this.slotCount = bytes / PAGE_BYTES;
    this.slotBlocks = new Float64Array(this.slotCount).fill(-1);
    this.slotGenerations = new Uint32Array(this.slotCount);
    this.referenced = new Uint8Array(this.slotCount);
  }

  get enabled(): boolean {
    return this.slotCount > 0;
  }

  /** For a backend read about to start: pass it to insert() when the data arrives. */
  get currentEpoch(): number {
    return this.epoch;
  }

  /** Removes every cached block overlapping [lba, lba+sectors). Called before a write or trim is acknowledged. */
  invalidate(lba: number, sectors: number): void {
    if (this.index.size === 0) return;
    this.epoch += 1;
    const first = Math.floor(lba / SECTORS_PER_PAGE);
    const last = Math.floor((lba + sectors - 1) / SECTORS_PER_PAGE);
    if (last - first + 1 > this.index.size) {
      // A large trim: walking the index is cheaper than walking the range.
      for (const [block, slot] of this.index) {
        if (block >= first && block <= last) this.evict(block, slot);
      }
      return;
    }
    for (let block = first; block <= last; block++) {
      const slot = this.index.get(block);
      if (slot !== undefined) this.evict(block, slot);
    }
  }

  private evict(block: number, slot: number): void {
    this.index.delete(block);
    this.slotBlocks[slot] = -1;
  }

  /**
   * Reads blocks [firstBlock, firstBlock+count) into `into` if every one is cached; false (nothing read) otherwise,
   * or when a slot was reused during the read.
   */
  async read(firstBlock: number, count: number, into: Uint8Array): Promise<boolean> {
    if (this.index.size === 0) return false;
    const slots: number[] = [];
    const generations: number[] = [];
    for (let block = firstBlock; block < firstBlock + count; block++) {
      const slot = this.index.get(block);
      if (slot === undefined) {
        this.misses += 1;
        return false;
      }
      slots.push(slot);
      generations.push(this.slotGenerations[slot]!);
    }
    const page = this.pool.acquire(PAGE_BYTES);
    try {
      for (let index = 0; index < slots.length; index++) {
        const slot = slots[index]!;
        await this.device.read(this.startBytes + slot * PAGE_BYTES, page);
        if (this.slotGenerations[slot] !== generations[index] || this.slotBlocks[slot] !== firstBlock + index) return false;
        this.referenced[slot] = 1;
        into.set(page, index * PAGE_BYTES);
      }
    } finally {
      this.pool.release(page);
    }
    this.hits += 1;
    return true;
  }

  /**
   * Caches blocks [firstBlock, +data/4096) read from the backend when epoch was current. Skipped if any write or trim
   * happened since (it might be newer than this data). Errors are swallowed: the cache is an optimisation.
   */
  async insert(firstBlock: number, data: Uint8Array, epoch: number): Promise<void> {
    if (!this.enabled || epoch !== this.epoch) return;
    assert(data.byteLength % PAGE_BYTES === 0, "whole blocks");
    const page = this.pool.acquire(PAGE_BYTES);
    try {
      for (let index = 0; index < data.byteLength / PAGE_BYTES; index++) {
        const block = firstBlock + index;
        if (this.index.has(block)) continue;
        const slot = this.takeSlot();
        if (slot < 0) return;
        page.set(data.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES));
        await this.device.write(this.startBytes + slot * PAGE_BYTES, [page]);
        // Indexed only if nothing touched the volume meanwhile and nobody took the slot or cached the block.
        if (epoch !== this.epoch || this.slotBlocks[slot] !== -2 || this.index.has(block)) {
          if (this.slotBlocks[slot] === -2) this.slotBlocks[slot] = -1;
          return;
        }
        this.slotBlocks[slot] = block;
        this.referenced[slot] = 1;
        this.index.set(block, slot);
        this.inserts += 1;
      }
    } catch {
      // A failed cache write only loses the optimisation.
    } finally {
      this.pool.release(page);
    }
  }

  /** Clock replacement; the slot comes back reserved (-2) and with a new generation; -1 if every slot is reserved. */
  private takeSlot(): number {
    for (let step = 0; step < 2 * this.slotCount + 1; step++) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.slotCount;
      const block = this.slotBlocks[slot]!;
      if (block === -2) continue; // reserved by an insert in progress
      if (block >= 0 && this.referenced[slot] === 1) {
        this.referenced[slot] = 0;
        continue;
      }
      if (block >= 0) this.index.delete(block);
      this.slotBlocks[slot] = -2;
      this.slotGenerations[slot] = (this.slotGenerations[slot]! + 1) >>> 0;
      return slot;
    }
    return -1;
  }

  get cachedBlocks(): number {
    return this.index.size;
  }
}
