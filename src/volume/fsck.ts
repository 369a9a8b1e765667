// fsck for a volume (and optionally its cache): reads everything recovery relies on and says whether it is sound.
// Spec: docs/architecture.md ("Recovery": both decision tables) and docs/format.md; `lsvd fsck` prints the report.
//
// What is checked, in order:
//   1. The superblock decodes; each checkpoint it lists exists, decodes, and names its own seq and the volume.
//   2. Every object `<prefix>.%08x` is read whole: common header, per-type header CRC, data CRC, seq == name,
//      volume UUID. Objects are read in seq order, so every checkpoint is checked against the objects before it:
//      each map entry must name a valid DATA object and lie inside its data area, and the checkpoint's object
//      table must agree with those objects' headers.
//   3. The log as recovery sees it: from the newest usable listed checkpoint c, the objects c+1, c+2, ... up to the
//      first missing or invalid one (the log end). Holes below c are expected (dropped checkpoints, garbage
//      collection) and only noted; invalid objects below c are problems (their data cannot be read back).
//
// Left-overs of a crash are notes, not problems: a volume killed at any point is intact (with its cache), and fsck
// must say so. They are:
//   - objects beyond a *missing* log end: puts run in parallel and complete out of order, so a killed run leaves
//     later objects without an earlier one; they were never durable in order, nothing relied on them, and recovery
//     deletes them. (An *invalid* object at the log end is a problem: puts are atomic, so it was damaged after it
//     was stored. A missing object that the journal had already released is a problem the cache check finds, @C.)
//   - CKPT objects the superblock does not name, below the oldest one it names: recovery never reads them (killed
//     between the superblock rewrite and their delete, or before a superblock named them; checkpoint.ts). What they
//     name may be gone, so they are not checked against the objects. An unnamed CKPT object above the oldest named
//     one is in the seq range a fallback recovery rolls forward through, and must agree with the objects.
//   Snapshots (docs/architecture.md, "Snapshots"): each snapshot's checkpoint must exist, decode, name its seq and the
//   volume, and its map must name valid DATA objects and lie inside their data areas (checked like any checkpoint,
//   against the objects before it); a snapshot's checkpoint is never a left-over, whatever its seq.
//   4. The map recovery builds (recoverBackend, nothing deleted) must equal the map obtained by replaying every
//      DATA object from seq 1 to the log end, when object 1 exists: a checkpoint that disagrees with its own log is
//      corruption no CRC catches.
//   5. With a cache: its superblock decodes and names this volume; the journal walk (JournalWalker) from the tail,
//      its stop reason, the journal decision-table case (decideJournalCase) and the records the next open replays.
//
// Repair (only what recovery itself would do, made durable ahead of time), under the volume's lease (the caller
// takes it: a served volume is refused): drop the superblock's unusable or out-of-log checkpoints (superblock rewrite
// first, so it never names a deleted object), re-check, then start the log above the objects at and beyond its end
// as an open would (ownership.ts, beginLog: a skipped range in the superblock, then the objects there deleted), and
// delete the left-over CKPT objects below the oldest named checkpoint. Deleting left-overs is a clean-up, not a
// repair: it leaves the exit code 0. Nothing else is repaired: lost data stays reported.
// Skipped ranges (docs/architecture.md, "Ownership and fencing"): seqs no owner writes; the log goes on after them,
// and objects found in them (late landings of a writer that lost the volume) are left-overs: noted, not problems.

import { NIL as NIL_UUID } from "uuid";
import { FSCK_REPORT_ITEMS_MAX, SECTOR_BYTES } from "../constants.ts";
import { assert, CorruptionError, NotFoundError } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import type { AlignedPool, CacheDevice } from "../cache/cache_device.ts";
import { JournalWalker } from "../cache/journal_replay.ts";
import { decodeCheckpoint, unpackCheckpointMapEntry, CKPT_MAP_ENTRY_BYTES, type CheckpointObject } from "../format/checkpoint_object.ts";
import { decodeDataObjectHeader, verifyDataArea } from "../format/data_object.ts";
import { JournalRecordType } from "../format/journal_record.ts";
import { decodeCommonHeader, ObjectType } from "../format/object_header.ts";
import { leaseName, objectName, parseObjectName } from "../format/object_name.ts";
import { skippedRangeOf, type SuperblockObject } from "../format/superblock_object.ts";
import { ExtentMap } from "../map/extent_map.ts";
import { keepUnfinishedTail, loadCheckpoint, readSuperblockChecked, recoverBackend, type BackendState, type UnfinishedTail } from "./recovery/backend.ts";
import { loadCloneChain, type CloneChain } from "./clone_chain.ts";
import { readCacheSuperblock } from "./recovery/journal.ts";
import type { CacheSuperblock } from "../format/cache_superblock.ts";
import { applyDataObject, chooseCheckpointSeq, decideJournalCase, decideLogObject } from "./recovery/rules.ts";
import { beginLog, type VolumeOwner } from "./ownership.ts";
import { SuperblockStore } from "./superblock_store.ts";

export type FsckProblemKind = "superblock" | "checkpoint" | "snapshot" | "object" | "gap" | "map" | "recovery" | "cache" | "journal";

export interface FsckProblem {
  kind: FsckProblemKind;
  /** The object the problem is about, when there is one. */
  seq: number | null;
  message: string;
  /** Set on the first pass's problems after a repair: gone from the final check. */
  repaired: boolean;
}

export interface FsckCheckpointInfo {
  seq: number;
  listed: boolean;
  /** The snapshots (names) this checkpoint is; empty for others. */
  snapshots: string[];
  /** Decodes, names itself, its map and object table agree with the objects. */
  usable: boolean;
  mapEntries: number;
  error: string | null;
}

export interface FsckCacheReport {
  path: string;
  superblockValid: boolean;
  cacheUuid: string | null;
  volumeMatches: boolean;
  generation: number | null;
  tailSeq: number | null;
  /** Records the walk from the tail found (data + pad), and where and why it stopped. */
  journalRecords: number;
  journalDataRecords: number;
  journalPadRecords: number;
  headSeq: number | null;
  stopReason: string | null;
  stopDetail: string;
  journalCase: string | null;
  /** The cache that wrote the backend log's newest DATA object (nil: none yet) and the newest journal seq it holds. */
  logWriterCacheUuid: string;
  logJournalSeqLast: number;
  /** Data records the next open replays (0 when the journal is discarded). */
  pendingReplay: number;
}

