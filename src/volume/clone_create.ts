// `lsvd clone VOLUME@SNAP NEWVOLUME` (docs/architecture.md, "Clones"): a new volume whose log continues from the
// snapshot's checkpoint in its base's log. It costs one checkpoint (a copy of the snapshot checkpoint's map), never
// a copy of data.
//
// Layout (the reference tool's, docs/format.md "Clones"): with c = the snapshot's checkpoint seq in the base,
//   - the clone's object c+1 is a CKPT object of the clone (its vol_uuid) holding the base checkpoint's map and the
//     base objects that map names;
//   - the clone's superblock: ckpts [c+1], clone_info {base vol_uuid, last_seq c, base prefix}, next_seq c+2.
// Order (crash safety): register the clone in the base, write the CKPT object, then the superblock (the commit
// point). A crash before the superblock leaves no clone, only objects under the new prefix that a retry deletes; a
// registration without a clone superblock is stale (detected by whoever reads the registrations).
//
// planClone is pure; createClone does the I/O, under the new volume's lease (so no two creations of one name race).

import { CorruptionError, InvalidArgumentError, NotFoundError, assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, encodeCheckpoint, type CheckpointObject } from "../format/checkpoint_object.ts";
import { objectName, parseObjectName } from "../format/object_name.ts";
import { encodeSuperblock, type SuperblockObject } from "../format/superblock_object.ts";
import { NIL_UUID } from "../format/_codec.ts";
import { Lease, LeaseHeldError, type LeaseOptions } from "./lease.ts";
import { takeOwnership } from "./ownership.ts";
import { objectsNamedByMap } from "./recovery/clone_checkpoint.ts";
import { decodeVolumeSuperblock } from "./superblock_store.ts";
import { withCloneRef, withoutCloneRef } from "./snapshots.ts";

export interface ClonePlanInput {
  base: SuperblockObject;
  basePrefix: string;
  /** The snapshot's checkpoint, decoded from the base (its seq is the snapshot's). */
  baseCheckpoint: CheckpointObject;
  cloneUuid: string;
}

export interface ClonePlan {
  /** The clone's first object, at the snapshot's seq + 1. */
  checkpointSeq: number;
  checkpoint: Uint8Array;
  superblock: SuperblockObject;
}

/** The clone's two objects (see the file comment). */
export function planClone(input: ClonePlanInput): ClonePlan {
  const { base, baseCheckpoint } = input;
  const lastSeq = baseCheckpoint.seq;
  assert(baseCheckpoint.volUuid === base.volUuid, "the snapshot checkpoint is the base's");
  assert(input.cloneUuid !== base.volUuid, "a clone has a uuid of its own");
  assert(lastSeq + 2 <= 2 ** 32, "the clone's log has room above the snapshot");
  const checkpointSeq = lastSeq + 1;
  const checkpoint = encodeCheckpoint({
    volUuid: input.cloneUuid,
    seq: checkpointSeq,
    cacheSeq: 0,
    checkpoints: [],
    objects: objectsNamedByMap(baseCheckpoint.objects, baseCheckpoint.mapEntries),
    deferredDeletes: [],
    mapEntries: baseCheckpoint.mapEntries,
    cacheUuid: NIL_UUID,
    cacheSeqLast: 0,
  });
  const superblock: SuperblockObject = {
    volUuid: input.cloneUuid,
    volSectors: base.volSectors,
    checkpoints: [checkpointSeq],
    clone: { baseUuid: base.volUuid, lastSeq, baseName: input.basePrefix },
    snapshots: [],
    nextSeq: checkpointSeq + 1,
    ownerEpoch: 0,
    skipped: [],
    snapshotTimes: [],
    cloneRefs: [],
    rollbackSeq: 0,
  };
  return { checkpointSeq, checkpoint, superblock };
}

export interface CreateCloneOptions {
  /** Unguarded store (as for mkdisk); base and clone live in it. */
  store: ObjectStore;
  basePrefix: string;
  snapshot: string;
  clonePrefix: string;
  cloneUuid: string;
  /** Lease options for the new volume during the creation (command "clone"). */
  lease: Omit<LeaseOptions, "store" | "prefix" | "volumeMayBeAbsent">;
  /** Records the clone in the base (default registerCloneInBase, under the base's lease; the CLI passes the serving
   * process's admin op when the base is served). Resolves once the registration is durable. */
  register?: (snapshot: { seq: number; name: string }, clone: { prefix: string; volUuid: string }) => Promise<void>;
}

export interface CreateCloneResult {
  cloneUuid: string;
  baseUuid: string;
  snapshotSeq: number;
  mapEntries: number;
  /** Objects of an interrupted earlier creation under the new prefix, deleted first. */
  leftoversDeleted: number;
}

