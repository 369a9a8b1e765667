// The checkpoint scheduler (docs/architecture.md, "Checkpoints"): when a checkpoint is taken (every N objects, when
// a takeover asks for one, when garbage collection asks for one or several back to back, at a clean close), the
// superblock rewrite that names it once it and every object before it are durable, the deletion of checkpoints no
// longer named, and the handover object that names this cache as the log's writer.
//
// A checkpoint is taken only right after a seal that leaves no batch open and the log on a write boundary (no client
// write has pieces still to come): recovery starts from it even when the cache is lost. A due one waits for such a
// seal.
//
// Invariants (checkInvariants):
//   1. lastCheckpointSeq < nextSeq; every checkpoint the superblock names is durable, the list ascending and at most
//      CHECKPOINTS_KEPT long.
//   2. The superblock state is "writing" while a rewrite is under way; a failed rewrite stays "failed" (and fails
//      settle, after one more try) until a later rewrite lands.
//   3. Retirement before deletion: a checkpoint is deleted only after a durable superblock no longer names it.
//   4. A snapshot's checkpoint is never deleted while the superblock lists the snapshot (SnapshotPins).
//
// Snapshots (docs/architecture.md, "Snapshots"): requestSnapshot asks for a checkpoint at the next seal on a write
// boundary and pins it and every object its map names right when it is built; the superblock rewrite that names that
// checkpoint lists the snapshot too (one compare-and-swap), and the request resolves once that rewrite landed.

import { CHECKPOINT_BUFFERS_IDLE_BYTES_MAX, CHECKPOINTS_KEPT } from "../../constants.ts";
import { assert, InvalidArgumentError } from "../../errors.ts";
import type { ExtentMap } from "../../map/extent_map.ts";
import { encodeDataObjectHeader } from "../../format/data_object.ts";
import { objectName } from "../../format/object_name.ts";
import type { SuperblockObject } from "../../format/superblock_object.ts";
import type { ObjectStore } from "../../backend/object_store.ts";
import type { Batch } from "../batch.ts";
import { buildCheckpoint, checkpointsUnneeded } from "../checkpoint.ts";
import { ObjectKind, type ObjectTable } from "../object_table.ts";
import { ReusedBuffers } from "../reused_buffers.ts";
import type { SuperblockStore } from "../superblock_store.ts";
import { debugChecks } from "../../util/debug_checks.ts";
import type { ObjectPipeline } from "./object_pipeline.ts";
import type { WriteStats } from "./stats.ts";
import { objectsOfMap, withSnapshot, type SnapshotPins } from "../snapshots.ts";

/** Checkpoints asked for (by garbage collection or a takeover) and not yet taken: how many to take back to back. */
type CheckpointRequest = { kind: "none" } | { kind: "requested"; count: number };
type SuperblockState = { kind: "durable" } | { kind: "writing" } | { kind: "failed"; error: unknown };

export interface CheckpointSchedulerOptions {
  volUuid: string;
  cacheUuid: string;
  prefix: string;
  store: ObjectStore;
  map: ExtentMap;
  objects: ObjectTable;
  superblocks: SuperblockStore;
  pipeline: ObjectPipeline;
  log: (line: string) => void;
  stats: WriteStats;
  checkpointIntervalObjects: number;
  checkpointSeq: number;
  /** The log's writer as recovery found it: what a checkpoint records until this run seals an object. */
  writerCacheUuid: string;
  writerCacheSeqLast: number;
  /** What the volume's snapshots pin: never deleted here. */
  snapshotPins: SnapshotPins;
  /** Snapshot creation times (ms since the Unix epoch). */
  nowMs: () => number;
}

interface SnapshotRequest {
  name: string;
  resolve: (seq: number) => void;
  reject: (error: unknown) => void;
}