export interface FsckReport {
  store: string;
  prefix: string;
  volUuid: string | null;
  volumeBytes: number | null;
  superblockCheckpoints: number[];
  objects: { count: number; data: number; checkpoints: number; invalid: number; bytes: number; firstSeq: number | null; lastSeq: number | null };
  checkpoints: FsckCheckpointInfo[];
  /** The checkpoint recovery starts from (0: none) and the first seq not in the log. */
  recoveryCheckpointSeq: number;
  logEndSeq: number | null;
  /** Seqs missing below the recovery checkpoint (up to FSCK_REPORT_ITEMS_MAX) and how many in all. */
  holesBeforeCheckpoint: number[];
  holesBeforeCheckpointCount: number;
  /** Objects at or beyond the log end (up to FSCK_REPORT_ITEMS_MAX) and how many in all. */
  beyondLogEnd: number[];
  beyondLogEndCount: number;
  /** CKPT objects the superblock does not name, below the oldest it names (up to FSCK_REPORT_ITEMS_MAX), and how many. */
  leftoverCheckpoints: number[];
  leftoverCheckpointsCount: number;
  map: { extents: number | null; comparedWithReplay: boolean; equal: boolean | null; note: string };
  /** Names under `<prefix>.` that are not object names (the lease object is not counted). */
  strayNames: string[];
  /** Objects inside the superblock's skipped ranges. */
  skippedObjects: number;
  cache: FsckCacheReport | null;
  /** Problems found by the first check (with `repaired` set when a repair removed them). */
  problems: FsckProblem[];
  /** Problems still present at the end. */
  remaining: FsckProblem[];
  repairs: string[];
  /** Left-overs of a crash deleted by --repair (not problems: they do not change the exit code). */
  cleanups: string[];
  notes: string[];
  /** fsck(8): 0 clean, 1 problems found and all repaired, 4 problems left. (8, could not check, is the CLI's.) */
  exitCode: 0 | 1 | 4;
}

export interface FsckOptions {
  store: ObjectStore;
  prefix: string;
  cache?: { device: CacheDevice; pool: AlignedPool };
  repair?: boolean;
  /** Required to repair: the lease the caller took (takeOwnership); superblock rewrites go through its store. */
  owner?: VolumeOwner;
  /** Told what fsck does as it goes (the CLI shows it: in place on a terminal, a line per step otherwise). */
  progress?: FsckProgress;
}

/** Where fsck reports its progress: a step begins, or work of `total` (null: not known yet) advanced to `done`. */
export interface FsckProgress {
  step(text: string): void;
  count(done: number, total: number | null, what: string): void;
}

/** Passes of check-then-repair at most: superblock fix, then truncation, then the final check. */
const FSCK_PASSES_MAX = 3;

export const FSCK_EXIT_CLEAN = 0;
export const FSCK_EXIT_REPAIRED = 1;
export const FSCK_EXIT_PROBLEMS_LEFT = 4;
export const FSCK_EXIT_OPERATIONAL = 8;

/**
 * Checks the volume (and cache); with repair, repairs what recovery would and checks again. Throws only for
 * operational errors (the store or device failed, no superblock object at all): those are exit code 8.
 */
export async function fsckVolume(options: FsckOptions): Promise<FsckReport> {
  const progress = options.progress;
  const first = await checkBackend(options.store, options.prefix, progress);
  let current = first;
  const repairs: string[] = [];
  const cleanups: string[] = [];
  if (options.repair) {
    for (let pass = 1; pass < FSCK_PASSES_MAX; pass++) {
      const owner = options.owner;
      assert(owner !== undefined, "fsck repairs only under the volume's lease");
      const done = await repairOnce(options.store, options.prefix, current, owner);
      if (done.length === 0) break;
      for (const step of done) (step.fixesProblem ? repairs : cleanups).push(step.what);
      progress?.step(`repaired ${done.length} thing(s); checking again`);
      current = await checkBackend(options.store, options.prefix, progress);
    }
  }
  if (options.cache && current.state) progress?.step("checking the cache and its journal");
  const cache = options.cache && current.state ? await checkCache(options.cache.device, options.cache.pool, current, options.prefix) : null;
  if (options.cache && !current.state) current.notes.push("cache not checked: the backend could not be recovered");
  const cacheProblems = cache?.problems ?? [];
  const remaining = [...current.problems, ...cacheProblems];
  const key = (problem: FsckProblem) => `${problem.kind}:${problem.seq ?? ""}`;
  const remainingKeys = new Set(remaining.map(key));
  const problems = repairs.length === 0
    ? remaining
    : [...first.problems.map((problem) => ({ ...problem, repaired: !remainingKeys.has(key(problem)) })), ...cacheProblems];
  const exitCode = remaining.length > 0 ? FSCK_EXIT_PROBLEMS_LEFT : repairs.length > 0 ? FSCK_EXIT_REPAIRED : FSCK_EXIT_CLEAN;
  const notes = [...current.notes, ...(cache?.notes ?? [])];
  return { ...current.report, cache: cache?.report ?? null, problems, remaining, repairs, cleanups, notes, exitCode };
}

// ---- Backend check ---------------------------------------------------------------------------------------------

interface ObjectInfo {
  valid: boolean;
  type: number;
  hdrSectors: number;
  dataSectors: number;
  error: string | null;
  trailingBytes: number;
}

interface BackendCheck {
  report: Omit<FsckReport, "cache" | "problems" | "remaining" | "repairs" | "cleanups" | "notes" | "exitCode">;
  problems: FsckProblem[];
  notes: string[];
  superblock: SuperblockObject | null;
  /** Listed checkpoints to keep; null when the superblock needs no change. */
  checkpointsToKeep: number[] | null;
  state: BackendState | null;
  /** The log's unfinished tail (recovery/backend.ts), kept in `state`, and the log's writer before it (checkCache). */
  unfinished: { tail: UnfinishedTail; writerCacheUuid: string; writerCacheSeqLast: number } | null;
}

/** Keeps the first FSCK_REPORT_ITEMS_MAX items of a list that may be long, and counts them all. */
class BoundedList<T> {
  readonly items: T[] = [];
  count = 0;
  push(item: T): void {
    this.count += 1;
    if (this.items.length < FSCK_REPORT_ITEMS_MAX) this.items.push(item);
  }
}

