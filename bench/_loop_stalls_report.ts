// Helper of bench/loop_stalls.sh: summarises bench/_loop_stalls.ts's JSON. For every window the event loop was away
// longer than the sampler's threshold, its cause is the name charged the most time in it; prints, per cause, how
// many windows, their total and their p50 / p99 / longest, then the window histogram and the longest windows in full.
//
// Usage: bun bench/_loop_stalls_report.ts STALLS.json

export {};

interface Stall {
  atMs: number;
  ms: number;
  cpuMs: number;
  runQueueMs: number;
  top: Array<[string, number]>;
}
interface Report {
  tickMs: number;
  bucketsMs: string[];
  histogram: number[];
  windows: number;
  stalls: Stall[];
}

const file = process.argv[2];
if (!file) throw new Error("usage: bun bench/_loop_stalls_report.ts STALLS.json");
const report = (await Bun.file(file).json()) as Report;

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const fmt = (ms: number): string => ms.toFixed(1).padStart(7);

/** One row per cause (the name charged the most in the window): how many windows, their total and p50/p99/max. */
function causeTable(title: string, stalls: Stall[]): void {
  const byCause = new Map<string, number[]>();
  for (const stall of stalls) byCause.set(stall.top[0]![0], [...(byCause.get(stall.top[0]![0]) ?? []), stall.ms]);
  console.log(`${title.padEnd(44)} ${"count".padStart(6)} ${"total ms".padStart(9)} ${"p50".padStart(7)} ${"p99".padStart(7)} ${"max".padStart(7)}`);
  const total = (list: number[]): number => list.reduce((a, b) => a + b, 0);
  for (const [cause, list] of [...byCause.entries()].sort((a, b) => total(b[1]) - total(a[1]))) {
    const sorted = [...list].sort((a, b) => a - b);
    console.log(`${cause.padEnd(44)} ${String(sorted.length).padStart(6)} ${total(sorted).toFixed(0).padStart(9)} ${fmt(quantile(sorted, 0.5))} ${fmt(quantile(sorted, 0.99))} ${fmt(sorted.at(-1)!)}`);
  }
}

console.log(`windows: ${report.windows}; longer than 2 ms: ${report.stalls.length}`);
// Self times are wall time: a thread taken off its core inside a call charges the wait to that call. So causes are
// named twice: over every long window, and over those where the thread itself ran (on a CPU) more than 2 ms.
causeTable("cause, every window > 2 ms", report.stalls);
causeTable("cause, windows with > 2 ms on a CPU", report.stalls.filter((stall) => stall.cpuMs > 2));
const sum = (pick: (stall: Stall) => number): number => report.stalls.reduce((total, stall) => total + pick(stall), 0);
console.log(
  `in windows longer than 2 ms: ${sum((s) => s.ms).toFixed(0)} ms, of which the JS thread ran ${sum((s) => s.cpuMs).toFixed(0)} ms and waited for a core ${sum((s) => s.runQueueMs).toFixed(0)} ms (the rest: blocked in a system call or page fault)`,
);
console.log(`windows by length (ms, upper bound): ${report.bucketsMs.map((bound, i) => `<=${bound}: ${report.histogram[i]}`).join(", ")}`);
console.log("longest windows (ms; self time of the names that took most of each):");
for (const stall of [...report.stalls].sort((a, b) => b.ms - a.ms).slice(0, 12)) {
  console.log(`  at ${(stall.atMs / 1000).toFixed(1)} s: ${stall.ms.toFixed(1)} ms (cpu ${stall.cpuMs.toFixed(1)}, run queue ${stall.runQueueMs.toFixed(1)}) = ${stall.top.map(([name, ms]) => `${name} ${ms.toFixed(1)}`).join(", ")}`);
}
