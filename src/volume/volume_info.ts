// `lsvd info`: what a volume holds, read-only and without its lease (a served volume may change while it looks):
// size, objects and bytes in the backend, the head's live share, checkpoints, snapshots with the bytes only each holds,
// its base (a clone) and the clones registered on its snapshots (docs/architecture.md, "Snapshots").

import { SECTOR_BYTES } from "../constants.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { parseObjectName } from "../format/object_name.ts";
import { ObjectKind } from "./object_table.ts";
import { recoverBackend } from "./recovery/backend.ts";
import { liveCloneNames, listSnapshots, objectsOfCheckpoint, readSnapshotCheckpoint, SnapshotPins } from "./snapshots.ts";

export interface SnapshotReport {
  name: string;
  seq: number;
  createdMs: number | null;
  /** Bytes of DATA objects only this snapshot names and the head holds nothing live in: what deleting it frees. */
  bytesOnlyItHolds: number;
  /** Registered clones whose superblock names this snapshot as their base (stale registrations left out). */
  clones: string[];
}

export interface VolumeReport {
  volUuid: string;
  sizeBytes: number;
  objects: number;
  backendBytes: number;
  /** Sectors the head's map points at, in bytes, and their share of the DATA bytes in the backend. */
  liveBytes: number;
  liveShare: number;
  checkpoints: number[];
  snapshots: SnapshotReport[];
  base: { uuid: string; lastSeq: number; name: string } | null;
}

/** Reads the superblock, the head's state (recovery, nothing written), each snapshot's checkpoint and object sizes. */
export async function volumeReport(store: ObjectStore, prefix: string): Promise<VolumeReport> {
  const state = await recoverBackend(store, prefix, { verifyData: false });
  const superblock = state.superblock;
  const sizes = new Map<number, number>();
  for (const name of await store.list(`${prefix}.`)) {
    const seq = parseObjectName(prefix, name);
    if (seq === null || seq === 0) continue;
    const stat = await store.stat(name);
    if (stat !== null) sizes.set(seq, stat.size);
  }
  let liveSectors = 0;
  let dataBytes = 0;
  state.objects.forEach((_seq, info) => {
    if (info.kind !== ObjectKind.Data) return;
    liveSectors += info.liveSectors;
    dataBytes += info.dataSectors * SECTOR_BYTES;
  });
  const pins = new SnapshotPins();
  const snaps = listSnapshots(superblock);
  for (const seq of new Set(snaps.map((snap) => snap.seq))) pins.add(seq, objectsOfCheckpoint(await readSnapshotCheckpoint(store, prefix, superblock.volUuid, seq)));
  const snapshots: SnapshotReport[] = [];
  for (const snap of snaps) {
    const only = pins.onlyNamedBy(snap.seq).filter((obj) => (state.objects.get(obj)?.liveSectors ?? 0) === 0);
    snapshots.push({
      ...snap,
      bytesOnlyItHolds: only.reduce((sum, obj) => sum + (sizes.get(obj) ?? 0), 0),
      clones: await liveCloneNames(store, superblock, snap.seq),
    });
  }
  return {
    volUuid: superblock.volUuid,
    sizeBytes: superblock.volSectors * SECTOR_BYTES,
    objects: sizes.size,
    backendBytes: [...sizes.values()].reduce((sum, size) => sum + size, 0),
    liveBytes: liveSectors * SECTOR_BYTES,
    liveShare: dataBytes === 0 ? 1 : (liveSectors * SECTOR_BYTES) / dataBytes,
    checkpoints: superblock.checkpoints,
    snapshots,
    base: superblock.clone === null ? null : { uuid: superblock.clone.baseUuid, lastSeq: superblock.clone.lastSeq, name: superblock.clone.baseName },
  };
}