function problem(kind: FsckProblemKind, seq: number | null, message: string): FsckProblem {
  return { kind, seq, message, repaired: false };
}

/** What the phases of checkBackend share: the volume as read so far, and the result they fill in. */
interface BackendScan {
  /** The volume's store, wrapped to read a clone's lower objects from its bases. */
  store: ObjectStore;
  prefix: string;
  superblock: SuperblockObject;
  listChecksummed: boolean;
  chain: CloneChain;
  result: BackendCheck;
  /** Object seqs present, ascending (outside skipped ranges). */
  seqs: number[];
  present: Set<number>;
  /** Checkpoints decoded while choosing the recovery checkpoint. */
  loaded: Map<number, CheckpointObject>;
  /** The checkpoint recovery starts from. */
  startSeq: number;
  infos: Map<number, ObjectInfo>;
  checkpointInfos: Map<number, FsckCheckpointInfo>;
  /** The map of a replay of the DATA objects from seq 1 (or from the newest rollback). */
  replay: ExtentMap;
  rollbackSeen: boolean;
  /** Why the replay cannot be compared with recovery's map; null while it can. */
  replayBroken: string | null;
  logEnd: number | null;
  holes: BoundedList<number>;
  /** The next seq the object walk expects. */
  expected: number;
}

async function checkBackend(volumeStore: ObjectStore, prefix: string, progress?: FsckProgress): Promise<BackendCheck> {
  const result = emptyBackendCheck(volumeStore, prefix);
  const scan = await openBackendScan(volumeStore, prefix, result);
  if (scan === null) return result;
  await listObjects(scan, progress);
  await chooseStartCheckpoint(scan);
  await checkEveryObject(scan, progress);
  const logEnd = endTheLog(scan);
  checkListedCheckpoints(scan, logEnd);
  checkSnapshots(prefix, scan.superblock, scan.present, scan.infos, scan.checkpointInfos, result.problems);
  checkUnlistedCheckpoints(prefix, scan.superblock.checkpoints, scan.checkpointInfos, logEnd, result);
  result.report.checkpoints = [...scan.checkpointInfos.values()].sort((a, b) => a.seq - b.seq);
  reportBeyondLogEnd(scan, logEnd);
  await compareWithRecovery(scan, logEnd, progress);
  return result;
}

function emptyBackendCheck(store: ObjectStore, prefix: string): BackendCheck {
  const report: BackendCheck["report"] = {
    store: store.description,
    prefix,
    volUuid: null,
    volumeBytes: null,
    superblockCheckpoints: [],
    objects: { count: 0, data: 0, checkpoints: 0, invalid: 0, bytes: 0, firstSeq: null, lastSeq: null },
    checkpoints: [],
    recoveryCheckpointSeq: 0,
    logEndSeq: null,
    holesBeforeCheckpoint: [],
    holesBeforeCheckpointCount: 0,
    beyondLogEnd: [],
    beyondLogEndCount: 0,
    leftoverCheckpoints: [],
    leftoverCheckpointsCount: 0,
    map: { extents: null, comparedWithReplay: false, equal: null, note: "not checked" },
    strayNames: [],
    skippedObjects: 0,
  };
  return { report, problems: [], notes: [], superblock: null, checkpointsToKeep: null, state: null, unfinished: null };
}

/** 1. The superblock and the clone chain; null (with a problem) when either cannot be read. */
async function openBackendScan(volumeStore: ObjectStore, prefix: string, result: BackendCheck): Promise<BackendScan | null> {
  const { report, problems, notes } = result;
  // Missing altogether is "no volume here" (operational, thrown); undecodable is a problem.
  let superblock: SuperblockObject;
  let listChecksummed: boolean;
  try {
    const decoded = await readSuperblockChecked(volumeStore, prefix);
    superblock = decoded.superblock;
    listChecksummed = decoded.checkpointsChecksummed;
    if (decoded.rewrittenByReference) {
      notes.push("superblock: lsvd-rbd rewrote its checkpoint list in place (leaving the v1 crc stale, as it does); every other byte matches lsvd's CRCs, and each checkpoint the list names must exist and decode. lsvd's next checkpoint rewrites it");
    } else if (!decoded.checkpointsChecksummed) {
      notes.push("superblock: plain v1 without a crc; each checkpoint it names must exist and decode");
    }
  } catch (error) {
    if (error instanceof CorruptionError) {
      problems.push(problem("superblock", 0, error.message));
      return null;
    }
    throw error;
  }
  // A clone reads the objects at or below its base's last_seq from its bases (clone_chain.ts).
  let chain: CloneChain;
  try {
    chain = await loadCloneChain(volumeStore, prefix, superblock);
  } catch (error) {
    if (!(error instanceof CorruptionError || error instanceof NotFoundError)) throw error;
    problems.push(problem("superblock", 0, error.message));
    return null;
  }
  const store = chain.wrap(volumeStore);
  if (chain.isClone) notes.push(`clone: objects up to seq ${chain.floor} are read from its base(s) ${chain.levels.slice(1).map((level) => level.prefix).join(" <- ")}`);
  result.superblock = superblock;
  report.volUuid = superblock.volUuid;
  report.volumeBytes = superblock.volSectors * SECTOR_BYTES;
  report.superblockCheckpoints = [...superblock.checkpoints];
  return {
    store, prefix, superblock, listChecksummed, chain, result,
    seqs: [], present: new Set(), loaded: new Map(), startSeq: 0, infos: new Map(), checkpointInfos: new Map(),
    replay: new ExtentMap(), rollbackSeen: false, replayBroken: null, logEnd: null, holes: new BoundedList<number>(), expected: chain.floor + 1,
  };
}

/** 2. Which objects exist: object seqs, seqs in skipped ranges, and names that are not object names. */
async function listObjects(scan: BackendScan, progress?: FsckProgress): Promise<void> {
  const { prefix, superblock, seqs } = scan;
  const { report, notes } = scan.result;
  const stray = new BoundedList<string>();
  const skippedSeqs: number[] = [];
  progress?.step("listing the objects");
  for (const name of await scan.store.list(`${prefix}.`)) {
    const seq = parseObjectName(prefix, name);
    if (name === leaseName(prefix)) continue;
    if (seq === null || seq === 0) stray.push(name);
    else if (skippedRangeOf(superblock.skipped, seq) !== null) skippedSeqs.push(seq);
    else seqs.push(seq);
  }
  seqs.sort((a, b) => a - b);
  report.skippedObjects = skippedSeqs.length;
  if (skippedSeqs.length > 0) {
    notes.push(`${skippedSeqs.length} object(s) in skipped seq ranges (landed after their writer lost the volume, or beyond a gap; not part of the volume, deleted by the next open or --repair): ${skippedSeqs.slice(0, 5).join(", ")}`);
  }
  report.strayNames = stray.items;
  if (stray.count > 0) notes.push(`${stray.count} name(s) under '${prefix}.' are not object names (ignored): ${stray.items.slice(0, 5).join(", ")}`);
  scan.present = new Set(seqs);
  report.objects.count = seqs.length;
  report.objects.firstSeq = seqs[0] ?? null;
  report.objects.lastSeq = seqs[seqs.length - 1] ?? null;
}

