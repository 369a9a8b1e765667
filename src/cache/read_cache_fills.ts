// The read cache's fill queue (docs/architecture.md, "The read path"): blocks read from the backend, and durable batch
// blocks migrated from the write path, wait here and are written to slots in batches.
//
// - Fills never hold up the read or the write that produced them: the queue is bounded (READ_CACHE_FILL_BLOCKS_QUEUED_MAX
//   read blocks, READ_CACHE_ADOPT_BYTES_QUEUED_MAX migrated bytes; more are skipped by the caller).
// - A batch takes a slot for each block not cached yet, sorted by slot, and writes each run of consecutive slots with
//   one vectored write; at most READ_CACHE_FILL_BATCHES_INFLIGHT_MAX batches are written at once.
// - A block is indexed only after its slot's write resolved (CacheSlots.settle).

import {
  PAGE_BYTES,
  READ_CACHE_ADOPT_BYTES_QUEUED_MAX,
  READ_CACHE_FILL_BATCHES_INFLIGHT_MAX,
  READ_CACHE_FILL_BATCH_BLOCKS_MAX,
  READ_CACHE_FILL_BATCH_BLOCKS_MIN,
  READ_CACHE_FILL_BLOCKS_QUEUED_MAX,
  READ_CACHE_FILL_GATHER_MS,
} from "../constants.ts";
import { crc32c } from "../format/crc32c.ts";
import type { Clock, TimerHandle } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";
import type { CacheSlots } from "./read_cache_slots.ts";

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

interface BatchEntry {
  block: QueuedBlock;
  slot: number;
}

interface Run {
  first: number;
  end: number;
  scratch: Uint8Array | null;
  pages: Uint8Array[];
}

export interface FillQueueOptions {
  device: CacheDevice;
  pool: AlignedPool;
  slots: CacheSlots;
  /** Where slot 0 starts on the device. */
  slotsStartBytes: number;
  log: LogFn;
  clock: Clock;
}

export class FillQueue {
  private readonly queue: QueuedBlock[] = [];
  private queueHead = 0;
  private fillBlocksQueued = 0;
  private adoptBytesQueued = 0;
  private readonly batchesInFlight = new Set<Promise<void>>();
  private gatherTimer: TimerHandle | null = null;
  private stopped = false;
  /** Blocks indexed from backend reads, from durable batches; blocks skipped (queue full, no slot, write failed). */
  inserts = 0;
  adopted = 0;
  skipped = 0;
  /** Fill batches written, and the vectored writes they took (one per run of consecutive slots). */
  batches = 0;
  writes = 0;

  constructor(private readonly options: FillQueueOptions) {}

  /** Queues one 4 KiB block read from the backend (`data` is not changed afterwards); false if the queue is full. */
  queueRead(log: number, seq: number, offsetSectors: number, data: Uint8Array): boolean {
    if (this.fillBlocksQueued >= READ_CACHE_FILL_BLOCKS_QUEUED_MAX) return false;
    this.fillBlocksQueued += 1;
    this.queue.push({ log, seq, offsetSectors, data, copy: null });
    return true;
  }

  /** Whether `bytes` more migrated bytes fit the queue's bound. */
  adoptFits(bytes: number): boolean {
    return this.adoptBytesQueued + bytes <= READ_CACHE_ADOPT_BYTES_QUEUED_MAX;
  }

  /** Queues migrated blocks: block i is buffer[i * 4096, +4096), at data-area offset offsets[i]; the buffer is the queue's. */
  queueAdopted(log: number, seq: number, offsets: number[], buffer: Uint8Array): void {
    this.adoptBytesQueued += offsets.length * PAGE_BYTES;
    const copy: AdoptedCopy = { buffer, blocksLeft: offsets.length };
    offsets.forEach((offsetSectors, index) => {
      this.queue.push({ log, seq, offsetSectors, data: buffer.subarray(index * PAGE_BYTES, (index + 1) * PAGE_BYTES), copy });
    });
  }

