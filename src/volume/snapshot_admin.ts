// Snapshots of a volume nobody serves (`lsvd snapshot create|delete|rollback`), under the volume's lease
// (docs/architecture.md, "Snapshots"). The superblock rewrite (compare-and-swap, by the owner) is every operation's
// commit point: a crash before it leaves the old state, after it the new one.
//
// Offline create needs no new checkpoint when the previous owner left cleanly: a clean close ends the log with a
// checkpoint the superblock names, which holds every acknowledged write; the snapshot is that checkpoint. Otherwise
// acknowledged writes may be only in that owner's cache's journal: refused, naming --cache (the CLI then opens the
// volume with its cache, which recovers it fully, and makes the snapshot through Volume.createSnapshot).
//
// Rollback writes, at the log's next seq, a checkpoint whose map is the snapshot's and whose object table lists every
// DATA object the head or the snapshot knows (live sectors counted from the new map: what only the old head named
// becomes garbage). It records a fresh cache identity that no cache has, so no cache's journal continues the log
// from it (journal case @F: an old cache's records are discarded, never replayed over the rolled-back content). The
// superblock that names it records its seq as rollback_seq: fsck's replay of the DATA objects restarts there.

import { v4 as uuidv4 } from "uuid";
import { CHECKPOINTS_KEPT } from "../constants.ts";
import { CKPT_MAP_ENTRY_BYTES, encodeCheckpoint, unpackCheckpointMapEntry, type CheckpointObject } from "../format/checkpoint_object.ts";
import { objectName } from "../format/object_name.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError, assert } from "../errors.ts";
import type { CrashPoint } from "../util/clock.ts";
import type { LeaseOptions } from "./lease.ts";
import { ObjectKind } from "./object_table.ts";
import { beginLog, takeOwnership, type VolumeOwner } from "./ownership.ts";
import { recoverBackend, type BackendState } from "./recovery/backend.ts";
import type { SuperblockStore } from "./superblock_store.ts";
import { findSnapshot, liveCloneNames, readSnapshotCheckpoint, withSnapshot, withoutSnapshot } from "./snapshots.ts";

export interface SnapshotAdminOptions extends Omit<LeaseOptions, "volumeMayBeAbsent"> {
  /** Snapshot creation times (default Date.now). */
  nowMs?: () => number;
  /** Simulations and crash tests: where the operation may stop. */
  crashPoint?: CrashPoint;
}

/** The error for a volume whose previous owner did not leave cleanly, when no cache was given. */
function needsCache(prefix: string, what: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `Cannot ${what} volume ${prefix} offline without its cache: its previous owner did not release it cleanly, so writes it acknowledged may be only in its cache's journal. Give --cache CACHE (the volume is recovered with it first), or serve and stop it cleanly once`,
  );
}

/** Runs `body` as the volume's owner; the lease is released after (abandoned if the body failed part way). */
async function asOwner<T>(options: SnapshotAdminOptions, body: (owner: VolumeOwner, superblocks: SuperblockStore) => Promise<T>): Promise<T> {
  const taken = await takeOwnership(options);
  let result: T;
  try {
    result = await body(taken.owner, taken.owner.superblocks!);
  } catch (error) {
    await taken.lease.release();
    throw error;
  }
  await taken.lease.release();
  return result;
}

/** `lsvd snapshot create` offline: the snapshot is the checkpoint a clean close left at the log's end. */
export async function createSnapshotOffline(options: SnapshotAdminOptions, name: string): Promise<{ seq: number }> {
  return await asOwner(options, async (owner, superblocks) => {
    if (!owner.previousClean) throw needsCache(options.prefix, "snapshot");
    const state = await recoverBackend(options.store, options.prefix, { verifyData: false, superblock: superblocks.decoded });
    const endsAtCheckpoint = state.checkpointSeq > 0 && state.nextSeq === state.checkpointSeq + 1 && state.unfinished === null;
    if (!endsAtCheckpoint) {
      throw new InvalidArgumentError(
        `Cannot snapshot volume ${options.prefix} offline without its cache: its log does not end with a checkpoint (${state.checkpointSeq === 0 ? "nothing was ever written" : `objects follow checkpoint ${state.checkpointSeq}`}). Give --cache CACHE`,
      );
    }
    const seq = state.checkpointSeq;
    const next = withSnapshot(superblocks.superblock, { name, seq, createdMs: (options.nowMs ?? Date.now)() });
    await options.crashPoint?.("snapshot.create-before-superblock");
    await superblocks.write(next);
    return { seq };
  });
}

