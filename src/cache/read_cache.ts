// The SSD read cache: 4 KiB pieces of backend objects kept in slots of a read-cache region (of a volume's cache device,
// or of a shared read-cache device serving every volume of a process), so repeated reads of data that lives in backend
// objects are served by the SSD instead of ranged backend reads (docs/architecture.md, "The read path"; region bounds:
// docs/format.md, "Cache device layout" and "Shared read-cache device").
//
// Read cache invariants:
// - An entry is keyed by where its 4 KiB lives in the backend: (log, seq, offset) = the uuid of the volume whose log
//   holds the object, the object's seq, the offset in its data area in sectors; it records the data's CRC-32C. Objects
//   are immutable and a log never writes a name twice (docs/architecture.md, "The read path", has the proof), so an
//   entry is never stale: writes, trims, GC copies and rollbacks point the map at other names and need no
//   invalidation; entries of deleted objects are never looked up again and age out with the clock. A clone's read of
//   its base resolves to the base's (uuid, seq, offset): clones and their base share entries.
// - Ordering: a slot's data is written, then (at the next persist) fdatasync, then the index page naming it is
//   written and synced (docs/format.md, "Read cache index page"). An index page never names data not on the device.
//   Every read of a slot checks the data's CRC-32C against the entry: a slot reused after the last persist reads as a
//   miss after a crash, never as wrong data.
// - Fills do not wait on the read that produced them: blocks are queued (bounded; more are skipped) and written in
//   batches, consecutive slots in one vectored write, a bounded number of batches at once. A block is indexed only
//   after its slot's write resolved.
// - A slot is reused only after it leaves the index; a reader that raced with the reuse sees the slot's generation
//   change and falls back to the backend.
// - Hits read slots through the page cache (CacheDevice.readCached); fills write them O_DIRECT, which drops the range
//   from the page cache. A stale cached page (a read that raced a fill) fails the CRC check: a miss, never wrong data.
// - Memory is bounded by the region: per 4 KiB slot, 22 bytes of state and one index map entry.
//
// Parts: the slots and the in-memory index (read_cache_slots.ts), the fill queue (read_cache_fills.ts), the persisted
// index (read_cache_index_store.ts). This file reads hits, offers misses and decides migrations.

