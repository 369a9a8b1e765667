// The object pipeline (docs/architecture.md, "The write path"): the open batch, sealed objects queued in seq order,
// journal-only batches built from the journal before their put, puts with a bounded number in flight (ObjectWriter),
// durability reported strictly in seq order, and batch buffers reused once their object is durable and their records
// are on the device. Journal records are released only when the objects holding them are durable in seq order.
//
// Every object seq this run allocates is, at any moment, in exactly one place, in this order:
//   durable (<= durableSeq) | being put (<= lastStarted) | queued (sealedQueue) | the open batch.
//
// Invariants (checkInvariants):
//   1. Seqs are contiguous: the queue holds lastStarted+1, lastStarted+2, ... in order; the open batch, if any, holds
//      the seq after the queue's last; nextSeq is one past the newest seq allocated.
//   2. durableSeq <= lastStarted, and durableSeq never goes down (objects become durable one by one, in seq order).
//   3. Every batch in `unflushed` is one whose object is not durable yet: its seq is in (durableSeq, nextSeq).
//   4. batchesToBuild counts the queued journal-only batches; an open batch gets a buffer only when none waits.
//   5. The put loop state is "running" exactly while a startPuts loop is active (at most one).
//   6. Back-pressure from the backend: a batch opens only while fewer than sealedObjectsAheadMax objects are allocated
//      and not durable (waitAheadRoom), so at most that many plus the checkpoints a seal may queue (up to
//      CHECKPOINTS_KEPT back to back, when garbage collection asks for them) are ahead.
//   7. While the burst allowance is spent (journalOnlyAllowed false), a batch opens only in memory: no new journal-only
//      batch is made, so once the queued ones are built no object's data is read back from the journal.
//
// The burst allowance. Journal-only batches absorb a burst (or an outage) that outruns the backend, at the price of
// reading their data back from the journal before the put: a second pass over the cache device, and CPU. Once one
// waits to be built, every newer batch is journal-only too (buffers go to the oldest first), so under load the
// backend cannot keep up with for good, every object would pay that price. So the allowance is spent when a batch
// has to wait at the bound on objects ahead (the backlog filled up: not a burst), and rearmed when the backend has
// caught up (at most one object ahead besides the open batch). While it is spent, the pump waits for a free buffer as
// it waits for room ahead: the writes wait either way, and now nothing is read twice (bench/RESULTS.md, stop 15).

import { JOURNAL_RECORD_DATA_BYTES_MAX, PAGE_BYTES, PUTS_INFLIGHT_MAX, SEALED_OBJECTS_AHEAD_MAX, SECTOR_BYTES } from "../../constants.ts";
import { assert } from "../../errors.ts";
import type { AlignedPool } from "../../cache/cache_device.ts";
import type { Journal } from "../../cache/journal.ts";
import type { ObjectStore } from "../../backend/object_store.ts";
import { Batch, batchCapacityBytes, batchHeaderRoomBytes, type JournalReader } from "../batch.ts";
import type { Clock } from "../../util/clock.ts";
import { ObjectKind, type ObjectTable } from "../object_table.ts";
import { ObjectWriter } from "../object_writer.ts";
import { BatchBuffers } from "./batch_buffers.ts";
import { debugChecks } from "../../util/debug_checks.ts";
import type { Halt } from "./halt.ts";

/** An object waiting for its put: its bytes, or a journal-only batch whose data is read back from the journal first. */
type Queued = { seq: number; state: "ready"; bytes: Uint8Array } | { seq: number; state: "toBuild"; batch: Batch };

type PutLoop = "idle" | "running";

export interface ObjectPipelineOptions {
  volUuid: string;
  cacheUuid: string;
  prefix: string;
  store: ObjectStore;
  objects: ObjectTable;
  journal: Journal;
  readJournal: JournalReader;
  pool: AlignedPool;
  clock: Clock;
  log: (line: string) => void;
  halt: Halt;
  batchBytes: number;
  /** The first seq this run allocates: every seq below it is durable already. */
  nextSeq: number;
  /** Called with a batch whose object just became durable, before its buffer is reused (read-cache migration). */
  onBatchDurable?: (batch: Batch) => void;
  /** Called for every object as it becomes durable, in seq order, after its batch is released. */
  onDurable: (seq: number) => void;
  /** A put failed for good (ConflictError or FencedError). */
  onPutFatal: (error: unknown) => void;
  /** Objects sealed and not yet durable before a new batch waits (default SEALED_OBJECTS_AHEAD_MAX; tests lower it). */
  sealedObjectsAheadMax?: number;
}