/** `lsvd snapshot delete` offline: refused while live clones are registered on it. */
export async function deleteSnapshotOffline(options: SnapshotAdminOptions, name: string): Promise<{ seq: number; checkpointDeleted: boolean }> {
  return await asOwner(options, async (_owner, superblocks) => {
    const { store, prefix } = options;
    const snap = findSnapshot(superblocks.superblock, prefix, name);
    const live = await liveCloneNames(store, superblocks.superblock, snap.seq);
    const next = withoutSnapshot(superblocks.superblock, prefix, name, live);
    await options.crashPoint?.("snapshot.delete-before-superblock");
    await superblocks.write(next);
    // Its checkpoint goes now if nothing needs it; else garbage collection or fsck --repair delete it as a left-over
    // once the oldest checkpoint the superblock names is above it.
    const stillSnapshot = next.snapshots.some((each) => each.seq === snap.seq);
    const needed = stillSnapshot || next.checkpoints.length === 0 || snap.seq >= Math.min(...next.checkpoints);
    if (needed) return { seq: snap.seq, checkpointDeleted: false };
    await options.crashPoint?.("snapshot.delete-before-checkpoint-delete");
    try {
      await store.delete(objectName(prefix, snap.seq));
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
    }
    return { seq: snap.seq, checkpointDeleted: true };
  });
}

/** `lsvd snapshot rollback`: the head becomes the snapshot's content (see the file comment). */
export async function rollbackToSnapshot(options: SnapshotAdminOptions, name: string, log: (line: string) => void = () => {}): Promise<{ seq: number; snapshotSeq: number }> {
  return await asOwner(options, async (owner, superblocks) => {
    const { store, prefix } = options;
    if (!owner.previousClean) throw needsCache(prefix, "roll back");
    const snap = findSnapshot(superblocks.superblock, prefix, name);
    const snapshot = await readSnapshotCheckpoint(store, prefix, superblocks.superblock.volUuid, snap.seq);
    const state = await recoverBackend(store, prefix, { verifyData: false, superblock: superblocks.decoded });
    if (state.unfinished !== null) throw needsCache(prefix, "roll back");
    const plan = await beginLog(store, state, superblocks, owner, log, options.crashPoint);
    const seq = plan.nextSeq;
    const current = superblocks.superblock;
    const bytes = rollbackCheckpoint(current.volUuid, seq, current.checkpoints, state, snapshot);
    await options.crashPoint?.("snapshot.rollback-before-checkpoint");
    await store.putIfAbsent(objectName(prefix, seq), bytes);
    await options.crashPoint?.("snapshot.rollback-before-superblock");
    const checkpoints = [...current.checkpoints, seq].slice(-CHECKPOINTS_KEPT);
    await superblocks.write({ ...current, checkpoints, nextSeq: seq + 1, rollbackSeq: seq });
    return { seq, snapshotSeq: snap.seq };
  });
}

/** The rollback checkpoint (see the file comment): the snapshot's map, every known DATA object, a fresh writer. */
function rollbackCheckpoint(volUuid: string, seq: number, checkpoints: number[], head: BackendState, snapshot: CheckpointObject): Uint8Array {
  const objects = new Map<number, { seq: number; hdrSectors: number; dataSectors: number; liveSectors: number }>();
  head.objects.forEach((obj, info) => {
    if (info.kind === ObjectKind.Data) objects.set(obj, { seq: obj, hdrSectors: info.hdrSectors, dataSectors: info.dataSectors, liveSectors: 0 });
  });
  // The snapshot's objects that its map names (pinned, so present); others it lists may be gone since.
  const listed = new Map(snapshot.objects.map((entry) => [entry.seq, entry]));
  const entries = snapshot.mapEntries;
  const view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
  for (let index = 0; index < entries.byteLength / CKPT_MAP_ENTRY_BYTES; index++) {
    const entry = unpackCheckpointMapEntry(view, index);
    const known = listed.get(entry.obj);
    if (!objects.has(entry.obj) && known !== undefined) objects.set(entry.obj, { ...known, liveSectors: 0 });
    const info = objects.get(entry.obj);
    if (info === undefined) throw new CorruptionError(`Snapshot checkpoint ${snapshot.seq}: map entry ${index} names object ${entry.obj}, which it does not list`);
    info.liveSectors += entry.sectors;
  }
  for (const info of objects.values()) assert(info.seq < seq && info.liveSectors <= info.dataSectors, `object ${info.seq} fits the rollback checkpoint`);
  return encodeCheckpoint({
    volUuid,
    seq,
    cacheSeq: 0,
    checkpoints,
    objects: [...objects.values()].sort((a, b) => a.seq - b.seq),
    deferredDeletes: [],
    mapEntries: entries.slice(),
    cacheUuid: uuidv4(),
    cacheSeqLast: 0,
  });
}