/** 3. The checkpoint recovery starts from (the checkpoint table, rules.ts), reading on where recovery refuses. */
async function chooseStartCheckpoint(scan: BackendScan): Promise<void> {
  const { store, prefix, superblock, present, loaded } = scan;
  const loads = async (seq: number) => {
    if (!present.has(seq)) return false;
    const checkpoint = await loadCheckpoint(store, prefix, seq, superblock, []);
    if (checkpoint !== null) loaded.set(seq, checkpoint);
    return checkpoint !== null;
  };
  scan.startSeq = (await chooseCheckpointSeq(superblock.checkpoints, scan.listChecksummed, loads, { readOnAfterRefusal: true })).seq;
  scan.result.report.recoveryCheckpointSeq = scan.startSeq;
}

/** 4. Every object, in seq order; the replay map follows along from seq 1 to the log end. */
async function checkEveryObject(scan: BackendScan, progress?: FsckProgress): Promise<void> {
  const { chain, seqs } = scan;
  scan.infos = await checkBaseObjects(scan.store, chain, [...scan.loaded.values()], scan.result.problems);
  if (!scan.present.has(1)) scan.replayBroken = chain.isClone ? "a clone's log starts above its base's" : "object 1 is missing (older objects were removed)";
  let checked = 0;
  progress?.step(`checking ${seqs.length} object(s)`);
  for (const seq of seqs) {
    progress?.count(checked++, seqs.length, "objects checked");
    noteHolesBefore(scan, seq);
    scan.expected = seq + 1;
    await checkOneObject(scan, seq);
  }
}

/** The seqs missing below `seq`: holes below the start checkpoint, or the log end above it. */
function noteHolesBefore(scan: BackendScan, seq: number): void {
  for (let hole = scan.expected; hole < seq && scan.logEnd === null; hole++) {
    const skipped = skippedRangeOf(scan.superblock.skipped, hole);
    if (skipped !== null) hole = skipped.last; // never written: not a hole
    else if (hole <= scan.startSeq) scan.holes.push(hole);
    else if (endsLog({ present: false, valid: false })) scan.logEnd = hole;
  }
}

async function checkOneObject(scan: BackendScan, seq: number): Promise<void> {
  const { store, prefix, chain, startSeq } = scan;
  const { report, problems, notes } = scan.result;
  const name = objectName(prefix, seq);
  let bytes: Uint8Array;
  try {
    bytes = await store.get(name);
  } catch (error) {
    if (error instanceof NotFoundError) return; // deleted while we looked: as if never listed
    throw error;
  }
  report.objects.bytes += bytes.byteLength;
  const info = checkObject(bytes, seq, scan.superblock.volUuid);
  // A clone's first checkpoint as lsvd-rbd writes it has no checksum of its own: verified against its base's.
  const cloneFirst = seq === chain.floor + 1 && chain.isClone ? await loadCheckpoint(store, prefix, seq, scan.superblock, []) : null;
  if (cloneFirst !== null && !info.valid) Object.assign(info, { valid: true, error: null });
  scan.infos.set(seq, info);
  if (!info.valid) {
    report.objects.invalid += 1;
    if (seq <= startSeq) {
      // (seq == startSeq: it decoded a moment ago; objects are immutable, so only a concurrent rewrite gets here.)
      problems.push(problem("object", seq, `object ${name} is invalid (${info.error}): data it holds cannot be read back`));
      scan.replayBroken ??= `object ${name} is invalid`;
    } else if (seq > startSeq && scan.logEnd === null && endsLog({ present: true, valid: false })) {
      scan.logEnd = seq;
    }
    return;
  }
  if (info.trailingBytes > 0) notes.push(`object ${name} has ${info.trailingBytes} bytes after its data area (ignored by readers)`);
  if (info.type === ObjectType.Data) {
    report.objects.data += 1;
    if (scan.replayBroken === null && (scan.logEnd === null || seq < scan.logEnd)) replayDataObject(bytes, scan.replay);
  } else {
    report.objects.checkpoints += 1;
    checkCheckpointObject(scan, seq, cloneFirst ?? decodeCheckpoint(bytes));
  }
}

/** A CKPT object met in the walk: checked against the objects before it; the newest rollback restarts the replay. */
function checkCheckpointObject(scan: BackendScan, seq: number, checkpoint: CheckpointObject): void {
  const { superblock } = scan;
  const error = checkCheckpointAgainstObjects(checkpoint, scan.infos);
  if (seq === superblock.rollbackSeq && error === null && (scan.logEnd === null || seq < scan.logEnd)) {
    // The newest rollback (snapshot_admin.ts): the volume's content restarts as this checkpoint's map.
    scan.replay = mapOfCheckpoint(checkpoint);
    scan.replayBroken = null;
    scan.rollbackSeen = true;
    scan.result.notes.push(`checkpoint ${objectName(scan.prefix, seq)} is the newest rollback: the replay of the DATA objects restarts from its map`);
  }
  scan.checkpointInfos.set(seq, {
    seq,
    listed: superblock.checkpoints.includes(seq),
    snapshots: superblock.snapshots.filter((snap) => snap.seq === seq).map((snap) => snap.name),
    usable: error === null,
    mapEntries: checkpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES,
    error,
  });
}

