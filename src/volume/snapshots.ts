// Snapshots (docs/architecture.md, "Snapshots"): a snapshot is a CKPT object of the volume's own log that the
// superblock lists in its snaps area; it reads that checkpoint's map. This module holds what every user of snapshots
// shares: the superblock edits (add, remove, with their rules), the pins (the snapshot checkpoints and every object
// their maps name, which no deletion may touch while the snapshot is listed), and reading a snapshot's checkpoint.

import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, type CheckpointObject } from "../format/checkpoint_object.ts";
import { objectName } from "../format/object_name.ts";
import { decodeSuperblock, type CloneRef, type SuperblockObject } from "../format/superblock_object.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { CLONE_REFS_MAX, SNAPSHOTS_MAX } from "../constants.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError, assert } from "../errors.ts";

/** Why `name` cannot name a snapshot, or null: 1..255 UTF-8 bytes, no '@' or '/' (VOLUME@SNAP), no control characters. */
export function snapshotNameProblem(name: string): string | null {
  if (name.length === 0) return "a snapshot name is not empty";
  if (new TextEncoder().encode(name).byteLength > 255) return `snapshot name '${name.slice(0, 20)}...' is longer than 255 UTF-8 bytes`;
  if (/[@/\u0000-\u001f\u007f]/.test(name)) return `snapshot name '${name}' holds '@', '/' or a control character`;
  return null;
}

export interface SnapshotInfo {
  name: string;
  seq: number;
  /** Milliseconds since the Unix epoch; null when the superblock records no time (made by another tool). */
  createdMs: number | null;
}

/** The snapshots the superblock lists, oldest seq first, with their times. */
export function listSnapshots(superblock: SuperblockObject): SnapshotInfo[] {
  const times = new Map(superblock.snapshotTimes.map((time) => [time.seq, time.createdMs]));
  return superblock.snapshots
    .map((snap) => ({ name: snap.name, seq: snap.seq, createdMs: times.get(snap.seq) ?? null }))
    .sort((a, b) => a.seq - b.seq);
}

/** The snapshot called `name`; a NotFoundError naming the ones there are otherwise. */
export function findSnapshot(superblock: SuperblockObject, prefix: string, name: string): SnapshotInfo {
  const found = listSnapshots(superblock).find((snap) => snap.name === name);
  if (found) return found;
  const names = superblock.snapshots.map((snap) => snap.name);
  throw new NotFoundError(`Volume ${prefix} has no snapshot '${name}' (${names.length === 0 ? "it has none" : `it has: ${names.join(", ")}`})`);
}

/** The superblock listing one more snapshot. Refuses a bad or taken name, and more than SNAPSHOTS_MAX. */
export function withSnapshot(superblock: SuperblockObject, snap: { name: string; seq: number; createdMs: number }): SuperblockObject {
  const problem = snapshotNameProblem(snap.name);
  if (problem !== null) throw new InvalidArgumentError(problem);
  if (superblock.snapshots.some((each) => each.name === snap.name)) throw new InvalidArgumentError(`a snapshot called '${snap.name}' exists already`);
  if (superblock.snapshots.length >= SNAPSHOTS_MAX) throw new InvalidArgumentError(`the volume has ${SNAPSHOTS_MAX} snapshots, the most it may have: delete one first`);
  const timed = superblock.snapshotTimes.some((time) => time.seq === snap.seq);
  return {
    ...superblock,
    snapshots: [...superblock.snapshots, { seq: snap.seq, name: snap.name }],
    snapshotTimes: timed ? superblock.snapshotTimes : [...superblock.snapshotTimes, { seq: snap.seq, createdMs: snap.createdMs }],
  };
}

/**
 * The superblock without snapshot `name` (its time goes with it when no other snapshot shares its seq). Refuses
 * while clones are registered on it: `liveClones` names those whose registration is not stale (the caller checks).
 */
