// Garbage collection (docs/architecture.md, "Garbage collection"): copies the live data of mostly-dead DATA objects
// into new objects through the write path, then deletes objects that hold nothing live once no recovery can need
// them. The paper's greedy cleaner: the least-live objects go first.
//
// One round, at most every intervalMs, never two at once:
// 1. Delete retired objects that are now safe to delete (below).
// 2. Retire durable DATA objects with no live sector left (overwritten or trimmed, or cleaned by an earlier round).
// 3. Pick victims: durable DATA objects whose live share is below `threshold`, least live first, until their live
//    data reaches roundCopyBytesMax. For each: read it whole and check its CRCs, find the runs the map still points
//    at, and queue them as copies (WritePath.copy), which write only what is still live when their record forms.
//    Once the copies are journaled, the victim holds no live sector, and is retired.
//
// Why copies queued at once never overlap (WritePath.copy relies on it): the map only ever moves an LBA to a newer
// object, never back to an older one, so an LBA the map pointed into victim A cannot later point into victim B;
// and a round waits for all its copies before the next round looks at the map again.
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
// When retirees wait, the round asks the write path for a checkpoint if none has come for forceCheckpointMs (an idle
// volume's garbage is not kept forever) or if they hold several times a checkpoint's size (maybeForceCheckpoint).

import {
  GC_CHECKPOINT_PAYBACK,
  GC_DELETES_PER_ROUND_MAX,
  GC_FORCE_CHECKPOINT_BYTES_MIN,
  GC_COPY_BYTES_MAX,
  GC_ROUND_READ_FACTOR,
  GC_VICTIM_RETRY_MS,
  GC_VICTIMS_PER_ROUND_MAX,
  SECTOR_BYTES,
} from "../constants.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { CKPT_MAP_ENTRY_BYTES } from "../format/checkpoint_object.ts";
import { CorruptionError } from "../errors.ts";
import { decodeDataObjectHeader, verifyDataArea } from "../format/data_object.ts";
import { objectName } from "../format/object_name.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import { LeftoverCheckpoints } from "./leftover_checkpoints.ts";
import { ObjectKind, type ObjectTable } from "./object_table.ts";

/** What the collector needs of the write path. */
export interface GcWriter {
  copy(lba: number, data: Uint8Array, obj: number, offset: number): Promise<void>;
  readonly durableSeq: number;
  readonly sequenceNext: number;
  readonly unflushed: Map<number, unknown>;
  readonly failed: unknown;
  /** A checkpoint now if no write is being formed, else at the next seal. */
  requestCheckpoint(): void;
}

export interface GarbageCollectorOptions {
  store: ObjectStore;
  prefix: string;
  volUuid: string;
  map: ExtentMap;
  objects: ObjectTable;
  writer: GcWriter;
  isPinned: (obj: number) => boolean;
  clock: Clock;
  log: (line: string) => void;
  /** Objects whose live share is below this are cleaned; 0 turns cleaning off (dead objects are still deleted). */
  threshold: number;
  intervalMs: number;
  /** Live bytes one round copies at most (one batch's worth keeps a round's memory to one batch). */
  roundCopyBytesMax: number;
  /** How long retirees may wait for a checkpoint before the collector asks for one. */
  forceCheckpointMs: number;
  /** The checkpoints the durable superblock names at open. */
  checkpoints: number[];
}

interface LiveRun {
  lba: number;
  sectors: number;
  /** Sectors from the start of the victim's data area. */
  offset: number;
}

export class GarbageCollector {
  /** Retired object -> the log's next seq when it was retired. */
  private readonly retired = new Map<number, number>();
  /** Victims whose cleaning failed -> when to try again (at most one entry per object). */
  private readonly skipUntil = new Map<number, number>();
  /** The oldest checkpoint the durable superblock names (0: none, then nothing is deleted). */
  private checkpointMin = 0;
  private lastCheckpointMs = 0;
  /** When a checkpoint was asked for that the superblock does not name yet (null: none asked for). */
  private checkpointRequestedMs: number | null = null;
  private timer: TimerHandle | null = null;
  private round: Promise<void> | null = null;
  private stopped = false;
  private readonly leftovers: LeftoverCheckpoints;
  stats = { rounds: 0, objectsCleaned: 0, objectsDeleted: 0, leftoverCheckpointsDeleted: 0, bytesRead: 0, forcedCheckpoints: 0, errors: 0 };

  constructor(private readonly options: GarbageCollectorOptions) {
    this.noteCheckpoints(options.checkpoints);
    const { store, prefix, volUuid, objects, log } = options;
    this.leftovers = new LeftoverCheckpoints({ store, prefix, volUuid, objects, log });
  }