/** Where the log ends (past skipped ranges), and the holes below the start checkpoint. Returns the log end. */
function endTheLog(scan: BackendScan): number {
  const { superblock, holes, startSeq } = scan;
  const { report, notes } = scan.result;
  if (superblock.rollbackSeq > 0 && !scan.rollbackSeen) scan.replayBroken = `the volume was rolled back at seq ${superblock.rollbackSeq}, whose checkpoint is gone since`;
  let logEnd = scan.logEnd ?? scan.expected;
  for (let range = skippedRangeOf(superblock.skipped, logEnd); range !== null; range = skippedRangeOf(superblock.skipped, logEnd)) logEnd = range.last + 1;
  scan.logEnd = logEnd;
  report.logEndSeq = logEnd;
  report.holesBeforeCheckpoint = holes.items;
  report.holesBeforeCheckpointCount = holes.count;
  if (holes.count > 0) notes.push(`${holes.count} seq(s) missing below checkpoint ${startSeq} (dropped checkpoints, or objects no map entry needs): ${holes.items.slice(0, 10).join(", ")}${holes.count > 10 ? ", ..." : ""}`);
  return logEnd;
}

/** Checkpoints the superblock lists: each must be present and usable. */
function checkListedCheckpoints(scan: BackendScan, logEnd: number): void {
  const { prefix, superblock, present, infos, checkpointInfos, result } = scan;
  const keep: number[] = [];
  for (const seq of superblock.checkpoints) {
    const info = checkpointInfos.get(seq);
    const objectInfo = infos.get(seq);
    let error: string | null = null;
    if (!present.has(seq)) error = "missing";
    else if (objectInfo && !objectInfo.valid) error = objectInfo.error;
    else if (objectInfo && objectInfo.type !== ObjectType.Checkpoint) error = "not a checkpoint object";
    else if (info && !info.usable) error = info.error;
    else if (seq >= logEnd) error = `beyond the log end (${objectName(prefix, logEnd)})`;
    if (error === null) {
      keep.push(seq);
    } else {
      result.problems.push(problem("checkpoint", seq, `checkpoint ${objectName(prefix, seq)} listed by the superblock is unusable: ${error}`));
      if (!info) checkpointInfos.set(seq, { seq, listed: true, snapshots: [], usable: false, mapEntries: 0, error });
    }
  }
  if (keep.length !== superblock.checkpoints.length) result.checkpointsToKeep = keep;
}

/** Objects at and beyond the log end: a problem behind an invalid object, left-overs behind a missing one. */
function reportBeyondLogEnd(scan: BackendScan, logEnd: number): void {
  const { prefix } = scan;
  const { report, problems, notes } = scan.result;
  const beyond = new BoundedList<number>();
  for (const seq of scan.seqs) if (seq >= logEnd) beyond.push(seq);
  report.beyondLogEnd = beyond.items;
  report.beyondLogEndCount = beyond.count;
  const beyondList = `${beyond.items.slice(0, 5).join(", ")}${beyond.count > 5 ? ", ..." : ""}`;
  if (beyond.count > 0 && scan.present.has(logEnd)) {
    const why = `object ${objectName(prefix, logEnd)} is invalid (${scan.infos.get(logEnd)?.error ?? "unreadable"})`;
    problems.push(problem("gap", logEnd, `the log ends at seq ${logEnd}: ${why}; ${beyond.count} object(s) at or beyond it (${beyondList}) are not part of the volume and would be deleted by recovery`));
  } else if (beyond.count > 0) {
    notes.push(
      `the log ends at seq ${logEnd} (object ${objectName(prefix, logEnd)} is missing): ${beyond.count} object(s) beyond it (${beyondList}) are left-overs of a run killed while puts were in flight, not part of the volume; the next open deletes them, and so does --repair. (Had no run been killed, object ${logEnd} was lost: check with --cache.)`,
    );
  }
}

/** 5. The map recovery builds, against the replay from seq 1. */
async function compareWithRecovery(scan: BackendScan, logEnd: number, progress?: FsckProgress): Promise<void> {
  const { store, prefix, seqs, startSeq, result } = scan;
  const { report, problems, notes } = result;
  let state: BackendState;
  try {
    progress?.count(seqs.length, seqs.length, "objects checked");
    progress?.step("building the map as recovery does");
    state = await recoverBackend(store, prefix, { verifyData: true, onRolledForward: (objects) => progress?.count(objects, null, "objects rolled forward") });
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
    problems.push(problem("recovery", null, `recovery fails: ${error.message}`));
    report.map.note = "recovery failed";
    return;
  }
  result.state = state;
  if (state.unfinished) {
    // Read as a restart with the cache that wrote it would (the journal holds the rest of the write); checkCache says
    // when the cache given does not, and the next open would drop it.
    result.unfinished = { tail: state.unfinished, writerCacheUuid: state.writerCacheUuid, writerCacheSeqLast: state.writerCacheSeqLast };
    const objects = state.unfinished.objects;
    keepUnfinishedTail(prefix, state);
    notes.push(`${objects.length} object(s) from ${objectName(prefix, objects[0]!.seq)} end inside a client write: part of the log while the journal of the cache that wrote them holds its rest; without that cache, recovery ends the log before them`);
  }
  report.map.extents = state.map.extentCount;
  if (state.nextSeq !== logEnd || state.checkpointSeq !== startSeq) {
    problems.push(problem("recovery", null, `recovery reads the log as checkpoint ${state.checkpointSeq} .. ${state.nextSeq - 1}, fsck as ${startSeq} .. ${logEnd - 1}`));
  }
  if (scan.replayBroken !== null) {
    report.map.note = `not compared with a replay from seq 1: ${scan.replayBroken}`;
  } else {
    compareWithReplay(scan, state.map);
  }
}

function compareWithReplay(scan: BackendScan, recovered: ExtentMap): void {
  const { report, problems } = scan.result;
  report.map.comparedWithReplay = true;
  // With objects deleted below the checkpoint (garbage collection), the replay may still map sectors whose trim
  // lay in a deleted object. So when the maps differ and there are holes, the check is one way: every extent
  // recovery maps must be mapped the same by the replay of the DATA objects left.
  let difference = compareMaps(recovered, scan.replay);
  let partial = false;
  if (difference !== null && scan.holes.count > 0) {
    partial = true;
    difference = compareMapsOneWay(recovered, scan.replay);
  }
  report.map.equal = difference === null;
  const what = partial
    ? "every extent is mapped the same by a replay of the DATA objects left from seq 1 (deleted objects held trims or dead data)"
    : "equals a replay of every DATA object from seq 1";
  report.map.note = difference === null ? what : difference;
  if (difference !== null) {
    problems.push(problem("map", scan.startSeq, `the map from checkpoint ${scan.startSeq} plus roll-forward differs from a replay of the DATA objects from seq 1: ${difference}`));
  }
}

