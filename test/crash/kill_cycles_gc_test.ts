// Many `kill -9` cycles of the real binary (dist/lsvd serve, GC on, 64 KiB batches so objects, checkpoints and
// garbage come fast) under random writes: fio on one half of the volume makes garbage, the harness's stamped writer
// on the other half keeps a model of every acknowledged op. After every kill `lsvd fsck --cache` must exit 0 (a
// killed volume with its cache is intact: what a kill leaves behind is a note, never a problem), and after every
// restart the stamped half must read as a prefix of its history holding every acknowledged op. At the end, after one
// more kill: `lsvd gc` and `lsvd fsck` exit 0, no left-overs remain, and the data verifies once more.
// LSVD_KILL_CYCLES=<n> runs n cycles (default 24); LSVD_SEED=<n> picks the seed; LSVD_KEEP=1 keeps a failing run.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Prng } from "../sim/prng.ts";
import { ensureBuilt, LSVD_BINARY, TOOL_ENV } from "../e2e/_harness.ts";
import { NbdClient } from "./_nbd_client.ts";
import { BLOCK_BYTES, CrashEnv, History, checkPrefix, readVolume, runLsvd, runWorkload, WORKLOAD_DEFAULT, type ServerOptions, type ServerProcess } from "./_harness.ts";

const MIB = 1024 * 1024;
const VOLUME_BYTES = 16 * MIB;
/** The stamped writer owns [0, STAMPED_BYTES); fio writes the rest. */
const STAMPED_BYTES = 8 * MIB;
const CYCLES = Number(process.env.LSVD_KILL_CYCLES ?? 24);
const SEED = Number(process.env.LSVD_SEED ?? 12);
const SERVER = { batchSize: "64k", batchIdleMs: 10 };
/** The writers run this long (random in the range) before the SIGKILL. */
const KILL_DELAY_MS_MIN = 300;
const KILL_DELAY_MS_MAX = 2500;
const FIO_TIMEOUT_MS = 30_000;
const TEST_TIMEOUT_MS = 30 * 60_000;

let savedBin: string | undefined;

beforeAll(async () => {
  await ensureBuilt();
  savedBin = process.env.LSVD_BIN;
  process.env.LSVD_BIN ??= LSVD_BINARY; // the harness runs $LSVD_BIN: the real binary, not the sources
});

afterAll(() => {
  if (savedBin === undefined) delete process.env.LSVD_BIN;
  else process.env.LSVD_BIN = savedBin;
});

/** fio random writes of 4k..256k on the upper half until killed with the server (bounded by a timeout). */
function startFio(socketPath: string, runtimeMs: number): ReturnType<typeof Bun.spawn> {
  return Bun.spawn(
    [
      "fio", "--name=garbage", "--ioengine=nbd", `--uri=nbd+unix:///?socket=${socketPath}`, "--rw=randwrite", "--bsrange=4k-256k",
      "--iodepth=16", `--offset=${STAMPED_BYTES}`, `--size=${VOLUME_BYTES - STAMPED_BYTES}`, "--time_based", `--runtime=${Math.ceil(runtimeMs / 1000) + 5}`,
    ],
    { stdout: "ignore", stderr: "ignore", env: TOOL_ENV, timeout: FIO_TIMEOUT_MS, killSignal: "SIGKILL" },
  );
}

interface FsckSummary {
  code: number;
  problems: string[];
  leftoverCheckpoints: number;
  beyondLogEnd: number;
}

function fsck(env: CrashEnv): FsckSummary {
  const result = env.fsck();
  const report = result.report as unknown as { problems: Array<{ message: string }>; leftoverCheckpointsCount: number; beyondLogEndCount: number } | null;
  if (!report) throw new Error(`lsvd fsck printed no report (exit ${result.code}): ${result.stderr}`);
  return { code: result.code, problems: report.problems.map((found) => found.message), leftoverCheckpoints: report.leftoverCheckpointsCount, beyondLogEnd: report.beyondLogEndCount };
}

/** Reads the stamped half back and checks it holds a prefix of the history with every acknowledged op. */
async function verify(env: CrashEnv, history: History, when: string): Promise<void> {
  const client = await NbdClient.connect(env.socketPath);
  let observed: Array<number | string>;
  try {
    observed = await readVolume(client, history.blocks);
  } finally {
    client.terminate();
  }
  const check = checkPrefix(history, observed, Math.max(history.maxAcked(), history.flushedBound));
  if (!check.ok) throw new Error(`${when}: ${check.message}`);
  history.nextRound(Int32Array.from(observed as number[]), check.kMax);
}

