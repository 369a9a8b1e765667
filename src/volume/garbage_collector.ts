// Garbage collection (docs/architecture.md, "Garbage collection"): copies the live data of mostly-dead DATA objects
// into new objects through the write path, then deletes objects that hold nothing live once no recovery can need
// them. The paper's greedy cleaner: the least-live objects go first.
//
// Rounds never overlap. They come every intervalMs when garbage comes slowly and sooner when it comes fast (pacing,
// volume/gc_pace.ts: the budget of a round is counted in garbage bytes, not in batches), and at once when clients
// displaced GC_ROUND_EARLY_SHARE of the live data since the last one began. The collector is also the space gate's
// source (write/space_gate.ts): it counts the bytes it may free, and rechecks the gate after each settle and delete.
// One round:
// 1. Settle the accounts (volume/gc_ledger.ts: kept up to date from what changed in the object table, not a scan of
//    it): retire durable DATA objects with no live sector left (overwritten or trimmed, or cleaned by an earlier
//    round); measure the garbage clients made since the previous round, the garbage in the backend, the live data,
//    and the candidates: durable DATA objects whose live share is below `threshold`. The pacing turns that into this
//    round's budget.
// 2. Delete retired objects that are now safe to delete (below), oldest first, as many as the budget allows, a few
//    at a time. The same pass also runs between rounds, whenever the durable superblock names new checkpoints
//    (noteCheckpoints): a round can spend a while cleaning, and what became deletable meanwhile should not wait for
//    it. Passes never overlap (one chain), and at most one waits to start.
// 3. Clean victims, least live first, until their dead bytes reach the budget (their whole size bounded too), a few
//    at a time: read each whole and check its CRCs, and queue its extents as copies (WritePath.copyExtents), which
//    write only what the map still points at in the victim when their record forms. Once a victim's copies are
//    journaled it holds no live sector, and is retired.
// 4. Ask for checkpoints if retirees wait and one is due (gcCheckpointDue), CHECKPOINTS_KEPT back to back when what
//    waits pays for them (gcCheckpointBurst); again whenever the last one asked for is named.
//
// Why copies queued at once never write a sector twice (WritePath.copyExtents relies on it): a copy keeps only the
// sectors the map points at in its victim when its record forms, and each sector has one place in the map; once a
// copy's record forms, the map points that sector at the new object, so any other copy of it finds it superseded.
//
// When a retired object may be deleted. Retiring object V when the log's next seq is R: every checkpoint that the
// durable superblock names has seq >= R (so V < R <= each of them), and no read in flight will fetch from V
// (ReadPath pins). Such a checkpoint was built after every live sector of V had moved, so its map does not point
// into V; and recovery from any of them rolls forward from above V, so V's seq is never needed to continue the log.
// Requiring all named checkpoints, not only the newest, keeps every fallback recovery (and fsck's check of each
// named checkpoint) free of references to deleted objects.
// Objects deleted leave holes below the checkpoints; fsck reports those as notes, not problems.
// CKPT objects that earlier runs left behind when killed are deleted by the same rule, below the oldest named
// checkpoint (leftover_checkpoints.ts), a bounded number per round.
// Snapshots (snapshots.ts): an object a snapshot's map names is neither cleaned nor retired nor deleted while the
// snapshot is listed (its live data for the head may still be copied by no one: the snapshot reads the object
// itself); a snapshot's checkpoint is never a left-over. Once the last snapshot naming an object goes, the next settle
// retires it if the head holds nothing live in it, or makes it a candidate.

