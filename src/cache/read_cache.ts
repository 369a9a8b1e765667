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

import {
  PAGE_BYTES,
  READ_CACHE_ADOPT_BURST_BYTES,
  READ_CACHE_ADOPT_BYTES_PER_SECOND,
  READ_CACHE_ADOPT_BYTES_QUEUED_MAX,
  READ_CACHE_FILL_BATCHES_INFLIGHT_MAX,
  READ_CACHE_FILL_BATCH_BLOCKS_MAX,
  READ_CACHE_FILL_BLOCKS_QUEUED_MAX,
  READ_CACHE_FILL_BATCH_BLOCKS_MIN,
  READ_CACHE_FILL_GATHER_MS,
  SECTORS_PER_PAGE,
} from "../constants.ts";
import { assert } from "../errors.ts";
import { crc32c } from "../format/crc32c.ts";
import { migrationDecision, writesBusy, type MigrationInput, type WriteLoad } from "./migration_rules.ts";
import { decodeIndexPage, encodeIndexPage, indexPageVersion, indexSplit, INDEX_ENTRIES_PER_PAGE, type IndexEntry } from "../format/read_cache_index.ts";
import { systemClock, type Clock, type TimerHandle } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";

/** Index pages written per persist round (bounded writes); more dirty pages wait for the next round. */
export const INDEX_PAGES_PER_PERSIST_MAX = 256;
/**
 * A persist round starts this long after the first change it covers, and the next one no sooner than this after it
 * ends: a round's two fdatasyncs also flush the device under the journal's writes, so they are paced, not driven by
 * the fill rate (what is not persisted yet is only warmth a crash may lose).
 */
export const INDEX_PERSIST_DELAY_MS = 1000;
/** Keys: seq * 2^21 + offset (offsets of a 1 GiB data area fit 21 bits; seq is u32): below 2^53. */
const OFFSET_KEY_SPAN = 2 ** 21;
const SLOT_EMPTY = -1;
const SLOT_RESERVED = -2;
/** Logs (volume uuids) one cache tells apart in memory. */
const LOGS_MAX = 0x7fff_ffff;

/** Durable batch blocks copied once into a page-aligned pool buffer: written to slots straight from it. */
interface AdoptedCopy {
  buffer: Uint8Array;
  /** Blocks of it not settled yet: the buffer goes back to the pool with the last. */
  blocksLeft: number;
}

/** A block waiting to be written to a slot. */
interface QueuedBlock {
  log: number;
  seq: number;
  offsetSectors: number;
  /** 4 KiB: a page-aligned part of `copy` for adopted blocks, else the backend read's bytes (copied before writing). */
  data: Uint8Array;
  copy: AdoptedCopy | null;
}

/** What load() found in the persisted index. */
export interface LoadCounts {
  kept: number;
  dropped: number;
  /** Pages of an older index format (version 1, keyed by volume block): their slots start empty. */
  oldFormatPages: number;
}

