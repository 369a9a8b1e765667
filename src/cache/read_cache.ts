// The SSD read cache: 4 KiB blocks of flushed volume data kept in the cache device's read-cache region, so repeated
// reads of data that already lives in backend objects are served by the SSD instead of ranged backend reads
// (docs/architecture.md, "The read path"; region bounds: docs/format.md, "Cache device layout").
//
// Read cache invariants:
// - With a persisted index (docs/format.md, "Read cache index page"), every entry names the block, the object seq and
//   the offset inside that object its data came from, and the CRC-32C of the data. Object names are never written
//   twice (a new owner starts above every name that exists and skips the rest: docs/architecture.md, "Recovery"),
//   so (seq, offset) names bytes that never change. At open an entry is kept only if the recovered map points its
//   block at exactly that (seq, offset); every read of a slot checks the data's CRC. So an entry is dropped, never
//   wrong, whatever the crash left: a write, trim or GC copy since makes the map point elsewhere.
// - Ordering: a slot's data is written, then (at the next persist) fdatasync, then the index page naming it is
//   written and synced. An index page never names data that is not on the device (docs/architecture.md).
// - Without a persisted index (tests) the index lives in memory only and starts empty.
// - A block is indexed only after its data is on the device, and only if no write or trim touched the volume since
//   the backend read that produced it (`epoch`); every write and trim removes the blocks it overlaps before it is
//   acknowledged, so an indexed block always equals what the volume holds.
// - A slot is reused only after it leaves the index; a reader that raced with the reuse sees the slot's generation
//   change and falls back to the backend.
// - Memory is bounded by the region: one index entry and 9 bytes of slot state per 4 KiB block.