import {
  GC_CLEAN_SLICE_EXTENTS,
  GC_DELETES_PER_ROUND_MIN,
  GC_DELETES_INFLIGHT_MAX,
  GC_LIVE_BYTES_FLOOR,
  GC_LOG_INTERVAL_MS,
  GC_READ_BUFFERS_IDLE_MS,
  GC_READ_INFLIGHT_BYTES_MAX,
  GC_ROUND_EARLY_SHARE,
  GC_ROUND_SPEEDUP_MAX,
  GC_VICTIM_RETRY_MS,
  GC_VICTIMS_INFLIGHT_MAX,
  SECTOR_BYTES,
} from "../constants.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { CKPT_MAP_ENTRY_BYTES } from "../format/checkpoint_object.ts";
import { assert, CorruptionError } from "../errors.ts";
import { decodeDataObjectHeader, verifyDataArea, type DataExtent } from "../format/data_object.ts";
import { objectName } from "../format/object_name.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { Clock, CrashPoint, TimerHandle } from "../util/clock.ts";
import type { Candidate } from "./gc_candidates.ts";
import { REUSED_BUFFER_GRAIN_BYTES, ReusedBuffers } from "./reused_buffers.ts";
import { GcLedger } from "./gc_ledger.ts";
import { LeftoverCheckpoints } from "./leftover_checkpoints.ts";
import { gcCheckpointBurst, gcCheckpointDue, gcNextRoundDelayMs, gcRoundBudget, spaceOverHighWater, type GcBudget } from "./gc_pace.ts";
import type { ObjectInfo, ObjectTable } from "./object_table.ts";
import type { SnapshotPins } from "./snapshots.ts";
import type { CopySource } from "./write/record_former.ts";
import type { SpaceSource } from "./write/space_gate.ts";

/** What the collector needs of the write path. */
export interface GcWriter {
  copyExtents(source: CopySource, extents: readonly DataExtent[], firstOffset: number): Promise<void>;
  readonly durableSeq: number;
  readonly sequenceNext: number;
  readonly failed: unknown;
  /** Sectors GC copies wrote (each displaced the same sector of a victim: garbage the collector made, not clients). */
  readonly stats: { readonly gcCopiedSectors: number };
  /** `count` checkpoints back to back, now if no write is being formed, else at the next seal. */
  requestCheckpoint(count: number): void;
  /** Where client writes wait while the backend is over its space high-water mark: the collector is its source. */
  readonly spaceGate: { attach(source: SpaceSource | null): void; recheck(): void };
}

export interface GarbageCollectorOptions {
  store: ObjectStore;
  prefix: string;
  volUuid: string;
  map: ExtentMap;
  objects: ObjectTable;
  writer: GcWriter;
  isPinned: (obj: number) => boolean;
  /** What the volume's snapshots pin: never cleaned, retired or deleted. */
  snapshotPins: SnapshotPins;
  /** A clone's base's last_seq (0: not a clone): objects at or below it are its bases' and never candidates. */
  baseLastSeq: number;
  clock: Clock;
  log: (line: string) => void;
  /** Objects whose live share is below this are cleaned; 0 turns cleaning off (dead objects are still deleted). */
  threshold: number;
  /** Time between rounds when garbage comes slowly (sooner when it comes fast: gcNextRoundDelayMs). */
  intervalMs: number;
  /** The volume's batch size: no single copy is larger (a copy must fit one batch). */
  batchBytes: number;
  /** How long retirees may wait for a checkpoint before the collector asks for one. */
  forceCheckpointMs: number;
  /** The checkpoints the durable superblock names at open. */
  checkpoints: number[];
  /** Simulations only: where a crash may stop the collector (clock.ts). */
  crashPoint?: CrashPoint;
}

/** Counters at the start of a round: the rate of garbage is measured between two of them. */
interface Mark {
  atMs: number;
  displacedSectors: number;
  copiedSectors: number;
  sequenceNext: number;
}

