// The crash cases (folder-private), shared by test/crash/crash_test.ts and bench/crash_matrix.ts. One call runs one
// seed of one case: a fresh volume, `rounds` kill points, and after each restart a full read checked against the
// history (see _harness.ts for the model). What each case promises comes from docs/architecture.md, "Recovery":
//
//   intact          SIGKILL, restart with the same cache: every acknowledged op is there (journal case @B/@D).
//   wiped           SIGKILL, `mkcache --force` a new cache, restart: a prefix of the history (the journal is gone),
//                   ending on an op boundary: every write wholly present or wholly absent.
//   wiped-large     As wiped, on a 64 MiB volume with writes up to 32 MiB (the NBD maximum) at 64 KiB, 1 MiB and
//                   8 MiB batches, so most writes span several objects; the cache file is deleted or zeroed first.
//   objects-lost    SIGKILL, delete some of the newest backend objects a crash can leave missing (or one of them,
//                   leaving a gap; never one a listed checkpoint vouches for: CrashEnv.losableObjectSeqs), restart with
//                   the cache: a prefix; and every acknowledged op when recovery says the journal bridged the hole
//                   (@B/@D), since then it replays every record after the log's end; when it did not, a prefix of
//                   whole ops.
//   journal-torn    SIGKILL, damage one of the newest journal records (torn data, torn or zeroed header, bit flip,
//                   cut mid-record), restart: a prefix containing at least every op stamped in the records before it.
//   recovery-crash  Batches that stay in the journal (big batch, long idle), SIGKILL, then start and SIGKILL again
//                   a few times while recovery replays, then restart: every acknowledged op.
//
// After each kill (and damage), `lsvd fsck --cache` must run (exit 0 or 4) and report only the problem kinds the
// case can cause. At the end of each seed the server is stopped cleanly and fsck must say clean (exit 0).

import { rmSync, statSync, writeFileSync } from "node:fs";
import { JOURNAL_RECORD_DATA_BYTES_MAX, NBD_REQUEST_BYTES_MAX } from "../../src/constants.ts";
import { parseSize } from "../../src/util/size.ts";
import { Prng } from "../sim/prng.ts";
import { NbdClient } from "./_nbd_client.ts";
import {
  BLOCK_BYTES,
  WORKLOAD_DEFAULT,
  CrashEnv,
  History,
  checkPrefix,
  damageRecord,
  readVolume,
  runWorkload,
  walkJournal,
  type ServerOptions,
  type ServerProcess,
  type TearMode,
} from "./_harness.ts";

export const CRASH_CASES = ["intact", "wiped", "wiped-large", "objects-lost", "journal-torn", "recovery-crash"] as const;
export type CrashCase = (typeof CRASH_CASES)[number];

export interface CrashCaseOptions {
  /** Kill points (rounds) per seed. */
  rounds: number;
  volumeBytes: number;
  /** Bounds of the random delay between the start of the writes and the SIGKILL. */
  killDelayMsMin: number;
  killDelayMsMax: number;
  /** Run `lsvd fsck` after each kill and at the end. */
  fsck: boolean;
  /** Keep the temp dir (for a failure post-mortem). */
  keep?: boolean;
  /**
   * Serve the volume the way a daemon of several exports does (`serve --export vol=VOLUME,cache=CACHE`: its leases,
   * recovery and close), its one export picked by clients as the default export "".
   */
  daemon?: boolean;
  /** More `lsvd serve` options for every start (e.g. --nbd-io uring). */
  serverArgs?: string[];
  log?: (line: string) => void;
}

/** wiped-large: a volume that holds two of the largest writes, and a workload of large writes. */
const LARGE_VOLUME_BYTES = 64 * 1024 * 1024;
const LARGE_WORKLOAD = { ...WORKLOAD_DEFAULT, inflightMax: 8, opBlocksMax: NBD_REQUEST_BYTES_MAX / BLOCK_BYTES, largeOpFraction: 0.3 };