export class ObjectPipeline {
  private openBatch: Batch | null = null;
  /** Open and sealed batches whose object is not yet durable in the backend, by object seq: reads come from here. */
  readonly unflushed = new Map<number, Batch>();
  private readonly sealedQueue: Queued[] = [];
  private putLoop: PutLoop = "idle";
  /** Journal-only batches sealed and waiting for a buffer to be built in. */
  private batchesToBuild = 0;
  private nextSeq: number;
  /** The newest seq handed to the writer (every seq up to it is being put or durable). */
  private lastStarted: number;
  /** durableSeq as the last invariant check saw it (it may only grow). */
  private durableSeen: number;
  private readonly buffers: BatchBuffers;
  readonly writer: ObjectWriter;
  private readonly durableWaiters = new Map<number, Array<() => void>>();
  /** The record former (or the journal replay) waits here for room ahead of the backend; onObjectDurable wakes it. */
  private aheadRoomWaiter: (() => void) | null = null;
  private readonly sealedObjectsAheadMax: number;
  /** The burst allowance (see the file comment): a batch may open journal-only when no buffer is free. */
  private journalOnlyAllowed = true;
  /** Journal-only batches built (read back from the journal) before their put, since open. */
  private batchesReadBack = 0;

  constructor(private readonly options: ObjectPipelineOptions) {
    this.sealedObjectsAheadMax = options.sealedObjectsAheadMax ?? SEALED_OBJECTS_AHEAD_MAX;
    assert(this.sealedObjectsAheadMax > PUTS_INFLIGHT_MAX, "sealed objects keep every put slot busy");
    this.nextSeq = options.nextSeq;
    this.lastStarted = options.nextSeq - 1;
    this.durableSeen = options.nextSeq - 1;
    const capacity = batchCapacityBytes(options.batchBytes);
    this.buffers = new BatchBuffers(batchHeaderRoomBytes(capacity) + capacity, PUTS_INFLIGHT_MAX + 1, options.pool);
    this.writer = new ObjectWriter(
      options.store,
      options.prefix,
      PUTS_INFLIGHT_MAX,
      options.clock,
      options.log,
      (seq) => this.onObjectDurable(seq),
      options.nextSeq - 1,
      options.onPutFatal,
    );
  }

  /** The batch records are formed into (null: none open). */
  get open(): Batch | null {
    return this.openBatch;
  }

  get sequenceNext(): number {
    return this.nextSeq;
  }

  get durableSeq(): number {
    return this.writer.durableSeq;
  }

  /** No put in flight and none queued: nothing under way would release journal space. */
  get putsIdle(): boolean {
    return this.writer.putsInFlight === 0 && this.sealedQueue.length === 0;
  }

  /** Objects allocated and not yet durable: with no batch open, the sealed ones (DATA and checkpoints) not yet put. */
  get objectsAhead(): number {
    return this.nextSeq - 1 - this.writer.durableSeq;
  }

  /**
   * A batch may open now: fewer than sealedObjectsAheadMax objects are sealed and not yet durable, and either the
   * burst allowance lets it open journal-only or it gets a buffer (none free while a journal-only batch waits).
   */
  get hasAheadRoom(): boolean {
    if (this.objectsAhead >= this.sealedObjectsAheadMax) return false;
    return this.journalOnlyAllowed || this.nextBatchInMemory;
  }

  /** The next batch would get a buffer: one is free and no journal-only batch waits for one (older ones go first). */
  private get nextBatchInMemory(): boolean {
    return this.batchesToBuild === 0 && this.buffers.hasFree;
  }

  /** Journal-only batches read back from the journal before their put, since open. */
  get objectsReadBack(): number {
    return this.batchesReadBack;
  }

  /**
   * Back-pressure from the backend: no batch opens while sealedObjectsAheadMax objects are sealed and not durable
   * (which spends the burst allowance), or, while it is spent, until a buffer is free; so new writes wait (in the
   * record former's queue, then in the NBD layer) until puts complete. Only the pump (or the journal replay) waits,
   * one at a time; a durable object, a freed buffer or a finished build wakes it, a failure ends the wait.
   */
  async waitAheadRoom(): Promise<void> {
    while (!this.hasAheadRoom) {
      if (this.objectsAhead >= this.sealedObjectsAheadMax) this.journalOnlyAllowed = false;
      assert(this.aheadRoomWaiter === null, "one pump waits for room ahead of the backend");
      const room = new Promise<void>((resolve) => (this.aheadRoomWaiter = resolve));
      try {
        await this.options.halt.race(room);
      } finally {
        this.aheadRoomWaiter = null;
      }
    }
  }

  isDeviceMemory(buffer: Uint8Array): boolean {
    return this.buffers.isDeviceMemory(buffer);
  }