export class GarbageCollector implements SpaceSource {
  /** Retired object -> the log's next seq when it was retired. */
  private readonly retired = new Map<number, number>();
  /** Victims whose cleaning failed -> when to try again (at most one entry per object). */
  private readonly skipUntil = new Map<number, number>();
  /** The oldest and the newest checkpoint the durable superblock names (0: none, then nothing is deleted). */
  private checkpointMin = 0;
  private checkpointNamedMax = 0;
  private lastCheckpointMs: number;
  /** When a checkpoint was asked for that the superblock does not name yet (null: none asked for). */
  private checkpointRequestedMs: number | null = null;
  private mark: Mark;
  /** Live bytes at the last settle (checkpoint requests between rounds use it). */
  private liveBytes = 0;
  private nextDelayMs: number;
  private deletedSinceLog = 0;
  private lastLogMs: number;
  private timer: TimerHandle | null = null;
  private round: Promise<void> | null = null;
  /** Delete passes run one after another (each takes the objects ready when it starts); the chain never rejects. */
  private deletes: Promise<void> = Promise.resolve();
  /** Whether a pass asked for by a checkpoint waits to start (at most one waits). */
  private deletePassWaiting = false;
  /** The newest round's delete budget: what a pass between rounds may delete. */
  private deletesMax = GC_DELETES_PER_ROUND_MIN;
  private stopped = false;
  /**
   * The accounts: live data, garbage, candidates, and what the space gate measures (bytes of the durable DATA objects
   * this collector may clean or delete, retired ones included; snapshot-pinned and base objects left out), settled
   * every round and kept up between rounds: objects that became durable since are added, deletes subtracted.
   */
  private readonly ledger: GcLedger;
  /** Dead bytes in the candidates at the last settle: something cleaning can free. */
  private reclaimableAtScan = 0;
  /** spaceState's answer, one object reused (the gate asks for every client write), and what it was computed from. */
  private readonly spaceView = { overHighWater: false, reclaimable: false };
  private spaceViewOf = { spaceBytes: -1, liveBytes: -1 };
  private readonly leftovers: LeftoverCheckpoints;
  /** What victims are read into: as many idle as the round reads at once (one victim may exceed the bound alone). */
  private readonly victimBuffers: ReusedBuffers;
  /** When a round last chose a victim (or the collector started): the read buffers go GC_READ_BUFFERS_IDLE_MS after. */
  private lastVictimMs: number;
  stats = { rounds: 0, objectsCleaned: 0, objectsDeleted: 0, leftoverCheckpointsDeleted: 0, bytesRead: 0, reclaimedBytes: 0, forcedCheckpoints: 0, errors: 0 };

  constructor(private readonly options: GarbageCollectorOptions) {
    const { clock, checkpoints, intervalMs } = options;
    this.checkpointMin = checkpoints.length > 0 ? Math.min(...checkpoints) : 0;
    this.checkpointNamedMax = checkpoints.length > 0 ? Math.max(...checkpoints) : 0;
    this.lastCheckpointMs = clock.nowMs();
    this.lastLogMs = clock.nowMs();
    this.lastVictimMs = clock.nowMs();
    this.mark = this.takeMark();
    this.nextDelayMs = intervalMs;
    this.victimBuffers = new ReusedBuffers(GC_READ_INFLIGHT_BYTES_MAX + options.batchBytes + REUSED_BUFFER_GRAIN_BYTES);
    const { store, prefix, volUuid, objects, log } = options;
    this.leftovers = new LeftoverCheckpoints({ store, prefix, volUuid, objects, log, snapshotPins: options.snapshotPins });
    this.ledger = new GcLedger({
      objects,
      threshold: options.threshold,
      freeable: (seq) => this.freeable(seq),
      isRetired: (seq) => this.retired.has(seq),
      retire: (seq) => this.retire(seq),
      pinsVersion: () => options.snapshotPins.version,
    });
  }

  /** The durable superblock now names these checkpoints (WritePath.onCheckpointsPersisted). */
  noteCheckpoints(checkpoints: number[]): void {
    this.checkpointMin = checkpoints.length > 0 ? Math.min(...checkpoints) : 0;
    this.checkpointNamedMax = checkpoints.length > 0 ? Math.max(...checkpoints) : 0;
    this.lastCheckpointMs = this.options.clock.nowMs();
    this.checkpointRequestedMs = null;
    // Retirees this superblock frees go now, not at the next round (a round may be busy cleaning for a while).
    this.deleteBetweenRounds();
    // Retirees need CHECKPOINTS_KEPT checkpoints newer than they are: ask for the next one now, not a round later.
    this.maybeForceCheckpoint();
  }