import { PAGE_BYTES, READ_CACHE_ADOPT_BURST_BYTES, READ_CACHE_ADOPT_BYTES_PER_SECOND, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import { crc32c } from "../format/crc32c.ts";
import { migrationDecision, writesBusy, type MigrationInput, type WriteLoad } from "./migration_rules.ts";
import { indexSplit } from "../format/read_cache_index.ts";
import { systemClock, type Clock } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";
import { FillQueue } from "./read_cache_fills.ts";
import { IndexStore, type LoadCounts } from "./read_cache_index_store.ts";
import { CacheSlots } from "./read_cache_slots.ts";

export type { LoadCounts } from "./read_cache_index_store.ts";

export class ReadCache {
  private readonly slots: CacheSlots;
  private readonly fills: FillQueue;
  /** null: memory only (no cache uuid, or an empty region). */
  private readonly store: IndexStore | null;
  private readonly clock: Clock;
  private readonly slotsStartBytes: number;
  private closing = false;
  hits = 0;
  misses = 0;
  /** Durable batch blocks not migrated: over the migration budget. */
  adoptSkipped = 0;
  /** Durable batches not migrated because their volume's client writes were busy (migration_rules.ts). */
  adoptSkippedBusy = 0;
  private adoptTokens = READ_CACHE_ADOPT_BURST_BYTES;
  private adoptTokensAtMs: number;

  constructor(
    private readonly device: CacheDevice,
    private readonly pool: AlignedPool,
    startBytes: number,
    bytes: number,
    /** Persist the index under this cache's uuid (absent: memory only), with timers on `clock`. */
    persist?: { cacheUuid: string; log?: LogFn; clock?: Clock },
  ) {
    const log = persist?.log ?? (() => {});
    this.clock = persist?.clock ?? systemClock;
    this.adoptTokensAtMs = this.clock.nowMs();
    assert(startBytes % PAGE_BYTES === 0 && bytes % PAGE_BYTES === 0, "read cache region is page aligned");
    const persisted = persist !== undefined && bytes > 0;
    const split = persisted ? indexSplit(bytes / PAGE_BYTES) : { indexPages: 0, slots: bytes / PAGE_BYTES };
    this.store = persisted ? new IndexStore({ device, pool, startBytes, pages: split.indexPages, cacheUuid: persist.cacheUuid, log, clock: this.clock }) : null;
    this.slots = new CacheSlots(split.slots, this.store?.changed ?? (() => {}));
    this.store?.attach(this.slots);
    this.slotsStartBytes = startBytes + split.indexPages * PAGE_BYTES;
    this.fills = new FillQueue({ device, pool, slots: this.slots, slotsStartBytes: this.slotsStartBytes, log, clock: this.clock });
  }

  get slotCount(): number {
    return this.slots.count;
  }

  get enabled(): boolean {
    return this.slots.count > 0;
  }

  get cachedBlocks(): number {
    return this.slots.indexed;
  }

  /** Blocks indexed from backend reads, from durable batches; blocks skipped (queue full, no slot, write failed). */
  get inserts(): number {
    return this.fills.inserts;
  }

  get adopted(): number {
    return this.fills.adopted;
  }

  get fillsSkipped(): number {
    return this.fills.skipped;
  }

  /** Fill batches written, and the vectored writes they took (one per run of consecutive slots). */
  get fillBatches(): number {
    return this.fills.batches;
  }

  get fillWrites(): number {
    return this.fills.writes;
  }

  /** The small id this cache gives the log of volume `uuid` (registered on first use). */
  logId(uuid: string): number {
    return this.slots.logId(uuid);
  }

  /**
   * Reads `count` consecutive 4 KiB blocks of object `seq` of `log` from `offsetSectors` on into `into`, if every one
   * is cached; false (nothing usable read) otherwise, when a slot was reused during the read, or the device failed.
   */
  async read(log: number, seq: number, offsetSectors: number, count: number, into: Uint8Array): Promise<boolean> {
    const slots: number[] = [];
    for (let index = 0; index < count; index++) {
      const slot = this.slots.slotOf(log, seq, offsetSectors + index * SECTORS_PER_PAGE);
      if (slot === undefined) {
        this.misses += 1;
        return false;
      }
      slots.push(slot);
    }
    const generations = slots.map((slot) => this.slots.generation(slot));
    // Runs of consecutive slots are read with one device read each, all at once.
    const runs: Array<{ first: number; end: number; buffer: Uint8Array }> = [];
    try {
      for (let first = 0, end = 1; first < slots.length; first = end, end = first + 1) {
        while (end < slots.length && slots[end] === slots[end - 1]! + 1) end += 1;
        runs.push({ first, end, buffer: this.pool.acquire((end - first) * PAGE_BYTES) });
      }
      // allSettled: no buffer goes back to the pool while a read may still land in it.
      const results = await Promise.allSettled(runs.map((run) => this.device.readCached(this.slotsStartBytes + slots[run.first]! * PAGE_BYTES, run.buffer.subarray(0, (run.end - run.first) * PAGE_BYTES))));
      for (const result of results) if (result.status === "rejected") throw result.reason;
      for (const run of runs) {
        for (let index = run.first; index < run.end; index++) {
          const page = run.buffer.subarray((index - run.first) * PAGE_BYTES, (index - run.first + 1) * PAGE_BYTES);
          if (!this.checkSlot(slots[index]!, generations[index]!, log, page)) return false;
          into.set(page, index * PAGE_BYTES);
        }
      }
    } catch {
      this.misses += 1; // a failed cache read only loses the optimisation: the backend answers
      return false;
    } finally {
      for (const run of runs) this.pool.release(run.buffer);
    }
    this.hits += 1;
    return true;
  }

  /**
   * A slot just read: still the one looked up (not reused meanwhile), and its data what the entry says; a mismatch is
   * a device that lost or tore the block, or a crash that left an entry older than its slot: the entry goes (a miss).
   */
  private checkSlot(slot: number, generation: number, log: number, page: Uint8Array): boolean {
    if (!this.slots.holds(slot, generation, log)) return false;
    if (crc32c(page) !== this.slots.crcOf(slot)) {
      this.slots.evict(slot);
      this.misses += 1;
      return false;
    }
    this.slots.touch(slot);
    return true;
  }

  /**
   * Offers blocks just read from the backend (whole 4 KiB blocks of object `seq` of `log` from `offsetSectors` on;
   * `data` is the caller's and is not changed afterwards). Queued, not written here; skipped when the queue is full.
   */
  offer(log: number, seq: number, offsetSectors: number, data: Uint8Array): void {
    if (!this.enabled || this.closing) return;
    assert(data.byteLength % PAGE_BYTES === 0, "whole blocks");
    for (let index = 0; index < data.byteLength / PAGE_BYTES; index++) {
      const offset = offsetSectors + index * SECTORS_PER_PAGE;
      if (this.slots.slotOf(log, seq, offset) !== undefined) continue;
      if (!this.fills.queueRead(log, seq, offset, data.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES))) this.fills.skipped += 1;
    }
    this.fills.kick();
  }

  /**
   * Write-to-read migration of a durable batch of object `seq` of `log`, if the rules allow (migration_rules.ts):
   * `load` is its volume's write load; `blocksOf()` lists the data-area offsets of the blocks to
   * migrate (asked only when the load allows); `copyInto(buffer, offsets)` copies block i's 4 KiB to buffer[i * 4096, +4096)
   * (the batch buffer is reused at once): one copy, into a page-aligned buffer of this cache's pool, from which the
   * slots are written. Skipped whole, never waited for (the cache is an optimisation: back-pressure would slow the
   * write path), also when the pool has no room.
   */
  adopt(log: number, seq: number, load: WriteLoad, blocksOf: () => number[], copyInto: (buffer: Uint8Array, offsets: number[]) => void): void {
    if (!this.enabled || this.closing) return;
    let offsets: number[] = [];
    const holds = (input: MigrationInput): boolean => {
      if (input === "writesBusy") return writesBusy(load);
      if (input === "queueFull") {
        offsets = blocksOf();
        return !this.fills.adoptFits(offsets.length * PAGE_BYTES);
      }
      return !this.adoptBudgetHolds(offsets.length * PAGE_BYTES);
    };
    const decision = migrationDecision(holds);
    if (decision === "skipBusy") this.adoptSkippedBusy += 1;
    if (decision === "skipBudget") this.adoptSkipped += offsets.length;
    if (decision !== "migrate" || offsets.length === 0) return;
    const bytes = offsets.length * PAGE_BYTES;
    let buffer: Uint8Array;
    try {
      buffer = this.pool.acquire(bytes);
    } catch {
      this.fills.skipped += offsets.length;
      return;
    }
    this.adoptTokens -= bytes;
    copyInto(buffer.subarray(0, bytes), offsets);
    this.fills.queueAdopted(log, seq, offsets, buffer);
    this.fills.kick();
  }

  /** The migration budget's token bucket (READ_CACHE_ADOPT_BYTES_PER_SECOND), refilled to now: whether it holds `bytes`. */
  private adoptBudgetHolds(bytes: number): boolean {
    const now = this.clock.nowMs();
    this.adoptTokens = Math.min(READ_CACHE_ADOPT_BURST_BYTES, this.adoptTokens + ((now - this.adoptTokensAtMs) * READ_CACHE_ADOPT_BYTES_PER_SECOND) / 1000);
    this.adoptTokensAtMs = now;
    return bytes <= this.adoptTokens;
  }

  /** Resolves once every block queued so far is written and indexed (or skipped). Tests and benchmarks. */
  async settle(): Promise<void> {
    await this.fills.settle();
  }

  /** One bounded round of the index's persistence (read_cache_index_store.ts); nothing for a memory-only cache. */
  async persist(): Promise<void> {
    await this.store?.persist();
  }

  /** At open: reads the persisted index (read_cache_index_store.ts). */
  async load(): Promise<LoadCounts> {
    return this.store === null ? { kept: 0, dropped: 0, oldFormatPages: 0 } : await this.store.load();
  }

  /**
   * Clean stop: queued fills are written (bounded: READ_CACHE_FILL_BLOCKS_QUEUED_MAX blocks and
   * READ_CACHE_ADOPT_BYTES_QUEUED_MAX bytes at most), then every dirty page is persisted. Nothing is queued after.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.fills.settle();
    this.fills.stop();
    await this.store?.close();
  }
}
