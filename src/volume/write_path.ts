// The write path (docs/architecture.md, "The write path"): client writes -> group-committed journal records ->
// the open batch -> sealed DATA objects -> backend puts, with checkpoints every N objects. Three parts, one job each,
// wired here:
//   write/record_former.ts         the pending queue, the pump, records and acknowledgement (group commit);
//   write/object_pipeline.ts       the open batch, seals, journal-only builds, puts, durability in seq order, buffers;
//   write/checkpoint_scheduler.ts  when checkpoints are taken, the superblock rewrite that names them, the handover.
// They share one failure (write/halt.ts): the first error none of them can recover from stops all three, and every
// call that waits on the write path (write, settle, waitDurable, close) reports it.
//
// Ordering, in one place:
// 1. A write waits in the record former's queue until the pump forms a record from it and the writes queued with it.
// 2. Forming a record is one synchronous step (record map, batch and journal agree); a batch buffer is reused only
//    after its records are on the device.
// 3. The write is acknowledged when its record and every earlier record are on the cache device (O_DIRECT); with
//    FUA, after an fdatasync that started after that.
// 4. Batches are sealed when full, when the journal needs space, after an idle pause, and on close; objects are put
//    with a bounded number in flight; journal records are released only when the objects holding them are durable
//    *in seq order* (ObjectWriter), and the journal tail is persisted before its space is reused (Journal).
// 5. The superblock names a checkpoint only once it and every object before it are durable; a checkpoint is deleted
//    only once a durable superblock no longer names it.
//
// Bounds: pending writes are bounded by the NBD layer's per-connection in-flight limit; records in flight by
// JOURNAL_WRITES_INFLIGHT_MAX; batches in memory by PUTS_INFLIGHT_MAX + 1 buffers; puts by PUTS_INFLIGHT_MAX;
// objects sealed and not yet durable by SEALED_OBJECTS_AHEAD_MAX (no batch opens beyond it: waitAheadRoom); space in
// the backend by the space gate (write/space_gate.ts: client writes wait, at most SPACE_WAIT_MS_MAX, while the
// backend is over its high-water mark with garbage the collector can free).

import type { AlignedPool } from "../cache/cache_device.ts";
import type { Journal } from "../cache/journal.ts";
import type { DataExtent } from "../format/data_object.ts";
import type { JournalExtent } from "../format/journal_record.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { SPACE_WAIT_MS_MAX } from "../constants.ts";
import { assert } from "../errors.ts";
import type { Batch, JournalReader } from "./batch.ts";
import type { Clock } from "../util/clock.ts";
import type { FlushCoordinator } from "./flush_coordinator.ts";
import type { ObjectTable } from "./object_table.ts";
import type { ObjectWriter } from "./object_writer.ts";
import { FencedError, type Fence } from "./lease.ts";
import type { SuperblockStore } from "./superblock_store.ts";
import { CheckpointScheduler } from "./write/checkpoint_scheduler.ts";
import { Halt } from "./write/halt.ts";
import { ObjectPipeline } from "./write/object_pipeline.ts";
import { RecordFormer, type CopySource } from "./write/record_former.ts";
import { SpaceGate } from "./write/space_gate.ts";
import { newWriteStats } from "./write/stats.ts";
import type { SuperblockObject } from "../format/superblock_object.ts";
import type { SnapshotPins } from "./snapshots.ts";
import type { WriteListener } from "../nbd/block_device.ts";

export interface WritePathOptions {
  volUuid: string;
  cacheUuid: string;
  prefix: string;
  store: ObjectStore;
  map: ExtentMap;
  objects: ObjectTable;
  journal: Journal;
  /** Reads the journal back (journal-only batches, before their put). */
  readJournal: JournalReader;
  pool: AlignedPool;
  flusher: FlushCoordinator;
  clock: Clock;
  log: (line: string) => void;
  /** The superblock, rewritten (compare-and-swap) when a checkpoint is durable. */
  superblocks: SuperblockStore;
  /** Closed when this process may no longer change the volume: nothing more is acknowledged or put. */
  fence: Fence;
  batchBytes: number;
  batchIdleMs: number;
  checkpointIntervalObjects: number;
  nextSeq: number;
  checkpointSeq: number;
  /** The log's writer as recovery found it: what a checkpoint records until this run seals an object. */
  writerCacheUuid: string;
  writerCacheSeqLast: number;
  /**
   * The log ends inside a client write whose rest the journal replay brings (recovery kept an unfinished tail): no
   * checkpoint until the replay is over (endReplay).
   */
  logEndsInsideWrite: boolean;
  /** What the volume's snapshots pin (snapshots.ts): never deleted by the write path. */
  snapshotPins: SnapshotPins;
  /** Objects sealed and not yet durable before a new batch waits (default SEALED_OBJECTS_AHEAD_MAX; tests lower it). */
  sealedObjectsAheadMax?: number;
  /** A batch whose object just became durable, before its buffer is reused (read-cache migration). */
  onBatchDurable?: (batch: Batch) => void;
  /** The longest a client write waits at the space gate (default SPACE_WAIT_MS_MAX). */
  spaceWaitMsMax?: number;
}