  /** Changes whenever a round did something: `collectGarbageUntilQuiet` stops when a round leaves it as it was. */
  get progressKey(): string {
    const { objectsCleaned, objectsDeleted, leftoverCheckpointsDeleted, forcedCheckpoints } = this.stats;
    return `${objectsCleaned}/${objectsDeleted}/${leftoverCheckpointsDeleted}/${forcedCheckpoints}/${this.retired.size}`;
  }

  get retiredCount(): number {
    return this.retired.size;
  }

  start(): void {
    const { writer } = this.options;
    this.ledger.start(writer.durableSeq, false);
    this.liveBytes = this.ledger.liveBytes(writer.sequenceNext);
    this.options.writer.spaceGate.attach(this);
    this.arm();
  }

  /**
   * For the space gate (space_gate.ts, rule in gc_pace.ts): whether the objects this collector may free stand above
   * the high-water mark, and whether it has anything it can free. Cheap: only objects that became durable since the
   * last call are counted, and the rule is evaluated again only when what it reads changed.
   */
  spaceState(): { overHighWater: boolean; reclaimable: boolean } {
    const { durableSeq } = this.options.writer;
    if (durableSeq > this.ledger.countedUpTo) this.ledger.countDurable(durableSeq, false);
    const { spaceBytes } = this.ledger;
    if (spaceBytes !== this.spaceViewOf.spaceBytes || this.liveBytes !== this.spaceViewOf.liveBytes) {
      this.spaceView.overHighWater = spaceOverHighWater(spaceBytes, this.liveBytes, this.options.threshold);
      this.spaceViewOf = { spaceBytes, liveBytes: this.liveBytes };
    }
    this.spaceView.reclaimable = this.retired.size > 0 || this.reclaimableAtScan > 0;
    return this.spaceView;
  }

  /** Objects a snapshot pins, and a clone's base objects, are never this collector's to clean, retire or delete. */
  private freeable(seq: number): boolean {
    return seq > this.options.baseLastSeq && !this.options.snapshotPins.pinsObject(seq);
  }

  /** Stops scheduling rounds and waits for the one running, if any. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    this.options.objects.watchDisplaced(null);
    this.options.writer.spaceGate.attach(null);
    this.ledger.stop();
    await this.round;
    await this.deletes;
  }

  /**
   * Runs one round now (tests, `lsvd gc` and the timer); rounds never overlap. `drain` (`lsvd gc`) takes every
   * reclaimable byte, up to the round's read bound, instead of the paced share.
   */
  runRound(drain = false): Promise<void> {
    this.round ??= this.roundBody(drain).finally(() => (this.round = null));
    return this.round;
  }

  /**
   * Schedules the next round: after nextDelayMs, or sooner, as soon as clients have made GC_ROUND_EARLY_SHARE of
   * the live data into garbage since the last round began (the timer paces by the rate seen in the last window, and
   * a write path that stalled in that window shows no rate at all). The watch only schedules: it fires inside a map
   * update.
   */
  private arm(): void {
    if (this.stopped || this.timer) return;
    const { clock, objects, intervalMs } = this.options;
    const shareSectors = Math.ceil((GC_ROUND_EARLY_SHARE * Math.max(this.liveBytes, GC_LIVE_BYTES_FLOOR)) / SECTOR_BYTES);
    const atSectors = this.mark.displacedSectors + shareSectors;
    const early = objects.displacedSectors >= atSectors;
    this.timer = clock.setTimer(early ? intervalMs / GC_ROUND_SPEEDUP_MAX : this.nextDelayMs, () => this.fireRound());
    if (!early) objects.watchDisplaced({ atSectors, fire: () => this.fireEarly() });
  }

  /**
   * The displaced-sectors watch fired: run the round at the next turn instead of at its timer, but never sooner than
   * intervalMs / GC_ROUND_SPEEDUP_MAX after the previous round began (the floor the timer keeps too).
   */
  private fireEarly(): void {
    if (this.stopped || !this.timer) return;
    const { clock, intervalMs } = this.options;
    this.timer.cancel();
    const floorAtMs = this.mark.atMs + intervalMs / GC_ROUND_SPEEDUP_MAX;
    this.timer = clock.setTimer(Math.max(0, floorAtMs - clock.nowMs()), () => this.fireRound());
  }