  /**
   * Starts fill batches while the queue holds blocks and fewer than the bound are being written. Fewer than
   * READ_CACHE_FILL_BATCH_BLOCKS_MIN queued blocks wait up to READ_CACHE_FILL_GATHER_MS for more (misses of a remote
   * backend arrive spread out: without the wait each would be a write of its own); `now` starts them at once.
   */
  kick(now = false): void {
    const queued = this.queue.length - this.queueHead;
    if (!now && queued > 0 && queued < READ_CACHE_FILL_BATCH_BLOCKS_MIN) {
      this.gatherTimer ??= this.options.clock.setTimer(READ_CACHE_FILL_GATHER_MS, () => {
        this.gatherTimer = null;
        this.kick(true);
      });
      return;
    }
    this.gatherTimer?.cancel();
    this.gatherTimer = null;
    while (!this.stopped && this.batchesInFlight.size < READ_CACHE_FILL_BATCHES_INFLIGHT_MAX && this.queueHead < this.queue.length) {
      const batch = this.takeBatch();
      if (batch.length === 0) continue;
      const writing: Promise<void> = this.writeBatch(batch)
        .catch((error) => this.options.log(`warning: read cache: a fill batch failed: ${String(error)}`))
        .finally(() => {
          this.batchesInFlight.delete(writing);
          this.kick(now);
        });
      this.batchesInFlight.add(writing);
    }
  }

  /** Resolves once every block queued so far is written and indexed (or skipped). */
  async settle(): Promise<void> {
    for (;;) {
      this.kick(true);
      if (this.batchesInFlight.size === 0) return;
      await Promise.all([...this.batchesInFlight]);
    }
  }

  /** After settle(): nothing more is written. */
  stop(): void {
    this.stopped = true;
    this.gatherTimer?.cancel();
    this.gatherTimer = null;
  }

  private dequeued(block: QueuedBlock): void {
    if (block.copy === null) {
      this.fillBlocksQueued -= 1;
      return;
    }
    this.adoptBytesQueued -= PAGE_BYTES;
    block.copy.blocksLeft -= 1;
    if (block.copy.blocksLeft === 0) this.options.pool.release(block.copy.buffer);
  }

  /** Up to READ_CACHE_FILL_BATCH_BLOCKS_MAX queued blocks not cached yet, each with a slot taken for it, by slot. */
  private takeBatch(): BatchEntry[] {
    const { slots } = this.options;
    const batch: BatchEntry[] = [];
    while (batch.length < READ_CACHE_FILL_BATCH_BLOCKS_MAX && this.queueHead < this.queue.length) {
      const block = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as unknown as QueuedBlock;
      // A block twice in one batch (two reads missed it at once) is written twice and indexed once (settleBlock).
      const slot = slots.slotOf(block.log, block.seq, block.offsetSectors) !== undefined ? -1 : slots.takeSlot();
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
  private async writeBatch(batch: BatchEntry[]): Promise<void> {
    const { device, pool, slotsStartBytes } = this.options;
    const runs: Run[] = [];
    try {
      for (let first = 0, end = 1; first < batch.length; first = end, end = first + 1) {
        while (end < batch.length && batch[end - 1]!.slot + 1 === batch[end]!.slot) end += 1;
        runs.push(this.runPages(batch, first, end));
      }
    } catch {
      // No buffer for a run (the pool is full or closed): the batch is dropped, its slots freed.
      for (const run of runs) if (run.scratch !== null) pool.release(run.scratch);
      for (const entry of batch) this.settleBlock(entry, 0, false);
      return;
    }
    const crcs = runs.flatMap((run) => run.pages.map((page) => crc32c(page)));
    const results = await Promise.allSettled(runs.map((run) => device.write(slotsStartBytes + batch[run.first]!.slot * PAGE_BYTES, run.pages)));
    this.batches += 1;
    this.writes += runs.length;
    runs.forEach((run, position) => {
      if (run.scratch !== null) pool.release(run.scratch);
      for (let index = run.first; index < run.end; index++) this.settleBlock(batch[index]!, crcs[index]!, results[position]!.status === "fulfilled");
    });
  }

  /** The pages one run of a batch writes: adopted blocks as they are, backend-read blocks copied into one scratch buffer. */
  private runPages(batch: BatchEntry[], first: number, end: number): Run {
    let unaligned = 0;
    for (let index = first; index < end; index++) if (batch[index]!.block.copy === null) unaligned += 1;
    const scratch = unaligned > 0 ? this.options.pool.acquire(unaligned * PAGE_BYTES) : null;
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
  private settleBlock({ block, slot }: BatchEntry, dataCrc: number, written: boolean): void {
    const { slots } = this.options;
    this.dequeued(block);
    const entry = { logUuid: slots.logUuid(block.log), seq: block.seq, offsetSectors: block.offsetSectors, dataCrc };
    if (!slots.settle(slot, entry, block.log, written)) {
      this.skipped += 1;
      return;
    }
    if (block.copy !== null) this.adopted += 1;
    else this.inserts += 1;
  }
}
