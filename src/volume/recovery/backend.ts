// The backend half of recovery: rebuilds the volume's state from the backend. The newest usable checkpoint (the
// checkpoint table), then a roll-forward through the objects after it in seq order, each decided by the log object
// table (both in rules.ts, shown in docs/architecture.md, "Recovery"), stopping at the first gap. Reads only: what the
// new owner writes (skipped ranges, the superblock) is decided from what this returns (ownership.ts, planLogStart).
// Objects beyond the gap are reported, not deleted: the next owner starts above them and records them as skipped, so
// their names are never written again and a late landing of a stale writer cannot join the log.
//
// Objects still held at the gap are the *unfinished tail*: pieces of one client write whose end never reached the
// backend. Only the cache's journal can finish that write, so the caller decides (journal.ts, settleUnfinishedTail,
// with the journal table): keepUnfinishedTail when the journal continues the log after the tail's newest object (case
// @B), dropUnfinishedTail otherwise, which ends the log at the last write boundary (the tail's names are then skipped
// by the next owner like any object beyond the log end). Either way the image is a prefix of the client writes, not
// of their pieces: a client write is in the backend whole or not at all.

import { NIL as NIL_UUID } from "uuid";
import { CorruptionError, NotFoundError, assert } from "../../errors.ts";
import type { ObjectStore } from "../../backend/object_store.ts";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, unpackCheckpointMapEntry, type CheckpointObject } from "../../format/checkpoint_object.ts";
import { decodeDataObjectHeader, verifyDataArea, type DataObjectHeader } from "../../format/data_object.ts";
import { decodeCommonHeader, ObjectType } from "../../format/object_header.ts";
import { objectName, parseObjectName } from "../../format/object_name.ts";
import { decodeSuperblockChecked, skippedRangeOf, type DecodedSuperblock, type SuperblockObject } from "../../format/superblock_object.ts";
import { ExtentMap } from "../../map/extent_map.ts";
import { SECTOR_BYTES } from "../../constants.ts";
import { ObjectKind, ObjectTable } from "../object_table.ts";
import { applyDataObject, chooseCheckpointSeq, decideLogObject } from "./rules.ts";
import { decodeFirstCloneCheckpoint } from "./clone_checkpoint.ts";
import { loadCloneChain, type CloneChain } from "../clone_chain.ts";

export interface BackendState {
  /** The store as the volume sees it: through its chain of bases when it is a clone (clone_chain.ts). */
  store: ObjectStore;
  chain: CloneChain;
  superblock: SuperblockObject;
  map: ExtentMap;
  objects: ObjectTable;
  /** The first seq not in the log: the next object gets this number. */
  nextSeq: number;
  /** Seq of the checkpoint recovery started from (0: none). */
  checkpointSeq: number;
  /** The cache that wrote the newest object of the log, and the newest journal record that object holds. */
  writerCacheUuid: string;
  writerCacheSeqLast: number;
  /** Objects rolled forward after the checkpoint. */
  rolledForward: number;
  /** DATA objects after the log's last write boundary, not applied: see the file comment. null: none. */
  unfinished: UnfinishedTail | null;
  /** Objects found beyond the gap (not in a skipped range): not part of the volume. */
  beyondGap: number[];
  /** Objects inside the superblock's skipped ranges (late landings, left-overs): never part of the volume. */
  skippedObjects: number[];
  /** The highest seq name in the backend (0: none). */
  highestSeq: number;
  /** Listed checkpoints recovery could not use, which `superblock` no longer lists. */
  checkpointsDropped: number[];
  /** What recovery decided, one line each, for the log. */
  notes: string[];
}

export interface UnfinishedTail {
  /** Oldest first; each decoded and checked (CRCs, seq, volume), none applied to the map. */
  objects: Array<{ seq: number; header: DataObjectHeader }>;
  /** The cache that wrote the newest of them, and the newest journal record that object holds. */
  writerCacheUuid: string;
  writerCacheSeqLast: number;
  /**
   * Where the roll-forward stopped (missing or invalid): the log's end if the tail is kept. Above the tail's newest
   * seq when a skipped range lies between them (a takeover's log start, after a tail the journal finished).
   */
  logEndSeq: number;
}

