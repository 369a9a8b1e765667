// Helper of bench/serve_bench.sh: what a file-backend volume holds, split by object type, as one JSON line. The bench
// makes a fresh volume per run, so every numbered object in the directory is new: their sizes over the bytes the client
// wrote is the write amplification of the backend (object headers, partial batches, checkpoints).
// Object layout and names: docs/format.md ("Common header", "Object names").
//
// Usage: bun bench/_backend_bytes.ts DIR PREFIX     (the volume is DIR/PREFIX, its objects DIR/PREFIX.%08x)

import { closeSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { SECTOR_BYTES } from "../src/constants.ts";
import { COMMON_HEADER_BYTES, ObjectType, decodeCommonHeader } from "../src/format/object_header.ts";
import { parseObjectName } from "../src/format/object_name.ts";

const [dir, prefix] = process.argv.slice(2);
if (dir === undefined || prefix === undefined) throw new Error("usage: bun bench/_backend_bytes.ts DIR PREFIX");

const totals = {
  dataObjects: 0,
  dataObjectBytes: 0,
  /** data_sectors*512 summed over data objects: the client bytes they carry. */
  dataPayloadBytes: 0,
  checkpointObjects: 0,
  checkpointObjectBytes: 0,
  /** Every numbered object (data + checkpoint): what the backend was asked to store. */
  newObjectBytes: 0,
};

const header = new Uint8Array(COMMON_HEADER_BYTES);
for (const name of readdirSync(dir)) {
  if (parseObjectName(prefix, name) === null) continue;
  const path = join(dir, name);
  const sizeBytes = statSync(path).size;
  const fd = openSync(path, "r");
  try {
    const got = readSync(fd, header, 0, COMMON_HEADER_BYTES, 0);
    if (got !== COMMON_HEADER_BYTES) throw new Error(`Cannot read object ${name}: ${got} of ${COMMON_HEADER_BYTES} header bytes`);
  } finally {
    closeSync(fd);
  }
  const common = decodeCommonHeader(header);
  totals.newObjectBytes += sizeBytes;
  if (common.type === ObjectType.Data) {
    totals.dataObjects += 1;
    totals.dataObjectBytes += sizeBytes;
    totals.dataPayloadBytes += common.dataSectors * SECTOR_BYTES;
  } else if (common.type === ObjectType.Checkpoint) {
    totals.checkpointObjects += 1;
    totals.checkpointObjectBytes += sizeBytes;
  }
}
console.log(JSON.stringify(totals));
