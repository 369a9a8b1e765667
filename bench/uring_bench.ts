// Throughput of the io_uring cache-I/O layer (ffi/uring_device.ts): O_DIRECT writes on a preallocated file,
// the same jobs bench/uring_vs_fio.sh gives fio, printed as one JSON line.
//
// Usage: bun bench/uring_bench.ts --file PATH [--mode randwrite|seqwrite] [--block-bytes N] [--queue-depth N]
//        [--seconds N] [--size-bytes N] [--poll-turns N]
// randwrite: page-aligned random offsets (uniform, like fio's default random map-less randwrite with norandommap);
// seqwrite: offsets advance by block-bytes and wrap at size-bytes. Each of queue-depth workers keeps one write in
// flight, so the device sees queue-depth writes outstanding, as fio's iodepth does. --poll-turns: empty event-loop
// turns the ring polls its completions for after a submit (default 0, as the cache device under lsvd serve).

import { parseArgs } from "node:util";
import { PAGE_BYTES } from "../src/constants.ts";
import { openUringDevice } from "../ffi/uring_device.ts";

const { values } = parseArgs({
  options: {
    file: { type: "string" },
    mode: { type: "string", default: "randwrite" },
    "block-bytes": { type: "string", default: "4096" },
    "queue-depth": { type: "string", default: "32" },
    seconds: { type: "string", default: "5" },
    "size-bytes": { type: "string", default: String(1024 ** 3) },
    "poll-turns": { type: "string", default: "0" },
  },
});

if (values.file === undefined) throw new Error("--file is required");
const mode = values.mode;
if (mode !== "randwrite" && mode !== "seqwrite") throw new Error(`--mode must be randwrite or seqwrite, not ${mode}`);
const blockBytes = Number(values["block-bytes"]);
const queueDepth = Number(values["queue-depth"]);
const seconds = Number(values.seconds);
const sizeBytes = Number(values["size-bytes"]);
if (blockBytes % PAGE_BYTES !== 0 || sizeBytes % blockBytes !== 0) throw new Error("block and size must be page multiples");

const pollIdleTurns = Number(values["poll-turns"]);
const device = await openUringDevice(values.file, { createSizeBytes: sizeBytes, queueDepth, pollIdleTurns });
const blocks = sizeBytes / blockBytes;
let nextBlock = 0;
let writes = 0;
const deadlineMs = performance.now() + seconds * 1000;

async function worker(): Promise<void> {
  const buffer = device.pool.acquire(blockBytes);
  buffer.fill(0xa5);
  try {
    const batch = [buffer];
    while (performance.now() < deadlineMs) {
      let block: number;
      if (mode === "randwrite") {
        block = Math.floor(Math.random() * blocks);
      } else {
        block = nextBlock;
        nextBlock = (nextBlock + 1) % blocks;
      }
      await device.write(block * blockBytes, batch);
      writes++;
    }
  } finally {
    device.pool.release(buffer);
  }
}

const startMs = performance.now();
await Promise.all(Array.from({ length: queueDepth }, () => worker()));
const elapsedSeconds = (performance.now() - startMs) / 1000;
await device.close();
const iops = writes / elapsedSeconds;
console.log(
  JSON.stringify({
    engine: "lsvd-uring",
    mode,
    blockBytes,
    queueDepth,
    pollIdleTurns,
    seconds: Number(elapsedSeconds.toFixed(3)),
    writes,
    iops: Math.round(iops),
    mibPerSecond: Number(((iops * blockBytes) / 2 ** 20).toFixed(1)),
  }),
);