export class WritePath {
  private readonly halt: Halt;
  private readonly pipeline: ObjectPipeline;
  private readonly scheduler: CheckpointScheduler;
  private readonly former: RecordFormer;
  readonly stats = newWriteStats();
  /** Client writes wait here while the backend is over its space high-water mark; the collector attaches to it. */
  readonly spaceGate: SpaceGate;

  constructor(private readonly options: WritePathOptions) {
    this.halt = new Halt(options.log);
    this.spaceGate = new SpaceGate(options.clock, options.spaceWaitMsMax ?? SPACE_WAIT_MS_MAX, this.stats);
    this.halt.onFail(() => this.spaceGate.close());
    this.pipeline = new ObjectPipeline({
      ...options,
      halt: this.halt,
      onDurable: (seq) => this.scheduler.onDurable(seq),
      onPutFatal: (error) => this.failOwnership(error),
    });
    this.scheduler = new CheckpointScheduler({ ...options, pipeline: this.pipeline, stats: this.stats, nowMs: () => Math.floor(options.clock.nowMs()) });
    this.former = new RecordFormer({
      ...options,
      halt: this.halt,
      stats: this.stats,
      pipeline: this.pipeline,
      spaceGate: this.spaceGate,
      seal: () => this.sealOpen(),
    });
    options.fence.onFenced((reason) => this.halt.fail(new FencedError(`Volume ${options.prefix}: this process no longer owns it (${reason})`)));
  }

  /** A put hit a ConflictError: the volume was lost (FencedError), or another writer holds one of our names. */
  private failOwnership(error: unknown): void {
    if (!(error instanceof FencedError)) this.options.fence.fence(`another writer's object holds a name this owner writes: ${String(error)}`);
    this.halt.fail(error);
  }

  get objectWriter(): ObjectWriter {
    return this.pipeline.writer;
  }

  /** Open and sealed batches whose object is not yet durable in the backend, by object seq: reads come from here. */
  get unflushed(): Map<number, Batch> {
    return this.pipeline.unflushed;
  }

  /** Called after the superblock naming a new set of checkpoints is durable (garbage collection deletes by it). */
  set onCheckpointsPersisted(listener: ((checkpoints: number[]) => void) | null) {
    this.scheduler.onCheckpointsPersisted = listener;
  }

  /** Queues [lba, lba+data/512) (or a zeroing of sectors when data is null); resolves when acknowledged-safe. */
  write(lba: number, sectors: number, data: Uint8Array | null, fua: boolean): Promise<void> {
    return this.former.write(lba, sectors, data, fua);
  }

  /** write() without a promise: `listener` is told once (RecordFormer.writeThen). */
  writeThen(lba: number, sectors: number, data: Uint8Array | null, fua: boolean, listener: WriteListener): void {
    this.former.writeThen(lba, sectors, data, fua, listener);
  }

  /** Client writes and trims queued and not yet acknowledged (read-cache migration skips batches while many are). */
  get clientWritesInFlight(): number {
    return this.former.clientWritesInFlight;
  }

  /** Garbage collection's copy of what is still live of a slice of a victim's extents (RecordFormer.copyExtents). */
  copyExtents(source: CopySource, extents: readonly DataExtent[], firstOffset: number): Promise<void> {
    return this.former.copyExtents(source, extents, firstOffset);
  }

  /** Replays one journal record into the batches (the record is already in the journal). */
  replayRecord(seq: number, extents: JournalExtent[], data: Uint8Array, dataOffset: number): Promise<void> {
    return this.former.replayRecord(seq, extents, data, dataOffset);
  }

  /** The journal replay is over: the log ends on a write boundary here (RecordFormer.endReplay). */
  endReplay(): void {
    this.former.endReplay();
  }

  /** Seals the open batch (if any) and queues its put, plus a checkpoint if one is due (or forced). */
  async sealOpen(forceCheckpoint = false): Promise<void> {
    const sealed = this.pipeline.sealOpen();
    if (sealed !== null) {
      this.scheduler.noteSealed(sealed);
      this.stats.objects += 1;
      if (sealed.endsInsideWrite) this.stats.objectsEndingInsideWrite += 1;
    }
    // Recovery starts from a checkpoint even without the cache, so one is taken only where the log ends on a write
    // boundary. A due one (forced ones too: the takeover checkpoint before a replay that finishes a kept tail) waits
    // for the next seal that is on a boundary.
    this.scheduler.afterSeal(forceCheckpoint, this.former.onBoundary);
    this.pipeline.kickPuts();
  }

