// Snapshot creation time against map size (issue #14: O(map), never O(data)): a volume whose map holds N extents
// (built directly: one checkpoint whose N one-sector entries point into one small DATA object; file backend, real
// io_uring cache) is opened, and then, alternating, REPEAT times each: a plain forced checkpoint (the baseline: what
// the write path does every N objects) and Volume.createSnapshot (a checkpoint plus the superblock listing it), each
// after one 4 KiB write so that there is something new to cover. Prints medians with [min..max] and the ratio; and
// the offline `lsvd snapshot create` path (createSnapshotOffline: a clean volume's last checkpoint is the snapshot, so
// only the superblock is written), median of REPEAT.
//
//   bun bench/snapshot_bench.ts [--extents 1000,10000,100000,1000000] [--repeat 5]

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { FileStore } from "../src/backend/file_store.ts";
import { CKPT_MAP_ENTRY_BYTES, encodeCheckpoint, packCheckpointMapEntry } from "../src/format/checkpoint_object.ts";
import { encodeDataObjectHeader } from "../src/format/data_object.ts";
import { objectName } from "../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock } from "../src/format/superblock_object.ts";
import { openUringDevice } from "../ffi/uring_device.ts";
import { createSnapshotOffline, deleteSnapshotOffline } from "../src/volume/snapshot_admin.ts";
import { Volume } from "../src/volume/volume.ts";
import { runLsvd } from "../test/crash/_harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { extents: { type: "string", default: "1000,10000,100000,1000000" }, repeat: { type: "string", default: "5" } },
  strict: true,
});
const SIZES = values.extents!.split(",").map(Number);
const REPEAT = Number(values.repeat);
const VOLUME_SIZE = "4g";

function check(args: string[]): void {
  const result = runLsvd(args);
  if (result.code !== 0) throw new Error(`lsvd ${args.join(" ")}: ${result.stderr}`);
}

/** The backend of a clean volume whose map holds `extents` one-sector extents (lba 2i) in object 1; checkpoint 2. */
async function buildVolume(store: FileStore, prefix: string, extents: number): Promise<void> {
  const superblock = decodeSuperblock(await store.get(prefix));
  const volUuid = superblock.volUuid;
  const cacheUuid = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";
  const data = new Uint8Array(8 * 512).fill(7);
  const header = encodeDataObjectHeader(
    { volUuid, seq: 1, cacheSeq: 1, cacheSeqLast: 1, cacheUuid, objsCleaned: [], extents: [{ lba: 0, sectors: 8 }], trims: [], writeContinues: false },
    data,
  );
  const hdrSectors = header.byteLength / 512;
  const object = new Uint8Array(header.byteLength + data.byteLength);
  object.set(header);
  object.set(data, header.byteLength);
  await store.put(objectName(prefix, 1), object);
  const mapEntries = new Uint8Array(extents * CKPT_MAP_ENTRY_BYTES);
  const view = new DataView(mapEntries.buffer);
  for (let index = 0; index < extents; index++) packCheckpointMapEntry(view, index, 2 * index, 1, 1, hdrSectors + (index % 8));
  const checkpoint = encodeCheckpoint({
    volUuid,
    seq: 2,
    cacheSeq: 0,
    checkpoints: [],
    objects: [{ seq: 1, hdrSectors, dataSectors: 8, liveSectors: Math.min(8, extents) }],
    deferredDeletes: [],
    mapEntries,
    cacheUuid,
    cacheSeqLast: 1,
  });
  await store.put(objectName(prefix, 2), checkpoint);
  await store.put(prefix, encodeSuperblock({ ...superblock, checkpoints: [2], nextSeq: 3 }));
}

function stats(samples: number[]): { median: number; min: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)]!, min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

function show(samples: number[]): string {
  const { median, min, max } = stats(samples);
  return `${median.toFixed(1)} ms [${min.toFixed(1)}..${max.toFixed(1)}]`;
}

async function measure(extents: number): Promise<void> {
  const dir = mkdtempSync(path.join(process.env.LSVD_BENCH_DIR ?? tmpdir(), "lsvd-snapshot-bench-"));
  try {
    const backend = path.join(dir, "b");
    check(["mkdisk", "--size", VOLUME_SIZE, path.join(backend, "vol")]);
    check(["mkcache", "--volume", path.join(backend, "vol"), "--size", "64m", path.join(dir, "cache")]);
    const store = new FileStore(backend);
    await buildVolume(store, "vol", extents);
    const device = await openUringDevice(path.join(dir, "cache"), { exclusive: true });
    const volume = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool, gc: false, batchIdleMs: 3_600_000 });
    const writes = (volume as unknown as { writes: { settle(force: boolean): Promise<void> } }).writes;
    const checkpointMs: number[] = [];
    const snapshotMs: number[] = [];
    const block = new Uint8Array(4096).fill(1);
    for (let round = 0; round < REPEAT; round++) {
      // Above the map's extents: the crafted object's live count stays as the checkpoint says.
      await volume.write(1024 * extents + 4096 * (2 * round + 1), block, false);
      await writes.settle(false);
      let started = performance.now();
      await writes.settle(true);
      checkpointMs.push(performance.now() - started);
      await volume.write(1024 * extents + 4096 * (2 * round + 2), block, false);
      await writes.settle(false);
      started = performance.now();
      await volume.createSnapshot(`s${round}`);
      snapshotMs.push(performance.now() - started);
    }
    const mapExtents = volume.stats().extents;
    await volume.close();
    await device.close();
    const offlineMs: number[] = [];
    const admin = { store, prefix: "vol", command: "snapshot" };
    for (let round = 0; round < REPEAT; round++) {
      const started = performance.now();
      await createSnapshotOffline(admin, `offline${round}`);
      offlineMs.push(performance.now() - started);
      await deleteSnapshotOffline(admin, `offline${round}`);
    }
    const ratio = stats(snapshotMs).median / stats(checkpointMs).median;
    console.log(
      `${String(extents).padStart(8)} extents (map ${mapExtents}): checkpoint ${show(checkpointMs)}, snapshot online ${show(snapshotMs)} (x${ratio.toFixed(2)} of the checkpoint), offline ${show(offlineMs)}`,
    );
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`snapshot_bench: ${REPEAT} alternating runs per size; medians [min..max]; file backend, io_uring cache`);
for (const extents of SIZES) await measure(extents);