/**
 * Unnamed checkpoints: below the oldest named one they are left-overs (noted, deleted by --repair); at or above it,
 * below the log end, they must agree with the objects (see the file comment).
 */
function checkUnlistedCheckpoints(prefix: string, listed: number[], infos: Map<number, FsckCheckpointInfo>, logEnd: number, result: BackendCheck): void {
  const oldestListed = listed.length > 0 ? Math.min(...listed) : 0;
  const leftovers = new BoundedList<number>();
  for (const info of [...infos.values()].sort((a, b) => a.seq - b.seq)) {
    if (info.listed || info.snapshots.length > 0) continue; // a snapshot's checkpoint is checked by checkSnapshots
    if (info.seq < oldestListed) {
      leftovers.push(info.seq);
    } else if (!info.usable && info.seq < logEnd) {
      result.problems.push(problem("checkpoint", info.seq, `checkpoint ${objectName(prefix, info.seq)} (not listed) disagrees with the objects: ${info.error}`));
    }
  }
  result.report.leftoverCheckpoints = leftovers.items;
  result.report.leftoverCheckpointsCount = leftovers.count;
  if (leftovers.count > 0) {
    const names = `${leftovers.items.slice(0, 5).map((seq) => objectName(prefix, seq)).join(", ")}${leftovers.count > 5 ? ", ..." : ""}`;
    result.notes.push(
      `${leftovers.count} checkpoint(s) not named by the superblock and older than the oldest it names (${names}): left-overs of a run killed before deleting them, never read by recovery; garbage collection and --repair delete them`,
    );
  }
}

/** Each snapshot's checkpoint: present, valid, a checkpoint, and its map agreeing with the objects it names. */
function checkSnapshots(
  prefix: string,
  superblock: SuperblockObject,
  present: Set<number>,
  infos: Map<number, ObjectInfo>,
  checkpointInfos: Map<number, FsckCheckpointInfo>,
  problems: FsckProblem[],
): void {
  for (const snap of superblock.snapshots) {
    const objectInfo = infos.get(snap.seq);
    const info = checkpointInfos.get(snap.seq);
    let error: string | null = null;
    if (!present.has(snap.seq)) error = "missing";
    else if (objectInfo && !objectInfo.valid) error = objectInfo.error;
    else if (objectInfo && objectInfo.type !== ObjectType.Checkpoint) error = "not a checkpoint object";
    else if (info && !info.usable) error = info.error;
    if (error !== null) {
      problems.push(problem("snapshot", snap.seq, `snapshot '${snap.name}': its checkpoint ${objectName(prefix, snap.seq)} is unusable (${error}): the snapshot cannot be read`));
    }
  }
}

/** Header, CRCs, seq and UUID of one whole object. */
function checkObject(bytes: Uint8Array, seq: number, volUuid: string): ObjectInfo {
  const info: ObjectInfo = { valid: false, type: 0, hdrSectors: 0, dataSectors: 0, error: null, trailingBytes: 0 };
  try {
    const common = decodeCommonHeader(bytes);
    info.type = common.type;
    info.hdrSectors = common.hdrSectors;
    info.dataSectors = common.dataSectors;
    if (common.seq !== seq) throw new CorruptionError(`its header says seq ${common.seq}`);
    if (common.volUuid !== volUuid) throw new CorruptionError(`it belongs to volume ${common.volUuid}`);
    if (common.type === ObjectType.Data) {
      const header = decodeDataObjectHeader(bytes.subarray(0, Math.min(bytes.byteLength, common.hdrSectors * SECTOR_BYTES)));
      const objectBytes = (header.hdrSectors + header.dataSectors) * SECTOR_BYTES;
      if (bytes.byteLength < objectBytes) throw new CorruptionError(`it is ${bytes.byteLength} bytes, its header says ${objectBytes}`);
      // Bytes after the data area are not read by anyone (reads are ranged), as recovery does: noted, not fatal.
      if (bytes.byteLength > objectBytes) info.trailingBytes = bytes.byteLength - objectBytes;
      verifyDataArea(header, bytes.subarray(header.hdrSectors * SECTOR_BYTES, objectBytes));
    } else if (common.type === ObjectType.Checkpoint) {
      decodeCheckpoint(bytes);
    } else {
      throw new CorruptionError(`unexpected object type ${common.type}`);
    }
    info.valid = true;
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
    info.error = error.message;
  }
  return info;
}

/**
 * A clone's base objects that its checkpoints list (through the chain: each must be a valid DATA object of the base
 * volume that holds it), as infos for the checks of the clone's checkpoints; a missing or invalid one is a problem.
 */
async function checkBaseObjects(store: ObjectStore, chain: CloneChain, checkpoints: CheckpointObject[], problems: FsckProblem[]): Promise<Map<number, ObjectInfo>> {
  const infos = new Map<number, ObjectInfo>();
  const seqs = new Set<number>();
  for (const checkpoint of checkpoints) for (const entry of checkpoint.objects) if (entry.seq <= chain.floor) seqs.add(entry.seq);
  for (const seq of [...seqs].sort((a, b) => a - b)) {
    const level = chain.levelOf(seq);
    const name = objectName(level.prefix, seq);
    let bytes: Uint8Array;
    try {
      bytes = await store.get(objectName(chain.levels[0]!.prefix, seq));
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      problems.push(problem("object", seq, `base object ${name} is missing: data the clone reads from it cannot be read back`));
      continue;
    }
    const info = checkObject(bytes, seq, level.volUuid);
    if (!info.valid) problems.push(problem("object", seq, `base object ${name} is invalid (${info.error}): data the clone reads from it cannot be read back`));
    infos.set(seq, info);
  }
  return infos;
}

/** Applies one (valid) DATA object to a map exactly as its writes happened (rules.ts, applyDataObject). */
/** A checkpoint's map with offsets in the data area, as a replay holds them. */
function mapOfCheckpoint(checkpoint: CheckpointObject): ExtentMap {
  const map = new ExtentMap();
  const headers = new Map(checkpoint.objects.map((entry) => [entry.seq, entry.hdrSectors]));
  const view = new DataView(checkpoint.mapEntries.buffer, checkpoint.mapEntries.byteOffset, checkpoint.mapEntries.byteLength);
  for (let index = 0; index < checkpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES; index++) {
    const entry = unpackCheckpointMapEntry(view, index);
    map.update(entry.lba, entry.sectors, entry.obj, entry.offsetSectors - (headers.get(entry.obj) ?? 0));
  }
  return map;
}