/** The same cycles with the read cache on: it is persisted across every kill, and every read checks it. */
const READ_CACHE_CYCLES = Number(process.env.LSVD_KILL_CYCLES ?? 8);
const VARIANTS: Array<{ label: string; cycles: number; server: ServerOptions }> = [
  { label: "", cycles: CYCLES, server: SERVER },
  { label: " with the persisted read cache", cycles: READ_CACHE_CYCLES, server: { ...SERVER, extraArgs: ["--read-cache"] } },
];

/** Read-cache blocks a server kept from the persisted index at its start (0 without the read cache). */
function keptBlocks(server: ServerProcess): number {
  return Number(/read cache: (\d+) blocks kept/.exec(server.log())?.[1] ?? 0);
}

describe("kill -9 cycles with garbage collection", () => {
  for (const { label, cycles, server: SERVER } of VARIANTS) test(`${cycles} cycles of random writes and SIGKILL${label}, then lsvd gc: fsck exits 0 after every kill and at the end, the data verifies`, async () => {
    const prng = new Prng(SEED);
    const env = new CrashEnv(VOLUME_BYTES, "72m");
    const history = new History(STAMPED_BYTES / BLOCK_BYTES, 64 * 1024 / BLOCK_BYTES);
    const seen = { leftoverCheckpoints: 0, beyondLogEnd: 0, acked: 0, kept: 0 };
    let server: ServerProcess | null = null;
    let fio: ReturnType<typeof Bun.spawn> | null = null;
    let failed = true;
    try {
      for (let cycle = 1; cycle <= cycles; cycle++) {
        server = env.start(SERVER);
        await server.waitServing();
        seen.kept += keptBlocks(server);
        if (cycle > 1) await verify(env, history, `cycle ${cycle}, after the restart`);
        const killDelayMs = KILL_DELAY_MS_MIN + prng.int(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN + 1);
        fio = startFio(env.socketPath, killDelayMs);
        const client = await NbdClient.connect(env.socketPath);
        const victim = server;
        const killer = Bun.sleep(killDelayMs).then(() => victim.kill());
        const workload = await runWorkload(client, history, prng, Date.now() + killDelayMs + 30_000, { ...WORKLOAD_DEFAULT, opBlocksMax: 64 });
        await killer;
        client.terminate();
        await fio.exited;
        if (workload.error) throw new Error(`cycle ${cycle}: an op failed while the server was up: ${workload.error.message}`);
        seen.acked += workload.acked;
        const after = fsck(env);
        seen.leftoverCheckpoints += after.leftoverCheckpoints;
        seen.beyondLogEnd += after.beyondLogEnd;
        if (after.code !== 0) throw new Error(`cycle ${cycle}: fsck after the kill exited ${after.code}: ${after.problems.join("; ")}`);
      }
      server = null;
      const gc = runLsvd(["gc", "--volume", env.volumePath, "--cache", env.cachePath]);
      expect(gc.stderr).not.toContain("error");
      expect(gc.code).toBe(0);
      const final = fsck(env);
      expect(final.problems).toEqual([]);
      expect(final.code).toBe(0);
      // GC (and the open before it) cleaned every left-over of the kills.
      expect(final.leftoverCheckpoints).toBe(0);
      expect(final.beyondLogEnd).toBe(0);
      server = env.start(SERVER);
      await server.waitServing();
      await verify(env, history, "after lsvd gc");
      expect(await server.stop()).toBe(0);
      expect(fsck(env).code).toBe(0);
      expect(seen.acked).toBeGreaterThan(cycles * 10);
      // With the read cache, restarts found entries still current: the verify reads went through them.
      if (SERVER.extraArgs !== undefined) expect(seen.kept).toBeGreaterThan(0);
      console.log(`kill cycles: ${cycles}${label}, read-cache blocks kept across kills ${seen.kept}, ops acknowledged ${seen.acked}; fsck after kills saw ${seen.leftoverCheckpoints} left-over checkpoint(s) and ${seen.beyondLogEnd} object(s) beyond the log end (notes); ${gc.stdout.trim()}`);
      failed = false;
    } finally {
      fio?.kill("SIGKILL");
      await env.cleanup(failed && process.env.LSVD_KEEP === "1");
      if (failed && process.env.LSVD_KEEP === "1") console.log(`kept ${env.dir}`);
    }
  }, TEST_TIMEOUT_MS);
});