  private fireRound(): void {
    this.timer = null;
    this.options.objects.watchDisplaced(null);
    if (this.halted) return;
    void this.runRound().finally(() => this.arm());
  }

  private get halted(): boolean {
    return this.stopped || Boolean(this.options.writer.failed);
  }

  private takeMark(): Mark {
    const { clock, objects, writer } = this.options;
    return { atMs: clock.nowMs(), displacedSectors: objects.displacedSectors, copiedSectors: writer.stats.gcCopiedSectors, sequenceNext: writer.sequenceNext };
  }

  private async roundBody(drain: boolean): Promise<void> {
    this.stats.rounds += 1;
    const previous = this.mark;
    const mark = (this.mark = this.takeMark());
    // Garbage clients made: every sector displaced, less those GC's copies displaced in their victims.
    const madeSectors = mark.displacedSectors - previous.displacedSectors - (mark.copiedSectors - previous.copiedSectors);
    const madeBytes = Math.max(0, madeSectors) * SECTOR_BYTES;
    let boundHit = false;
    // Outside the try: settling does no I/O, and a debug check that fails in it must not pass for a failed round.
    const seen = this.settle(mark.atMs);
    this.options.writer.spaceGate.recheck();
    try {
      const budget = gcRoundBudget({ madeBytes, objectsMade: mark.sequenceNext - previous.sequenceNext, drain, ...seen });
      this.deletesMax = budget.deletesMax;
      await this.queueDeletePass(budget.deletesMax);
      this.stats.leftoverCheckpointsDeleted += await this.leftovers.collect(this.checkpointMin, mark.sequenceNext, () => this.stopped);
      const victims = this.chooseVictims(budget, mark.atMs);
      boundHit = victims.boundHit;
      this.keepOrFreeReadBuffers(victims.chosen.length > 0, mark.atMs);
      const limits = { countMax: GC_VICTIMS_INFLIGHT_MAX, weightMax: GC_READ_INFLIGHT_BYTES_MAX, halted: () => this.halted };
      await forEachBounded(victims.chosen, limits, (victim) => victim.objectBytes, (victim) => this.cleanOrSkip(victim));
      this.maybeForceCheckpoint();
    } catch (error) {
      // A failed round leaves everything as it was (nothing is deleted that is not retired): the next one retries.
      this.stats.errors += 1;
      this.options.log(`warning: gc: round failed, will retry: ${String(error)}`);
    }
    const elapsedMs = Math.max(0, mark.atMs - previous.atMs);
    const previousDelayMs = this.nextDelayMs;
    this.nextDelayMs = gcNextRoundDelayMs({ madeBytes, elapsedMs, liveBytes: this.liveBytes, intervalMs: this.options.intervalMs, boundHit, previousDelayMs });
  }

  /**
   * Settles the accounts (retiring dead objects) and returns what pacing needs: the garbage, the live data, and the
   * dead bytes in the candidates (less those of victims left alone a while after a failure).
   */
  private settle(nowMs: number): { reclaimableBytes: number; garbageBytes: number; liveBytes: number } {
    const { writer } = this.options;
    this.ledger.settle(writer.durableSeq, true);
    this.liveBytes = this.ledger.liveBytes(writer.sequenceNext);
    const skipped: number[] = [];
    for (const [seq, untilMs] of this.skipUntil) if (nowMs < untilMs) skipped.push(seq);
    this.reclaimableAtScan = this.ledger.reclaimableBytes(skipped);
    return { reclaimableBytes: this.reclaimableAtScan, garbageBytes: this.ledger.garbageBytes, liveBytes: this.liveBytes };
  }

