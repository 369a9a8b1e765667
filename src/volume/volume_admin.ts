// Whole-volume administration: list the volumes of a store, remove one, grow one (`lsvd ls`, `rm`, `resize`;
// docs/architecture.md, "Volume tools"). Removing and resizing change the volume, so they take its lease first.

import { SECTOR_BYTES } from "../constants.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { leaseName, objectName, parseObjectName } from "../format/object_name.ts";
import type { SuperblockObject } from "../format/superblock_object.ts";
import { Lease, type LeaseOptions } from "./lease.ts";
import { takeOwnership } from "./ownership.ts";
import { decodeVolumeSuperblock } from "./superblock_store.ts";
import { refuseIfSnapshotsOrClones } from "./snapshots.ts";
import { basePrefixOf } from "./clone_chain.ts";

/** A superblock larger than this is not looked at by `ls` (superblocks are a few KiB; data objects are MiBs). */
const SUPERBLOCK_BYTES_LISTED_MAX = 1024 * 1024;

export interface VolumeInfo {
  name: string;
  sizeBytes: number;
  volUuid: string;
  clone: SuperblockObject["clone"];
  snapshots: number;
}

/** `<base>.%08x` or `<base>.lease` whose base is also listed: a volume's object, not a volume. */
function isVolumeObject(name: string, names: Set<string>): boolean {
  const match = /^(.+)\.([0-9a-f]{8}|lease)$/.exec(name);
  return match !== null && names.has(match[1]!);
}

/** The volumes whose names start with `namePrefix`: names whose object decodes as a superblock, sorted. */
export async function listVolumes(store: ObjectStore, namePrefix: string): Promise<VolumeInfo[]> {
  const names = await store.list(namePrefix);
  const all = new Set(names);
  const volumes: VolumeInfo[] = [];
  for (const name of names) {
    if (isVolumeObject(name, all)) continue;
    const stat = await store.stat(name);
    if (stat === null || stat.size > SUPERBLOCK_BYTES_LISTED_MAX) continue;
    let superblock: SuperblockObject;
    try {
      superblock = decodeVolumeSuperblock(name, await store.get(name)).superblock;
    } catch (error) {
      if (error instanceof NotFoundError || error instanceof CorruptionError) continue; // gone meanwhile, or not a superblock
      throw error;
    }
    volumes.push({ name, sizeBytes: superblock.volSectors * SECTOR_BYTES, volUuid: superblock.volUuid, clone: superblock.clone, snapshots: superblock.snapshots.length });
  }
  return volumes;
}

export interface RemoveResult {
  /** False: there was no superblock (left-overs of an interrupted rm, or nothing at all). */
  hadSuperblock: boolean;
  objectsDeleted: number;
}

/**
 * `lsvd rm`, in this order (a crash at any point leaves no volume that looks whole): take the lease (refused while a
 * live holder owns the volume); refuse while another volume of the store is a clone of it; delete the superblock
 * (from then on there is no volume, only left-overs); delete every `<prefix>.%08x` object; delete the lease object.
 * Run again after a crash, it finds no superblock and deletes the left-overs.
 */
export async function removeVolume(options: Omit<LeaseOptions, "volumeMayBeAbsent">): Promise<RemoveResult> {
  const { store, prefix } = options;
  const lease = await Lease.acquire({ ...options, volumeMayBeAbsent: true });
  try {
    const superblock = await store.getVersioned(prefix);
    if (superblock !== null) {
      const decoded = decodeVolumeSuperblock(prefix, superblock.data).superblock;
      // Clones registered in the superblock, and those found in the same place (the reference tool's register nothing).
      const clones = (await listVolumes(store, "")).filter((volume) => volume.clone !== null && basePrefixOf(volume.clone.baseName) === prefix && volume.clone.baseUuid === decoded.volUuid);
      refuseIfSnapshotsOrClones(prefix, decoded, "remove", clones.map((clone) => clone.name));
      lease.check();
      await store.delete(prefix);
    }
    const seqs: number[] = [];
    for (const name of await store.list(`${prefix}.`)) {
      const seq = parseObjectName(prefix, name);
      if (seq !== null && seq !== 0) seqs.push(seq);
    }
    if (superblock === null && seqs.length === 0) throw new NotFoundError(`No volume at ${store.description}/${prefix}`);
    for (const seq of seqs) {
      lease.check();
      await store.delete(objectName(prefix, seq));
    }
    lease.check();
    await store.delete(leaseName(prefix));
    lease.abandon(); // its object is gone: nothing to renew or release
    return { hadSuperblock: superblock !== null, objectsDeleted: seqs.length };
  } catch (error) {
    await lease.release();
    throw error;
  }
}

/** `lsvd resize`: under the lease, the superblock's size grows (compare-and-swap). Shrinking is refused. */
export async function resizeVolume(options: Omit<LeaseOptions, "volumeMayBeAbsent">, sizeBytes: number): Promise<{ oldBytes: number; newBytes: number }> {
  const taken = await takeOwnership(options);
  try {
    const superblocks = taken.owner.superblocks!;
    const oldBytes = superblocks.superblock.volSectors * SECTOR_BYTES;
    if (sizeBytes < oldBytes) {
      throw new InvalidArgumentError(`Cannot shrink volume ${options.prefix} from ${oldBytes} to ${sizeBytes} bytes: data beyond the new end would be lost (only growing is supported)`);
    }
    if (sizeBytes > oldBytes) await superblocks.write({ ...superblocks.superblock, volSectors: sizeBytes / SECTOR_BYTES });
    await taken.lease.release();
    return { oldBytes, newBytes: sizeBytes };
  } catch (error) {
    await taken.lease.release();
    throw error;
  }
}
