// Helper of bench/cpu_per_request.sh: lsvd's NBD server (src/nbd/) over a device that does nothing, so the bench can
// tell the cost of the protocol layer and Bun's sockets from the cost of the volume below them.
// Writes, flushes and trims resolve at once; reads return zeroes from one shared buffer.
//
// Usage: bun bench/_null_nbd_server.ts SOCKET_PATH [SIZE_BYTES]   (SIGTERM or SIGINT stops it, exit 0, after one line
// on stderr: requests per socket read and replies per socket write, NbdStats' batching counters)
// With LSVD_BENCH_METRICS=1, lsvd serve's per-request metrics are recorded too (bench/metrics_overhead.sh).
// With LSVD_BENCH_NBD_IO=uring, NBD runs on io_uring as in lsvd serve (--nbd-io uring), else on Bun's sockets.

import { NBD_REQUEST_BYTES_MAX, PAGE_BYTES, SECTOR_BYTES } from "../src/constants.ts";
import type { BlockDevice, BlockStatusExtent } from "../src/nbd/block_device.ts";
import { startNbdServer } from "../src/nbd/server.ts";
import { ServeMetrics } from "../src/cli/serve_metrics.ts";
import { openNbdRing } from "../src/cli/serve_start.ts";

const [socketPath, sizeText = String(1024 ** 3)] = process.argv.slice(2);
if (socketPath === undefined) {
  console.error("usage: bun bench/_null_nbd_server.ts SOCKET_PATH [SIZE_BYTES]");
  process.exit(2);
}
const sizeBytes = Number(sizeText);
if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % PAGE_BYTES !== 0) {
  console.error(`null server: size ${sizeText} must be a positive multiple of ${PAGE_BYTES}`);
  process.exit(2);
}

const done = Promise.resolve();
const zeroes = new Uint8Array(NBD_REQUEST_BYTES_MAX);

class NullDevice implements BlockDevice {
  readonly sizeBytes = sizeBytes;
  readonly readOnly = false;
  readonly blockSizeMinBytes = SECTOR_BYTES;
  readonly blockSizePreferredBytes = PAGE_BYTES;
  read(_offset: number, length: number): Promise<Uint8Array> {
    return Promise.resolve(zeroes.subarray(0, length));
  }
  write(): Promise<void> {
    return done;
  }
  flush(): Promise<void> {
    return done;
  }
  trim(): Promise<void> {
    return done;
  }
  writeZeroes(): Promise<void> {
    return done;
  }
  cache(): Promise<void> {
    return done;
  }
  blockStatus(_offset: number, length: number): Promise<BlockStatusExtent[]> {
    return Promise.resolve([{ length, hole: true, zero: true }]);
  }
}

const metrics =
  process.env.LSVD_BENCH_METRICS === "1"
    ? new ServeMetrics({ nbd: () => null, volume: () => null, retries: () => ({ retries: 0, timeouts: 0 }), state: () => "serving", recoverySeconds: () => 0, adminConnections: () => 0 })
    : null;
const ring = process.env.LSVD_BENCH_NBD_IO === "uring" ? openNbdRing(0) : undefined;
const server = await startNbdServer({ device: new NullDevice(), socketPath, description: "null device (bench)", requestObserver: metrics?.nbdObserver, ring });
let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await server.close();
  await ring?.close();
  // How well both sides batched: requests per socket read, replies per socket write.
  const stats = server.stats();
  const requests = stats.reads + stats.writes + stats.flushes + stats.trims + stats.writeZeroes + stats.blockStatuses + stats.caches;
  const ratio = (count: number): string => (count === 0 ? "-" : (requests / count).toFixed(1));
  console.error(`null server: ${requests} requests, ${stats.receives} socket reads (${ratio(stats.receives)} requests each), ${stats.replyWrites} reply writes (${ratio(stats.replyWrites)} replies each)`);
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