function replayDataObject(bytes: Uint8Array, map: ExtentMap): void {
  const common = decodeCommonHeader(bytes);
  applyDataObject(decodeDataObjectHeader(bytes.subarray(0, common.hdrSectors * SECTOR_BYTES)), map);
}

/** Whether a seq after the recovery checkpoint, outside skipped ranges, ends the log (the log object table, rules.ts). */
function endsLog(found: { present: boolean; valid: boolean }): boolean {
  return decideLogObject({ skipped: false, ...found, checkpoint: false, writeContinues: false }) === "end";
}

/** Why the checkpoint's map or object table disagrees with the objects before it, or null. */
function checkCheckpointAgainstObjects(checkpoint: CheckpointObject, infos: Map<number, ObjectInfo>): string | null {
  const listed = new Map(checkpoint.objects.map((entry) => [entry.seq, entry]));
  for (const entry of checkpoint.objects) {
    const info = infos.get(entry.seq);
    if (entry.seq >= checkpoint.seq) return `its object table lists object ${entry.seq}, not older than the checkpoint`;
    if (info && info.valid && (info.hdrSectors !== entry.hdrSectors || info.dataSectors !== entry.dataSectors)) {
      return `its object table says object ${entry.seq} has ${entry.hdrSectors}+${entry.dataSectors} sectors, the object ${info.hdrSectors}+${info.dataSectors}`;
    }
  }
  const view = new DataView(checkpoint.mapEntries.buffer, checkpoint.mapEntries.byteOffset, checkpoint.mapEntries.byteLength);
  const count = checkpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES;
  let bad = 0;
  let firstBad = "";
  let previousEnd = 0;
  for (let index = 0; index < count; index++) {
    const entry = unpackCheckpointMapEntry(view, index);
    const info = infos.get(entry.obj);
    let why: string | null = null;
    if (entry.lba < previousEnd) why = "overlaps or precedes the previous entry";
    else if (!listed.has(entry.obj)) why = `names object ${entry.obj}, which its object table does not list`;
    else if (!info) why = `names object ${entry.obj}, which is missing`;
    else if (!info.valid) why = `names object ${entry.obj}, which is invalid`;
    else if (info.type !== ObjectType.Data) why = `names object ${entry.obj}, which is not a DATA object`;
    else if (entry.offsetSectors < info.hdrSectors || entry.offsetSectors + entry.sectors > info.hdrSectors + info.dataSectors) {
      why = `sectors ${entry.offsetSectors}..${entry.offsetSectors + entry.sectors} lie outside object ${entry.obj}'s data area (${info.hdrSectors}..${info.hdrSectors + info.dataSectors})`;
    }
    previousEnd = entry.lba + entry.sectors;
    if (why !== null) {
      if (bad === 0) firstBad = `map entry ${index} (lba ${entry.lba}, ${entry.sectors} sectors) ${why}`;
      bad += 1;
    }
  }
  return bad === 0 ? null : `${bad} bad map entr${bad === 1 ? "y" : "ies"}; first: ${firstBad}`;
}

/** null if both maps hold the same extents, else the first difference. */
function compareMaps(recovered: ExtentMap, replayed: ExtentMap): string | null {
  const collect = (map: ExtentMap) => {
    const words = new Float64Array(map.extentCount * 4);
    let index = 0;
    map.forEach((lba, sectors, obj, offset) => {
      words[index++] = lba;
      words[index++] = sectors;
      words[index++] = obj;
      words[index++] = offset;
    });
    return words;
  };
  const a = collect(recovered);
  const b = collect(replayed);
  const describe = (words: Float64Array, at: number) =>
    at < words.length ? `lba ${words[at]} +${words[at + 1]} -> object ${words[at + 2]} offset ${words[at + 3]}` : "nothing";
  for (let at = 0; at < Math.max(a.length, b.length); at += 4) {
    if (a[at] !== b[at] || a[at + 1] !== b[at + 1] || a[at + 2] !== b[at + 2] || a[at + 3] !== b[at + 3]) {
      return `extent ${at / 4}: recovered ${describe(a, at)}, replayed ${describe(b, at)} (${a.length / 4} vs ${b.length / 4} extents)`;
    }
  }
  return null;
}

/** Every extent of `recovered` must be mapped to the same object and offsets by `replayed`; null when so. */
function compareMapsOneWay(recovered: ExtentMap, replayed: ExtentMap): string | null {
  let difference: string | null = null;
  recovered.forEach((lba, sectors, obj, offset) => {
    if (difference !== null) return;
    let same = 0;
    replayed.runsMappedTo(lba, sectors, obj, offset, (_runLba, runSectors) => (same += runSectors));
    if (same !== sectors) difference = `lba ${lba} +${sectors} -> object ${obj} offset ${offset}: the replay maps only ${same} of those sectors there`;
  });
  return difference;
}

interface RepairStep {
  what: string;
  /** It removed a problem (exit code 1), rather than left-overs of a crash (notes; exit code unchanged). */
  fixesProblem: boolean;
}

