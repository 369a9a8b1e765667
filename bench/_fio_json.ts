// Helper of bench/serve_bench.sh: reads one fio --output-format=json run on stdin and prints one compact JSON line
// with the figures the bench compares (IOPS, MiB/s, bytes moved, latency percentiles), plus labels given as
// --set key=value (value parsed as JSON when it is JSON, else kept as a string).
//
// Usage: fio ... --output-format=json | bun bench/_fio_json.ts --dir write|read [--set workload=randwrite-4k] ...
// fio's nbd engine prints "fio: connected to NBD server" on stdout before the JSON, and fio may print other
// "fio: ..." notes around it, so only the text from the first "{" line to the last "}" line is parsed.

import { parseArgs } from "node:util";
import { parseSetLabels } from "./_set_labels.ts";

interface FioDirection {
  total_ios: number;
  iops: number;
  bw: number; // KiB/s
  io_bytes: number;
  clat_ns?: { percentile?: Record<string, number>; max?: number };
  lat_ns?: { mean: number };
}

const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    set: { type: "string", multiple: true, default: [] },
  },
});
const dir = values.dir;
if (dir !== "write" && dir !== "read") throw new Error(`--dir must be write or read, not ${String(dir)}`);

const lines = (await Bun.stdin.text()).split("\n");
const first = lines.findIndex((line) => line.startsWith("{"));
let last = lines.length - 1;
while (last >= 0 && !lines[last]!.startsWith("}")) last--;
if (first < 0 || last < first) throw new Error(`no fio JSON on stdin (got: ${lines.slice(0, 5).join(" | ")})`);
const report = JSON.parse(lines.slice(first, last + 1).join("\n"));
const job = report.jobs?.[0];
if (job === undefined) throw new Error("fio JSON has no jobs");
if (job.error !== 0) throw new Error(`fio job failed with error ${job.error}`);
const side: FioDirection = job[dir];
if (!(side.io_bytes > 0)) throw new Error(`fio moved no bytes in direction ${dir}`);

const percentileUs = (key: string): number | null => {
  const ns = side.clat_ns?.percentile?.[key];
  return ns === undefined ? null : Math.round(ns / 100) / 10;
};

const result: Record<string, unknown> = parseSetLabels(values.set);
result.iops = Math.round(side.iops);
result.mibPerSecond = Math.round((side.bw / 1024) * 10) / 10;
result.ioBytes = side.io_bytes;
result.ios = side.total_ios;
// fio's own CPU (usr + sys percent of its runtime) per I/O: what the client costs the shared cores.
result.clientCpuUsPerIo =
  Math.round((((job.usr_cpu + job.sys_cpu) / 100) * job.job_runtime * 1000 * 10) / Math.max(1, side.total_ios)) / 10;
result.latMeanUs = side.lat_ns === undefined ? null : Math.round(side.lat_ns.mean / 100) / 10;
result.clatP50Us = percentileUs("50.000000");
result.clatP99Us = percentileUs("99.000000");
result.clatP999Us = percentileUs("99.900000");
result.clatMaxUs = side.clat_ns?.max === undefined ? null : Math.round(side.clat_ns.max / 100) / 10;
console.log(JSON.stringify(result));