  /** The durable superblock now names these checkpoints (WritePath.onCheckpointsPersisted). */
  noteCheckpoints(checkpoints: number[]): void {
    this.checkpointMin = checkpoints.length > 0 ? Math.min(...checkpoints) : 0;
    this.lastCheckpointMs = this.options.clock.nowMs();
    this.checkpointRequestedMs = null;
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
    this.arm();
  }

  /** Stops scheduling rounds and waits for the one running, if any. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    await this.round;
  }

  /** Runs one round now (tests and the timer); rounds never overlap. */
  runRound(): Promise<void> {
    this.round ??= this.roundBody().finally(() => (this.round = null));
    return this.round;
  }

  private arm(): void {
    if (this.stopped || this.timer) return;
    this.timer = this.options.clock.setTimer(this.options.intervalMs, () => {
      this.timer = null;
      if (this.stopped || this.options.writer.failed) return;
      void this.runRound().finally(() => this.arm());
    });
  }

  private async roundBody(): Promise<void> {
    this.stats.rounds += 1;
    try {
      await this.deleteRetired();
      this.stats.leftoverCheckpointsDeleted += await this.leftovers.collect(this.checkpointMin, this.options.writer.sequenceNext, () => this.stopped);
      const victims = this.chooseVictims();
      for (const victim of victims) {
        if (this.stopped || this.options.writer.failed) return;
        try {
          await this.clean(victim);
        } catch (error) {
          // A victim that cannot be read (damaged, or the backend is down past the store's retries) is left alone
          // for a while rather than retried, and logged, every round.
          this.skipUntil.set(victim, this.options.clock.nowMs() + GC_VICTIM_RETRY_MS);
          this.stats.errors += 1;
          this.options.log(`gc: cannot clean ${objectName(this.options.prefix, victim)}, retrying in ${GC_VICTIM_RETRY_MS / 1000} s: ${String(error)}`);
        }
      }
      this.maybeForceCheckpoint();
    } catch (error) {
      // A failed round leaves everything as it was (nothing is deleted that is not retired): the next one retries.
      this.stats.errors += 1;
      this.options.log(`gc: round failed, will retry: ${String(error)}`);
    }
  }

