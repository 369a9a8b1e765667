// The crash matrix: the crash cases of test/crash (real server, SIGKILL, damage, restart, full read-back check) over
// many seeds and kill points, printed as a table. Cases and what each promises: test/crash/_cases.ts.
//
//   bun bench/crash_matrix.ts [--seeds N] [--first-seed S] [--rounds R] [--cases intact,wiped,...]
//                             [--kill-ms MIN-MAX] [--no-fsck] [--daemon] [--verbose]
// --daemon serves each volume as the one export of `serve --export` (the daemon form's leases, recovery and close).
// R kill points per seed (recovery-crash adds 1-3 kills during restart each). Exit 1 if any seed failed; failures are
// printed with their seed (rerun one: LSVD_SEED=<seed> bun test test/crash, or --first-seed S --seeds 1).

import { parseArgs } from "node:util";
import { CRASH_CASES, runCrashCase, type CrashCase, type CrashCaseResult } from "../test/crash/_cases.ts";
import { killAllServers } from "../test/crash/_harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seeds: { type: "string", default: "10" },
    "first-seed": { type: "string", default: "1" },
    rounds: { type: "string", default: "3" },
    cases: { type: "string", default: CRASH_CASES.join(",") },
    "kill-ms": { type: "string", default: "100-1200" },
    "no-fsck": { type: "boolean", default: false },
    daemon: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
  strict: true,
});

const seeds = Number(values.seeds);
const firstSeed = Number(values["first-seed"]);
const rounds = Number(values.rounds);
const [killMin, killMax] = values["kill-ms"]!.split("-").map(Number) as [number, number];
const cases = values.cases!.split(",") as CrashCase[];
for (const name of cases) if (!CRASH_CASES.includes(name)) throw new Error(`unknown case '${name}' (cases: ${CRASH_CASES.join(", ")})`);
if (!(seeds > 0 && rounds > 0 && killMin >= 0 && killMax >= killMin)) throw new Error("bad --seeds, --rounds or --kill-ms");

interface Row {
  crashCase: CrashCase;
  seeds: number;
  killPoints: number;
  killsDuringRecovery: number;
  opsAcked: number;
  failures: CrashCaseResult[];
  seconds: number;
}

// An interrupted run must not leave servers behind: kill the ones this process started, then exit.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    void killAllServers().finally(() => process.exit(130));
  });
}

const rows: Row[] = [];
for (const crashCase of cases) {
  const row: Row = { crashCase, seeds: 0, killPoints: 0, killsDuringRecovery: 0, opsAcked: 0, failures: [], seconds: 0 };
  const started = performance.now();
  for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
    const result = await runCrashCase(crashCase, seed, {
      rounds,
      killDelayMsMin: killMin,
      killDelayMsMax: killMax,
      fsck: !values["no-fsck"],
      daemon: values.daemon === true,
      log: values.verbose ? (line) => console.log(line) : undefined,
    });
    row.seeds += 1;
    row.killPoints += result.killPoints;
    row.killsDuringRecovery += result.killsDuringRecovery;
    row.opsAcked += result.opsAcked;
    if (result.failure) {
      row.failures.push(result);
      console.log(`FAIL ${result.failure}`);
    }
    process.stderr.write(`\r${crashCase}: ${row.seeds}/${seeds} seeds, ${row.failures.length} failed   `);
  }
  row.seconds = (performance.now() - started) / 1000;
  process.stderr.write("\n");
  rows.push(row);
}

const header = ["case", "seeds", "kill points", "(in recovery)", "ops acked", "failures", "seconds"];
const table = rows.map((row) => [
  row.crashCase,
  String(row.seeds),
  String(row.killPoints),
  String(row.killsDuringRecovery),
  String(row.opsAcked),
  row.failures.length === 0 ? "0" : `${row.failures.length} (seeds ${row.failures.map((failure) => failure.seed).join(",")})`,
  row.seconds.toFixed(0),
]);
const widths = header.map((title, column) => Math.max(title.length, ...table.map((line) => line[column]!.length)));
const format = (line: string[]) => line.map((cell, column) => cell.padEnd(widths[column]!)).join("  ");
console.log(format(header));
console.log(widths.map((width) => "-".repeat(width)).join("  "));
for (const line of table) console.log(format(line));
process.exit(rows.some((row) => row.failures.length > 0) ? 1 : 0);