/** One repair step; returns what was done (empty: nothing to do). */
async function repairOnce(store: ObjectStore, prefix: string, check: BackendCheck, owner: VolumeOwner): Promise<RepairStep[]> {
  const { superblock, report } = check;
  if (!superblock) return [];
  // The superblock as it is now, with its version: every rewrite below is a compare-and-swap on it.
  const superblocks = await SuperblockStore.read(store, prefix, owner.fence);
  if (check.checkpointsToKeep !== null) {
    // First, so that the superblock never names an object the step below deletes.
    const dropped = superblocks.superblock.checkpoints.filter((seq) => !check.checkpointsToKeep!.includes(seq));
    await superblocks.write({ ...superblocks.superblock, checkpoints: check.checkpointsToKeep });
    return [{ what: `superblock rewritten without checkpoint(s) ${dropped.join(", ")}`, fixesProblem: true }];
  }
  const steps: RepairStep[] = [];
  if ((report.beyondLogEndCount > 0 && report.logEndSeq !== null) || report.skippedObjects > 0) {
    // What the next open does: the log continues above every name there is (skipped for good), then those go.
    const state = await recoverBackend(store, prefix, { verifyData: true, superblock: superblocks.decoded });
    // An unfinished tail stays in the log (as fsck reads it): the journal of the cache that wrote it may finish it at
    // the next open, which drops it otherwise. Skipping it here could lose writes that journal acknowledged.
    keepUnfinishedTail(prefix, state);
    const plan = await beginLog(store, state, superblocks, owner, () => undefined);
    const deleted = state.beyondGap.length + state.skippedObjects.length;
    const range = plan.added === null ? "" : `, seqs ${plan.added.first}..${plan.added.last} skipped for good (the log continues at ${plan.nextSeq})`;
    const gapIsProblem = check.problems.some((found) => found.kind === "gap");
    steps.push({ what: `log truncated at seq ${state.nextSeq}: ${deleted} object(s) deleted${range}`, fixesProblem: gapIsProblem });
  }
  if (report.leftoverCheckpointsCount > 0) {
    // Below the oldest checkpoint the (durable) superblock names: never read by recovery. The list is bounded, so a
    // huge backlog takes more than one run; each run deletes FSCK_REPORT_ITEMS_MAX.
    for (const seq of report.leftoverCheckpoints) await store.delete(objectName(prefix, seq));
    const seqs = report.leftoverCheckpoints;
    steps.push({ what: `deleted ${seqs.length} left-over checkpoint(s) not named by the superblock (${seqs.slice(0, 5).join(", ")}${seqs.length > 5 ? ", ..." : ""})`, fixesProblem: false });
  }
  return steps;
}

// ---- Cache check -----------------------------------------------------------------------------------------------

function emptyCacheReport(device: CacheDevice, state: BackendState): FsckCacheReport {
  return {
    path: device.path,
    superblockValid: false,
    cacheUuid: null,
    volumeMatches: false,
    generation: null,
    tailSeq: null,
    journalRecords: 0,
    journalDataRecords: 0,
    journalPadRecords: 0,
    headSeq: null,
    stopReason: null,
    stopDetail: "",
    journalCase: null,
    logWriterCacheUuid: state.writerCacheUuid,
    logJournalSeqLast: state.writerCacheSeqLast,
    pendingReplay: 0,
  };
}

/** Walks the journal from its tail as the next open would, counting its records and those the open replays. */
async function walkJournal(device: CacheDevice, pool: AlignedPool, superblock: CacheSuperblock, replayAfter: number | null, report: FsckCacheReport): Promise<void> {
  const walker = new JournalWalker(device, pool, superblock);
  try {
    for (;;) {
      const record = await walker.next();
      if (!record) break;
      report.journalRecords += 1;
      if (record.header.type === JournalRecordType.Pad) {
        report.journalPadRecords += 1;
        continue;
      }
      report.journalDataRecords += 1;
      if (replayAfter !== null && record.header.seq > replayAfter) report.pendingReplay += 1;
    }
  } finally {
    walker.close();
  }
  report.headSeq = walker.head.seq;
  report.stopReason = walker.stopReason;
  report.stopDetail = walker.stopDetail;
}

async function checkCache(
  device: CacheDevice,
  pool: AlignedPool,
  backend: BackendCheck,
  prefix: string,
): Promise<{ report: FsckCacheReport; problems: FsckProblem[]; notes: string[] }> {
  const problems: FsckProblem[] = [];
  const notes: string[] = [];
  const report = emptyCacheReport(device, backend.state!);
  const state = backend.state!;
  let superblock;
  try {
    superblock = await readCacheSuperblock(device, pool);
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
    problems.push(problem("cache", null, error.message));
    return { report, problems, notes };
  }
  report.superblockValid = true;
  report.cacheUuid = superblock.cacheUuid;
  report.generation = superblock.generation;
  report.tailSeq = superblock.replaySeq;
  report.volumeMatches = superblock.volUuid === state.superblock.volUuid;
  const volUuid = state.superblock.volUuid;
  const foreign = decideJournalCase(volUuid, state.writerCacheUuid, state.writerCacheSeqLast, superblock);
  if (foreign.refuse) {
    report.journalCase = foreign.journalCase;
    problems.push(problem("cache", null, `cache ${device.path} belongs to volume ${superblock.volUuid}, not ${state.superblock.volUuid} (case @A: the volume refuses to open with it)`));
    return { report, problems, notes };
  }
  let writer = { uuid: state.writerCacheUuid, seqLast: state.writerCacheSeqLast };
  const unfinished = backend.unfinished;
  if (unfinished && decideJournalCase(volUuid, writer.uuid, writer.seqLast, superblock).replayAfter === null) {
    // As Volume.open decides: this journal does not hold the rest of the tail's write, so the log ends before it.
    // Nothing is damaged (the backend is a prefix of whole writes either way), so it is a note, as case @F is.
    const first = unfinished.tail.objects[0]!.seq;
    const count = unfinished.tail.objects.length;
    notes.push(`the log ends at seq ${first} with this cache: ${count} object(s) from ${objectName(prefix, first)} end inside a client write whose rest only the journal of cache ${writer.uuid} holds; the next open with this cache deletes them`);
    writer = { uuid: unfinished.writerCacheUuid, seqLast: unfinished.writerCacheSeqLast };
    report.logWriterCacheUuid = writer.uuid;
    report.logJournalSeqLast = writer.seqLast;
  }
  const { journalCase, replayAfter } = decideJournalCase(volUuid, writer.uuid, writer.seqLast, superblock);
  report.journalCase = journalCase;
  await walkJournal(device, pool, superblock, replayAfter, report);
  const writerName = writer.uuid === NIL_UUID ? "none yet" : writer.uuid === superblock.cacheUuid ? "this cache" : `cache ${writer.uuid}`;
  notes.push(`log writer: ${writerName}, newest journal seq in the backend ${writer.seqLast}; journal tail seq ${superblock.replaySeq}, head seq ${report.headSeq}`);
  if (journalCase === "@C" || journalCase === "@E") {
    problems.push(
      problem(
        "journal",
        null,
        `case ${journalCase}: the journal's tail (seq ${superblock.replaySeq}) is past what the backend log of ${prefix} holds (seq ${writer.seqLast}): objects the journal had released are lost, so writes after them are gone; the next open discards ${report.journalDataRecords} journal record(s)`,
      ),
    );
  } else if (journalCase === "@F") {
    notes.push(`case @F: the backend log went on with another cache; this journal's ${report.journalDataRecords} record(s) are stale and the next open discards them`);
  }
  return { report, problems, notes };
}