export class CheckpointScheduler {
  private lastCheckpointSeq: number;
  private request: CheckpointRequest = { kind: "none" };
  /** The newest superblock: durable once superblockState is "durable". */
  private superblock: SuperblockObject;
  private superblockState: SuperblockState = { kind: "durable" };
  /** Rewrites run one at a time, in order; the chain itself never rejects (the state records a failure). */
  private superblockUpdate: Promise<void> = Promise.resolve();
  /** The cache that wrote the newest sealed object and the newest journal record in it: what a checkpoint records. */
  private writerCacheUuid: string;
  private sealedCacheSeqLast: number;
  /** Called after the superblock naming a new set of checkpoints is durable (garbage collection deletes by it). */
  onCheckpointsPersisted: ((checkpoints: number[]) => void) | null = null;
  /** Snapshots asked for and not yet given a checkpoint. */
  private snapshotsWaiting: SnapshotRequest[] = [];
  /** Checkpoint seq -> the snapshots it becomes once durable. */
  private readonly snapshotsAt = new Map<number, SnapshotRequest[]>();
  /**
   * What checkpoints are built in, reused (reused_buffers.ts: fresh memory costs a page fault per 4 KiB while writes
   * wait), and which one each checkpoint not yet durable holds: it goes back once its put is done (onDurable).
   */
  private readonly checkpointBuffers = new ReusedBuffers(CHECKPOINT_BUFFERS_IDLE_BYTES_MAX);
  private readonly checkpointBufferOf = new Map<number, Uint8Array>();

  constructor(private readonly options: CheckpointSchedulerOptions) {
    this.lastCheckpointSeq = options.checkpointSeq;
    this.superblock = options.superblocks.superblock;
    this.writerCacheUuid = options.writerCacheUuid;
    this.sealedCacheSeqLast = options.writerCacheSeqLast;
  }

  /** The checkpoints the superblock names (durable once onCheckpointsPersisted reported them; at open, as read). */
  get persistedCheckpoints(): number[] {
    return this.superblock.checkpoints;
  }

  /** The newest superblock (durable once settled). */
  get currentSuperblock(): SuperblockObject {
    return this.superblock;
  }

  /**
   * Garbage collection (or a takeover) asked for checkpoints: the next seal on a write boundary takes `count` of them
   * back to back (at most CHECKPOINTS_KEPT: a retired object waits for that many, and back to back their puts overlap
   * instead of each waiting for the previous one to be named).
   */
  requestCheckpoint(count = 1): void {
    assert(Number.isInteger(count) && count >= 1 && count <= CHECKPOINTS_KEPT, `checkpoints asked for: ${count}`);
    const asked = this.request.kind === "requested" ? this.request.count : 0;
    this.request = { kind: "requested", count: Math.max(asked, count) };
  }

  /** A batch was sealed: a checkpoint from now on records its cache and newest journal record. */
  noteSealed(batch: Batch): void {
    this.sealedCacheSeqLast = batch.cacheSeqLast;
    this.writerCacheUuid = this.options.cacheUuid;
  }

  /**
   * After a seal: queues a checkpoint if one is due (or forced and something is new since the last) and the log is
   * on a write boundary with no batch open. A due one that cannot be taken now waits for the next such seal.
   */
  afterSeal(force: boolean, onBoundary: boolean): void {
    const pipeline = this.options.pipeline;
    const sinceCheckpoint = pipeline.sequenceNext - 1 - this.lastCheckpointSeq;
    if (force && sinceCheckpoint > 0 && this.request.kind === "none") this.request = { kind: "requested", count: 1 };
    const due = this.request.kind === "requested" || sinceCheckpoint >= this.options.checkpointIntervalObjects;
    if (due && pipeline.open === null && onBoundary) {
      const count = this.request.kind === "requested" ? this.request.count : 1;
      // Back to back in this turn, so all hold the same map: the first builds the map entries, the rest copy them.
      let previous: Uint8Array | null = null;
      for (let taken = 0; taken < count; taken++) previous = this.queueCheckpoint(previous);
    }
    this.afterChange();
  }

  /**
   * A snapshot called `name` at the next checkpoint (taken at the next seal on a write boundary): resolves with its
   * seq once the superblock listing it is durable. The name is checked now and again when it is listed.
   */
  requestSnapshot(name: string): Promise<number> {
    withSnapshot(this.superblock, { name, seq: this.lastCheckpointSeq + 1, createdMs: 0 }); // throws on a bad name
    const waiting = [...this.snapshotsWaiting, ...[...this.snapshotsAt.values()].flat()];
    if (waiting.some((each) => each.name === name)) throw new InvalidArgumentError(`a snapshot called '${name}' is being made already`);
    this.requestCheckpoint();
    return new Promise((resolve, reject) => this.snapshotsWaiting.push({ name, resolve, reject }));
  }