export interface RecoveryOptions {
  /** Verify each rolled-forward object's data CRC (reads whole objects). */
  verifyData: boolean;
  /** The superblock as its owner read it (SuperblockStore); read from the store when absent. */
  superblock?: DecodedSuperblock;
  /** Told the count of objects rolled forward so far, after each (progress). */
  onRolledForward?: (objects: number) => void;
}

export async function readSuperblock(store: ObjectStore, prefix: string): Promise<SuperblockObject> {
  return (await readSuperblockChecked(store, prefix)).superblock;
}

/** readSuperblock, and whether a CRC covers its checkpoint list (DecodedSuperblock). */
export async function readSuperblockChecked(store: ObjectStore, prefix: string): Promise<DecodedSuperblock> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(prefix);
  } catch (error) {
    if (error instanceof NotFoundError) throw new NotFoundError(`No volume at ${store.description}/${prefix}: superblock object '${prefix}' is missing`);
    throw error;
  }
  try {
    return decodeSuperblockChecked(bytes);
  } catch (error) {
    if (error instanceof CorruptionError) throw new CorruptionError(`Cannot read superblock '${prefix}': ${error.message}`);
    throw error;
  }
}

export async function recoverBackend(volumeStore: ObjectStore, prefix: string, options: RecoveryOptions): Promise<BackendState> {
  const decoded = options.superblock ?? (await readSuperblockChecked(volumeStore, prefix));
  let superblock = decoded.superblock;
  // A clone reads the objects at or below its base's last_seq through its chain of bases (clone_chain.ts).
  const chain = await loadCloneChain(volumeStore, prefix, superblock);
  const store = chain.wrap(volumeStore);
  const notes: string[] = [];
  const map = new ExtentMap();
  const objects = new ObjectTable();
  const checkpoint = await chooseCheckpoint(store, prefix, decoded, notes);
  if (chain.isClone && (checkpoint === null || checkpoint.seq <= chain.floor)) {
    throw new CorruptionError(`Clone ${prefix}: no usable checkpoint of its own above its base's last_seq ${chain.floor} (its first one, ${objectName(prefix, chain.floor + 1)}, holds the base's map)`);
  }
  if (checkpoint) loadCheckpointState(prefix, checkpoint, map, objects, notes);
  const checkpointSeq = checkpoint?.seq ?? 0;
  const log = await rollForward(store, prefix, superblock, checkpointSeq + 1, options, map, objects, notes);
  const writer = log.writer ?? checkpoint;
  const { logEndSeq, nextSeq, rolledForward, unfinished } = log;
  assert(nextSeq > checkpointSeq && nextSeq <= logEndSeq, "the log ends after its checkpoint, at or before the first seq not read");

  // Checkpoints the superblock lists but recovery could not use (lost with the newest objects, or damaged), and older
  // ones the backend no longer holds, stop being listed: the new owner's superblock must never name an object that is
  // not a usable checkpoint.
  const checkpointsDropped = await unusableListedCheckpoints(store, prefix, superblock.checkpoints, checkpointSeq);
  if (checkpointsDropped.length > 0) {
    superblock = { ...superblock, checkpoints: superblock.checkpoints.filter((listed) => !checkpointsDropped.includes(listed)) };
    notes.push(`superblock no longer lists unusable checkpoint(s) ${checkpointsDropped.map((listed) => objectName(prefix, listed)).join(", ")}`);
  }
  const names = await listBeyondLog(store, prefix, superblock, logEndSeq);
  // What the next owner deletes must hold nothing the log holds (ownership.ts deletes it once it is skipped).
  for (const seq of names.beyondGap) assert(objects.get(seq) === undefined, `object ${seq} beyond the log end is not in the log`);
  if (names.beyondGap.length > 0) {
    notes.push(`log ends at ${objectName(prefix, logEndSeq)} (missing or invalid); ${names.beyondGap.length} object(s) beyond it are not part of the volume`);
  }
  return {
    store,
    chain,
    superblock,
    map,
    objects,
    nextSeq,
    checkpointSeq,
    writerCacheUuid: writer?.cacheUuid ?? NIL_UUID,
    writerCacheSeqLast: writer?.cacheSeqLast ?? 0,
    rolledForward,
    unfinished,
    ...names,
    checkpointsDropped,
    notes,
  };
}

