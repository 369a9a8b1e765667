// Builds a CKPT object from the in-memory state at a seal point (docs/architecture.md, "Checkpoints").
//
// Checkpoint invariants:
// - A checkpoint with seq c describes exactly the objects < c: it is taken synchronously right after object c-1 is
//   sealed, before any later write can touch the map; and only when object c-1 ends on a write boundary (no client
//   write has pieces still to come: write/checkpoint_scheduler.ts), since recovery starts from it even when the cache
//   is lost.
// - It becomes the recovery starting point only when the superblock names it, and the superblock is rewritten only
//   after every object <= c is durable; so a listed checkpoint never refers to an object that may be missing.
// - Recovery reads only checkpoints the superblock names, and rolls forward from one of them through every later seq
//   (a CKPT object there only holds its seq's place). So once the durable superblock names checkpoints whose oldest
//   is m, no recovery reads a CKPT object below m: it may be deleted (checkpointsUnneeded).

import { CKPT_MAP_ENTRY_BYTES, encodeCheckpoint, packCheckpointMapEntry } from "../format/checkpoint_object.ts";
import { assert } from "../errors.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { ObjectKind, type ObjectTable } from "./object_table.ts";
import type { SnapshotPins } from "./snapshots.ts";

export interface CheckpointInput {
  volUuid: string;
  seq: number;
  map: ExtentMap;
  objects: ObjectTable;
  checkpoints: number[];
  cacheUuid: string;
  cacheSeqFirst: number;
  cacheSeqLast: number;
}

/**
 * The CKPT objects the write path deletes once the superblock naming `next` is durable: those `previous` named that
 * `next` does not, and the ones in the object table below the oldest of `next` (rolled forward by recovery after a
 * crash that came before the superblock named them, or whose delete failed). Never one `next` names, never one at or
 * above its oldest (a fallback recovery from that one rolls forward through them), none when `next` is empty, and
 * never a snapshot's checkpoint (pins).
 */
export function checkpointsUnneeded(
  previous: readonly number[],
  next: readonly number[],
  objects: ObjectTable,
  pins: Pick<SnapshotPins, "isSnapshotCheckpoint">,
): number[] {
  if (next.length === 0) return [];
  const oldest = Math.min(...next);
  const unneeded = new Set(previous.filter((seq) => seq < oldest && !pins.isSnapshotCheckpoint(seq)));
  objects.forEach((seq, info) => {
    if (info.kind === ObjectKind.Checkpoint && seq < oldest && !pins.isSnapshotCheckpoint(seq)) unneeded.add(seq);
  });
  for (const seq of unneeded) assert(!next.includes(seq), `checkpoint ${seq} is still named`);
  return [...unneeded].sort((a, b) => a - b);
}

export function buildCheckpoint(input: CheckpointInput): Uint8Array {
  const mapEntries = new Uint8Array(input.map.extentCount * CKPT_MAP_ENTRY_BYTES);
  const view = new DataView(mapEntries.buffer);
  let index = 0;
  input.map.forEach((lba, sectors, obj, offset) => {
    const info = input.objects.get(obj);
    assert(info !== undefined && obj < input.seq, `map points at object ${obj} outside the checkpoint`);
    packCheckpointMapEntry(view, index, lba, sectors, obj, offset + info.hdrSectors);
    index += 1;
  });
  assert(index === input.map.extentCount, "extent count matches iteration");
  const objects = input.objects
    .entries()
    .filter(([seq, info]) => info.kind === ObjectKind.Data && seq < input.seq)
    .map(([seq, info]) => ({ seq, hdrSectors: info.hdrSectors, dataSectors: info.dataSectors, liveSectors: info.liveSectors }));
  return encodeCheckpoint({
    volUuid: input.volUuid,
    seq: input.seq,
    cacheSeq: input.cacheSeqFirst,
    checkpoints: input.checkpoints,
    objects,
    deferredDeletes: [],
    mapEntries,
    cacheUuid: input.cacheUuid,
    cacheSeqLast: input.cacheSeqLast,
  });
}