  /** Rewrites the superblock with `change` applied (snapshot deletion), after any rewrite under way. */
  async changeSuperblock(change: (superblock: SuperblockObject) => SuperblockObject, why: string): Promise<void> {
    await this.superblockUpdate;
    this.superblock = change(this.superblock);
    const error = await this.chainRewrite(this.superblock, this.superblock.checkpoints, why);
    if (error !== null) throw error;
  }

  /** Queues a checkpoint (map entries copied from `sameMapAs`, one taken in this turn, if given); returns its bytes. */
  private queueCheckpoint(sameMapAs: Uint8Array | null): Uint8Array {
    this.request = { kind: "none" };
    const snapshots = this.snapshotsWaiting;
    this.snapshotsWaiting = [];
    let built: Uint8Array = new Uint8Array(0);
    const seq = this.options.pipeline.queueObject(ObjectKind.Checkpoint, (seq) => {
      // The map as this checkpoint holds it: pinned before anything may clean or delete what it names.
      if (snapshots.length > 0) this.options.snapshotPins.add(seq, objectsOfMap(this.options.map));
      const input = {
        volUuid: this.options.volUuid,
        seq,
        map: this.options.map,
        objects: this.options.objects,
        checkpoints: this.superblock.checkpoints,
        cacheUuid: this.writerCacheUuid,
        cacheSeqFirst: 0,
        cacheSeqLast: this.sealedCacheSeqLast,
      };
      built = buildCheckpoint(input, sameMapAs, (bytes) => {
        const buffer = this.checkpointBuffers.take(bytes);
        this.checkpointBufferOf.set(seq, buffer);
        return buffer;
      });
      return built;
    });
    if (snapshots.length > 0) this.snapshotsAt.set(seq, snapshots);
    this.lastCheckpointSeq = seq;
    this.options.stats.checkpoints += 1;
    assert(built.byteLength > 0, "a queued checkpoint was built");
    return built;
  }

  /** Queues an empty DATA object that names this cache as the log's writer (see recovery decision table). */
  queueHandover(cacheSeqLast: number): number {
    const { volUuid, cacheUuid, pipeline } = this.options;
    const header = (seq: number) =>
      encodeDataObjectHeader(
        {
          volUuid,
          seq,
          cacheSeq: cacheSeqLast,
          cacheSeqLast,
          cacheUuid,
          objsCleaned: [],
          extents: [],
          trims: [],
          writeContinues: false, // it holds no write: a boundary (handover happens before any write is formed)
        },
        new Uint8Array(0),
      );
    this.sealedCacheSeqLast = cacheSeqLast;
    this.writerCacheUuid = cacheUuid;
    return pipeline.queueObject(ObjectKind.Data, header);
  }

  /** Object seq is durable: a checkpoint gets named by the superblock (it and every object before it are durable). */
  onDurable(seq: number): void {
    const buffer = this.checkpointBufferOf.get(seq);
    if (buffer !== undefined) {
      this.checkpointBufferOf.delete(seq); // its put is done, and checkpoints copy each other's map only in one turn
      this.checkpointBuffers.give(buffer);
    }
    if (this.options.objects.get(seq)?.kind !== ObjectKind.Checkpoint) return;
    const previous = this.superblock.checkpoints;
    const checkpoints = [...previous, seq].slice(-CHECKPOINTS_KEPT);
    const snapshots = this.snapshotsAt.get(seq) ?? [];
    this.snapshotsAt.delete(seq);
    let next: SuperblockObject = { ...this.superblock, checkpoints, nextSeq: this.options.pipeline.sequenceNext };
    const listed: SnapshotRequest[] = [];
    for (const request of snapshots) {
      try {
        next = withSnapshot(next, { name: request.name, seq, createdMs: this.options.nowMs() });
        listed.push(request);
      } catch (error) {
        request.reject(error); // the name was taken meanwhile, or the most snapshots reached
      }
    }
    if (snapshots.length > 0 && listed.length === 0) this.options.snapshotPins.remove(seq);
    this.superblock = next;
    void this.chainRewrite(next, previous, listed.length > 0 ? `snapshot ${listed.map((each) => each.name).join(", ")} (checkpoint ${seq})` : `checkpoint ${seq}`).then((error) => {
      for (const request of listed) {
        if (error === null) request.resolve(seq);
        else request.reject(error);
      }
    });
  }

