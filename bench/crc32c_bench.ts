// Throughput of crc32c (src/format/crc32c.ts) on 4 KiB and 1 MiB buffers, with Bun's native zlib crc32 for scale.
// Run: bun bench/crc32c_bench.ts. Prints MB/s (10^6 bytes per second) per size.

import { crc32c } from "../src/format/crc32c.ts";
import { crc32 } from "../src/format/crc32.ts";

const TOTAL_BYTES = 512 * 1024 * 1024;

function bench(name: string, checksum: (data: Uint8Array) => number, sizeBytes: number): void {
  const data = new Uint8Array(sizeBytes);
  for (let i = 0; i < sizeBytes; i++) data[i] = (i * 2654435761) >>> 24;
  const iterations = TOTAL_BYTES / sizeBytes;
  let sink = 0;
  for (let i = 0; i < Math.min(iterations, 64); i++) sink ^= checksum(data); // warm up the JIT
  const start = performance.now();
  for (let i = 0; i < iterations; i++) sink ^= checksum(data);
  const elapsedMs = performance.now() - start;
  const mbPerSecond = TOTAL_BYTES / 1e6 / (elapsedMs / 1000);
  console.log(`${name.padEnd(7)} ${String(sizeBytes).padStart(8)} B  ${mbPerSecond.toFixed(0).padStart(6)} MB/s  (sink ${sink})`);
}

for (const sizeBytes of [4096, 1024 * 1024]) {
  bench("crc32c", crc32c, sizeBytes);
  bench("crc32", crc32, sizeBytes);
}