  /**
   * Opens the next batch: in memory if a buffer is free now and no journal-only batch waits for one (those are
   * older and must be put first), else journal-only. Never waits: the journal, not memory, bounds what is absorbed.
   */
  openNext(): Batch {
    assert(this.openBatch === null, "one open batch at a time");
    assert(this.objectsAhead < this.sealedObjectsAheadMax, "a batch opens only with room ahead of the backend");
    const batch = new Batch(this.options.batchBytes);
    const buffer = this.nextBatchInMemory ? this.buffers.tryAcquire() : null;
    assert(buffer !== null || this.journalOnlyAllowed, "a batch opens journal-only only with the burst allowance");
    const seq = this.nextSeq++;
    batch.open(seq, buffer);
    this.openBatch = batch;
    this.unflushed.set(seq, batch);
    this.options.objects.add(seq, { kind: ObjectKind.Data, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    this.afterChange();
    return batch;
  }

  /** Seals the open batch if it holds a record and queues its put; returns it (null: nothing to seal). */
  sealOpen(): Batch | null {
    const batch = this.openBatch;
    if (!batch || batch.isEmpty) return null;
    this.openBatch = null;
    const info = this.options.objects.get(batch.seq)!;
    info.hdrSectors = batch.hdrSectors;
    info.dataSectors = batch.dataBytes / SECTOR_BYTES;
    if (batch.dataInBuffer) {
      const sealed = batch.seal({ volUuid: this.options.volUuid, cacheUuid: this.options.cacheUuid });
      this.sealedQueue.push({ seq: sealed.seq, state: "ready", bytes: sealed.object });
    } else {
      this.batchesToBuild += 1;
      this.sealedQueue.push({ seq: batch.seq, state: "toBuild", batch });
    }
    this.afterChange();
    return batch;
  }

  /**
   * An open batch that never received a record gives its seq back: putting nothing under that seq would leave a
   * gap in the log. It is always the newest seq, since seqs are only allocated while no batch is open.
   */
  discardEmptyOpen(): void {
    const batch = this.openBatch;
    if (!batch || !batch.isEmpty) return;
    assert(batch.seq === this.nextSeq - 1, "an empty open batch holds the newest seq");
    this.openBatch = null;
    this.unflushed.delete(batch.seq);
    this.options.objects.delete(batch.seq);
    this.nextSeq -= 1;
    const buffer = batch.reset();
    if (buffer) this.buffers.release(buffer);
    this.afterChange();
  }

  /** Allocates the next seq for an object built whole (checkpoint, handover) and queues its put. */
  queueObject(kind: (typeof ObjectKind)[keyof typeof ObjectKind], build: (seq: number) => Uint8Array): number {
    assert(this.openBatch === null, "an object built whole is queued only while no batch is open");
    const seq = this.nextSeq++;
    const built = build(seq);
    // A DATA object built whole is a handover: a header and nothing else. A checkpoint's size is not recorded.
    const hdrSectors = kind === ObjectKind.Data ? built.byteLength / SECTOR_BYTES : 0;
    this.options.objects.add(seq, { kind, hdrSectors, dataSectors: 0, liveSectors: 0 });
    this.sealedQueue.push({ seq, state: "ready", bytes: built });
    this.afterChange();
    return seq;
  }

  /** Starts puts in the background: the caller must not wait for a put slot (during an outage there may be none). */
  kickPuts(): void {
    if (this.sealedQueue.length > 0 && this.putLoop === "idle") {
      void this.startPuts().catch((error: unknown) => this.options.halt.fail(error));
    }
  }

  /** Starts puts in seq order as slots free up, building journal-only batches first. One loop at a time. */
  private async startPuts(): Promise<void> {
    this.putLoop = "running";
    try {
      while (this.sealedQueue.length > 0) {
        if (!this.writer.hasSlot) await this.writer.waitForSlot();
        const next = this.sealedQueue[0]!;
        const bytes = next.state === "ready" ? next.bytes : await this.buildJournalBatch(next.batch);
        this.sealedQueue.shift();
        this.lastStarted = next.seq;
        this.writer.start(next.seq, bytes);
        if (next.state === "toBuild") {
          this.batchesToBuild -= 1;
          this.batchesReadBack += 1;
          this.wakeAheadRoomWaiter();
        }
        this.afterChange();
      }
    } finally {
      this.putLoop = "idle";
    }
  }

  /** Reads a journal-only batch's data back from the journal into a buffer (waiting for one to be free), seals it. */
  private async buildJournalBatch(batch: Batch): Promise<Uint8Array> {
    const buffer = await this.buffers.acquire();
    await this.options.journal.whenWritten(batch.recordSeqLast);
    const scratch = this.options.pool.acquire(JOURNAL_RECORD_DATA_BYTES_MAX + PAGE_BYTES);
    try {
      await batch.build(buffer, this.options.readJournal, scratch);
    } finally {
      this.options.pool.release(scratch);
    }
    return batch.seal({ volUuid: this.options.volUuid, cacheUuid: this.options.cacheUuid }).object;
  }

  private onObjectDurable(seq: number): void {
    if (seq !== this.durableSeen + 1 || seq > this.lastStarted) assert(false, `object ${seq} durable in seq order, after its put started`);
    this.durableSeen = seq;
    const batch = this.unflushed.get(seq);
    if (batch) {
      this.options.onBatchDurable?.(batch);
      const recordSeqLast = batch.cacheSeqLast;
      this.options.journal.release(recordSeqLast);
      this.unflushed.delete(seq);
      const buffer = batch.reset();
      if (buffer) this.recycleBuffer(buffer, recordSeqLast);
    }
    this.options.onDurable(seq);
    // The backend has caught up: at most one object ahead besides the open batch. A new burst may be absorbed.
    if (this.objectsAhead - (this.openBatch === null ? 0 : 1) <= 1) this.journalOnlyAllowed = true;
    this.wakeAheadRoomWaiter();
    const waiters = this.durableWaiters.get(seq);
    if (waiters) {
      this.durableWaiters.delete(seq);
      for (const wake of waiters) wake();
    }
    this.afterChange();
    this.kickPuts();
  }

  /**
   * Returns a batch buffer for reuse once the journal has written every record of it: records may have been written
   * straight from its pages, and an object can be durable in a fast store before its records are on a slow device.
   * Almost always they are, and the buffer is free at once (the next batch finds it). If the journal fails, the
   * buffer stays out: the write path has failed with it.
   */
  private recycleBuffer(buffer: Uint8Array, recordSeqLast: number): void {
    const journal = this.options.journal;
    if (recordSeqLast === 0 || journal.isWritten(recordSeqLast)) return this.releaseBuffer(buffer);
    journal.whenWritten(recordSeqLast).then(
      () => this.releaseBuffer(buffer),
      () => undefined,
    );
  }

  private releaseBuffer(buffer: Uint8Array): void {
    this.buffers.release(buffer);
    this.wakeAheadRoomWaiter();
  }

  /** Wakes the pump waiting in waitAheadRoom if a batch may open now (it checks again before it opens one). */
  private wakeAheadRoomWaiter(): void {
    if (this.aheadRoomWaiter !== null && this.hasAheadRoom) this.aheadRoomWaiter();
  }

  /** Resolves when every object up to seq is durable; rejects if the write path fails first. */
  async waitDurable(seq: number): Promise<void> {
    if (this.writer.durableSeq >= seq) return;
    const durable = new Promise<void>((resolve) => {
      const list = this.durableWaiters.get(seq) ?? [];
      list.push(resolve);
      this.durableWaiters.set(seq, list);
    });
    await this.options.halt.race(durable);
  }

  /** Resolves when no put is in flight; rejects if the write path fails first. */
  async waitIdle(): Promise<void> {
    await this.options.halt.race(this.writer.waitIdle());
  }

  private afterChange(): void {
    if (debugChecks) this.checkInvariants();
  }

  /** Checks invariants 1-5 and 7 from the top of this file; throws on the first violation. */
  checkInvariants(): void {
    const check = (condition: boolean, message: () => string): void => {
      if (!condition) assert(false, `object pipeline invariant: ${message()}`);
    };
    this.sealedQueue.forEach((entry, index) => check(entry.seq === this.lastStarted + 1 + index, () => `queued seq ${entry.seq} at ${index} follows ${this.lastStarted}`));
    const newestQueued = this.lastStarted + this.sealedQueue.length;
    const newest = this.openBatch ? this.openBatch.seq : newestQueued;
    check(this.openBatch === null || this.openBatch.seq === newestQueued + 1, () => `the open batch ${this.openBatch?.seq} follows the queue (${newestQueued})`);
    check(this.nextSeq === newest + 1, () => `nextSeq ${this.nextSeq} is one past the newest seq ${newest}`);
    const durable = this.writer.durableSeq;
    check(durable <= this.lastStarted && durable >= this.durableSeen, () => `durableSeq ${durable} <= lastStarted ${this.lastStarted}, never below ${this.durableSeen}`);
    this.durableSeen = durable;
    for (const seq of this.unflushed.keys()) check(seq > durable && seq < this.nextSeq, () => `unflushed batch ${seq} not durable (${durable}) and allocated`);
    const toBuild = this.sealedQueue.filter((entry) => entry.state === "toBuild").length;
    check(this.batchesToBuild === toBuild, () => `batchesToBuild ${this.batchesToBuild} counts the queued journal-only batches (${toBuild})`);
    const openInMemory = this.openBatch === null || this.openBatch.dataInBuffer;
    check(this.journalOnlyAllowed || openInMemory, () => `the open batch ${this.openBatch?.seq} is journal-only with the burst allowance spent`);
    this.buffers.checkInvariants();
  }
}
