// Helper of bench/cpu_per_request.sh: reads its results (one JSON line per run, from _fio_json.ts with the server's
// CPU seconds added) and prints medians per workload and engine, as a table and one JSON line.
//
// Usage: bun bench/_cpu_report.ts RESULTS.jsonl DATE

export {};

interface Run {
  workload: string;
  engine: string;
  iops: number;
  ios: number;
  serverCpuSeconds: number;
  clientCpuUsPerIo: number;
  /** Peak RSS of the server (VmHWM) at the end of the run, when the script recorded it. */
  peakRssMiB?: number;
  clatP99Us: number;
}

const [resultsPath, date] = process.argv.slice(2);
if (resultsPath === undefined) throw new Error("usage: bun bench/_cpu_report.ts RESULTS.jsonl DATE");
const runs: Run[] = (await Bun.file(resultsPath).text())
  .split("\n")
  .filter((line) => line.trim() !== "")
  .map((line) => JSON.parse(line) as Run);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits;

interface Row {
  workload: string;
  engine: string;
  runs: number;
  iops: number;
  serverCpuUsPerIo: number;
  clientCpuUsPerIo: number;
  /** Largest peak RSS over the runs (0 when not recorded). */
  peakRssMiB: number;
  /** fio's 99th percentile completion latency (median over the runs). */
  clatP99Us: number;
  /** Server CPU per request of each run, in run order (the noise). */
  serverCpuUsPerIoRuns: number[];
}
const rows: Row[] = [];
for (const workload of [...new Set(runs.map((run) => run.workload))]) {
  for (const engine of [...new Set(runs.map((run) => run.engine))]) {
    const mine = runs.filter((run) => run.workload === workload && run.engine === engine);
    if (mine.length === 0) continue;
    rows.push({
      workload,
      engine,
      runs: mine.length,
      iops: Math.round(median(mine.map((run) => run.iops))),
      serverCpuUsPerIo: round(median(mine.map((run) => (run.serverCpuSeconds * 1e6) / run.ios)), 1),
      clientCpuUsPerIo: round(median(mine.map((run) => run.clientCpuUsPerIo)), 1),
      peakRssMiB: Math.max(0, ...mine.map((run) => run.peakRssMiB ?? 0)),
      clatP99Us: Math.round(median(mine.map((run) => run.clatP99Us))),
      serverCpuUsPerIoRuns: mine.map((run) => round((run.serverCpuSeconds * 1e6) / run.ios, 1)),
    });
  }
}

const header = ["workload", "engine", "runs", "IOPS", "server us/req", "fio us/req", "server /nbdkit", "p99 us", "peak RSS MiB", "server us/req per run"];
const table = [header];
for (const row of rows) {
  const nbdkit = rows.find((other) => other.workload === row.workload && other.engine === "nbdkit");
  const ratio =
    nbdkit && row.engine !== "nbdkit" ? String(round(row.serverCpuUsPerIo / nbdkit.serverCpuUsPerIo, 2)) : "";
  table.push([
    row.workload,
    row.engine,
    String(row.runs),
    String(row.iops),
    String(row.serverCpuUsPerIo),
    String(row.clientCpuUsPerIo),
    ratio,
    String(row.clatP99Us),
    String(row.peakRssMiB),
    row.serverCpuUsPerIoRuns.join(" "),
  ]);
}
const widths = header.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)));
console.log("server and client CPU per request (medians); ratio: server CPU per request over nbdkit's");
for (const cells of table) console.log(cells.map((cell, column) => cell.padEnd(widths[column]!)).join("  "));
console.log(JSON.stringify({ bench: "cpu_per_request", date, rows }));