/** The checkpoint's object table and extent map, into `objects` and `map` (both empty). */
function loadCheckpointState(prefix: string, checkpoint: CheckpointObject, map: ExtentMap, objects: ObjectTable, notes: string[]): void {
  assert(map.extentCount === 0 && objects.count === 0, "a checkpoint loads into an empty state");
  for (const info of checkpoint.objects) {
    objects.add(info.seq, { kind: ObjectKind.Data, hdrSectors: info.hdrSectors, dataSectors: info.dataSectors, liveSectors: info.liveSectors });
  }
  const view = new DataView(checkpoint.mapEntries.buffer, checkpoint.mapEntries.byteOffset, checkpoint.mapEntries.byteLength);
  const entryCount = checkpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES;
  for (let index = 0; index < entryCount; index++) {
    const entry = unpackCheckpointMapEntry(view, index);
    const info = objects.get(entry.obj);
    if (!info || entry.offsetSectors < info.hdrSectors) {
      throw new CorruptionError(`Checkpoint ${objectName(prefix, checkpoint.seq)}: map entry ${index} names object ${entry.obj} it does not list`);
    }
    map.update(entry.lba, entry.sectors, entry.obj, entry.offsetSectors - info.hdrSectors);
  }
  objects.add(checkpoint.seq, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
  notes.push(`starting from checkpoint ${objectName(prefix, checkpoint.seq)} (${entryCount} extent(s), ${checkpoint.objects.length} object(s))`);
}

/** Every object name at or beyond the log end (not skipped), those in skipped ranges, and the highest seq named. */
async function listBeyondLog(
  store: ObjectStore,
  prefix: string,
  superblock: SuperblockObject,
  logEndSeq: number,
): Promise<{ beyondGap: number[]; skippedObjects: number[]; highestSeq: number }> {
  const beyondGap: number[] = [];
  const skippedObjects: number[] = [];
  let highestSeq = 0;
  for (const name of await store.list(`${prefix}.`)) {
    const found = parseObjectName(prefix, name);
    if (found === null || found === 0) continue;
    highestSeq = Math.max(highestSeq, found);
    if (skippedRangeOf(superblock.skipped, found) !== null) skippedObjects.push(found);
    else if (found >= logEndSeq) beyondGap.push(found);
  }
  return { beyondGap, skippedObjects, highestSeq };
}

/**
 * The checkpoint recovery starts from (null: none), by the checkpoint table (rules.ts): a list no CRC covers (rewritten
 * by lsvd-rbd, or plain v1 with crc 0) is trusted only if every checkpoint it names loads: a damaged entry must not
 * send recovery to an older checkpoint, or to seq 1 (where the log would end at the first hole).
 */
async function chooseCheckpoint(store: ObjectStore, prefix: string, decoded: DecodedSuperblock, notes: string[]): Promise<CheckpointObject | null> {
  const { superblock, checkpointsChecksummed, rewrittenByReference } = decoded;
  const loaded = new Map<number, CheckpointObject>();
  const loads = async (seq: number) => {
    const checkpoint = await loadCheckpoint(store, prefix, seq, superblock, notes);
    if (checkpoint) loaded.set(seq, checkpoint);
    return checkpoint !== null;
  };
  const chosen = await chooseCheckpointSeq(superblock.checkpoints, checkpointsChecksummed, loads);
  if (chosen.refusedAt !== null) {
    const name = objectName(prefix, chosen.refusedAt);
    const reason = notes.find((note) => note.startsWith(`checkpoint ${name} unusable (`))?.slice(`checkpoint ${name} unusable (`.length).replace(/\); trying an older one$/, "");
    throw new CorruptionError(
      `Superblock '${prefix}': its checkpoint list has no checksum (${rewrittenByReference ? "rewritten by lsvd-rbd" : "plain v1, crc not set"}) and names checkpoint ${name}, which is missing or invalid${reason === undefined ? "" : ` (${reason})`}: refusing to guess where the log starts ('lsvd fsck --repair' drops it from the list)`,
    );
  }
  if (chosen.seq === 0) return null;
  const checkpoint = loaded.get(chosen.seq);
  assert(checkpoint !== undefined && checkpoint.seq === chosen.seq, "the chosen checkpoint is one that loaded");
  return checkpoint;
}

