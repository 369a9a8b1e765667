// A snapshot for clone tests, as the reference tool picks its clone point: the volume's newest checkpoint (after a
// clean close) listed in its superblock's v1 snaps area under `name`. The volume must not be served meanwhile.

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeSuperblock, encodeSuperblock } from "../../src/format/superblock_object.ts";

/** Lists the newest checkpoint of volume `prefix` in `backendDir` as snapshot `name`; returns its seq. */
export function listNewestCheckpointAsSnapshot(backendDir: string, prefix: string, name: string): number {
  const path = join(backendDir, prefix);
  const superblock = decodeSuperblock(readFileSync(path));
  const seq = superblock.checkpoints[superblock.checkpoints.length - 1];
  if (seq === undefined) throw new Error(`volume ${prefix} has no checkpoint to snapshot`);
  writeFileSync(path, encodeSuperblock({ ...superblock, snapshots: [...superblock.snapshots, { seq, name }] }));
  return seq;
}

if (import.meta.main) {
  const [backendDir, prefix, name] = process.argv.slice(2);
  process.stdout.write(`${listNewestCheckpointAsSnapshot(backendDir!, prefix!, name!)}\n`);
}