export const CRASH_CASE_DEFAULTS: CrashCaseOptions = {
  rounds: 2,
  volumeBytes: 8 * 1024 * 1024,
  killDelayMsMin: 100,
  killDelayMsMax: 1200,
  fsck: true,
};

export interface CrashCaseResult {
  crashCase: CrashCase;
  seed: number;
  killPoints: number;
  /** Kills that landed while a restarted server was still recovering (recovery-crash). */
  killsDuringRecovery: number;
  opsSent: number;
  opsAcked: number;
  failure: string | null;
  /** One line per round: what happened (for the bench table and for failure reports). */
  rounds: string[];
  dir: string;
}

/** A kill alone leaves only notes (objects beyond a missing log end, left-over checkpoints): no problem at all. */
const ALLOWED_FSCK_PROBLEMS: Record<CrashCase, string[]> = {
  intact: [],
  wiped: [],
  "wiped-large": [],
  "objects-lost": ["gap", "checkpoint", "journal"],
  "journal-torn": [],
  "recovery-crash": [],
};

/** Server settings per case, varied by seed: small batches put objects often, big ones keep records in the journal. */
function serverOptions(crashCase: CrashCase, prng: Prng): ServerOptions {
  if (crashCase === "recovery-crash") return { batchSize: "16m", batchIdleMs: 600_000 };
  if (crashCase === "wiped-large") {
    const large: ServerOptions[] = [
      { batchSize: "64k", batchIdleMs: 20 },
      { batchSize: "1m", batchIdleMs: 100 },
      { batchSize: "8m", batchIdleMs: 300 },
    ];
    return large[prng.int(large.length)]!;
  }
  const choices: ServerOptions[] = [
    { batchSize: "64k", batchIdleMs: 20 },
    { batchSize: "256k", batchIdleMs: 100 },
    { batchSize: "1m", batchIdleMs: 300 },
    { batchSize: "4m", batchIdleMs: 5000 },
  ];
  return choices[prng.int(choices.length)]!;
}

function cacheSize(crashCase: CrashCase): string {
  // mkcache's journal is at least 32 MiB; recovery-crash wants room for many records before any put, wiped-large
  // for several 32 MiB writes in flight.
  return crashCase === "recovery-crash" || crashCase === "wiped-large" ? "160m" : "72m";
}

