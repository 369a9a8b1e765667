// In-process benchmark of the volume write path alone (no NBD): 4 KiB random writes at a fixed queue depth through
// Volume.write on a real io_uring cache file and a file backend. Prints writes/s and CPU microseconds per write, so
// the cost of the volume can be told apart from the NBD layer's.
//   bun bench/volume_write_bench.ts [--seconds 5] [--qd 32] [--dir /var/tmp] [--backend-dir /dev/shm]
// --dir holds the cache file; --backend-dir the file backend (default: the same directory); --memory-backend keeps
// objects in memory, to measure the volume without any backend cost. --then issues writes through Volume.writeThen
// (the NBD layer's way: a listener per writer, no promise per write) instead of awaiting Volume.write.

import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { v4 as uuidv4 } from "uuid";
import { FileStore } from "../src/backend/file_store.ts";
import { MemoryStore } from "../src/backend/memory_store.ts";
import { computeCacheLayout } from "../src/cache/cache_layout.ts";
import { SECTOR_BYTES } from "../src/constants.ts";
import { loadIsalCrc32c } from "../ffi/isal_crc32c.ts";
import { openUringDevice } from "../ffi/uring_device.ts";
import { encodeCacheSuperblock } from "../src/format/cache_superblock.ts";
import { installCrc32cAccelerator } from "../src/format/crc32c.ts";
import { encodeSuperblock, newSuperblock } from "../src/format/superblock_object.ts";
import { Volume } from "../src/volume/volume.ts";

const { values } = parseArgs({ options: { seconds: { type: "string" }, qd: { type: "string" }, dir: { type: "string" }, "backend-dir": { type: "string" }, "memory-backend": { type: "boolean" }, then: { type: "boolean" } } });
const seconds = Number(values.seconds ?? 5);
const queueDepth = Number(values.qd ?? 32);
installCrc32cAccelerator(loadIsalCrc32c().crc32c);
const dir = mkdtempSync(join(values.dir ?? "/var/tmp", "lsvd-vbench-"));
const backendDir = values["backend-dir"] ? mkdtempSync(join(values["backend-dir"], "lsvd-vbench-")) : dir;
try {
  const volumeBytes = 1024 ** 3;
  const store = values["memory-backend"] ? new MemoryStore() : await FileStore.open(backendDir);
  const volUuid = uuidv4();
  await store.put("vol", encodeSuperblock(newSuperblock(volUuid, volumeBytes / SECTOR_BYTES)));
  const device = await openUringDevice(join(dir, "cache"), { createSizeBytes: 1024 ** 3 });
  const layout = computeCacheLayout(device.sizeBytes);
  const page = device.pool.acquire(4096);
  page.set(encodeCacheSuperblock({ cacheUuid: uuidv4(), volUuid, ...layout, startSeq: 1000, replayOffsetBytes: layout.journalStartBytes, replaySeq: 1000, generation: 1 }));
  await device.write(0, [page]);
  device.pool.release(page);
  const volume = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool });
  const data = new Uint8Array(4096).fill(7);
  let writes = 0;
  const deadline = performance.now() + seconds * 1000;
  const cpuStart = process.cpuUsage();
  const wallStart = performance.now();
  const worker = async () => {
    while (performance.now() < deadline) {
      const block = Math.floor(Math.random() * (volumeBytes / 4096));
      await volume.write(block * 4096, data, false);
      writes += 1;
    }
  };
  const listenedWorkers = (): Promise<void> =>
    new Promise<void>((finish, fail) => {
      let running = queueDepth;
      const issue = (listener: { writeDone(): void; writeFailed(error: unknown): void }): void => {
        if (performance.now() >= deadline) {
          running -= 1;
          if (running === 0) finish();
          return;
        }
        const block = Math.floor(Math.random() * (volumeBytes / 4096));
        volume.writeThen(block * 4096, data, false, listener);
      };
      for (let index = 0; index < queueDepth; index++) {
        const listener = { writeDone: () => ((writes += 1), issue(listener)), writeFailed: fail };
        issue(listener);
      }
    });
  if (values.then) await listenedWorkers();
  else await Promise.all(Array.from({ length: queueDepth }, worker));
  const wallSeconds = (performance.now() - wallStart) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  await volume.close();
  await device.close();
  const result = {
    writesPerSecond: Math.round(writes / wallSeconds),
    cpuMicrosecondsPerWrite: +((cpu.user + cpu.system) / writes).toFixed(2),
    userMicrosecondsPerWrite: +(cpu.user / writes).toFixed(2),
    queueDepth,
    then: Boolean(values.then),
  };
  console.log(JSON.stringify(result));
} finally {
  rmSync(dir, { recursive: true, force: true });
  rmSync(backendDir, { recursive: true, force: true });
}