/**
 * The listed checkpoints the next superblock must not name: those after the one recovery started from (it could not
 * use them), and older ones that are missing (one stat each: they are the fallback should the newest become unusable,
 * and a missing one is no fallback at all).
 */
async function unusableListedCheckpoints(store: ObjectStore, prefix: string, listed: readonly number[], checkpointSeq: number): Promise<number[]> {
  const unusable: number[] = [];
  for (const seq of listed) {
    if (seq > checkpointSeq) unusable.push(seq);
    else if (seq < checkpointSeq && (await store.stat(objectName(prefix, seq))) === null) unusable.push(seq);
  }
  return unusable;
}

/** What the roll-forward found: where the log ends, where it ends on a write boundary, and the tail between. */
interface RolledForward {
  /** The first seq not read (missing or invalid). */
  logEndSeq: number;
  /** The first seq after the last write boundary: logEndSeq, or the unfinished tail's first seq. */
  nextSeq: number;
  /** Objects applied. */
  rolledForward: number;
  /** The header of the newest DATA object applied (null: none). */
  writer: DataObjectHeader | null;
  unfinished: UnfinishedTail | null;
}

/** The log object table (rules.ts) from object `from` on: applies objects to `map` and `objects`, holds the rest. */
async function rollForward(
  store: ObjectStore,
  prefix: string,
  superblock: SuperblockObject,
  from: number,
  options: RecoveryOptions,
  map: ExtentMap,
  objects: ObjectTable,
  notes: string[],
): Promise<RolledForward> {
  let seq = from;
  let rolledForward = 0;
  let writer: DataObjectHeader | null = null;
  /** DATA objects ending inside a client write, since the last write boundary: applied once a boundary follows. */
  let held: UnfinishedTail["objects"] = [];
  for (; seq <= SEQ_MAX; seq++) {
    const skipped = skippedRangeOf(superblock.skipped, seq);
    const found = skipped === null ? await readLogObject(store, prefix, seq, superblock.volUuid, options.verifyData, notes) : NOT_READ;
    const object = found.object;
    const action = decideLogObject({
      skipped: skipped !== null,
      present: found.present,
      valid: object !== null,
      checkpoint: object !== null && object.header === null,
      writeContinues: object?.header?.writeContinues ?? false,
    });
    if (action === "skip-range") {
      seq = skipped!.last; // the loop's seq++ continues after the range
      continue;
    }
    if (action === "end") break;
    assert(object !== null, `object ${seq} is in the log only when it is valid`);
    if (action === "hold") {
      held.push({ seq, header: object.header! });
      continue;
    }
    for (const piece of held) applyToState(piece.header, map, objects);
    rolledForward += held.length + 1;
    options.onRolledForward?.(rolledForward);
    held = [];
    if (action === "apply") {
      applyToState(object.header!, map, objects);
      writer = object.header;
    } else {
      objects.add(seq, { kind: ObjectKind.Checkpoint, hdrSectors: object.hdrSectors, dataSectors: object.dataSectors, liveSectors: 0 });
    }
  }
  const newest = held[held.length - 1]?.header;
  const unfinished = newest ? { objects: held, writerCacheUuid: newest.cacheUuid, writerCacheSeqLast: newest.cacheSeqLast, logEndSeq: seq } : null;
  return { logEndSeq: seq, nextSeq: held.length > 0 ? held[0]!.seq : seq, rolledForward, writer, unfinished };
}