export async function runCrashCase(crashCase: CrashCase, seed: number, options: Partial<CrashCaseOptions> = {}): Promise<CrashCaseResult> {
  const opts = { ...CRASH_CASE_DEFAULTS, ...options };
  const log = opts.log ?? (() => {});
  const prng = new Prng(seed);
  const volumeBytes = crashCase === "wiped-large" ? Math.max(opts.volumeBytes, LARGE_VOLUME_BYTES) : opts.volumeBytes;
  const blocks = volumeBytes / BLOCK_BYTES;
  const env = new CrashEnv(volumeBytes, cacheSize(crashCase));
  const result: CrashCaseResult = {
    crashCase,
    seed,
    killPoints: 0,
    killsDuringRecovery: 0,
    opsSent: 0,
    opsAcked: 0,
    failure: null,
    rounds: [],
    dir: env.dir,
  };
  const settings = { ...serverOptions(crashCase, prng), daemonExport: opts.daemon === true ? "vol" : undefined, extraArgs: opts.serverArgs };
  const history = new History(blocks, Math.min(parseSize(settings.batchSize), JOURNAL_RECORD_DATA_BYTES_MAX) / BLOCK_BYTES);
  let server: ServerProcess | null = null;
  let client: NbdClient | null = null;
  /** What the round under way has done so far (for a failure report). */
  let line = "";
  const fail = (message: string) => {
    const logs = server ? server.log().split("\n").slice(-15).join("\n") : "";
    result.failure = `${crashCase} seed ${seed} round ${result.rounds.length}: ${message}\n  this round: ${line}\n  rounds so far: ${result.rounds.join(" | ")}\n  dir: ${env.dir}\n  server log tail:\n${logs}`;
  };
  const fsckAllows = (when: string, allowed: string[]): boolean => {
    if (!opts.fsck) return true;
    const fsck = env.fsck();
    if (fsck.code !== 0 && fsck.code !== 4) {
      fail(`fsck ${when} exited ${fsck.code}: ${fsck.stderr}`);
      return false;
    }
    const unexpected = (fsck.report?.problems ?? []).filter((problem) => !allowed.includes(problem.kind));
    if (unexpected.length > 0) {
      fail(`fsck ${when} reports ${unexpected.map((problem) => `${problem.kind}: ${problem.message}`).join("; ")}`);
      return false;
    }
    return true;
  };

  try {
    server = env.start(settings);
    await server.waitServing();
    for (let round = 0; round < opts.rounds && !result.failure; round++) {
      // 1. Writes, then SIGKILL at a random point.
      client = await NbdClient.connect(env.socketPath);
      // recovery-crash: longer runs of small ops at a low queue depth leave thousands of records to replay.
      const slowFill = crashCase === "recovery-crash";
      const killDelayMs = (slowFill ? 2 : 1) * opts.killDelayMsMin + prng.int((slowFill ? 2 : 1) * (opts.killDelayMsMax - opts.killDelayMsMin) + 1);
      const victim: ServerProcess = server;
      const killer = Bun.sleep(killDelayMs).then(() => victim.kill());
      const workloadOptions = slowFill ? { ...WORKLOAD_DEFAULT, inflightMax: 2, opBlocksMax: 2 } : crashCase === "wiped-large" ? LARGE_WORKLOAD : WORKLOAD_DEFAULT;
      const workload = await runWorkload(client, history, prng, Date.now() + killDelayMs + 30_000, workloadOptions);
      await killer;
      client.terminate();
      client = null;
      result.killPoints += 1;
      result.opsSent += workload.sent;
      result.opsAcked += workload.acked;
      if (workload.error) {
        fail(`an op failed while the server was up: ${workload.error.message}`);
        break;
      }
      line = `kill@${killDelayMs}ms ops ${history.firstId}..${history.lastId} acked ${workload.acked}/${workload.sent}`;

      // 2. What the case does to the cache or the backend, and what it then promises.
      let lowerBound = Math.max(history.maxAcked(), history.flushedBound);
      let journalCaseDecides = false;
      let cacheLost = false;
      if (crashCase === "wiped" || crashCase === "wiped-large") {
        const how = crashCase === "wiped" ? "wiped" : prng.chance(0.5) ? "deleted" : "zeroed";
        if (how === "deleted") rmSync(env.cachePath);
        if (how === "zeroed") writeFileSync(env.cachePath, new Uint8Array(statSync(env.cachePath).size));
        env.formatCache();
        lowerBound = history.firstUnit - 1;
        cacheLost = true;
        line += `, cache ${how}`;
      } else if (crashCase === "objects-lost") {
        const seqs = env.losableObjectSeqs();
        if (seqs.length > 0) {
          const newest = seqs.slice(-4);
          let doomed: number[];
          if (prng.chance(0.5)) doomed = seqs.slice(-(1 + prng.int(Math.min(3, seqs.length))));
          else doomed = [newest[prng.int(newest.length)]!];
          for (const seq of doomed) env.deleteObject(seq);
          line += `, deleted objects ${doomed.join(",")} of ${seqs[0]}..${seqs[seqs.length - 1]}`;
          journalCaseDecides = true;
        }
      } else if (crashCase === "journal-torn") {
        const walk = await walkJournal(env.cachePath);
        if (walk.records.length > 0) {
          const candidates = walk.records.slice(-3);
          const target = candidates[prng.int(candidates.length)]!;
          const modes: TearMode[] = ["data", "header", "bitflip", "zero-header", "cut"];
          const done = damageRecord(env.cachePath, target, modes[prng.int(modes.length)]!, prng);
          const before = walk.records.filter((record) => record.seq < target.seq);
          lowerBound = Math.max(history.firstUnit - 1, ...before.map((record) => history.throughPiece(record.maxOpId, record.maxOpBlock)));
          line += `, journal ${walk.records.length} records, damaged ${done}`;
        } else {
          line += ", journal empty (nothing to damage)";
        }
      }
      if (!fsckAllows("after the kill", ALLOWED_FSCK_PROBLEMS[crashCase])) break;

      // 3. Restart (recovery-crash: kill it during recovery a few times first).
      if (crashCase === "recovery-crash") {
        const kills = 1 + prng.int(3);
        for (let index = 0; index < kills; index++) {
          const recovering = env.start(settings);
          await Bun.sleep(prng.int(1000));
          const wasServing = recovering.serving;
          await recovering.kill();
          result.killPoints += 1;
          if (!wasServing) result.killsDuringRecovery += 1;
        }
        line += `, ${kills} kill(s) during restart`;
      }
      server = env.start(settings);
      await server.waitServing();
      const journalCase = server.journalCase();
      line += `, recovery ${journalCase} in ${server.startMs} ms`;
      if (journalCaseDecides) {
        if (journalCase === "@B" || journalCase === "@D") lowerBound = Math.max(history.maxAcked(), history.flushedBound);
        else lowerBound = history.firstUnit - 1;
        cacheLost = lowerBound === history.firstUnit - 1;
      }
      if ((crashCase === "intact" || crashCase === "recovery-crash") && journalCase !== "@B" && journalCase !== "@D") {
        fail(`recovery chose journal case ${journalCase} with the cache intact (expected @B or @D)`);
        break;
      }

      // 4. Read everything back and check.
      client = await NbdClient.connect(env.socketPath);
      const observed = await readVolume(client, blocks);
      client.disconnect();
      client = null;
      // Without the journal, the volume is the backend's prefix of whole ops (recovery ends the log on a write boundary).
      let check = checkPrefix(history, observed, lowerBound, cacheLost);
      let appliedThrough = check.kMax;
      if (!check.ok && journalCaseDecides && lowerBound === history.firstUnit - 1) {
        // The journal did not bridge the loss, so the volume is the backend's prefix, and that may end before this
        // round began: objects put during this round can hold earlier rounds' records (replayed at the last restart).
        for (let index = history.past.length - 1; index >= 0; index--) {
          const past = history.past[index]!;
          const earlier = checkPrefix(past, observed, past.firstUnit - 1, true);
          if (earlier.ok) {
            line += `, rolled back into round ${index + 1}`;
            check = { ...earlier, kMin: history.firstUnit - 1, kMax: history.firstUnit - 1 };
            appliedThrough = history.firstUnit - 1;
            break;
          }
        }
      }
      if (!check.ok) {
        fail(check.message);
        break;
      }
      line += `, state = units ..${check.kMin}${check.kMax > check.kMin ? `-${check.kMax}` : ""} of ${history.firstUnit}..${history.lastUnit} (bound ${lowerBound})`;
      result.rounds.push(line);
      log(`${crashCase} seed ${seed}: ${line}`);
      history.nextRound(Int32Array.from(observed as number[]), appliedThrough);
    }
    // 5. Clean stop: exit 0, and fsck finds nothing at all.
    if (!result.failure && server) {
      const code = await server.stop();
      if (code !== 0) fail(`clean stop exited ${code}`);
      else fsckAllows("after a clean stop", []);
    }
  } catch (error) {
    fail(`harness error: ${(error as Error).stack ?? String(error)}`);
  } finally {
    client?.terminate();
    await env.cleanup(opts.keep === true || (result.failure !== null && process.env.LSVD_KEEP === "1"));
  }
  return result;
}
