// Whole zeroing after cache loss (issue 12; docs/architecture.md, "Whole writes"): a WRITE_ZEROES with NO_HOLE, a
// WRITE_ZEROES without it and a TRIM, each of 32 MiB (the largest client WRITE) sent by a real client (nbdsh), are
// wholly present or wholly absent once the cache is lost, at 64 KiB and 1 MiB batches. Each round: fill the region
// with one byte value and stop cleanly (all of it in the backend), restart, send the zeroing, SIGKILL the server once
// the backend has gained a random number of objects (at 64 KiB batches the zeroing is 512 objects, so the kill lands
// inside it), replace the cache with a new one, restart, and read the region back: it must be all the fill value or
// all zeroes, never a mix.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Prng } from "../sim/prng.ts";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, lsvd, runOk, type VolumePaths } from "./_harness.ts";

const MIB = 1024 * 1024;
const REGION_BYTES = 32 * MIB;
const TEST_TIMEOUT_MS = 600_000;
const SEED = Number(process.env.LSVD_SEED ?? 0x2e705);

type Zeroing = "zero-no-hole" | "zero" | "trim";
const ROUNDS: Array<{ zeroing: Zeroing; batch: string }> = [
  { zeroing: "zero-no-hole", batch: "64k" },
  { zeroing: "zero-no-hole", batch: "64k" },
  { zeroing: "zero-no-hole", batch: "64k" },
  { zeroing: "zero-no-hole", batch: "1m" },
  { zeroing: "zero", batch: "64k" },
  { zeroing: "trim", batch: "64k" },
];

let paths: VolumePaths;

beforeAll(async () => {
  await ensureBuilt();
  paths = await createVolume("whole-zeroes", { size: "64m", cacheSize: "128m" });
});

afterAll(cleanupAll, 120_000); // thousands of objects to remove (no GC)

function backendObjects(): number {
  return readdirSync(paths.backendDir).filter((name) => !name.startsWith(".") && !name.endsWith(".lease")).length;
}

function serve(batch: string): Promise<LsvdServer> {
  return LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: ["--batch-size", batch, "--no-gc"] });
}

async function nbdsh(uri: string, script: string): Promise<void> {
  await runOk(["nbdsh", "-u", uri, "-c", script], { timeoutMs: 120_000 });
}

/** The nbdsh line that sends the zeroing (h.zero's flags: nbd.CMD_FLAG_NO_HOLE). */
function zeroingCall(zeroing: Zeroing): string {
  if (zeroing === "trim") return `h.trim(${REGION_BYTES}, 0)`;
  const flags = zeroing === "zero-no-hole" ? "nbd.CMD_FLAG_NO_HOLE" : "0";
  return `h.zero(${REGION_BYTES}, 0, flags=${flags})`;
}

/** Sends the zeroing and SIGKILLs the server once the backend holds `objectsMore` more objects (or the reply came). */
async function zeroAndKill(server: LsvdServer, zeroing: Zeroing, objectsMore: number): Promise<string> {
  const before = backendObjects();
  const client = Bun.spawn({ cmd: ["nbdsh", "-u", server.uri, "-c", `import nbd\n${zeroingCall(zeroing)}\nprint("replied")`], stdout: "pipe", stderr: "pipe", env: TOOL_ENV });
  try {
    let replied = false;
    void client.exited.then(() => (replied = true));
    while (!replied && backendObjects() < before + objectsMore) await Bun.sleep(2);
    await server.kill();
    return `${backendObjects() - before} objects put at the kill${replied ? " (after the reply)" : ""}`;
  } finally {
    client.kill("SIGKILL");
    await client.exited;
  }
}

/** The region as read through a fresh server: the distinct byte values in it, and where the first change is. */
async function readRegion(uri: string): Promise<{ values: number[]; firstChange: number }> {
  const out = join(paths.dir, "region.raw");
  await nbdsh(uri, `open(${JSON.stringify(out)}, "wb").write(h.pread(${REGION_BYTES}, 0))`);
  const bytes = new Uint8Array(readFileSync(out));
  expect(bytes.byteLength).toBe(REGION_BYTES);
  const values = new Set<number>();
  let firstChange = -1;
  for (let index = 0; index < bytes.byteLength; index++) {
    if (firstChange < 0 && bytes[index] !== bytes[0]) firstChange = index;
    values.add(bytes[index]!);
  }
  return { values: [...values].sort((a, b) => a - b), firstChange };
}

test(
  "a 32 MiB zeroing (NO_HOLE, plain, TRIM) is wholly present or wholly absent after the cache is lost",
  async () => {
    const prng = new Prng(SEED);
    const report: string[] = [];
    for (const [round, { zeroing, batch }] of ROUNDS.entries()) {
      const fill = 1 + round;
      let server = await serve(batch);
      await nbdsh(server.uri, `h.pwrite(bytes([${fill}]) * ${REGION_BYTES}, 0)\nh.flush()`);
      expect((await server.stop()).exitCode).toBe(0); // everything in the backend
      server = await serve(batch);
      const objectsMore = 1 + prng.int(batch === "64k" ? 480 : 30);
      const killed = await zeroAndKill(server, zeroing, objectsMore);
      // The cache is lost: a new one, so recovery has only the backend.
      await runOk([await ensureBuilt(), "mkcache", "--force", "--volume", paths.volume, "--size", "128m", paths.cache]);
      server = await serve(batch);
      const { values, firstChange } = await readRegion(server.uri);
      report.push(`round ${round} ${zeroing} ${batch}: ${killed}; region holds ${values.join(",")}`);
      expect((await server.stop()).exitCode).toBe(0);
      if (values.length !== 1 || (values[0] !== 0 && values[0] !== fill)) {
        throw new Error(`torn zeroing: the region holds ${values.join(",")} (first change at byte ${firstChange}), not all ${fill} or all 0\n${report.join("\n")}`);
      }
    }
    console.log(report.join("\n"));
    const fsck = await lsvd(["fsck", paths.volume, "--cache", paths.cache]);
    expect(fsck.exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);