  /** Retires dead objects and returns the victims of this round, least live first. */
  private chooseVictims(): number[] {
    const { objects, writer, threshold, roundCopyBytesMax } = this.options;
    const candidates: Array<{ seq: number; share: number; liveBytes: number }> = [];
    objects.forEach((seq, info) => {
      if (info.kind !== ObjectKind.Data || seq > writer.durableSeq || writer.unflushed.has(seq) || this.retired.has(seq)) return;
      if (info.liveSectors === 0) {
        this.retire(seq);
        return;
      }
      const share = info.dataSectors === 0 ? 1 : info.liveSectors / info.dataSectors;
      const skipUntil = this.skipUntil.get(seq);
      if (skipUntil !== undefined && this.options.clock.nowMs() < skipUntil) return;
      if (share < threshold) candidates.push({ seq, share, liveBytes: info.liveSectors * SECTOR_BYTES });
    });
    candidates.sort((a, b) => a.share - b.share || a.seq - b.seq);
    // A round copies at most one batch's worth and reads (whole victims) at most GC_ROUND_READ_FACTOR times that.
    const victims: number[] = [];
    let copyBytes = 0;
    let readBytes = 0;
    for (const candidate of candidates) {
      if (victims.length >= GC_VICTIMS_PER_ROUND_MAX) break;
      const info = objects.get(candidate.seq)!;
      const objectBytes = (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
      const over = copyBytes + candidate.liveBytes > roundCopyBytesMax || readBytes + objectBytes > GC_ROUND_READ_FACTOR * roundCopyBytesMax;
      if (victims.length > 0 && over) break;
      victims.push(candidate.seq);
      copyBytes += candidate.liveBytes;
      readBytes += objectBytes;
    }
    return victims;
  }

  private retire(seq: number): void {
    this.retired.set(seq, this.options.writer.sequenceNext);
  }

  /**
   * Copies the live runs of one victim into the write path and retires it. The whole object is read and its data
   * CRC checked first: copying runs out of a damaged object would give damaged bytes a new, valid CRC.
   */
  private async clean(victim: number): Promise<void> {
    const { store, prefix, objects, writer, log } = this.options;
    const info = objects.get(victim);
    if (!info || info.liveSectors === 0) return;
    const name = objectName(prefix, victim);
    const bytes = await store.get(name);
    this.stats.bytesRead += bytes.byteLength;
    const header = decodeDataObjectHeader(bytes);
    if (header.seq !== victim || header.hdrSectors !== info.hdrSectors || header.dataSectors !== info.dataSectors) {
      throw new CorruptionError(`${name} is not the object the volume wrote under that name (seq ${header.seq}, ${header.hdrSectors}+${header.dataSectors} sectors)`);
    }
    const dataStart = header.hdrSectors * SECTOR_BYTES;
    verifyDataArea(header, bytes.subarray(dataStart, dataStart + header.dataSectors * SECTOR_BYTES));
    const copies: Array<Promise<void>> = [];
    for (const run of this.liveRuns(victim, header.extents)) {
      const start = dataStart + run.offset * SECTOR_BYTES;
      copies.push(writer.copy(run.lba, bytes.subarray(start, start + run.sectors * SECTOR_BYTES), victim, run.offset));
    }
    const copiesDone = await Promise.allSettled(copies);
    for (const done of copiesDone) if (done.status === "rejected") throw done.reason;
    const left = objects.get(victim)?.liveSectors ?? 0;
    if (left !== 0) {
      // Cannot happen while the map only moves LBAs to newer objects; keep the object rather than lose data.
      log(`gc: error: ${name} still has ${left} live sector(s) after cleaning; keeping it`);
      this.stats.errors += 1;
      return;
    }
    this.stats.objectsCleaned += 1;
    this.retire(victim);
  }

  /** The runs of the victim the map still points at, in the victim's data order, each small enough for one copy. */
  private liveRuns(victim: number, extents: Array<{ lba: number; sectors: number }>): LiveRun[] {
    const runSectorsMax = Math.min(GC_COPY_BYTES_MAX, this.options.roundCopyBytesMax) / SECTOR_BYTES;
    const runs: LiveRun[] = [];
    let extentOffset = 0;
    for (const extent of extents) {
      const base = extentOffset;
      this.options.map.runsMappedTo(extent.lba, extent.sectors, victim, base, (lba, sectors) => {
        for (let done = 0; done < sectors; done += runSectorsMax) {
          runs.push({ lba: lba + done, sectors: Math.min(runSectorsMax, sectors - done), offset: base + (lba - extent.lba) + done });
        }
      });
      extentOffset += extent.sectors;
    }
    return runs;
  }

  /** Deletes retired objects that the rule in the header allows, oldest first, a bounded number per round. */
  private async deleteRetired(): Promise<void> {
    const { store, prefix, objects, isPinned, log } = this.options;
    let deleted = 0;
    const ready = [...this.retired.entries()].filter(([seq, retiredAt]) => this.checkpointMin >= retiredAt && !isPinned(seq));
    ready.sort((a, b) => a[0] - b[0]);
    for (const [seq] of ready) {
      if (deleted >= GC_DELETES_PER_ROUND_MAX || this.stopped) break;
      await store.delete(objectName(prefix, seq));
      this.retired.delete(seq);
      this.skipUntil.delete(seq);
      objects.delete(seq);
      deleted += 1;
    }
    this.stats.objectsDeleted += deleted;
    if (deleted > 0) log(`gc: deleted ${deleted} object(s) holding no live data; ${this.retired.size} more wait for a checkpoint`);
  }

  /**
   * Asks for a checkpoint when retired objects wait for one and either no checkpoint has come for forceCheckpointMs
   * (an idle volume), or what they hold is at least GC_CHECKPOINT_PAYBACK times what a checkpoint costs to write (a
   * busy one: otherwise garbage outlives CHECKPOINTS_KEPT natural checkpoints, gigabytes of writes). One request at a
   * time: the next waits until a checkpoint is named by the superblock.
   */
  private maybeForceCheckpoint(): void {
    const { clock, writer, objects, map, forceCheckpointMs } = this.options;
    // A request not answered within forceCheckpointMs (e.g. it waited for a seal that never came) is made again.
    if (this.retired.size === 0 || this.stopped || (this.checkpointRequestedMs !== null && clock.nowMs() - this.checkpointRequestedMs < forceCheckpointMs)) return;
    let waitingBytes = 0;
    let waiting = 0;
    for (const [seq, retiredAt] of this.retired) {
      if (this.checkpointMin >= retiredAt) continue;
      waiting += 1;
      const info = objects.get(seq);
      if (info) waitingBytes += (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
    }
    if (waiting === 0) return;
    const checkpointBytes = (map.extentCount + objects.count) * CKPT_MAP_ENTRY_BYTES;
    const worthIt = waitingBytes >= GC_FORCE_CHECKPOINT_BYTES_MIN && waitingBytes >= GC_CHECKPOINT_PAYBACK * checkpointBytes;
    if (!worthIt && clock.nowMs() - this.lastCheckpointMs < forceCheckpointMs) return;
    this.checkpointRequestedMs = clock.nowMs();
    this.stats.forcedCheckpoints += 1;
    writer.requestCheckpoint();
  }
}
