// Event-loop stall sampler for `lsvd serve` run from source: `bun --preload ./bench/_loop_stalls.ts src/cli/main.ts
// serve ...` (bench/loop_stalls.sh starts it so). Not part of the server: a measurement loaded beside it.
//
// A 1 ms timer chain measures how long the JS thread went without getting back to the event loop (a "window": the
// time between two timer turns). Named methods of the server's classes are wrapped with a timer that charges their
// self time (their own time minus the wrapped methods they call) to their name, in the current window. Timer turns
// never run inside a synchronous call, so each window's charges are exactly what ran in it; what no wrapped method
// accounts for is "other" (request parsing outside the wrapped calls, promise continuations, JavaScriptCore's own
// garbage collection, the timer's lateness). An async method is charged for the part before its first await only;
// its continuations are charged to whatever wrapped call they make, or to "other".
//
// Each window also records the JS thread's time on a CPU and waiting for one (/proc/thread-self/schedstat).
//
// At exit it writes JSON to $LSVD_STALLS_OUT: a histogram of windows, and for every window longer than
// STALL_REPORT_MS its length and the names that took the most of it.

import { openSync, readSync, writeFileSync } from "node:fs";
import { LOOP_STALL_METHODS } from "./_loop_stall_methods.ts";

const TICK_MS = 1;
const STALL_REPORT_MS = 2;
const STALLS_KEPT_MAX = 20_000;
const out = process.env.LSVD_STALLS_OUT;

/** Self time (ms) per name in the current window; the stack holds the child time of each running wrapped call. */
let window = new Map<string, number>();
const childMs: number[] = [];

function charge(name: string, ms: number): void {
  window.set(name, (window.get(name) ?? 0) + ms);
}

for (const [proto, method, name] of LOOP_STALL_METHODS) {
  const original = proto[method];
  if (typeof original !== "function") throw new Error(`loop stalls: ${name} (${method}) is not a method`);
  proto[method] = function (this: unknown, ...args: unknown[]) {
    const start = performance.now();
    childMs.push(0);
    try {
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } finally {
      const total = performance.now() - start;
      const children = childMs.pop()!;
      charge(name, total - children);
      if (childMs.length > 0) childMs[childMs.length - 1]! += total;
    }
  };
}

const hash = Bun.hash as unknown as Record<string, (...a: unknown[]) => unknown>;
const xxHash3 = hash.xxHash3!;
hash.xxHash3 = (...args: unknown[]) => {
  const start = performance.now();
  try {
    return xxHash3(...args);
  } finally {
    const total = performance.now() - start;
    charge("Bun.hash.xxHash3(fileObjectVersion)", total);
    if (childMs.length > 0) childMs[childMs.length - 1]! += total;
  }
};

// The JS thread's scheduler figures (/proc/thread-self/schedstat: ns on a CPU, ns waiting on a run queue), so a window
// tells work from waiting for a core (the machine's 2 cores are shared with fio and everything else).
const schedFd = openSync("/proc/thread-self/schedstat", "r");
const schedText = new Uint8Array(128);
function schedMs(): [number, number] {
  const length = readSync(schedFd, schedText, 0, schedText.length, 0);
  const [onCpu, waiting] = new TextDecoder().decode(schedText.subarray(0, length)).split(" ");
  return [Number(onCpu) / 1e6, Number(waiting) / 1e6];
}
let lastSched = schedMs();

const BUCKETS_MS = [1.5, 2, 3, 5, 10, 20, 50, Infinity];
const histogram = BUCKETS_MS.map(() => 0);
const stalls: Array<{ atMs: number; ms: number; cpuMs: number; runQueueMs: number; top: Array<[string, number]> }> = [];
const startedMs = performance.now();
let last = startedMs;
let windows = 0;

function tick(): void {
  const now = performance.now();
  const ms = now - last;
  last = now;
  const sched = schedMs();
  const cpuMs = sched[0] - lastSched[0];
  const runQueueMs = sched[1] - lastSched[1];
  lastSched = sched;
  windows += 1;
  histogram[BUCKETS_MS.findIndex((bound) => ms <= bound)]! += 1;
  if (ms > STALL_REPORT_MS && stalls.length < STALLS_KEPT_MAX) {
    const charged = [...window.values()].reduce((a, b) => a + b, 0);
    window.set("other", Math.max(0, ms - charged));
    const top = [...window.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([n, v]) => [n, Number(v.toFixed(3))] as [string, number]);
    stalls.push({ atMs: Number((now - startedMs).toFixed(1)), ms: Number(ms.toFixed(3)), cpuMs: Number(cpuMs.toFixed(3)), runQueueMs: Number(runQueueMs.toFixed(3)), top });
  }
  window = new Map();
  setTimeout(tick, TICK_MS).unref();
}
setTimeout(tick, TICK_MS).unref();

process.on("exit", () => {
  if (!out) return;
  writeFileSync(out, JSON.stringify({ tickMs: TICK_MS, bucketsMs: BUCKETS_MS.map(String), histogram, windows, stalls }));
});
