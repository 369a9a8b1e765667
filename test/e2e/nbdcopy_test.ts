// nbdcopy through the real `lsvd serve`, over a unix socket and TCP: 256 MiB of seeded random data in and out
// (more than the 128 MiB journal, so the journal wraps and batches go to the backend while writes continue),
// sha256 equal; a clean SIGTERM stop (exit 0, summary line), restart on the same volume and cache, equal again.
// Then a crash: 64 MiB in with --flush, SIGKILL, restart (journal replay), equal.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import {
  LsvdServer,
  STOP_SUMMARY_PATTERN,
  TRANSPORTS,
  cleanupAll,
  createVolume,
  ensureBuilt,
  fileSize,
  isZeroRange,
  makeTempDir,
  runOk,
  sha256File,
  writeRandomFile,
} from "./_harness.ts";

const MIB = 1024 * 1024;
const BIG_BYTES = 256 * MIB;
const SMALL_BYTES = 64 * MIB;
const VOLUME_BYTES = 384 * MIB;
const SEED = Number(process.env.LSVD_SEED ?? 0x15d0c0de);
const TEST_TIMEOUT_MS = 120_000;
const COPY_TIMEOUT_MS = 90_000;

let dataDir: string;
let bigInput: string;
let bigHash: string;
let smallInput: string;
let smallHash: string;

/** Copies the whole volume out and checks: the first `dataBytes` hash to `hash`, the rest reads as zeroes. */
async function expectVolumeHolds(uri: string, dir: string, dataBytes: number, hash: string): Promise<void> {
  const output = join(dir, `out.${Math.random().toString(36).slice(2, 8)}.raw`);
  try {
    await runOk(["nbdcopy", uri, output], { timeoutMs: COPY_TIMEOUT_MS });
    expect(fileSize(output)).toBe(VOLUME_BYTES);
    expect(await sha256File(output, dataBytes)).toBe(hash);
    expect(await isZeroRange(output, dataBytes, VOLUME_BYTES)).toBe(true);
  } finally {
    rmSync(output, { force: true });
  }
}

beforeAll(async () => {
  await ensureBuilt();
  console.log(`nbdcopy_test: LSVD_SEED=${SEED}`);
  dataDir = makeTempDir("nbdcopy-data");
  bigInput = join(dataDir, "big.raw");
  smallInput = join(dataDir, "small.raw");
  writeRandomFile(bigInput, BIG_BYTES, SEED);
  writeRandomFile(smallInput, SMALL_BYTES, SEED + 1);
  bigHash = await sha256File(bigInput);
  smallHash = await sha256File(smallInput);
}, 60_000); // builds the binary when it is missing and writes the inputs: slow on a loaded machine

afterAll(cleanupAll);

for (const transport of TRANSPORTS) {
  describe(`nbdcopy over ${transport}`, () => {
    test(
      "256 MiB in and out, clean stop, restart, out again",
      async () => {
        const paths = await createVolume(`nbdcopy-${transport}`, { size: "384m", cacheSize: "256m" });
        let server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        await runOk(["nbdcopy", "--flush", bigInput, server.uri], { timeoutMs: COPY_TIMEOUT_MS });
        await expectVolumeHolds(server.uri, paths.dir, BIG_BYTES, bigHash);

        const stopped = await server.stop("SIGTERM");
        expect(stopped.exitCode).toBe(0);
        expect(stopped.log).toContain("SIGTERM: shutting down");
        const summary = STOP_SUMMARY_PATTERN.exec(stopped.log);
        expect(summary).not.toBeNull();
        // nbdcopy writes in requests of at most 32 MiB (and usually far fewer bytes): many writes, many objects.
        expect(Number(summary![1])).toBeGreaterThanOrEqual(BIG_BYTES / (32 * MIB));
        expect(Number(summary![4])).toBeGreaterThanOrEqual(BIG_BYTES / (64 * MIB));

        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        await expectVolumeHolds(server.uri, paths.dir, BIG_BYTES, bigHash);
        expect((await server.stop("SIGTERM")).exitCode).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );

    test(
      "64 MiB in with --flush, SIGKILL, restart replays the journal",
      async () => {
        const paths = await createVolume(`nbdcopy-kill-${transport}`, { size: "384m", cacheSize: "256m" });
        let server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        await runOk(["nbdcopy", "--flush", smallInput, server.uri], { timeoutMs: COPY_TIMEOUT_MS });
        const killed = await server.kill();
        expect(killed.signalCode).toBe("SIGKILL");
        expect(killed.log).not.toContain("stopped after");

        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        expect(server.log).toMatch(/recovery: journal case @\w+, \d+ record\(s\) replayed/);
        await expectVolumeHolds(server.uri, paths.dir, SMALL_BYTES, smallHash);
        // A clean stop must put what the replay recovered into the backend: a brand-new cache still sees it all.
        expect((await server.stop("SIGTERM")).exitCode).toBe(0);
        const freshCache = join(paths.dir, "cache.fresh");
        await runOk([await ensureBuilt(), "mkcache", "--volume", paths.volume, "--size", "64m", freshCache]);
        server = await LsvdServer.start({ ...paths, cache: freshCache, transport, dir: paths.dir });
        await expectVolumeHolds(server.uri, paths.dir, SMALL_BYTES, smallHash);
        expect((await server.stop("SIGTERM")).exitCode).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );
  });
}