  /** This round's victims: least live first, until their dead bytes reach the budget, or their size its bound. */
  private chooseVictims(budget: GcBudget, nowMs: number): { chosen: Candidate[]; boundHit: boolean } {
    if (budget.reclaimBytes <= 0) return { chosen: [], boundHit: false };
    let deadBytes = 0;
    let readBytes = 0;
    let taken = 0;
    let boundHit = false;
    const skipped = (seq: number): boolean => nowMs < (this.skipUntil.get(seq) ?? 0);
    const chosen = this.ledger.leastLive(skipped, (candidate) => {
      if (deadBytes >= budget.reclaimBytes) return false;
      if (taken > 0 && readBytes + candidate.objectBytes > budget.readBytesMax) {
        boundHit = true;
        return false;
      }
      taken += 1;
      deadBytes += candidate.deadBytes;
      readBytes += candidate.objectBytes;
      return true;
    });
    return { chosen, boundHit };
  }

  private retire(seq: number): void {
    this.retired.set(seq, this.options.writer.sequenceNext);
  }

  /** Cleans one victim; one that cannot be read (damaged, or the backend down past retries) is left alone a while. */
  private async cleanOrSkip(victim: Candidate): Promise<void> {
    if (this.halted) return;
    try {
      if (await this.clean(victim.seq)) this.stats.reclaimedBytes += victim.deadBytes;
    } catch (error) {
      this.skipUntil.set(victim.seq, this.options.clock.nowMs() + GC_VICTIM_RETRY_MS);
      this.stats.errors += 1;
      this.options.log(`warning: gc: cannot clean ${objectName(this.options.prefix, victim.seq)}, retrying in ${GC_VICTIM_RETRY_MS / 1000} s: ${String(error)}`);
    }
  }

  /**
   * Copies the live runs of one victim into the write path and retires it (returns whether it did). The whole object
   * is read and its data CRC checked first: copying runs out of a damaged object would give damaged bytes a new,
   * valid CRC.
   */
  private async clean(victim: number): Promise<boolean> {
    const { objects, log } = this.options;
    const info = objects.get(victim);
    if (!info || info.liveSectors === 0) return false;
    const name = objectName(this.options.prefix, victim);
    await this.copyVictim(victim, name, info);
    if (this.halted) return false; // stopped between slices: what was copied stays valid, the victim stays too
    await this.options.crashPoint?.("gc.copied");
    const left = objects.get(victim)?.liveSectors ?? 0;
    if (left !== 0) {
      // Cannot happen while the map only moves LBAs to newer objects; keep the object rather than lose data.
      log(`error: gc: ${name} still has ${left} live sector(s) after cleaning; keeping it`);
      this.stats.errors += 1;
      return false;
    }
    this.stats.objectsCleaned += 1;
    this.retire(victim); // the copies displaced its last sectors: the next settle counts it again
    return true;
  }

  /**
   * Reads the victim whole into a reused buffer, checks it is the object the table knows and its data CRC, and
   * copies its live runs; resolves when every copy has settled (throws the first failure). The buffer goes back only
   * then: until a copy's journal write completes, the write path holds a view of it.
   */
  private async copyVictim(victim: number, name: string, info: Pick<ObjectInfo, "hdrSectors" | "dataSectors">): Promise<void> {
    const buffer = this.victimBuffers.take((info.hdrSectors + info.dataSectors) * SECTOR_BYTES);
    const copies: Array<Promise<void>> = [];
    let settled: Array<PromiseSettledResult<void>> = [];
    try {
      const bytes = await this.options.store.get(name, buffer);
      this.stats.bytesRead += bytes.byteLength;
      const header = decodeDataObjectHeader(bytes);
      if (header.seq !== victim || header.hdrSectors !== info.hdrSectors || header.dataSectors !== info.dataSectors) {
        throw new CorruptionError(`${name} is not the object the volume wrote under that name (seq ${header.seq}, ${header.hdrSectors}+${header.dataSectors} sectors)`);
      }
      const dataStart = header.hdrSectors * SECTOR_BYTES;
      verifyDataArea(header, bytes.subarray(dataStart, dataStart + header.dataSectors * SECTOR_BYTES));
      await this.queueCopies(victim, header.extents, bytes.subarray(dataStart), copies);
    } finally {
      // Settled before the buffer goes back, also when queuing them failed part way.
      settled = await Promise.allSettled(copies);
      this.victimBuffers.give(buffer);
    }
    for (const done of settled) if (done.status === "rejected") throw done.reason;
  }

