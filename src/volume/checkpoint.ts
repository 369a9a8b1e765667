// Builds a CKPT object from the in-memory state at a seal point (docs/architecture.md, "Checkpoints").
//
// Checkpoint invariants:
// - A checkpoint with seq c describes exactly the objects < c: it is taken synchronously right after object c-1 is
//   sealed, before any later write can touch the map.
// - It becomes the recovery starting point only when the superblock names it, and the superblock is rewritten only
//   after every object <= c is durable; so a listed checkpoint never refers to an object that may be missing.

import { CKPT_MAP_ENTRY_BYTES, encodeCheckpoint, packCheckpointMapEntry } from "../format/checkpoint_object.ts";
import { assert } from "../errors.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { ObjectKind, type ObjectTable } from "./object_table.ts";

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