export class ReadCache {
  readonly slotCount: number;
  /** slot -> log id of the block it holds, SLOT_EMPTY, or SLOT_RESERVED (a fill is writing it). */
  private readonly slotLogs: Int32Array;
  private readonly slotSeqs: Uint32Array;
  private readonly slotOffsets: Uint32Array;
  private readonly slotCrcs: Uint32Array;
  /** slot -> bumped on every reuse, so readers can tell their slot was taken. */
  private readonly slotGenerations: Uint32Array;
  /** slot -> clock reference bit. */
  private readonly referenced: Uint8Array;
  /** log id -> (seq * 2^21 + offset) -> slot. */
  private readonly index: Array<Map<number, number>> = [];
  private indexed = 0;
  private readonly logIds = new Map<string, number>();
  private readonly logUuids: string[] = [];
  private readonly dirtyPages = new Set<number>();
  private readonly indexPages: number;
  private readonly slotsStartBytes: number;
  private readonly cacheUuid: string | null;
  private readonly log: LogFn;
  private readonly clock: Clock;
  private persistTimer: TimerHandle | null = null;
  private persisting: Promise<void> | null = null;
  private closed = false;
  private closing = false;
  private hand = 0;
  private readonly queue: QueuedBlock[] = [];
  private queueHead = 0;
  private fillBlocksQueued = 0;
  private adoptBytesQueued = 0;
  private readonly batchesInFlight = new Set<Promise<void>>();
  private gatherTimer: TimerHandle | null = null;
  hits = 0;
  misses = 0;
  /** Blocks indexed from backend reads, from durable batches; blocks skipped (queue full, no slot, write failed). */
  inserts = 0;
  adopted = 0;
  fillsSkipped = 0;
  /** Durable batch blocks not migrated: over the migration budget. */
  adoptSkipped = 0;
  /** Durable batches not migrated because their volume's client writes were busy (migration_rules.ts). */
  adoptSkippedBusy = 0;
  private adoptTokens = READ_CACHE_ADOPT_BURST_BYTES;
  private adoptTokensAtMs: number;
  /** Fill batches written, and the vectored writes they took (one per run of consecutive slots). */
  fillBatches = 0;
  fillWrites = 0;

  constructor(
    private readonly device: CacheDevice,
    private readonly pool: AlignedPool,
    private readonly startBytes: number,
    bytes: number,
    /** Persist the index under this cache's uuid (absent: memory only), with timers on `clock`. */
    persist?: { cacheUuid: string; log?: LogFn; clock?: Clock },
  ) {
    this.cacheUuid = persist?.cacheUuid ?? null;
    this.log = persist?.log ?? (() => {});
    this.clock = persist?.clock ?? systemClock;
    this.adoptTokensAtMs = this.clock.nowMs();
    assert(startBytes % PAGE_BYTES === 0 && bytes % PAGE_BYTES === 0, "read cache region is page aligned");
    const split = this.cacheUuid === null || bytes === 0 ? { indexPages: 0, slots: bytes / PAGE_BYTES } : indexSplit(bytes / PAGE_BYTES);
    this.indexPages = split.indexPages;
    this.slotsStartBytes = startBytes + split.indexPages * PAGE_BYTES;
    this.slotCount = split.slots;
    this.slotLogs = new Int32Array(this.slotCount).fill(SLOT_EMPTY);
    this.slotSeqs = new Uint32Array(this.slotCount);
    this.slotOffsets = new Uint32Array(this.slotCount);
    this.slotCrcs = new Uint32Array(this.slotCount);
    this.slotGenerations = new Uint32Array(this.slotCount);
    this.referenced = new Uint8Array(this.slotCount);
  }

  get enabled(): boolean {
    return this.slotCount > 0;
  }

  get cachedBlocks(): number {
    return this.indexed;
  }

  /** The small id this cache gives the log of volume `uuid` (registered on first use). */
  logId(uuid: string): number {
    let id = this.logIds.get(uuid);
    if (id === undefined) {
      assert(this.logUuids.length < LOGS_MAX, "read cache log ids");
      id = this.logUuids.length;
      this.logIds.set(uuid, id);
      this.logUuids.push(uuid);
      this.index.push(new Map());
    }
    return id;
  }

  /** Is this piece keyable? Its offset fits the key (always, for objects within OBJECT_DATA_BYTES_MAX). */
  private static keyOf(seq: number, offsetSectors: number): number {
    assert(offsetSectors < OFFSET_KEY_SPAN, "read cache offsets fit the key");
    return seq * OFFSET_KEY_SPAN + offsetSectors;
  }

  private slotOf(log: number, seq: number, offsetSectors: number): number | undefined {
    return this.index[log]!.get(ReadCache.keyOf(seq, offsetSectors));
  }