  /**
   * Hands the write path the victim's extents to copy, GC_CLEAN_SLICE_EXTENTS of them per event-loop turn: checking
   * each against the map (one lookup per extent, when its copy's record forms: record_former.ts) and forming the
   * copies' records would otherwise hold the loop for tens of milliseconds per victim, and client requests wait
   * behind it. Only what the map still points at in the victim is copied, so the map may change between slices.
   * Each slice's promise goes into `copies` as it is queued, so a failure part way still leaves the caller every one.
   */
  private async queueCopies(victim: number, extents: DataExtent[], area: Uint8Array, copies: Array<Promise<void>>): Promise<void> {
    const { writer, clock } = this.options;
    const source: CopySource = { obj: victim, area };
    let extentOffset = 0;
    for (let first = 0; first < extents.length && !this.halted; first += GC_CLEAN_SLICE_EXTENTS) {
      if (first > 0) await clock.sleep(0);
      const slice = extents.slice(first, first + GC_CLEAN_SLICE_EXTENTS);
      copies.push(writer.copyExtents(source, slice, extentOffset));
      for (const extent of slice) extentOffset += extent.sectors;
    }
  }

  /** Idle read buffers for the victims: kept while rounds keep finding victims, freed once they stop for a while. */
  private keepOrFreeReadBuffers(victimChosen: boolean, nowMs: number): void {
    if (victimChosen) this.lastVictimMs = nowMs;
    else if (nowMs - this.lastVictimMs >= GC_READ_BUFFERS_IDLE_MS) this.victimBuffers.clear();
  }

  /** Idle bytes of the victims' read buffers (tests). */
  get idleReadBufferBytes(): number {
    return this.victimBuffers.idleBytes;
  }

  /** Queues a delete pass behind the one running; the returned promise rejects with the pass's failure. */
  private queueDeletePass(deletesMax: number): Promise<void> {
    const pass = this.deletes.then(() => this.deleteRetired(deletesMax));
    this.deletes = pass.catch(() => {});
    return pass;
  }

  /** A delete pass outside a round, unless one already waits to start; a failure is logged (the next round retries). */
  private deleteBetweenRounds(): void {
    if (this.deletePassWaiting || this.halted) return;
    this.deletePassWaiting = true;
    const pass = this.deletes.then(() => {
      this.deletePassWaiting = false;
      return this.halted ? undefined : this.deleteRetired(this.deletesMax);
    });
    this.deletes = pass.catch((error: unknown) => {
      this.stats.errors += 1;
      this.options.log(`gc: deleting objects no longer needed failed, will retry: ${String(error)}`);
    });
  }

  /** Deletes retired objects that the rule in the header allows, oldest first, at most deletesMax, a few at once. */
  private async deleteRetired(deletesMax: number): Promise<void> {
    const { store, prefix, objects, isPinned, clock, log } = this.options;
    const ready: number[] = [];
    const pins = this.options.snapshotPins;
    for (const [seq, retiredAt] of this.retired) if (this.checkpointMin >= retiredAt && !isPinned(seq) && !pins.pinsObject(seq)) ready.push(seq);
    ready.sort((a, b) => a - b);
    const limits = { countMax: GC_DELETES_INFLIGHT_MAX, weightMax: GC_DELETES_INFLIGHT_MAX, halted: () => this.stopped };
    await forEachBounded(ready.slice(0, deletesMax), limits, () => 1, async (seq) => {
      await this.options.crashPoint?.("gc.delete");
      const retiredAt = this.retired.get(seq);
      assert(retiredAt !== undefined && this.checkpointMin >= retiredAt, `object ${seq} is deleted only once retired and a durable superblock names checkpoints newer than its retirement`);
      await store.delete(objectName(prefix, seq));
      this.retired.delete(seq);
      this.skipUntil.delete(seq);
      this.ledger.forget(seq);
      objects.delete(seq);
      this.options.writer.spaceGate.recheck();
      this.stats.objectsDeleted += 1;
      this.deletedSinceLog += 1;
    });
    const nowMs = clock.nowMs();
    if (this.deletedSinceLog > 0 && nowMs - this.lastLogMs >= GC_LOG_INTERVAL_MS) {
      log(`gc: deleted ${this.deletedSinceLog} object(s) holding no live data in ${((nowMs - this.lastLogMs) / 1000).toFixed(0)} s; ${this.retired.size} more wait for a checkpoint`);
      this.deletedSinceLog = 0;
      this.lastLogMs = nowMs;
    }
  }

