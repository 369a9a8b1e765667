// Helper of bench/clone_bench.sh.
//   bun bench/_clone_base.ts map DIR PREFIX EXTENTS   a map-only base volume for timing `lsvd clone` against map size:
//       superblock (snapshot "s" = checkpoint 2), CKPT object 2 whose map has EXTENTS one-sector extents (every other
//       sector) in DATA object 1, which is not written: creating a clone reads only the superblock and the checkpoint.
//   bun bench/_clone_base.ts snapshot DIR PREFIX NAME  lists the newest checkpoint of a cleanly closed volume as
//       snapshot NAME in its superblock (what a snapshot command would do; the volume must not be served).

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { v4 as uuidv4 } from "uuid";
import { CKPT_MAP_ENTRY_BYTES, encodeCheckpoint, packCheckpointMapEntry } from "../src/format/checkpoint_object.ts";
import { objectName } from "../src/format/object_name.ts";
import { NIL_UUID } from "../src/format/_codec.ts";
import { decodeSuperblock, encodeSuperblock, newSuperblock } from "../src/format/superblock_object.ts";

const [mode, dir, prefix, arg] = process.argv.slice(2);
if (mode === "map") {
  const extents = Number(arg);
  const volUuid = uuidv4();
  const mapEntries = new Uint8Array(extents * CKPT_MAP_ENTRY_BYTES);
  const view = new DataView(mapEntries.buffer);
  for (let i = 0; i < extents; i++) packCheckpointMapEntry(view, i, 2 * i, 1, 1, 8 + i);
  const checkpoint = encodeCheckpoint({
    volUuid,
    seq: 2,
    cacheSeq: 0,
    checkpoints: [],
    objects: [{ seq: 1, hdrSectors: 8, dataSectors: extents, liveSectors: extents }],
    deferredDeletes: [],
    mapEntries,
    cacheUuid: NIL_UUID,
    cacheSeqLast: 0,
  });
  writeFileSync(join(dir!, objectName(prefix!, 2)), checkpoint);
  const superblock = { ...newSuperblock(volUuid, Math.max(2 * extents, 8)), checkpoints: [2], snapshots: [{ seq: 2, name: "s" }], nextSeq: 3 };
  writeFileSync(join(dir!, prefix!), encodeSuperblock(superblock));
} else if (mode === "snapshot") {
  const path = join(dir!, prefix!);
  const superblock = decodeSuperblock(readFileSync(path));
  const seq = superblock.checkpoints[superblock.checkpoints.length - 1];
  if (seq === undefined) throw new Error(`${prefix} has no checkpoint`);
  writeFileSync(path, encodeSuperblock({ ...superblock, snapshots: [...superblock.snapshots, { seq, name: arg! }] }));
} else {
  throw new Error("usage: _clone_base.ts map DIR PREFIX EXTENTS | snapshot DIR PREFIX NAME");
}
