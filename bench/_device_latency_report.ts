// Helper of bench/device_latency.sh: reads `perf script -F time,event,trace` of the block tracepoints
// (block_rq_issue, block_rq_complete) on stdin and prints, for the requests of one disk, the latency from issue to
// completion by kind: direction (the rwbs field's letters: W write, R read, F flush, D discard), whether it carries
// data and how much (up to 128 KiB, which every journal record of 4 KiB writes is, or more, which object pieces are).
// One table, then one JSON line (with --set key=value labels) on stdout.
//
// Usage: perf script -i FILE -F time,event,trace | bun bench/_device_latency_report.ts --dev 254,0 [--set phase=x]

import { parseArgs } from "node:util";
import { parseSetLabels } from "./_set_labels.ts";

const { values } = parseArgs({ options: { dev: { type: "string" }, set: { type: "string", multiple: true, default: [] } } });
const dev = values.dev;
if (dev === undefined || !/^\d+,\d+$/.test(dev)) throw new Error("--dev MAJOR,MINOR is required");

// "  52898.063019:    block:block_rq_issue: 254,0 WS 1048576 () 253571072 + 2048 0x2,0,4 [Bun Pool 0]"
// "  52898.063500: block:block_rq_complete: 254,0 WS () 253571072 + 2048 0x2,0,4 [0]"
const LINE = /^\s*([\d.]+):\s+block:(block_rq_issue|block_rq_complete):\s+(\d+,\d+)\s+(\S+)\s.*?\(\)\s+(\d+)\s+\+\s+(\d+)/;
const SMALL_SECTORS_MAX = 256; // 128 KiB

const issued = new Map<string, number>();
const latencies = new Map<string, number[]>();
for (const line of (await Bun.stdin.text()).split("\n")) {
  const match = LINE.exec(line);
  if (match === null || match[3] !== dev) continue;
  const [, time, event, , rwbs, sector, sectors] = match;
  const key = `${rwbs}:${sector}:${sectors}`;
  if (event === "block_rq_issue") {
    issued.set(key, Number(time));
    continue;
  }
  const start = issued.get(key);
  if (start === undefined) continue; // issued before the trace began
  issued.delete(key);
  const direction = rwbs!.includes("W") ? "write" : rwbs!.includes("R") ? "read" : rwbs!.includes("F") ? "flush" : rwbs!.includes("D") ? "discard" : rwbs!;
  const size = Number(sectors) === 0 ? "no data" : Number(sectors) <= SMALL_SECTORS_MAX ? "<= 128 KiB" : "> 128 KiB";
  const kind = `${direction} ${size}`;
  const list = latencies.get(kind) ?? [];
  list.push((Number(time) - start) * 1000);
  latencies.set(kind, list);
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
}

const rows = [...latencies.entries()]
  .sort((a, b) => b[1].length - a[1].length)
  .map(([kind, list]) => {
    const sorted = list.sort((a, b) => a - b);
    const ms = (fraction: number) => Number(percentile(sorted, fraction).toFixed(3));
    return { kind, requests: sorted.length, p50Ms: ms(0.5), p90Ms: ms(0.9), p99Ms: ms(0.99), p999Ms: ms(0.999), maxMs: ms(1) };
  });
const labels = parseSetLabels(values.set as string[]);
const phase = String(labels.phase ?? "");
console.log(`${"phase".padEnd(10)} ${"requests".padEnd(20)} ${"count".padStart(7)} ${"p50 ms".padStart(8)} ${"p90 ms".padStart(8)} ${"p99 ms".padStart(8)} ${"p99.9 ms".padStart(9)} ${"max ms".padStart(8)}`);
for (const row of rows) {
  console.log(`${phase.padEnd(10)} ${row.kind.padEnd(20)} ${String(row.requests).padStart(7)} ${row.p50Ms.toFixed(3).padStart(8)} ${row.p90Ms.toFixed(3).padStart(8)} ${row.p99Ms.toFixed(3).padStart(8)} ${row.p999Ms.toFixed(3).padStart(9)} ${row.maxMs.toFixed(2).padStart(8)}`);
}
console.log(JSON.stringify({ ...labels, dev, rows }));