  /**
   * Asks the write path for checkpoints when retired objects wait for them and gcCheckpointDue says it is worth it
   * (or none has come for forceCheckpointMs): CHECKPOINTS_KEPT back to back when what waits pays for them all
   * (gcCheckpointBurst), since that many must be named before anything retired now goes, and back to back their puts
   * overlap. One request in flight at a time, the write path's own checkpoints included: more queued behind the same
   * puts would only make the same objects deletable. The next is asked for as soon as the last one is named
   * (noteCheckpoints); a request not answered within forceCheckpointMs, or a checkpoint not named within it, does not
   * hold back another.
   */
  private maybeForceCheckpoint(): void {
    const { clock, writer, objects, map, forceCheckpointMs } = this.options;
    const nowMs = clock.nowMs();
    if (this.retired.size === 0 || this.halted) return;
    const inFlightSinceMs = this.checkpointRequestedMs ?? (this.unnamedCheckpoint() ? this.lastCheckpointMs : null);
    if (inFlightSinceMs !== null && nowMs - inFlightSinceMs < forceCheckpointMs) return;
    let waitingBytes = 0;
    for (const [seq, retiredAt] of this.retired) {
      if (this.checkpointMin >= retiredAt) continue;
      const info = objects.get(seq);
      // An object with no data (trims only) still waits: count its header, and at least one sector.
      if (info) waitingBytes += Math.max(1, info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
    }
    const checkpointBytes = (map.extentCount + objects.count) * CKPT_MAP_ENTRY_BYTES;
    const sinceCheckpointMs = nowMs - this.lastCheckpointMs;
    if (!gcCheckpointDue({ waitingBytes, checkpointBytes, liveBytes: this.liveBytes, sinceCheckpointMs, forceCheckpointMs })) return;
    const count = gcCheckpointBurst({ waitingBytes, checkpointBytes });
    this.checkpointRequestedMs = nowMs;
    this.stats.forcedCheckpoints += count;
    writer.requestCheckpoint(count);
  }

  /** Whether the log holds a checkpoint the superblock does not name yet (queued, or being put). */
  private unnamedCheckpoint(): boolean {
    for (const seq of this.options.objects.checkpoints) if (seq > this.checkpointNamedMax) return true;
    return false;
  }
}

/**
 * Runs work(item) for each item in order, at most limits.countMax at once and at most limits.weightMax of weight at
 * once (but always one). Stops starting new ones when limits.halted() or one has failed; waits for those started;
 * then throws the first failure.
 */
async function forEachBounded<T>(
  items: T[],
  limits: { countMax: number; weightMax: number; halted: () => boolean },
  weight: (item: T) => number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const running = new Set<Promise<void>>();
  let weightRunning = 0;
  let failure: { error: unknown } | null = null;
  for (const item of items) {
    const itemWeight = weight(item);
    while (running.size > 0 && (running.size >= limits.countMax || weightRunning + itemWeight > limits.weightMax)) await Promise.race(running);
    if (failure || limits.halted()) break;
    weightRunning += itemWeight;
    const done: Promise<void> = work(item)
      .catch((error: unknown) => {
        failure ??= { error };
      })
      .finally(() => {
        weightRunning -= itemWeight;
        running.delete(done);
      });
    running.add(done);
  }
  await Promise.all(running);
  if (failure) throw (failure as { error: unknown }).error;
}