import { PAGE_BYTES, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import { crc32c } from "../format/crc32c.ts";
import { decodeIndexPage, encodeIndexPage, indexSplit, INDEX_ENTRIES_PER_PAGE, type IndexEntry } from "../format/read_cache_index.ts";
import { systemClock, type Clock, type TimerHandle } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";

/** Where an inserted block came from: the object and the block's offset in its data area. */
export interface BlockSource {
  seq: number;
  offsetSectors: number;
}

/** At open: does the volume's map still point `block` at exactly this object and offset? */
export type EntryCheck = (block: number, seq: number, offsetSectors: number) => boolean;

/** Index pages written per persist round (bounded writes); more dirty pages wait for the next round. */
export const INDEX_PAGES_PER_PERSIST_MAX = 64;
/** A persist round starts this long after the first change it covers (or at once when this many pages are dirty). */
export const INDEX_PERSIST_DELAY_MS = 1000;
const INDEX_PERSIST_DIRTY_PAGES = 16;
/** Bytes of durable batches copied for adoption and not yet in their slots (two full batches). */
export const ADOPT_BYTES_IN_FLIGHT_MAX = 16 * 1024 * 1024;

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
  /** slot -> source object seq, offset in it, CRC-32C of the data (meaningful while the slot holds a block). */
  private readonly slotSeqs: Uint32Array;
  private readonly slotOffsets: Uint32Array;
  private readonly slotCrcs: Uint32Array;
  private readonly dirtyPages = new Set<number>();
  private readonly indexPages: number;
  private readonly slotsStartBytes: number;
  private persistTimer: TimerHandle | null = null;
  private readonly volUuid: string | null;
  private readonly log: LogFn;
  private readonly clock: Clock;
  private persisting: Promise<void> | null = null;
  private closed = false;
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
    /** Persist the index for this volume (absent: memory only), with timers on `clock`. */
    persist?: { volUuid: string; log?: LogFn; clock?: Clock },
  ) {
    this.volUuid = persist?.volUuid ?? null;
    this.log = persist?.log ?? (() => {});
    this.clock = persist?.clock ?? systemClock;
    assert(startBytes % PAGE_BYTES === 0 && bytes % PAGE_BYTES === 0, "read cache region is page aligned");
    const split = this.volUuid === null || bytes === 0 ? { indexPages: 0, slots: bytes / PAGE_BYTES } : indexSplit(bytes / PAGE_BYTES);
    this.indexPages = split.indexPages;
    this.slotsStartBytes = startBytes + split.indexPages * PAGE_BYTES;
    this.slotCount = split.slots;
    this.slotSeqs = new Uint32Array(this.slotCount);
    this.slotOffsets = new Uint32Array(this.slotCount);
    this.slotCrcs = new Uint32Array(this.slotCount);
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
    // Bumped even when nothing is indexed: a fill in flight may hold data this write replaces.
    this.epoch += 1;
    if (this.index.size === 0) return;
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
    this.markDirty(slot);
  }

  /**
   * Reads blocks [firstBlock, firstBlock+count) into `into` if every one is cached; false (nothing read) otherwise,
   * or when a slot was reused during the read.
   */
  async read(firstBlock: number, count: number, into: Uint8Array): Promise<boolean> {
    if (this.index.size === 0) {
      this.misses += 1;
      return false;
    }
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
        await this.device.read(this.slotsStartBytes + slot * PAGE_BYTES, page);
        if (this.slotGenerations[slot] !== generations[index] || this.slotBlocks[slot] !== firstBlock + index) return false;
        if (crc32c(page) !== this.slotCrcs[slot]) {
          // The device lost or tore the block: drop it and read the backend.
          this.evict(firstBlock + index, slot);
          this.misses += 1;
          return false;
        }
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
  async insert(firstBlock: number, data: Uint8Array, epoch: number, source: BlockSource): Promise<void> {
    if (!this.enabled || epoch !== this.epoch) return;
    assert(data.byteLength % PAGE_BYTES === 0, "whole blocks");
    const page = this.pool.acquire(PAGE_BYTES);
    try {
      for (let index = 0; index < data.byteLength / PAGE_BYTES; index++) {
        const block = firstBlock + index;
        if (this.index.has(block)) continue;
        const written = await this.writeToSlot(page, data, index);
        if (written === null) return;
        const { slot, dataCrc } = written;
        // Indexed only if nothing touched the volume meanwhile and nobody took the slot or cached the block.
        if (epoch !== this.epoch || this.slotBlocks[slot] !== -2 || this.index.has(block)) {
          if (this.slotBlocks[slot] === -2) this.slotBlocks[slot] = -1;
          return;
        }
        this.fill(slot, block, { seq: source.seq, offsetSectors: source.offsetSectors + index * SECTORS_PER_PAGE }, dataCrc);
        this.inserts += 1;
      }
    } catch {
      // A failed cache write only loses the optimisation.
    } finally {
      this.pool.release(page);
    }
  }

  /** Block `index` of `data` written into a slot taken for it (through `page`): the slot and the block's CRC-32C; null when no slot is free. */
  private async writeToSlot(page: Uint8Array, data: Uint8Array, index: number): Promise<{ slot: number; dataCrc: number } | null> {
    const slot = this.takeSlot();
    if (slot < 0) return null;
    page.set(data.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES));
    const dataCrc = crc32c(page);
    await this.device.write(this.slotsStartBytes + slot * PAGE_BYTES, [page]);
    return { slot, dataCrc };
  }

  /** Bytes copied out of durable batches and not yet written to slots: adopt() skips batches beyond the bound. */
  private adoptBytesInFlight = 0;
  adopted = 0;

  /**
   * Write-to-read migration: blocks[i] is at offsets[i] of object seq, whose data is data[i * 4096, +4096) (a copy
   * the caller made: the batch buffer is reused at once). Each block is indexed after its slot is written, and only
   * if `isCurrent` still confirms the map points it at (seq, offset) then. Skipped when ADOPT_BYTES_IN_FLIGHT_MAX
   * bytes are already waiting (the cache is an optimisation: back-pressure would slow the write path).
   */
  async adopt(seq: number, blocks: number[], offsets: number[], data: Uint8Array, isCurrent: EntryCheck): Promise<void> {
    if (!this.enabled || this.adoptBytesInFlight + data.byteLength > ADOPT_BYTES_IN_FLIGHT_MAX) return;
    this.adoptBytesInFlight += data.byteLength;
    const page = this.pool.acquire(PAGE_BYTES);
    try {
      for (let index = 0; index < blocks.length; index++) {
        const block = blocks[index]!;
        if (this.index.has(block)) continue;
        const written = await this.writeToSlot(page, data, index);
        if (written === null) return;
        const { slot, dataCrc } = written;
        if (this.slotBlocks[slot] !== -2) continue;
        if (this.index.has(block) || !isCurrent(block, seq, offsets[index]!)) {
          this.slotBlocks[slot] = -1;
          continue;
        }
        this.fill(slot, block, { seq, offsetSectors: offsets[index]! }, dataCrc);
        this.adopted += 1;
      }
    } catch {
      // A failed cache write only loses the optimisation.
    } finally {
      this.pool.release(page);
      this.adoptBytesInFlight -= data.byteLength;
    }
  }

  private fill(slot: number, block: number, source: BlockSource, dataCrc: number): void {
    this.slotBlocks[slot] = block;
    this.slotSeqs[slot] = source.seq;
    this.slotOffsets[slot] = source.offsetSectors;
    this.slotCrcs[slot] = dataCrc;
    this.referenced[slot] = 1;
    this.index.set(block, slot);
    this.markDirty(slot);
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
      if (block >= 0) this.markDirty(slot);
      this.slotGenerations[slot] = (this.slotGenerations[slot]! + 1) >>> 0;
      return slot;
    }
    return -1;
  }

  get cachedBlocks(): number {
    return this.index.size;
  }

  private markDirty(slot: number): void {
    if (this.indexPages === 0) return;
    this.dirtyPages.add(Math.floor(slot / INDEX_ENTRIES_PER_PAGE));
    if (this.dirtyPages.size >= INDEX_PERSIST_DIRTY_PAGES) this.schedulePersist(0);
    else this.schedulePersist(INDEX_PERSIST_DELAY_MS);
  }

  private schedulePersist(delayMs: number): void {
    if (this.persistTimer !== null || this.persisting !== null || this.closed) return;
    this.persistTimer = this.clock.setTimer(delayMs, () => {
      this.persistTimer = null;
      this.persisting = this.persist()
        .catch(() => undefined) // a failed persist only loses warmth: the pages stay dirty
        .finally(() => {
          this.persisting = null;
          if (this.dirtyPages.size > 0) this.schedulePersist(INDEX_PERSIST_DELAY_MS);
        });
    });
  }

  /**
   * One bounded round of up to INDEX_PAGES_PER_PERSIST_MAX index pages: encode them, fdatasync, write them,
   * fdatasync. A page that fails to be written stays dirty.
   */
  async persist(): Promise<void> {
    if (this.volUuid === null || this.dirtyPages.size === 0) return;
    const pages = [...this.dirtyPages].slice(0, INDEX_PAGES_PER_PERSIST_MAX).sort((a, b) => a - b);
    for (const page of pages) this.dirtyPages.delete(page);
    // Encoded before the first fdatasync: every slot these entries name was written before it was indexed, so the
    // sync makes it durable before its entry is written. Later changes mark their page dirty again.
    const encoded = pages.map((page) => encodeIndexPage(page, this.volUuid!, this.pageEntries(page)));
    try {
      await this.device.fdatasync();
      const buffer = this.pool.acquire(PAGE_BYTES);
      try {
        for (const [position, page] of pages.entries()) {
          buffer.set(encoded[position]!);
          await this.device.write(this.startBytes + page * PAGE_BYTES, [buffer]);
        }
      } finally {
        this.pool.release(buffer);
      }
      await this.device.fdatasync();
      this.log(`debug: read cache: index persisted, ${pages.length} page(s), ${this.index.size} blocks indexed`);
    } catch (error) {
      for (const page of pages) this.dirtyPages.add(page);
      throw error;
    }
  }

  private pageEntries(page: number): Array<IndexEntry | null> {
    const entries: Array<IndexEntry | null> = [];
    const first = page * INDEX_ENTRIES_PER_PAGE;
    for (let slot = first; slot < Math.min(first + INDEX_ENTRIES_PER_PAGE, this.slotCount); slot++) {
      const block = this.slotBlocks[slot]!;
      entries.push(block < 0 ? null : { block, seq: this.slotSeqs[slot]!, offsetSectors: this.slotOffsets[slot]!, dataCrc: this.slotCrcs[slot]! });
    }
    return entries;
  }

  /** At open: reads the persisted index and keeps the entries `check` confirms; damaged pages count as empty. */
  async load(check: EntryCheck): Promise<{ kept: number; dropped: number }> {
    const counts = { kept: 0, dropped: 0 };
    if (this.volUuid === null) return counts;
    const buffer = this.pool.acquire(PAGE_BYTES);
    try {
      for (let page = 0; page < this.indexPages; page++) {
        await this.device.read(this.startBytes + page * PAGE_BYTES, buffer.subarray(0, PAGE_BYTES));
        let entries: Array<IndexEntry | null>;
        try {
          entries = decodeIndexPage(buffer.subarray(0, PAGE_BYTES), page, this.volUuid);
        } catch {
          continue; // never written, or torn, or another volume's: those slots start empty
        }
        entries.forEach((entry, position) => {
          const slot = page * INDEX_ENTRIES_PER_PAGE + position;
          if (entry === null || slot >= this.slotCount) return;
          if (this.index.has(entry.block) || !check(entry.block, entry.seq, entry.offsetSectors)) {
            counts.dropped += 1;
            this.dirtyPages.add(page);
            return;
          }
          this.slotBlocks[slot] = entry.block;
          this.slotSeqs[slot] = entry.seq;
          this.slotOffsets[slot] = entry.offsetSectors;
          this.slotCrcs[slot] = entry.dataCrc;
          this.index.set(entry.block, slot);
          counts.kept += 1;
        });
      }
    } finally {
      this.pool.release(buffer);
    }
    return counts;
  }

  /** Clean stop: waits for a round in progress, then persists every dirty page. */
  async close(): Promise<void> {
    this.closed = true; // fills that finish later are not persisted: the device may be closed by then
    this.persistTimer?.cancel();
    this.persistTimer = null;
    await this.persisting;
    while (this.dirtyPages.size > 0) await this.persist();
  }
}