  /** Chains a rewrite after the one under way; resolves with its error (null: it landed), never rejects. */
  private chainRewrite(next: SuperblockObject, previous: number[], why: string): Promise<unknown> {
    const result = this.superblockUpdate.then(() => this.rewrite(next, previous, why));
    this.superblockUpdate = result.then(() => {});
    return result;
  }

  /** One superblock rewrite, then the deletions it allows. Never rejects: a failure is recorded and logged. */
  private async rewrite(next: SuperblockObject, previous: number[], why: string): Promise<unknown> {
    this.superblockState = { kind: "writing" };
    try {
      await this.options.superblocks.write(next);
    } catch (error) {
      this.superblockState = { kind: "failed", error };
      this.options.log(`error: superblock update for ${why} failed: ${String(error)}`);
      return error;
    }
    this.superblockState = { kind: "durable" };
    await this.deleteUnneeded(previous, next.checkpoints);
    this.onCheckpointsPersisted?.(next.checkpoints);
    this.afterChange();
    return null;
  }

  /**
   * Checkpoints go only once a superblock that no longer needs them is durable (checkpointsUnneeded). One that
   * cannot be deleted now stays in the table and is tried again at the next update (or by GC, fsck --repair).
   */
  private async deleteUnneeded(previous: number[], named: number[]): Promise<void> {
    const { store, prefix, objects, log, superblocks } = this.options;
    for (const old of checkpointsUnneeded(previous, named, objects, this.options.snapshotPins)) {
      assert(!superblocks.superblock.checkpoints.includes(old), `checkpoint ${old} is deleted only once the durable superblock no longer names it`);
      try {
        await store.delete(objectName(prefix, old));
        objects.delete(old);
      } catch (error) {
        log(`error: cannot delete checkpoint ${objectName(prefix, old)}, no longer needed: ${String(error)}`);
      }
    }
  }

  /**
   * Resolves when the superblock is up to date. A rewrite that failed is tried once more (with the newest
   * superblock); if that fails too, the error reaches the caller (settle, close).
   */
  async settled(): Promise<void> {
    await this.superblockUpdate;
    if (this.superblockState.kind !== "failed") return;
    this.chainRewrite(this.superblock, this.options.superblocks.superblock.checkpoints, "a retried rewrite");
    await this.superblockUpdate;
    if (this.superblockState.kind === "failed") throw this.superblockState.error;
  }

  private afterChange(): void {
    if (debugChecks) this.checkInvariants();
  }

  /** Checks invariants 1-2 from the top of this file (3 is asserted where a checkpoint is deleted). */
  checkInvariants(): void {
    const check = (condition: boolean, message: () => string): void => {
      if (!condition) assert(false, `checkpoint scheduler invariant: ${message()}`);
    };
    const { pipeline } = this.options;
    check(this.lastCheckpointSeq < pipeline.sequenceNext, () => `last checkpoint ${this.lastCheckpointSeq} was allocated (next ${pipeline.sequenceNext})`);
    const named = this.superblock.checkpoints;
    check(named.length <= CHECKPOINTS_KEPT, () => `at most ${CHECKPOINTS_KEPT} checkpoints named (${named.length})`);
    named.forEach((seq, index) => check(index === 0 || seq > named[index - 1]!, () => `named checkpoints ascend (${named.join(",")})`));
    const durable = pipeline.durableSeq;
    check(named.every((seq) => seq <= durable), () => `named checkpoints ${named.join(",")} are durable (${durable})`);
  }
}