export function withoutSnapshot(superblock: SuperblockObject, prefix: string, name: string, liveClones: readonly string[]): SuperblockObject {
  const snap = findSnapshot(superblock, prefix, name);
  if (liveClones.length > 0) {
    throw new InvalidArgumentError(`Snapshot '${name}' of ${prefix} has clones: ${liveClones.join(", ")} (delete them first)`);
  }
  const snapshots = superblock.snapshots.filter((each) => each.name !== name);
  const shared = snapshots.some((each) => each.seq === snap.seq);
  return {
    ...superblock,
    snapshots,
    snapshotTimes: shared ? superblock.snapshotTimes : superblock.snapshotTimes.filter((time) => time.seq !== snap.seq),
    cloneRefs: shared ? superblock.cloneRefs : superblock.cloneRefs.filter((ref) => ref.snapSeq !== snap.seq),
  };
}

/** The clones registered on snapshot seq `seq` (stale ones included: see docs/format.md, `clone_ref`). */
export function cloneRefsOf(superblock: SuperblockObject, seq: number): SuperblockObject["cloneRefs"] {
  return superblock.cloneRefs.filter((ref) => ref.snapSeq === seq);
}

/**
 * What snapshots pin: their checkpoint objects, and every object their maps name. Nothing pinned is cleaned or
 * deleted (garbage collection, checkpoint deletion, left-over checkpoints, fsck --repair). Counted per object, since
 * several snapshots name the same objects.
 */
export class SnapshotPins {
  private readonly bySnapshot = new Map<number, Set<number>>();
  private readonly counts = new Map<number, number>();
  /** Goes up whenever what is pinned changes (the garbage collector recounts then). */
  version = 0;

  /** Pins checkpoint `seq` and the objects `named` (its map's); again for a seq already pinned: nothing changes. */
  add(seq: number, named: Iterable<number>): void {
    if (this.bySnapshot.has(seq)) return;
    const set = new Set(named);
    this.version += 1;
    this.bySnapshot.set(seq, set);
    for (const obj of set) this.counts.set(obj, (this.counts.get(obj) ?? 0) + 1);
  }

  /** Unpins checkpoint `seq` and what only it named. */
  remove(seq: number): void {
    const set = this.bySnapshot.get(seq);
    if (!set) return;
    this.version += 1;
    this.bySnapshot.delete(seq);
    for (const obj of set) {
      const count = this.counts.get(obj)!;
      assert(count >= 1, "a pinned object has a count");
      if (count === 1) this.counts.delete(obj);
      else this.counts.set(obj, count - 1);
    }
  }

  /** A DATA object some snapshot's map names. */
  pinsObject(obj: number): boolean {
    return this.counts.has(obj);
  }

  /** A snapshot's checkpoint object. */
  isSnapshotCheckpoint(seq: number): boolean {
    return this.bySnapshot.has(seq);
  }

  /** Objects that snapshot `seq` alone names (`lsvd info`: what deleting it would free at most). */
  onlyNamedBy(seq: number): number[] {
    return [...(this.bySnapshot.get(seq) ?? [])].filter((obj) => this.counts.get(obj) === 1);
  }

  get snapshotSeqs(): number[] {
    return [...this.bySnapshot.keys()];
  }
}

/** The object seqs a live map names. */
export function objectsOfMap(map: ExtentMap): Set<number> {
  const named = new Set<number>();
  map.forEach((_lba, _sectors, obj) => named.add(obj));
  return named;
}

/** The object seqs a checkpoint's map names. */
export function objectsOfCheckpoint(checkpoint: CheckpointObject): Set<number> {
  const named = new Set<number>();
  const entries = checkpoint.mapEntries;
  const view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
  for (let at = 0; at < entries.byteLength; at += CKPT_MAP_ENTRY_BYTES) named.add(view.getUint32(at + 8, true));
  return named;
}

/** Reads and checks the checkpoint of snapshot seq `seq` (its CRCs, its seq, its volume). */
export async function readSnapshotCheckpoint(store: ObjectStore, prefix: string, volUuid: string, seq: number): Promise<CheckpointObject> {
  const name = objectName(prefix, seq);
  let checkpoint: CheckpointObject;
  try {
    checkpoint = decodeCheckpoint(await store.get(name));
  } catch (error) {
    if (error instanceof NotFoundError) throw new CorruptionError(`Snapshot checkpoint ${name} is missing`);
    if (error instanceof CorruptionError) throw new CorruptionError(`Snapshot checkpoint ${name}: ${error.message}`);
    throw error;
  }
  if (checkpoint.seq !== seq || checkpoint.volUuid !== volUuid) {
    throw new CorruptionError(`Snapshot checkpoint ${name} names seq ${checkpoint.seq} of volume ${checkpoint.volUuid}, not seq ${seq} of ${volUuid}`);
  }
  return checkpoint;
}

