// bench/shared_clones_bench.ts — 4 clones of one base, opened in one process on one shared read-cache device
// (`lsvd mkcache --read-cache-only`), each reading the whole of the base's data: how many bytes the backend serves.
// Without the shared cache each clone reads the base's data from the backend (4x); with it, about once.
//
// Setup with the CLI (dist/lsvd): a file-backend base of SIZE_MIB written whole (1 MiB writes, in-process), a snapshot,
// 4 clones (`lsvd clone`), a cache per clone and a shared read-cache device. Then, in this process, the 4 clones are
// opened with the shared device and read in turn in 1 MiB reads; ranged-read bytes are counted under the store (a
// MeteredStore, as `lsvd serve --metrics` counts them). Run twice: shared device, and no read cache (the baseline).
// Usage: bun bench/shared_clones_bench.ts     Env: SIZE_MIB (default 256), TMP_PARENT (default /var/tmp).

import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openUringDevice } from "../ffi/uring_device.ts";
import type { StoreMeter } from "../src/backend/metered_store.ts";
import { SharedReadCache } from "../src/cache/shared_read_cache.ts";
import { openVolumeForCommand } from "../src/cli/open_volume.ts";

const MIB = 1024 * 1024;
const SIZE_MIB = Number(process.env.SIZE_MIB ?? 256);
const CLONES = 4;
const LSVD = join(import.meta.dir, "../dist/lsvd");
const work = mkdtempSync(join(process.env.TMP_PARENT ?? "/var/tmp", "lsvd-shared-clones."));
const holder = { command: "bench", addresses: [], leaseDurationMs: 30_000 };

function lsvd(...args: string[]): void {
  const result = Bun.spawnSync([LSVD, ...args], { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`lsvd ${args.join(" ")}: ${result.stderr.toString()}`);
}

async function setUp(): Promise<void> {
  lsvd("mkdisk", "--size", `${SIZE_MIB * 2}m`, join(work, "base"));
  lsvd("mkcache", "--volume", join(work, "base"), "--size", "128m", join(work, "base.cache"));
  const opened = await openVolumeForCommand(join(work, "base"), join(work, "base.cache"), {}, () => {}, holder, { gc: false });
  const chunk = new Uint8Array(MIB);
  for (let offset = 0; offset < SIZE_MIB * MIB; offset += MIB) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    await opened.volume.write(offset, chunk, false);
  }
  await opened.close();
  lsvd("snapshot", "create", join(work, "base"), "s");
  for (let index = 1; index <= CLONES; index++) {
    lsvd("clone", `${join(work, "base")}@s`, join(work, `clone${index}`));
    lsvd("mkcache", "--volume", join(work, `clone${index}`), "--size", "64m", join(work, `clone${index}.cache`));
  }
  lsvd("mkcache", "--read-cache-only", "--size", `${SIZE_MIB + 64}m`, join(work, "shared.rc"));
}

/** Opens the clones (with the shared device, or with no read cache), reads each whole in turn: backend bytes per clone. */
async function readClones(shared: boolean): Promise<{ perClone: number[]; seconds: number }> {
  const device = shared ? await openUringDevice(join(work, "shared.rc"), { exclusive: true }) : null;
  const cache = device === null ? undefined : await SharedReadCache.open(device, device.pool);
  let bytes = 0;
  const meter: StoreMeter = { done: (op, _s, error, bytesRead) => void (op === "getRange" && error === null && (bytes += bytesRead)) };
  const perClone: number[] = [];
  const started = performance.now();
  for (let index = 1; index <= CLONES; index++) {
    const opened = await openVolumeForCommand(join(work, `clone${index}`), join(work, `clone${index}.cache`), {}, () => {}, holder, { gc: false, readCache: false, sharedReadCache: cache }, { lease: { done: () => {} }, volume: meter });
    const before = bytes;
    for (let offset = 0; offset < SIZE_MIB * MIB; offset += MIB) {
      await opened.volume.read(offset, MIB);
      await cache?.cache.settle(); // the fill queue is bounded (a local backend outruns the fills): keep up
    }
    await cache?.cache.settle();
    perClone.push(bytes - before);
    await opened.close();
  }
  const seconds = (performance.now() - started) / 1000;
  await cache?.close();
  return { perClone, seconds };
}

try {
  await setUp();
  const baseline = await readClones(false);
  const shared = await readClones(true);
  const total = (run: { perClone: number[] }) => run.perClone.reduce((a, b) => a + b, 0);
  const mib = (value: number) => (value / MIB).toFixed(1);
  console.log(`${CLONES} clones of a ${SIZE_MIB} MiB base, each read whole (1 MiB reads), file backend:`);
  console.log(`  no read cache:       backend served ${mib(total(baseline))} MiB (${baseline.perClone.map(mib).join(" + ")}) in ${baseline.seconds.toFixed(1)} s`);
  console.log(`  shared read cache:   backend served ${mib(total(shared))} MiB (${shared.perClone.map(mib).join(" + ")}) in ${shared.seconds.toFixed(1)} s`);
  console.log(`  backend bytes / data size: ${(total(baseline) / (SIZE_MIB * MIB)).toFixed(2)}x without, ${(total(shared) / (SIZE_MIB * MIB)).toFixed(2)}x with`);
  console.log(`RESULT ${JSON.stringify({ sizeMiB: SIZE_MIB, clones: CLONES, baselineBytes: baseline.perClone, sharedBytes: shared.perClone })}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