/** Seqs are u32: the roll-forward never reads past the last one. */
const SEQ_MAX = 0xffffffff;

/**
 * Asserts that `seqs` (ascending) follow one another in the log: every seq between two of them lies in a skipped
 * range (the pieces of an unfinished write are consecutive objects of the log).
 */
function assertFollow(seqs: readonly number[], skipped: SuperblockObject["skipped"], what: string): void {
  for (let index = 1; index < seqs.length; index++) {
    assert(seqs[index]! > seqs[index - 1]!, `${what}: seqs ascend`);
    for (let between = seqs[index - 1]! + 1; between < seqs[index]!; between++) {
      const range = skippedRangeOf(skipped, between);
      assert(range !== null, `${what}: seq ${between} between ${seqs[index - 1]} and ${seqs[index]} is in a skipped range`);
      between = range.last;
    }
  }
}

function describeTail(prefix: string, tail: UnfinishedTail): string {
  const first = tail.objects[0]!.seq;
  const last = tail.objects[tail.objects.length - 1]!.seq;
  return `object(s) ${objectName(prefix, first)}..${objectName(prefix, last)} end inside a client write`;
}

/**
 * The journal continues the log after the unfinished tail's newest object (it holds the rest of the write): the tail
 * is part of the log, as it was before any write boundary was recorded.
 */
export function keepUnfinishedTail(prefix: string, state: BackendState): void {
  const tail = state.unfinished;
  if (!tail) return;
  const seqs = tail.objects.map((object) => object.seq);
  assert(state.nextSeq === seqs[0], "the log ends right before its unfinished tail");
  assertFollow(seqs, state.superblock.skipped, "unfinished tail");
  assert(tail.logEndSeq > seqs[seqs.length - 1]!, "the roll-forward stopped after the tail");
  for (const object of tail.objects) applyToState(object.header, state.map, state.objects);
  state.nextSeq = tail.logEndSeq;
  state.writerCacheUuid = tail.writerCacheUuid;
  state.writerCacheSeqLast = tail.writerCacheSeqLast;
  state.rolledForward += tail.objects.length;
  state.unfinished = null;
  state.notes.push(`${describeTail(prefix, tail)}: kept, the journal holds the rest of it`);
}

/**
 * Nothing can finish the unfinished tail's write (the cache that holds its rest is lost, or is not the one given):
 * the log ends at the last write boundary. The tail's objects are left where they are, beyond the log end: the next
 * owner starts its log above them and records their seqs as skipped (ownership.ts, planLogStart), so no recovery
 * applies them again and their names are never written twice.
 */
export function dropUnfinishedTail(prefix: string, state: BackendState): void {
  const tail = state.unfinished;
  if (!tail) return;
  const seqs = tail.objects.map((object) => object.seq);
  assert(state.nextSeq === seqs[0], "the log ends right before its unfinished tail");
  assertFollow(seqs, state.superblock.skipped, "unfinished tail");
  for (const seq of seqs) assert(state.objects.get(seq) === undefined, `object ${seq} of a dropped tail was never applied`);
  state.unfinished = null;
  state.beyondGap.push(...seqs);
  state.beyondGap.sort((a, b) => a - b);
  state.notes.push(`${describeTail(prefix, tail)}, whose rest no journal holds: the log ends at ${objectName(prefix, state.nextSeq)}; ${seqs.length} object(s) left beyond it`);
}

/**
 * Checkpoint `seq` of the volume, decoded and checked (its seq and volume; a clone's first one as clone_checkpoint.ts
 * verifies it); null, with a note, when it is missing or invalid. `store` sees the volume through its chain.
 */