/** The pins of every snapshot the superblock lists, read from their checkpoints. */
export async function readSnapshotPins(store: ObjectStore, prefix: string, superblock: SuperblockObject): Promise<SnapshotPins> {
  const pins = new SnapshotPins();
  for (const seq of new Set(superblock.snapshots.map((snap) => snap.seq))) {
    pins.add(seq, objectsOfCheckpoint(await readSnapshotCheckpoint(store, prefix, superblock.volUuid, seq)));
  }
  return pins;
}

/** The snapshot checkpoints a superblock lists, as a pin test (for those that do not need the objects' pins). */
export function snapshotCheckpointsOf(superblock: SuperblockObject): Pick<SnapshotPins, "isSnapshotCheckpoint"> {
  const seqs = new Set(superblock.snapshots.map((snap) => snap.seq));
  return { isSnapshotCheckpoint: (seq) => seqs.has(seq) };
}

/**
 * The clones registered on snapshot seq `seq` that are not stale: the clone's superblock exists and its clone_info
 * names this volume at this seq (docs/format.md, `clone_ref`). An unreadable clone superblock counts as live.
 */
export async function liveCloneNames(store: ObjectStore, superblock: SuperblockObject, seq: number): Promise<string[]> {
  const live: string[] = [];
  for (const ref of cloneRefsOf(superblock, seq)) {
    let clone: SuperblockObject;
    try {
      clone = decodeSuperblock(await store.get(ref.name));
    } catch (error) {
      if (error instanceof NotFoundError) continue; // made by a clone creation that crashed before its commit point
      if (!(error instanceof CorruptionError)) throw error;
      live.push(`${ref.name} (its superblock is unreadable)`);
      continue;
    }
    const base = clone.clone;
    if (clone.volUuid === ref.cloneUuid && base !== null && base.baseUuid === superblock.volUuid && base.lastSeq === seq) live.push(ref.name);
  }
  return live;
}

/** Refuses to delete or replace a volume that has snapshots or registered clones (the error names them). */
export function refuseIfSnapshotsOrClones(prefix: string, superblock: SuperblockObject, what: string, clonesFound: readonly string[] = []): void {
  const snapshots = superblock.snapshots.map((snap) => snap.name);
  const clones = [...new Set([...superblock.cloneRefs.map((ref) => ref.name), ...clonesFound])];
  if (snapshots.length === 0 && clones.length === 0) return;
  const parts = [snapshots.length > 0 ? `snapshots ${snapshots.join(", ")}` : "", clones.length > 0 ? `clones ${clones.join(", ")}` : ""].filter((part) => part !== "");
  throw new InvalidArgumentError(`Cannot ${what} volume ${prefix}: it has ${parts.join(" and ")} (delete them first: 'lsvd snapshot delete', 'lsvd rm')`);
}

/**
 * The superblock with clone `ref.name` registered on snapshot seq `ref.snapSeq` (a registration of the same name is
 * replaced: a retried clone creation reuses its name). For `lsvd clone`, before the clone's own superblock is written.
 */
export function withCloneRef(superblock: SuperblockObject, ref: CloneRef): SuperblockObject {
  if (!superblock.snapshots.some((snap) => snap.seq === ref.snapSeq)) throw new InvalidArgumentError(`no snapshot has seq ${ref.snapSeq}`);
  const others = superblock.cloneRefs.filter((each) => each.name !== ref.name);
  if (others.length >= CLONE_REFS_MAX) throw new InvalidArgumentError(`the volume has ${CLONE_REFS_MAX} clone registrations, the most it may have`);
  return { ...superblock, cloneRefs: [...others, ref] };
}

/** The superblock without the registration of clone `name` (a stale one, or a clone being removed). */
export function withoutCloneRef(superblock: SuperblockObject, name: string): SuperblockObject {
  return { ...superblock, cloneRefs: superblock.cloneRefs.filter((ref) => ref.name !== name) };
}
