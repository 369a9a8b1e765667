// A volume: the backend log plus the cache journal, composed, served as a BlockDevice (docs/architecture.md).
// open() wires the parts: recovery (recovery/: the backend half, then the journal half, decided by the tables in
// recovery/rules.ts), the write path, the read path and the collector; close() shuts down cleanly.

import type { LogFn } from "../util/log.ts";
import { objectName } from "../format/object_name.ts";
import {
  BATCH_BYTES_DEFAULT,
  BATCH_IDLE_MS_DEFAULT,
  CHECKPOINT_INTERVAL_OBJECTS,
  GC_FORCE_CHECKPOINT_MS_DEFAULT,
  GC_INTERVAL_MS_DEFAULT,
  GC_THRESHOLD_DEFAULT,
  PAGE_BYTES,
  SECTOR_BYTES,
} from "../constants.ts";
import { InvalidArgumentError, NotFoundError, assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import type { AlignedPool, CacheDevice } from "../cache/cache_device.ts";
import { Journal } from "../cache/journal.ts";
import { ReadCache } from "../cache/read_cache.ts";
import type { SharedReadCache } from "../cache/shared_read_cache.ts";
import type { CacheSuperblock } from "../format/cache_superblock.ts";
import type { BlockDevice, BlockStatusExtent, WriteListener } from "../nbd/block_device.ts";
import { systemClock, type Clock, type CrashPoint } from "../util/clock.ts";
import { AnySizeIo } from "./any_size.ts";
import { FlushCoordinator } from "./flush_coordinator.ts";
import { GarbageCollector } from "./garbage_collector.ts";
import { ReadPath, type ReadCacheUse } from "./read_path.ts";
import { recoverBackend, type BackendState } from "./recovery/backend.ts";
import { planJournal, readCacheSuperblock, refuseForeignCache, replayJournal, settleUnfinishedTail, type JournalPlan } from "./recovery/journal.ts";
import { beginLog, LocalFence, type VolumeOwner } from "./ownership.ts";
import type { Fence } from "./lease.ts";
import { SuperblockStore } from "./superblock_store.ts";
import { clipRuns, mapBlockStatus } from "./block_status.ts";
import type { SeqRange } from "../format/superblock_object.ts";
import { WritePath } from "./write_path.ts";
import { WriteLoadMeter } from "./write/write_load.ts";
import { ObjectKind } from "./object_table.ts";
import { SnapshotPins, findSnapshot, listSnapshots, liveCloneNames, readSnapshotPins, withCloneRef, withoutCloneRef, withoutSnapshot, type SnapshotInfo } from "./snapshots.ts";

export interface VolumeOptions {
  store: ObjectStore;
  prefix: string;
  cache: CacheDevice;
  pool: AlignedPool;
  readOnly?: boolean;
  /**
   * Keep blocks read from the backend in the cache device's read-cache region. Pays off with a remote backend; with
   * a local file backend the page cache serves those reads faster (measured: 4 KiB random reads 33.6k IOPS without,
   * 13.7k with, bench/RESULTS.md).
   */
  readCache?: boolean;
  /**
   * A process's shared read-cache device (cache/shared_read_cache.ts), used instead of the cache device's own region;
   * the caller opens it before and closes it after every volume that uses it.
   */
  sharedReadCache?: SharedReadCache;
  batchBytes?: number;
  batchIdleMs?: number;
  checkpointIntervalObjects?: number;
  /** Objects sealed and not yet durable before writes wait (default SEALED_OBJECTS_AHEAD_MAX; tests lower it). */
  sealedObjectsAheadMax?: number;
  /** The longest a client write waits for space (default SPACE_WAIT_MS_MAX; tests raise it). */
  spaceWaitMsMax?: number;
  /** Garbage collection (default on; never on a read-only volume). */
  gc?: boolean;
  /** Clean objects whose live share is below this (default GC_THRESHOLD_DEFAULT; 0: only delete dead objects). */
  gcThreshold?: number;
  gcIntervalMs?: number;
  gcForceCheckpointMs?: number;
  clock?: Clock;
  /** Simulations only: named points in recovery and garbage collection where a crash may stop the world (clock.ts). */
  crashPoint?: CrashPoint;
  /** Where the volume logs (plain lines; a few carry fields for json logs: util/log.ts). */
  log?: LogFn;
  /** Recovery's progress, as it goes (serve shows it). */
  progress?: RecoveryProgress;
  /**
   * Who owns the volume (ownership.ts): its lease as a fence, its epoch, whether the previous owner left cleanly.
   * Without one (tests, tools), the volume runs on a fence that only closes when told to, keeps the superblock's
   * epoch and assumes the previous owner left cleanly.
   */
  owner?: VolumeOwner;
}

export interface RecoveryReport {
  checkpointSeq: number;
  objectsRolledForward: number;
  objectsBeyondGapDeleted: number;
  /** The first seq this ownership writes, and the seqs it skipped (null: it continues right after the log). */
  logStartSeq: number;
  skippedRange: SeqRange | null;
  journalCase: string;
  journalRecordsReplayed: number;
  journalStop: string;
  notes: string[];
}

/** Recovery's progress: objects rolled forward (total unknown until the log ends), journal records replayed. */
export type RecoveryProgress = (what: "objects rolled forward" | "journal records walked", done: number, total: number | null) => void;

function counted(count: number, one: string, many: string): string {
  return `${count} ${count === 1 ? one : many}`;
}

/**
 * What recovery did, into the log in plain words: the backend half's notes, the objects rolled forward and the records
 * replayed. The journal case (docs/architecture.md, "Recovery") and where the walk stopped are debug lines.
 */
function logRecovery(log: LogFn, prefix: string, state: BackendState, plan: JournalPlan, replayed: number): void {
  for (const note of state.notes) log(`recovery: ${note}`);
  const from = state.checkpointSeq > 0 ? `after checkpoint ${objectName(prefix, state.checkpointSeq)}` : "from the start of the log";
  const discarded = plan.replayAfter === null ? "; the journal was discarded: it does not continue the backend log" : "";
  const fields = { objectsRolledForward: state.rolledForward, checkpointSeq: state.checkpointSeq, journalRecordsReplayed: replayed, journalDiscarded: plan.replayAfter === null };
  log(`recovery: rolled forward ${counted(state.rolledForward, "object", "objects")} ${from}; replayed ${counted(replayed, "journal record", "journal records")}${discarded}`, fields);
  const journalEnd = replayed === 0 && plan.walkStopReason === "no valid header" ? "the journal holds no further record" : `walk stopped: ${plan.journalStop}`;
  log(
    `debug: recovery: journal case ${plan.journalCase}, ${replayed} record(s) replayed${plan.replayAfter === null ? " (journal discarded: it does not continue the backend log)" : ""}; ${journalEnd}`,
    { journalCase: plan.journalCase },
  );
}

export class Volume implements BlockDevice {
  readonly sizeBytes: number;
  /** Read-only towards clients: recovery still completes (replayed writes still reach the backend). */
  readonly readOnly: boolean;
  /** Any offset and length (any_size.ts does the read-modify-write of partial sectors). */
  readonly blockSizeMinBytes = 1;
  readonly blockSizePreferredBytes = PAGE_BYTES;
  private closed = false;
  private readonly anySize: AnySizeIo;
  /** What the volume's snapshots pin (set once by open). */
  private snapshotPins = new SnapshotPins();

  private constructor(
    readonly volUuid: string,
    readonly cacheUuid: string,
    private readonly options: VolumeOptions,
    private readonly state: BackendState,
    private readonly journal: Journal,
    private readonly writes: WritePath,
    private readonly reads: ReadPath,
    private readonly flusher: FlushCoordinator,
    readonly recovery: RecoveryReport,
    private readonly gc: GarbageCollector | null,
    /** Closed when this process no longer owns the volume: every request fails from then on. */
    readonly fence: Fence,
  ) {
    this.sizeBytes = state.superblock.volSectors * SECTOR_BYTES;
    this.readOnly = options.readOnly ?? false;
    this.anySize = new AnySizeIo({
      readSectors: (lba, sectors) => reads.read(lba, sectors),
      writeSectors: (lba, sectors, data, fua) => writes.write(lba, sectors, data, fua),
      writeSectorsThen: (lba, sectors, data, fua, listener) => writes.writeThen(lba, sectors, data, fua, listener),
    });
    fence.onFenced(() => void this.gc?.stop());
  }

  static async open(options: VolumeOptions): Promise<Volume> {
    const log = options.log ?? (() => {});
    const gcThreshold = options.gcThreshold ?? GC_THRESHOLD_DEFAULT;
    if (!(gcThreshold >= 0 && gcThreshold < 1)) throw new InvalidArgumentError(`GC threshold ${gcThreshold} is not in [0, 1)`);
    const fence = options.owner?.fence ?? new LocalFence();
    const superblocks = options.owner?.superblocks ?? (await SuperblockStore.read(options.store, options.prefix, fence));
    const state = await recoverBackend(options.store, options.prefix, {
      verifyData: true,
      superblock: superblocks.decoded,
      onRolledForward: (objects) => options.progress?.("objects rolled forward", objects, null),
    });
    const snapshotPins = await readSnapshotPins(options.store, options.prefix, state.superblock);
    const superblock = await readCacheSuperblock(options.cache, options.pool);
    refuseForeignCache(options.cache, superblock, state.superblock.volUuid);
    // Where the log ends depends on the journal (an unfinished tail it continues is part of the log), and the new
    // log start (which skips, and deletes, everything above the log end) is planned from that end: decided first, so
    // that no object the map points at is ever skipped.
    const logEndsInsideWrite = settleUnfinishedTail(options.prefix, state, superblock);
    const owner = {
      epoch: options.owner?.epoch ?? superblocks.superblock.ownerEpoch,
      previousClean: options.owner?.previousClean ?? true,
      logStarted: options.owner?.logStarted,
    };
    await options.crashPoint?.("recovery.backend-read");
    const logStart = await beginLog(state.store, state, superblocks, owner, log, options.crashPoint);
    const plan = await planJournal(options.cache, options.pool, superblock, state);
    // A new generation, durable before any new record is written (see journal.ts invariants).
    const journal = new Journal(options.cache, options.pool, superblock, plan.start);
    await journal.writeSuperblock({ replayOffsetBytes: journal.physicalOffset(plan.start.tail.position), replaySeq: plan.start.tail.seq });
    await options.crashPoint?.("recovery.journal-superblock");
    const parts = Volume.wireWritePath(options, state, superblock, journal, { superblocks, fence, nextSeq: logStart.nextSeq, logEndsInsideWrite, snapshotPins });
    const { writes, readJournal } = parts;

    // A takeover checkpoint right at the new log start: recovery from it never crosses the range just skipped, and a
    // v1 reader, which knows nothing of skipped ranges, starts above it too (docs/architecture.md). When the log ends
    // inside a write (a kept unfinished tail), it waits for the replay to finish that write (sealOpen).
    if (logStart.added !== null) await writes.sealOpen(true);
    const replayed = await replayJournal(options.cache, options.pool, superblock, plan, journal, writes, options.crashPoint, (walked, total) =>
      options.progress?.("journal records walked", walked, total),
    );
    writes.endReplay();
    await options.crashPoint?.("recovery.replayed");
    if (plan.needHandover) await writes.writeHandover(journal.sequenceNext - 1);
    const reads = new ReadPath(state.store, options.prefix, state.map, state.objects, writes.unflushed, {
      readJournal,
      whenWritten: (seq) => journal.whenWritten(seq),
      pool: options.pool,
    }, await Volume.openReadCache(options, state, superblock, log));
    parts.adopter.reads = reads;
    const recovery: RecoveryReport = {
      checkpointSeq: state.checkpointSeq,
      objectsRolledForward: state.rolledForward,
      objectsBeyondGapDeleted: state.beyondGap.length,
      logStartSeq: logStart.nextSeq,
      skippedRange: logStart.added,
      journalCase: plan.journalCase,
      journalRecordsReplayed: replayed,
      journalStop: plan.journalStop,
      notes: state.notes,
    };
    logRecovery(log, options.prefix, state, plan, replayed);
    const gc = Volume.startGc(options, state, writes, reads, gcThreshold, snapshotPins);
    const volume = new Volume(state.superblock.volUuid, superblock.cacheUuid, options, state, journal, writes, reads, parts.flusher, recovery, gc, fence);
    volume.snapshotPins = snapshotPins;
    return volume;
  }

  /** The write path over the recovered map and object table, with the restarted journal. */
  private static wireWritePath(
    options: VolumeOptions,
    state: BackendState,
    superblock: CacheSuperblock,
    journal: Journal,
    start: { superblocks: SuperblockStore; fence: Fence; nextSeq: number; logEndsInsideWrite: boolean; snapshotPins: SnapshotPins },
  ) {
    const flusher = new FlushCoordinator(options.cache);
    const readJournal = (offset: number, into: Uint8Array) => options.cache.read(offset, into);
    // The read path exists only after the replay: until then durable batches are not adopted.
    const adopter: { reads: ReadPath | null } = { reads: null };
    const clock = options.clock ?? systemClock;
    const load = new WriteLoadMeter();
    const writes = new WritePath({
      onBatchDurable: (batch) => adopter.reads?.adoptDurableBatch(batch, load.look(clock.nowMs(), writes.stats.writeBytes, writes.clientWritesInFlight)),
      readJournal,
      pool: options.pool,
      volUuid: state.superblock.volUuid,
      cacheUuid: superblock.cacheUuid,
      prefix: options.prefix,
      store: state.store,
      map: state.map,
      objects: state.objects,
      journal,
      flusher,
      clock,
      log: options.log ?? (() => {}),
      superblocks: start.superblocks,
      fence: start.fence,
      batchBytes: options.batchBytes ?? BATCH_BYTES_DEFAULT,
      batchIdleMs: options.batchIdleMs ?? BATCH_IDLE_MS_DEFAULT,
      checkpointIntervalObjects: options.checkpointIntervalObjects ?? CHECKPOINT_INTERVAL_OBJECTS,
      nextSeq: start.nextSeq,
      checkpointSeq: state.checkpointSeq,
      writerCacheUuid: state.writerCacheUuid,
      writerCacheSeqLast: state.writerCacheSeqLast,
      logEndsInsideWrite: start.logEndsInsideWrite,
      sealedObjectsAheadMax: options.sealedObjectsAheadMax,
      spaceWaitMsMax: options.spaceWaitMsMax,
      snapshotPins: start.snapshotPins,
    });
    return { writes, flusher, readJournal, adopter };
  }

  /**
   * The read cache the volume reads through: the process's shared device if given, else, if asked, the cache device's
   * own region with its persisted index loaded (entries name immutable object bytes: nothing to check against the
   * map). Object seqs resolve to the log holding them, a base's for what a clone reads from it.
   */
  private static async openReadCache(options: VolumeOptions, state: BackendState, superblock: CacheSuperblock, log: LogFn): Promise<ReadCacheUse | null> {
    let cache: ReadCache;
    if (options.sharedReadCache !== undefined) {
      const clash = options.sharedReadCache.claimLogs(state.chain.levels.map((level) => ({ uuid: level.volUuid, place: `${state.store.description} ${level.prefix}` })));
      if (clash !== null) {
        log(`warning: read cache: not using shared device ${options.sharedReadCache.device.path}: ${clash} (a copy of a volume keeps its uuid)`);
        return null;
      }
      cache = options.sharedReadCache.cache;
      log(`read cache: shared device ${options.sharedReadCache.device.path}, ${cache.cachedBlocks} blocks held`);
    } else if (options.readCache === true) {
      cache = new ReadCache(options.cache, options.pool, superblock.readCacheStartBytes, superblock.readCacheBytes, { cacheUuid: superblock.cacheUuid, log: options.log, clock: options.clock });
      const warm = await cache.load();
      const old = warm.oldFormatPages > 0 ? ` (${warm.oldFormatPages} index page(s) of an older format dropped)` : "";
      log(`read cache: ${warm.kept} blocks kept from the persisted index, ${warm.dropped} dropped${old}`);
    } else {
      return null;
    }
    const levels = state.chain.levels.map((level) => ({ baseLastSeq: level.baseLastSeq, log: cache.logId(level.volUuid) }));
    const logOf = (seq: number): number => {
      let index = 0;
      while (index + 1 < levels.length && seq <= levels[index]!.baseLastSeq) index += 1;
      return levels[index]!.log;
    };
    return { cache, logOf };
  }

  /** The garbage collector, started (null: off, or a read-only volume). */
  private static startGc(options: VolumeOptions, state: BackendState, writes: WritePath, reads: ReadPath, threshold: number, snapshotPins: SnapshotPins): GarbageCollector | null {
    if (!(options.gc ?? true) || options.readOnly) return null;
    const gc = new GarbageCollector({
      store: state.store,
      prefix: options.prefix,
      volUuid: state.superblock.volUuid,
      map: state.map,
      objects: state.objects,
      writer: writes,
      isPinned: (obj) => reads.isPinned(obj),
      snapshotPins,
      baseLastSeq: state.chain.floor,
      clock: options.clock ?? systemClock,
      log: options.log ?? (() => {}),
      threshold,
      intervalMs: options.gcIntervalMs ?? GC_INTERVAL_MS_DEFAULT,
      batchBytes: options.batchBytes ?? BATCH_BYTES_DEFAULT,
      forceCheckpointMs: options.gcForceCheckpointMs ?? GC_FORCE_CHECKPOINT_MS_DEFAULT,
      checkpoints: writes.persistedCheckpoints,
      crashPoint: options.crashPoint,
    });
    writes.onCheckpointsPersisted = (checkpoints) => gc.noteCheckpoints(checkpoints);
    gc.start();
    return gc;
  }

  /** Any offset and length inside the volume: any_size.ts rounds them out to sectors. */
  private check(offset: number, length: number, what: string): void {
    if (this.closed) throw new InvalidArgumentError(`${what}: volume is closed`);
    this.fence.check(); // a fenced owner's view may be stale: it answers nothing
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0 || offset < 0 || offset + length > this.sizeBytes) {
      throw new InvalidArgumentError(`${what} at ${offset}+${length}: outside the volume (${this.sizeBytes} bytes)`);
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.check(offset, length, "read");
    return this.anySize.read(offset, length);
  }

  async write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    this.check(offset, data.byteLength, "write");
    await this.anySize.write(offset, data, fua);
  }

  /** write() without a promise (BlockDevice.writeThen): throws at once on bad arguments, else tells `listener` once. */
  writeThen(offset: number, data: Uint8Array, fua: boolean, listener: WriteListener): void {
    this.check(offset, data.byteLength, "write");
    this.anySize.writeThen(offset, data, fua, listener);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new InvalidArgumentError("flush: volume is closed");
    this.fence.check();
    // Acknowledged writes are on the device already (their records completed); make them durable.
    await this.flusher.sync();
  }

  /** Whole sectors are unmapped; the parts of partial sectors it covers are written as zeroes. */
  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.check(offset, length, "trim");
    await this.anySize.zero(offset, length, fua);
  }

  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    // Unmapped space reads as zeroes, so zeroing is a trim: it is journaled and replayed exactly like one.
    this.check(offset, length, "write zeroes");
    await this.anySize.zero(offset, length, fua);
  }

  /** Runs over the sectors the range touches, cut to the range (a partial sector reports its sector's state). */
  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    this.check(offset, length, "block status");
    const lba = Math.floor(offset / SECTOR_BYTES);
    const sectors = Math.ceil((offset + length) / SECTOR_BYTES) - lba;
    const cut = clipRuns(mapBlockStatus(this.state.map, lba, sectors), offset - lba * SECTOR_BYTES, length);
    assert(cut.reduce((sum, run) => sum + run.length, 0) === length, "block status covers the request");
    return cut;
  }

  async cache(offset: number, length: number): Promise<void> {
    this.check(offset, length, "cache");
  }

  /** The snapshots the superblock lists (durable ones, and one being made once its rewrite is under way). */
  snapshots(): SnapshotInfo[] {
    return listSnapshots(this.writes.superblock);
  }

  /**
   * Makes snapshot `name` while serving (docs/architecture.md, "Snapshots"): every write acknowledged before the call
   * is in it; resolves with its seq once the superblock listing it is durable.
   */
  async createSnapshot(name: string): Promise<number> {
    if (this.closed || this.readOnly) throw new InvalidArgumentError(`snapshot: volume is ${this.closed ? "closed" : "read-only"}`);
    this.fence.check();
    return await this.writes.createSnapshot(name);
  }

  /**
   * Records clone `clone` of snapshot `snapshot` while serving (`lsvd clone` of a served base, over the admin socket):
   * the superblock rewrite that lists it lands in order with the checkpoint rewrites (clone_create.ts has the rule
   * offline). A registration under the same clone name is replaced: the caller holds the clone's lease and no clone
   * superblock exists under that name yet, so it is stale.
   */
  async registerClone(snapshot: { seq: number; name: string }, clone: { prefix: string; volUuid: string }): Promise<void> {
    if (this.closed || this.readOnly) throw new InvalidArgumentError(`clone: volume is ${this.closed ? "closed" : "read-only"}`);
    this.fence.check();
    if (!this.writes.superblock.snapshots.some((snap) => snap.seq === snapshot.seq && snap.name === snapshot.name)) throw new NotFoundError(`Volume ${this.options.prefix} no longer has snapshot '${snapshot.name}'`);
    await this.writes.changeSuperblock(
      (current) => withCloneRef(withoutCloneRef(current, clone.prefix), { snapSeq: snapshot.seq, cloneUuid: clone.volUuid, name: clone.prefix }),
      `registering clone ${clone.prefix}`,
    );
  }

  /**
   * Deletes snapshot `name` while serving: refused while live clones are registered on it. Once the superblock no
   * longer lists it, what it alone pinned is garbage collection's again, and its checkpoint is deleted by the write
   * path once it lies below the oldest checkpoint the superblock names.
   */
  async deleteSnapshot(name: string): Promise<void> {
    if (this.closed || this.readOnly) throw new InvalidArgumentError(`snapshot: volume is ${this.closed ? "closed" : "read-only"}`);
    this.fence.check();
    const { store, prefix } = this.options;
    const snap = findSnapshot(this.writes.superblock, prefix, name);
    const live = await liveCloneNames(store, this.writes.superblock, snap.seq);
    await this.writes.changeSuperblock((current) => withoutSnapshot(current, prefix, name, live), `deleting snapshot ${name}`);
    if (this.writes.superblock.snapshots.some((each) => each.seq === snap.seq)) return; // another name for the same checkpoint
    this.snapshotPins.remove(snap.seq);
    if (this.state.objects.get(snap.seq) === undefined) {
      this.state.objects.add(snap.seq, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    }
  }

  /** Runs a garbage collection round now (tests; `lsvd serve` runs them on a timer). */
  async collectGarbage(): Promise<void> {
    await this.gc?.runRound();
  }

  /**
   * `lsvd gc`: rounds until one changes nothing, with every object durable between rounds (open the volume with
   * gcForceCheckpointMs 0 so that retired objects get their checkpoints at once). Returns the rounds run.
   */
  async collectGarbageUntilQuiet(onRound?: (round: number) => void): Promise<number> {
    const gc = this.gc;
    if (!gc) throw new InvalidArgumentError("garbage collection is off for this volume (read-only, or opened with gc: false)");
    for (let round = 1; ; round++) {
      await this.writes.settle();
      const before = gc.progressKey;
      await gc.runRound(true); // drain: every reclaimable byte, not a paced share
      await this.writes.settle();
      onRound?.(round);
      if (gc.progressKey === before || this.writes.failed) return round;
    }
  }

  /** Counters for logs and benchmarks. */
  stats() {
    return {
      ...this.writes.stats,
      puts: this.writes.objectWriter.puts,
      /** Every object up to this seq is durable in the backend (the log's durable prefix). */
      durableSeq: this.writes.durableSeq,
      putBytes: this.writes.objectWriter.putBytes,
      /** Objects whose data was read back from the journal before their put (journal-only batches). */
      objectsReadBack: this.writes.objectsReadBack,
      backendReads: this.reads.backendReads,
      readCache: this.reads.readCacheStats,
      backendReadBytes: this.reads.backendReadBytes,
      syncs: this.flusher.syncs,
      extents: this.state.map.extentCount,
      mapBytes: this.state.map.bytesUsed(),
      objectsKnown: this.state.objects.count,
      journalUsedBytes: this.journal.usedBytes,
      journalBytes: this.journal.regionBytes,
      journalWritesInFlight: this.journal.inFlight,
      gc: this.gc ? { ...this.gc.stats, retiredWaiting: this.gc.retiredCount } : null,
      /** Requests not whole sectors: reads cut from sectors, writes/trims/zeroings read-modify-written, and waits. */
      anySize: { unalignedReads: this.anySize.unalignedReads, unalignedWrites: this.anySize.unalignedWrites, waits: this.anySize.order.waits },
    };
  }

  /**
   * Objects not yet durable in the backend (sealed, being put, or the open batch) and their size as far as known (a
   * checkpoint's is not recorded): what a clean close still waits for. `lsvd serve` reports it while it waits.
   */
  backendBacklog(): { objects: number; bytes: number } {
    let objects = 0;
    let bytes = 0;
    for (let seq = this.writes.durableSeq + 1; seq < this.writes.sequenceNext; seq++) {
      const info = this.state.objects.get(seq);
      if (info === undefined) continue;
      objects += 1;
      bytes += (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
    }
    return { objects, bytes };
  }

  /**
   * The objects this volume knows in the backend (data and checkpoints), their bytes, and of their data the part still
   * live (the map points at it): what garbage collection works on. O(objects): for status and metrics scrapes.
   */
  backendUsage(): { objects: number; bytes: number; dataBytes: number; liveBytes: number } {
    let objects = 0;
    let sectors = 0;
    let dataSectors = 0;
    let liveSectors = 0;
    this.state.objects.forEach((_seq, info) => {
      objects += 1;
      sectors += info.hdrSectors + info.dataSectors;
      dataSectors += info.dataSectors;
      liveSectors += info.liveSectors;
    });
    return { objects, bytes: sectors * SECTOR_BYTES, dataBytes: dataSectors * SECTOR_BYTES, liveBytes: liveSectors * SECTOR_BYTES };
  }

  /** Clean shutdown: drain writes, put everything to the backend with a checkpoint, empty the journal. */
  async close(): Promise<void> {
    if (this.closed) return;
    // The collector goes first: its copies are writes, and the drain below must see the last of them.
    await this.gc?.stop();
    this.fence.check(); // a fenced owner puts nothing more: its close cannot be clean
    await this.writes.closeClean();
    this.closed = true;
    this.journal.release(Number.MAX_SAFE_INTEGER);
    await this.journal.persistTail();
    await this.options.cache.fdatasync();
    if (this.options.sharedReadCache === undefined) await this.reads.readCacheUse?.cache.close();
  }

  /** For tests: stop without flushing anything further, as a crash would (the process keeps running). */
  abandon(): void {
    this.closed = true;
    void this.gc?.stop();
    this.writes.objectWriter.abandon();
  }
}