/** Creates the clone (see the file comment); refuses a missing base or snapshot and an existing NEWVOLUME. */
export async function createClone(options: CreateCloneOptions): Promise<CreateCloneResult> {
  const { store, basePrefix, clonePrefix } = options;
  if (basePrefix === clonePrefix) throw new InvalidArgumentError(`A clone cannot replace its base ${basePrefix}`);
  const base = await readBase(store, basePrefix);
  const snapshot = base.snapshots.find((snap) => snap.name === options.snapshot);
  if (snapshot === undefined) {
    const names = base.snapshots.map((snap) => snap.name).join(", ");
    throw new NotFoundError(`Volume ${basePrefix} has no snapshot '${options.snapshot}' (${names === "" ? "it has none" : `it has: ${names}`})`);
  }
  const baseCheckpoint = await readSnapshotCheckpoint(store, basePrefix, base, snapshot);
  const plan = planClone({ base, basePrefix, baseCheckpoint, cloneUuid: options.cloneUuid });
  const lease = await Lease.acquire({ ...options.lease, store, prefix: clonePrefix, volumeMayBeAbsent: true });
  try {
    if ((await store.stat(clonePrefix)) !== null) throw new InvalidArgumentError(`A volume already exists at ${store.description}/${clonePrefix}`);
    const leftovers = (await store.list(`${clonePrefix}.`)).filter((name) => (parseObjectName(clonePrefix, name) ?? 0) !== 0);
    for (const name of leftovers) {
      lease.check();
      await store.delete(name);
    }
    const cloneRef = { prefix: clonePrefix, volUuid: options.cloneUuid };
    if (options.register !== undefined) await options.register(snapshot, cloneRef);
    else await registerCloneInBase(store, basePrefix, snapshot, cloneRef, options.lease);
    lease.check();
    await store.putIfAbsent(objectName(clonePrefix, plan.checkpointSeq), plan.checkpoint);
    lease.check();
    await store.putIfAbsent(clonePrefix, encodeSuperblock(plan.superblock)); // the commit point
    // No earlier holder, or a clean one: nothing can land late, so the lease is given back released. Otherwise it
    // is left to expire and the clone's first owner starts its log above a margin (ownership.ts).
    if (lease.taken.clean || lease.taken.previous === null) lease.markSettled();
    await lease.release();
    const mapEntries = baseCheckpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES;
    return { cloneUuid: options.cloneUuid, baseUuid: base.volUuid, snapshotSeq: snapshot.seq, mapEntries, leftoversDeleted: leftovers.length };
  } catch (error) {
    await lease.release(); // every call above completed: nothing of ours lands late
    throw error;
  }
}

/**
 * Records the clone in the base's superblock (`clone_ref` {snapshot seq, clone vol_uuid, clone prefix}, docs/format.md),
 * under the base's lease: refused while the base is served or otherwise owned (the serving process would have to
 * record it). Registrations under the clone's name are dropped first: the caller holds the clone's lease and no clone
 * superblock exists under that name, so they are stale (an earlier attempt that crashed before its commit point).
 * The snapshot must still be listed. Resolves once the registration is durable.
 */
export async function registerCloneInBase(
  store: ObjectStore,
  basePrefix: string,
  snapshot: { seq: number; name: string },
  clone: { prefix: string; volUuid: string },
  lease: CreateCloneOptions["lease"],
): Promise<void> {
  let taken: Awaited<ReturnType<typeof takeOwnership>>;
  try {
    taken = await takeOwnership({ ...lease, store, prefix: basePrefix });
  } catch (error) {
    if (!(error instanceof LeaseHeldError)) throw error;
    throw new LeaseHeldError(`Cannot record the clone in its base, which needs the base's lease: ${error.message} (clone it while it is not served)`);
  }
  try {
    const superblocks = taken.owner.superblocks!;
    const current = superblocks.superblock;
    if (!current.snapshots.some((snap) => snap.seq === snapshot.seq && snap.name === snapshot.name)) {
      throw new NotFoundError(`Volume ${basePrefix} no longer has snapshot '${snapshot.name}'`);
    }
    const ref = { snapSeq: snapshot.seq, cloneUuid: clone.volUuid, name: clone.prefix };
    await superblocks.write(withCloneRef(withoutCloneRef(current, clone.prefix), ref));
    await taken.lease.release();
  } catch (error) {
    await taken.lease.release();
    throw error;
  }
}

async function readBase(store: ObjectStore, basePrefix: string): Promise<SuperblockObject> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(basePrefix);
  } catch (error) {
    if (error instanceof NotFoundError) throw new NotFoundError(`No volume at ${store.description}/${basePrefix}: superblock object '${basePrefix}' is missing`);
    throw error;
  }
  return decodeVolumeSuperblock(basePrefix, bytes).superblock;
}

async function readSnapshotCheckpoint(store: ObjectStore, basePrefix: string, base: SuperblockObject, snapshot: { seq: number; name: string }): Promise<CheckpointObject> {
  const name = objectName(basePrefix, snapshot.seq);
  const what = `snapshot '${snapshot.name}' of ${basePrefix}: its checkpoint ${name}`;
  if (base.clone !== null && snapshot.seq <= base.clone.lastSeq) throw new CorruptionError(`${what} lies at or below the base's own last_seq ${base.clone.lastSeq}`);
  let checkpoint: CheckpointObject;
  try {
    checkpoint = decodeCheckpoint(await store.get(name));
  } catch (error) {
    if (error instanceof NotFoundError) throw new CorruptionError(`${what} is missing`);
    if (error instanceof CorruptionError) throw new CorruptionError(`${what} does not decode: ${error.message}`);
    throw error;
  }
  if (checkpoint.seq !== snapshot.seq || checkpoint.volUuid !== base.volUuid) throw new CorruptionError(`${what} is not the volume's (seq ${checkpoint.seq}, volume ${checkpoint.volUuid})`);
  return checkpoint;
}