  /** Writes an empty DATA object that names this cache as the log's writer (see recovery decision table). */
  async writeHandover(cacheSeqLast: number): Promise<void> {
    this.pipeline.discardEmptyOpen();
    assert(this.pipeline.open === null, "handover before any batch");
    assert(this.former.onBoundary, "handover on a write boundary");
    const seq = this.scheduler.queueHandover(cacheSeqLast);
    this.pipeline.kickPuts();
    await this.waitDurable(seq);
  }

  /**
   * Every queued write journaled, the open batch sealed (with a checkpoint after it when forceCheckpoint and there is
   * something new to cover), every object durable and the superblock up to date; rejects with whatever failed.
   */
  async settle(forceCheckpoint = false): Promise<void> {
    this.halt.throwIfFailed();
    await this.former.drain();
    this.halt.throwIfFailed();
    this.pipeline.discardEmptyOpen();
    await this.sealOpen(forceCheckpoint);
    await this.waitDurable(this.pipeline.sequenceNext - 1);
    await this.pipeline.waitIdle();
    await this.scheduler.settled();
    this.halt.throwIfFailed();
  }

  /**
   * A checkpoint soon, even when the newest object already is one (garbage collection needs checkpoints newer than
   * its retirements): now when no write is being formed (sealing the open batch), else at the next seal.
   */
  requestCheckpoint(count = 1): void {
    if (this.halt.failed) return;
    this.scheduler.requestCheckpoint(count); // sealOpen takes them whenever no batch is left open
    if (this.former.busy) return;
    this.pipeline.discardEmptyOpen();
    void this.sealOpen().catch((error: unknown) => this.halt.fail(error));
  }

  /**
   * A snapshot called `name`: every write acknowledged before this call is in it (the queue is drained first), then
   * a checkpoint at the next seal on a write boundary (now, when no write is being formed); resolves with its seq once
   * the superblock listing it is durable.
   */
  async createSnapshot(name: string): Promise<number> {
    this.halt.throwIfFailed();
    await this.former.drain();
    this.halt.throwIfFailed();
    const made = this.scheduler.requestSnapshot(name);
    if (!this.former.busy) {
      this.pipeline.discardEmptyOpen();
      await this.sealOpen();
    }
    const seq = await this.halt.race(made);
    await this.waitDurable(seq);
    return seq;
  }

  /** Rewrites the superblock with `change` applied (snapshot deletion), in order with checkpoint rewrites. */
  changeSuperblock(change: (superblock: SuperblockObject) => SuperblockObject, why: string): Promise<void> {
    this.halt.throwIfFailed();
    return this.scheduler.changeSuperblock(change, why);
  }

  /** The superblock as the write path last wrote it (or is writing it). */
  get superblock(): SuperblockObject {
    return this.scheduler.currentSuperblock;
  }

  /** Resolves when every object up to seq is durable; rejects if the write path fails first. */
  async waitDurable(seq: number): Promise<void> {
    if (this.pipeline.durableSeq >= seq) return;
    await this.pipeline.waitDurable(seq);
  }

  /** Waits until every queued write has been journaled. */
  async drainWrites(): Promise<void> {
    await this.former.drain();
  }

  /** Clean shutdown: everything journaled goes to the backend, with a checkpoint, and the superblock names it. */
  async closeClean(): Promise<void> {
    this.spaceGate.close(); // writes waiting for space go now, and are in what this close puts
    this.former.cancelIdleTimer();
    await this.settle(true);
  }

  /** Checks the invariants of every part (the simulator calls it between steps; tests after every state change). */
  checkInvariants(): void {
    this.halt.checkInvariants();
    this.former.checkInvariants();
    this.pipeline.checkInvariants();
    this.scheduler.checkInvariants();
    this.spaceGate.checkInvariants();
  }

  /** The checkpoints the superblock names (durable once onCheckpointsPersisted reported them; at open, as read). */
  get persistedCheckpoints(): number[] {
    return this.scheduler.persistedCheckpoints;
  }

  get sequenceNext(): number {
    return this.pipeline.sequenceNext;
  }

  /** Objects allocated and not yet durable (ObjectPipeline.objectsAhead). */
  get objectsAhead(): number {
    return this.pipeline.objectsAhead;
  }

  get durableSeq(): number {
    return this.pipeline.durableSeq;
  }

  /** Journal-only batches read back from the journal before their put (ObjectPipeline.objectsReadBack). */
  get objectsReadBack(): number {
    return this.pipeline.objectsReadBack;
  }

  get failed(): unknown {
    return this.halt.error;
  }
}