export async function loadCheckpoint(
  store: ObjectStore,
  prefix: string,
  seq: number,
  superblock: SuperblockObject,
  notes: string[],
): Promise<CheckpointObject | null> {
  const name = objectName(prefix, seq);
  try {
    const clone = superblock.clone;
    if (clone !== null && seq <= clone.lastSeq) throw new CorruptionError(`it is at or below the base's last_seq ${clone.lastSeq}`);
    const bytes = await store.get(name);
    const checkpoint = clone !== null && seq === clone.lastSeq + 1 ? await decodeFirstCloneCheckpoint(store, prefix, bytes, clone) : decodeCheckpoint(bytes);
    if (checkpoint.seq !== seq || checkpoint.volUuid !== superblock.volUuid) throw new CorruptionError("seq or volume UUID does not match its name");
    return checkpoint;
  } catch (error) {
    if (error instanceof NotFoundError || error instanceof CorruptionError) {
      notes.push(`checkpoint ${name} unusable (${error.message}); trying an older one`);
      return null;
    }
    throw error;
  }
}

/** A log object that decoded and checked: a DATA object's header, or a CKPT object's sizes. */
interface LogObject {
  header: DataObjectHeader | null;
  hdrSectors: number;
  dataSectors: number;
}

/** What the roll-forward found at a seq: whether a name exists, and the object if it is valid. */
interface Found {
  present: boolean;
  object: LogObject | null;
}

const NOT_READ: Found = { present: false, object: null };

async function readLogObject(store: ObjectStore, prefix: string, seq: number, volUuid: string, verifyData: boolean, notes: string[]): Promise<Found> {
  const name = objectName(prefix, seq);
  let bytes: Uint8Array;
  try {
    bytes = await store.get(name);
  } catch (error) {
    if (error instanceof NotFoundError) return NOT_READ;
    throw error;
  }
  return { present: true, object: checkLogObject(bytes, seq, volUuid, verifyData, notes, name) };
}

/** Decodes and checks object `seq` of the log; null (with a note) when it must be treated as missing. */
function checkLogObject(bytes: Uint8Array, seq: number, volUuid: string, verifyData: boolean, notes: string[], name: string): LogObject | null {
  try {
    const common = decodeCommonHeader(bytes);
    if (common.seq !== seq || common.volUuid !== volUuid) throw new CorruptionError("seq or volume UUID does not match its name");
    if (common.type === ObjectType.Checkpoint) {
      decodeCheckpoint(bytes);
      return { header: null, hdrSectors: common.hdrSectors, dataSectors: common.dataSectors };
    }
    if (common.type !== ObjectType.Data) throw new CorruptionError(`unexpected object type ${common.type}`);
    const header = decodeDataObjectHeader(bytes.subarray(0, common.hdrSectors * SECTOR_BYTES));
    const dataArea = bytes.subarray(header.hdrSectors * SECTOR_BYTES);
    if (dataArea.byteLength < header.dataSectors * SECTOR_BYTES) throw new CorruptionError("object shorter than its header says");
    if (verifyData) verifyDataArea(header, dataArea.subarray(0, header.dataSectors * SECTOR_BYTES));
    return { header, hdrSectors: header.hdrSectors, dataSectors: header.dataSectors };
  } catch (error) {
    if (error instanceof CorruptionError) {
      notes.push(`object ${name} is invalid (${error.message}): treated as missing`);
      return null;
    }
    throw error;
  }
}

/** Applies a DATA object to the map (rules.ts, applyDataObject) and adds it to the object table. */
function applyToState(header: DataObjectHeader, map: ExtentMap, objects: ObjectTable): void {
  assert(objects.get(header.seq) === undefined, `object ${header.seq} is applied once`);
  objects.add(header.seq, { kind: ObjectKind.Data, hdrSectors: header.hdrSectors, dataSectors: header.dataSectors, liveSectors: header.dataSectors });
  applyDataObject(header, map, objects.displaced);
}
