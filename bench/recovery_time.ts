// Recovery time: how long Volume.open takes on a volume of ~1000 DATA objects (64 KiB batches, file backend, real
// io_uring cache) whose journal is 3/4 full of records no object holds yet (written with a batch bigger than the
// journal, then a crash), with a checkpoint every 64 objects versus none at all (roll forward from object 1). Each
// measurement opens a fresh copy of the same backend directory and cache file; "backend alone" is recoverBackend.
//
//   bun bench/recovery_time.ts [--objects 1000] [--repeat 3] [--cache-size 80m]

import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { FileStore } from "../src/backend/file_store.ts";
import { openUringDevice } from "../ffi/uring_device.ts";
import { recoverBackend } from "../src/volume/recovery/backend.ts";
import { readCacheSuperblock } from "../src/volume/recovery/journal.ts";
import { Volume } from "../src/volume/volume.ts";
import { runLsvd } from "../test/crash/_harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { objects: { type: "string", default: "1000" }, repeat: { type: "string", default: "3" }, "cache-size": { type: "string", default: "80m" } },
  strict: true,
});
const OBJECTS = Number(values.objects);
const REPEAT = Number(values.repeat);
const BATCH_BYTES = 64 * 1024;
const WRITE_BYTES = 16 * 1024;
const WRITES_INFLIGHT = 32;
/** Phase 2's batch: larger than what the journal holds, so its records stay in the journal only. */
const JOURNAL_BATCH_BYTES = 64 * 1024 * 1024;

function check(args: string[]): void {
  const result = runLsvd(args);
  if (result.code !== 0) throw new Error(`lsvd ${args.join(" ")}: ${result.stderr}`);
}

async function writeUntil(volume: Volume, done: () => boolean, random: () => number): Promise<void> {
  const blocks = volume.sizeBytes / WRITE_BYTES;
  const inFlight = new Set<Promise<void>>();
  while (!done()) {
    while (inFlight.size >= WRITES_INFLIGHT) await Promise.race(inFlight);
    const data = new Uint8Array(WRITE_BYTES);
    const view = new DataView(data.buffer);
    for (let index = 0; index < WRITE_BYTES; index += 4) view.setUint32(index, random(), true);
    const promise = volume.write((random() % blocks) * WRITE_BYTES, data, false).then(() => {
      inFlight.delete(promise);
    });
    inFlight.add(promise);
  }
  await Promise.all(inFlight);
}

/**
 * Phase 1: OBJECTS objects of 64 KiB, then a crash once they are all put. Phase 2 (restart, big batch, long idle):
 * writes until the journal is 3/4 full of records no object holds yet, then a crash.
 */
async function buildDataset(dir: string, checkpointIntervalObjects: number): Promise<{ journalBytes: number }> {
  const backend = path.join(dir, "b");
  cpSync(path.join(dir, "..", "empty-b"), backend, { recursive: true });
  const cachePath = path.join(dir, "cache");
  cpSync(path.join(dir, "..", "empty-cache"), cachePath);
  let seed = 12345;
  const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  const store = await FileStore.open(backend);
  let device = await openUringDevice(cachePath);
  let volume = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool, batchBytes: BATCH_BYTES, batchIdleMs: 50, checkpointIntervalObjects });
  await writeUntil(volume, () => volume.stats().puts >= OBJECTS, random);
  for (let tries = 0; tries < 400 && volume.stats().journalUsedBytes > 0; tries++) await Bun.sleep(10);
  volume.abandon();
  await device.close();

  device = await openUringDevice(cachePath);
  volume = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool, batchBytes: JOURNAL_BATCH_BYTES, batchIdleMs: 600_000, checkpointIntervalObjects });
  const journalTarget = (3 / 4) * (await readCacheSuperblock(device, device.pool)).journalBytes;
  await writeUntil(volume, () => volume.stats().journalUsedBytes >= Math.min(journalTarget, JOURNAL_BATCH_BYTES * 0.9), random);
  const journalBytes = volume.stats().journalUsedBytes;
  volume.abandon();
  await device.close();
  return { journalBytes };
}

async function measure(datasetDir: string, runDir: string): Promise<{ openMs: number; backendMs: number; recovery: Volume["recovery"]; objects: number }> {
  cpSync(datasetDir, runDir, { recursive: true });
  const store = await FileStore.open(path.join(runDir, "b"));
  const backendStarted = performance.now();
  const state = await recoverBackend(store, "vol", { verifyData: true });
  const backendMs = performance.now() - backendStarted;
  const device = await openUringDevice(path.join(runDir, "cache"));
  const started = performance.now();
  const volume = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool, batchBytes: JOURNAL_BATCH_BYTES });
  const openMs = performance.now() - started;
  const recovery = volume.recovery;
  await volume.close();
  await device.close();
  await store.close();
  rmSync(runDir, { recursive: true, force: true });
  return { openMs, backendMs, recovery, objects: state.nextSeq - 1 };
}

const root = mkdtempSync(path.join(tmpdir(), "lsvd-recovery-bench-"));
mkdirSync(path.join(root, "empty-b"));
check(["mkdisk", "--size", "1g", path.join(root, "empty-b", "vol")]);
check(["mkcache", "--volume", path.join(root, "empty-b", "vol"), "--size", values["cache-size"]!, path.join(root, "empty-cache")]);

const variants = [
  { name: "checkpoint every 64 objects", interval: 64 },
  { name: "no checkpoint (roll forward from 1)", interval: 1_000_000 },
];
console.log(`recovery time: ${OBJECTS} objects of ${BATCH_BYTES / 1024} KiB (file backend), ${WRITE_BYTES / 1024} KiB random writes, journal 3/4 full of records not in the backend, cache ${values["cache-size"]}`);
for (const variant of variants) {
  const dataset = path.join(root, `ds-${variant.interval}`);
  mkdirSync(dataset);
  const built = await buildDataset(dataset, variant.interval);
  const runs = [];
  for (let index = 0; index < REPEAT; index++) runs.push(await measure(dataset, path.join(root, `run-${variant.interval}-${index}`)));
  const sorted = runs.map((run) => run.openMs).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const first = runs[0]!;
  console.log(
    `${variant.name.padEnd(38)} open median ${median.toFixed(0)} ms (runs ${runs.map((run) => run.openMs.toFixed(0)).join(", ")}); backend alone ${first.backendMs.toFixed(0)} ms: checkpoint ${first.recovery.checkpointSeq}, ${first.recovery.objectsRolledForward} objects rolled forward of ${first.objects}; journal ${(built.journalBytes / 1024 / 1024).toFixed(1)} MiB, ${first.recovery.journalRecordsReplayed} records replayed (case ${first.recovery.journalCase})`,
  );
}
rmSync(root, { recursive: true, force: true });
process.exit(0);