  /**
   * Reads `count` consecutive 4 KiB blocks of object `seq` of `log` from `offsetSectors` on into `into`, if every one
   * is cached; false (nothing usable read) otherwise, when a slot was reused during the read, or the device failed.
   */
  async read(log: number, seq: number, offsetSectors: number, count: number, into: Uint8Array): Promise<boolean> {
    const slots: number[] = [];
    for (let index = 0; index < count; index++) {
      const slot = this.indexed === 0 ? undefined : this.slotOf(log, seq, offsetSectors + index * SECTORS_PER_PAGE);
      if (slot === undefined) {
        this.misses += 1;
        return false;
      }
      slots.push(slot);
    }
    const generations = slots.map((slot) => this.slotGenerations[slot]!);
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
    if (this.slotGenerations[slot] !== generation || this.slotLogs[slot] !== log) return false;
    if (crc32c(page) !== this.slotCrcs[slot]) {
      this.evict(slot);
      this.misses += 1;
      return false;
    }
    this.referenced[slot] = 1;
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
      if (this.slotOf(log, seq, offset) !== undefined) continue;
      if (this.fillBlocksQueued >= READ_CACHE_FILL_BLOCKS_QUEUED_MAX) {
        this.fillsSkipped += 1;
        continue;
      }
      this.fillBlocksQueued += 1;
      this.queue.push({ log, seq, offsetSectors: offset, data: data.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES), copy: null });
    }
    this.kick();
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
        return this.adoptBytesQueued + offsets.length * PAGE_BYTES > READ_CACHE_ADOPT_BYTES_QUEUED_MAX;
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
      this.fillsSkipped += offsets.length;
      return;
    }
    this.adoptTokens -= bytes;
    copyInto(buffer.subarray(0, bytes), offsets);
    this.adoptBytesQueued += bytes;
    const copy: AdoptedCopy = { buffer, blocksLeft: offsets.length };
    offsets.forEach((offsetSectors, index) => {
      this.queue.push({ log, seq, offsetSectors, data: buffer.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES), copy });
    });
    this.kick();
  }

  /** The migration budget's token bucket (READ_CACHE_ADOPT_BYTES_PER_SECOND), refilled to now: whether it holds `bytes`. */
  private adoptBudgetHolds(bytes: number): boolean {
    const now = this.clock.nowMs();
    this.adoptTokens = Math.min(READ_CACHE_ADOPT_BURST_BYTES, this.adoptTokens + ((now - this.adoptTokensAtMs) * READ_CACHE_ADOPT_BYTES_PER_SECOND) / 1000);
    this.adoptTokensAtMs = now;
    return bytes <= this.adoptTokens;
  }

  /** Starts fill batches while the queue holds blocks and fewer than the bound are being written. */
  /**
   * Starts fill batches while the queue holds blocks and fewer than the bound are being written. Fewer than
   * READ_CACHE_FILL_BATCH_BLOCKS_MIN queued blocks wait up to READ_CACHE_FILL_GATHER_MS for more (misses of a remote
   * backend arrive spread out: without the wait each would be a write of its own); `now` starts them at once.
   */
  private kick(now = false): void {
    const queued = this.queue.length - this.queueHead;
    if (!now && queued > 0 && queued < READ_CACHE_FILL_BATCH_BLOCKS_MIN) {
      this.gatherTimer ??= this.clock.setTimer(READ_CACHE_FILL_GATHER_MS, () => {
        this.gatherTimer = null;
        this.kick(true);
      });
      return;
    }
    this.gatherTimer?.cancel();
    this.gatherTimer = null;
    while (!this.closed && this.batchesInFlight.size < READ_CACHE_FILL_BATCHES_INFLIGHT_MAX && this.queueHead < this.queue.length) {
      const batch = this.takeBatch();
      if (batch.length === 0) continue;
      const writing: Promise<void> = this.writeBatch(batch).catch((error) => this.log(`warning: read cache: a fill batch failed: ${String(error)}`)).finally(() => {
        this.batchesInFlight.delete(writing);
        this.kick(now);
      });
      this.batchesInFlight.add(writing);
    }
  }

  private dequeued(block: QueuedBlock): void {
    if (block.copy === null) {
      this.fillBlocksQueued -= 1;
      return;
    }
    this.adoptBytesQueued -= PAGE_BYTES;
    block.copy.blocksLeft -= 1;
    if (block.copy.blocksLeft === 0) this.pool.release(block.copy.buffer);
  }

  /** Up to READ_CACHE_FILL_BATCH_BLOCKS_MAX queued blocks not cached yet, each with a slot taken for it, by slot. */
  private takeBatch(): Array<{ block: QueuedBlock; slot: number }> {
    const batch: Array<{ block: QueuedBlock; slot: number }> = [];
    while (batch.length < READ_CACHE_FILL_BATCH_BLOCKS_MAX && this.queueHead < this.queue.length) {
      const block = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as unknown as QueuedBlock;
      // A block twice in one batch (two reads missed it at once) is written twice and indexed once (settleBlock).
      const slot = this.slotOf(block.log, block.seq, block.offsetSectors) !== undefined ? -1 : this.takeSlot();
      if (slot < 0) {
        this.dequeued(block);
        continue;
      }
      batch.push({ block, slot });
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
    return batch.sort((a, b) => a.slot - b.slot);
  }

  /**
   * Writes a batch: one vectored write per run of consecutive slots, all at once; adopted blocks straight from their
   * aligned copy, backend-read blocks copied into one scratch buffer per run. Then indexes what was written.
   */
  private async writeBatch(batch: Array<{ block: QueuedBlock; slot: number }>): Promise<void> {
    const runs: Array<{ first: number; end: number; scratch: Uint8Array | null; pages: Uint8Array[] }> = [];
    try {
      for (let first = 0, end = 1; first < batch.length; first = end, end = first + 1) {
        while (end < batch.length && batch[end - 1]!.slot + 1 === batch[end]!.slot) end += 1;
        runs.push(this.runPages(batch, first, end));
      }
    } catch {
      // No buffer for a run (the pool is full or closed): the batch is dropped, its slots freed.
      for (const run of runs) if (run.scratch !== null) this.pool.release(run.scratch);
      for (const entry of batch) this.settleBlock(entry, 0, false);
      return;
    }
    const crcs = runs.flatMap((run) => run.pages.map((page) => crc32c(page)));
    const results = await Promise.allSettled(runs.map((run) => this.device.write(this.slotsStartBytes + batch[run.first]!.slot * PAGE_BYTES, run.pages)));
    this.fillBatches += 1;
    this.fillWrites += runs.length;
    runs.forEach((run, position) => {
      if (run.scratch !== null) this.pool.release(run.scratch);
      for (let index = run.first; index < run.end; index++) this.settleBlock(batch[index]!, crcs[index]!, results[position]!.status === "fulfilled");
    });
  }

  /** The pages one run of a batch writes: adopted blocks as they are, backend-read blocks copied into one scratch buffer. */
  private runPages(batch: Array<{ block: QueuedBlock; slot: number }>, first: number, end: number): { first: number; end: number; scratch: Uint8Array | null; pages: Uint8Array[] } {
    let unaligned = 0;
    for (let index = first; index < end; index++) if (batch[index]!.block.copy === null) unaligned += 1;
    const scratch = unaligned > 0 ? this.pool.acquire(unaligned * PAGE_BYTES) : null;
    const pages: Uint8Array[] = [];
    for (let index = first, used = 0; index < end; index++) {
      const block = batch[index]!.block;
      if (block.copy !== null) pages.push(block.data);
      else {
        const page = scratch!.subarray(used * PAGE_BYTES, ++used * PAGE_BYTES);
        page.set(block.data);
        pages.push(page);
      }
    }
    return { first, end, scratch, pages };
  }

  /** A block of a batch whose write ended: indexed if written and if nobody took the slot or cached the block meanwhile. */
  private settleBlock({ block, slot }: { block: QueuedBlock; slot: number }, dataCrc: number, written: boolean): void {
    this.dequeued(block);
    if (written && this.slotLogs[slot] === SLOT_RESERVED && this.slotOf(block.log, block.seq, block.offsetSectors) === undefined) {
      this.fill(slot, { logUuid: this.logUuids[block.log]!, seq: block.seq, offsetSectors: block.offsetSectors, dataCrc }, block.log);
      if (block.copy !== null) this.adopted += 1;
      else this.inserts += 1;
      return;
    }
    if (this.slotLogs[slot] === SLOT_RESERVED) this.slotLogs[slot] = SLOT_EMPTY;
    this.fillsSkipped += 1;
  }

  private fill(slot: number, entry: IndexEntry, log: number): void {
    this.slotLogs[slot] = log;
    this.slotSeqs[slot] = entry.seq;
    this.slotOffsets[slot] = entry.offsetSectors;
    this.slotCrcs[slot] = entry.dataCrc;
    this.referenced[slot] = 1;
    this.index[log]!.set(ReadCache.keyOf(entry.seq, entry.offsetSectors), slot);
    this.indexed += 1;
    this.markDirty(slot);
  }

  private evict(slot: number): void {
    const log = this.slotLogs[slot]!;
    assert(log >= 0, "evicting a full slot");
    this.index[log]!.delete(ReadCache.keyOf(this.slotSeqs[slot]!, this.slotOffsets[slot]!));
    this.indexed -= 1;
    this.slotLogs[slot] = SLOT_EMPTY;
    this.markDirty(slot);
  }

  /** Clock replacement; the slot comes back reserved and with a new generation; -1 if every slot is reserved. */
  private takeSlot(): number {
    for (let step = 0; step < 2 * this.slotCount + 1; step++) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.slotCount;
      const log = this.slotLogs[slot]!;
      if (log === SLOT_RESERVED) continue; // a fill is writing it
      if (log >= 0 && this.referenced[slot] === 1) {
        this.referenced[slot] = 0;
        continue;
      }
      if (log >= 0) this.evict(slot);
      this.slotLogs[slot] = SLOT_RESERVED;
      this.slotGenerations[slot] = (this.slotGenerations[slot]! + 1) >>> 0;
      return slot;
    }
    return -1;
  }

  /** Resolves once every block queued so far is written and indexed (or skipped). Tests and benchmarks. */
  async settle(): Promise<void> {
    for (;;) {
      this.kick(true);
      if (this.batchesInFlight.size === 0) return;
      await Promise.all([...this.batchesInFlight]);
    }
  }

  private markDirty(slot: number): void {
    if (this.indexPages === 0) return;
    this.dirtyPages.add(Math.floor(slot / INDEX_ENTRIES_PER_PAGE));
    this.schedulePersist(INDEX_PERSIST_DELAY_MS);
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
   * One bounded round of up to INDEX_PAGES_PER_PERSIST_MAX index pages: encode them, fdatasync, write them (one
   * vectored write per run of consecutive pages), fdatasync. A page that fails to be written stays dirty.
   */
  async persist(): Promise<void> {
    if (this.cacheUuid === null || this.dirtyPages.size === 0) return;
    const pages = [...this.dirtyPages].slice(0, INDEX_PAGES_PER_PERSIST_MAX).sort((a, b) => a - b);
    for (const page of pages) this.dirtyPages.delete(page);
    // Encoded before the first fdatasync: every slot these entries name was written before it was indexed, so the
    // sync makes it durable before its entry is written. Later changes mark their page dirty again.
    const encoded = pages.map((page) => encodeIndexPage(page, this.cacheUuid!, this.pageEntries(page)));
    try {
      await this.device.fdatasync();
      await this.writePages(pages, encoded);
      await this.device.fdatasync();
      this.log(`debug: read cache: index persisted, ${pages.length} page(s), ${this.indexed} blocks indexed`);
    } catch (error) {
      for (const page of pages) this.dirtyPages.add(page);
      throw error;
    }
  }

  /** Writes encoded index pages (sorted page numbers): one vectored write per run of consecutive pages, all at once. */
  private async writePages(pages: number[], encoded: Uint8Array[]): Promise<void> {
    const buffers = encoded.map((bytes) => {
      const buffer = this.pool.acquire(PAGE_BYTES);
      buffer.set(bytes);
      return buffer;
    });
    try {
      const writes: Array<Promise<void>> = [];
      for (let first = 0, end = 1; first < pages.length; first = end, end = first + 1) {
        while (end < pages.length && pages[end] === pages[end - 1]! + 1) end += 1;
        writes.push(this.device.write(this.startBytes + pages[first]! * PAGE_BYTES, buffers.slice(first, end)));
      }
      const results = await Promise.allSettled(writes);
      for (const result of results) if (result.status === "rejected") throw result.reason;
    } finally {
      for (const buffer of buffers) this.pool.release(buffer);
    }
  }

  private pageEntries(page: number): Array<IndexEntry | null> {
    const entries: Array<IndexEntry | null> = [];
    const first = page * INDEX_ENTRIES_PER_PAGE;
    for (let slot = first; slot < Math.min(first + INDEX_ENTRIES_PER_PAGE, this.slotCount); slot++) {
      const log = this.slotLogs[slot]!;
      entries.push(log < 0 ? null : { logUuid: this.logUuids[log]!, seq: this.slotSeqs[slot]!, offsetSectors: this.slotOffsets[slot]!, dataCrc: this.slotCrcs[slot]! });
    }
    return entries;
  }

  /**
   * At open: reads the persisted index. Every entry of a page that decodes is kept (an entry names immutable bytes:
   * nothing to check against a map); pages that do not decode (never written, torn, another formatting's, an older
   * format) leave their slots empty.
   */
  async load(): Promise<LoadCounts> {
    const counts: LoadCounts = { kept: 0, dropped: 0, oldFormatPages: 0 };
    if (this.cacheUuid === null) return counts;
    const buffer = this.pool.acquire(PAGE_BYTES);
    try {
      for (let page = 0; page < this.indexPages; page++) {
        const bytes = buffer.subarray(0, PAGE_BYTES);
        await this.device.read(this.startBytes + page * PAGE_BYTES, bytes);
        let entries: Array<IndexEntry | null>;
        try {
          entries = decodeIndexPage(bytes, page, this.cacheUuid);
        } catch {
          const version = indexPageVersion(bytes);
          if (version !== null && version < 2) {
            counts.oldFormatPages += 1;
            this.dirtyPages.add(page); // rewritten empty in the current format
          }
          continue;
        }
        this.loadPage(page, entries, counts);
      }
    } finally {
      this.pool.release(buffer);
    }
    if (this.dirtyPages.size > 0) this.schedulePersist(INDEX_PERSIST_DELAY_MS);
    return counts;
  }

  private loadPage(page: number, entries: Array<IndexEntry | null>, counts: LoadCounts): void {
    entries.forEach((entry, position) => {
      const slot = page * INDEX_ENTRIES_PER_PAGE + position;
      if (entry === null || slot >= this.slotCount) return;
      const log = this.logId(entry.logUuid);
      if (entry.offsetSectors >= OFFSET_KEY_SPAN || this.slotOf(log, entry.seq, entry.offsetSectors) !== undefined) {
        counts.dropped += 1;
        this.dirtyPages.add(page);
        return;
      }
      this.slotLogs[slot] = log;
      this.slotSeqs[slot] = entry.seq;
      this.slotOffsets[slot] = entry.offsetSectors;
      this.slotCrcs[slot] = entry.dataCrc;
      this.index[log]!.set(ReadCache.keyOf(entry.seq, entry.offsetSectors), slot);
      this.indexed += 1;
      counts.kept += 1;
    });
  }

  /**
   * Clean stop: queued fills are written (bounded: READ_CACHE_FILL_BLOCKS_QUEUED_MAX blocks and
   * READ_CACHE_ADOPT_BYTES_QUEUED_MAX bytes at most), then every dirty page is persisted. Nothing is queued after.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.settle();
    this.closed = true;
    this.gatherTimer?.cancel();
    this.gatherTimer = null;
    this.persistTimer?.cancel();
    this.persistTimer = null;
    await this.persisting;
    while (this.dirtyPages.size > 0) await this.persist();
  }

}
