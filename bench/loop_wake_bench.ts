// What it costs the JS thread to be woken by something outside it: the question behind moving NBD sockets onto an
// io_uring in a Bun process (bench/RESULTS.md, "CPU per durable write"). A Worker sends N wake-ups spaced by a
// gap (nanosleep, then one write); the JS thread counts them. Reported: the JS thread's CPU per wake (user + system
// from /proc/self/task/TID/stat) and the process's (the sender included), medians of RUNS runs, modes alternating.
//   eventfd-stream     an eventfd read by Bun (Bun.file(fd).stream()): how the journal's ring waits (ffi/uring.ts)
//   eventfd-waitasync  a second Worker blocks in read(eventfd) and wakes the JS thread with Atomics.notify
//                      (Atomics.waitAsync on the JS thread)
//   bun-socket         one byte over a unix socket that Bun itself watches (Bun.listen / Bun.connect): what an NBD
//                      request costs to arrive today
// The load generator calls libc through bun:ffi (bench only; the product calls native code through koffi).
//
// Usage: bun bench/loop_wake_bench.ts [--wakes N] [--gap-us U] [--runs R]

import { dlopen, FFIType } from "bun:ffi";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MODES = ["eventfd-stream", "eventfd-waitasync", "bun-socket"] as const;
type Mode = (typeof MODES)[number];
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

const libc = dlopen("libc.so.6", {
  eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  gettid: { args: [], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
});

// The Workers' code, as modules built from text (no extra files in bench/).
const SENDER = `
import { dlopen, FFIType, ptr } from "bun:ffi";
const libc = dlopen("libc.so.6", { write: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 }, usleep: { args: [FFIType.u32], returns: FFIType.i32 } });
self.onmessage = async (event) => {
  const { fd, unixPath, wakes, gapUs } = event.data;
  const one = new BigUint64Array([1n]);
  const socket = unixPath ? await Bun.connect({ unix: unixPath, socket: { data() {} } }) : null;
  for (let index = 0; index < wakes; index++) {
    libc.symbols.usleep(gapUs);
    if (socket) socket.write(new Uint8Array([1]));
    else libc.symbols.write(fd, ptr(one), 8);
  }
  socket?.end();
  self.postMessage("done");
};`;
const WAKER = `
import { dlopen, FFIType, ptr } from "bun:ffi";
const libc = dlopen("libc.so.6", { read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 } });
self.onmessage = (event) => {
  const { fd, shared } = event.data;
  const word = new Int32Array(shared);
  const counter = new BigUint64Array(1);
  while (Number(libc.symbols.read(fd, ptr(counter), 8)) === 8) {
    Atomics.add(word, 0, 1);
    Atomics.notify(word, 0);
  }
};`;

function workerOf(source: string): Worker {
  return new Worker(URL.createObjectURL(new Blob([source], { type: "application/javascript" })));
}

function threadCpuUs(tid: number): number {
  const fields = readFileSync(`/proc/self/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000; // utime + stime, in clock ticks of 10 ms
}

interface RunResult {
  wakes: number;
  jsThreadUsPerWake: number;
  processUsPerWake: number;
}

/** Starts the receiving side of `mode`; returns a teardown. `onWake` is called once per wake seen. */
async function listen(mode: Mode, fd: number, unixPath: string, onWake: () => void): Promise<() => void> {
  if (mode === "eventfd-stream") {
    const reader = Bun.file(fd).stream().getReader();
    void (async () => {
      for (;;) if ((await reader.read()).done) return;
      else onWake();
    })().catch(() => {});
    return () => void reader.cancel().catch(() => {});
  }
  if (mode === "eventfd-waitasync") {
    const shared = new SharedArrayBuffer(4);
    const word = new Int32Array(shared);
    const waker = workerOf(WAKER);
    waker.postMessage({ fd, shared });
    let stopped = false;
    void (async () => {
      for (let seen = 0; !stopped; onWake()) {
        const wait = Atomics.waitAsync(word, 0, seen);
        if (wait.async) await wait.value;
        seen = Atomics.load(word, 0);
      }
    })();
    return () => {
      stopped = true;
      waker.terminate();
    };
  }
  const server = Bun.listen({ unix: unixPath, socket: { data: () => onWake() } });
  return () => server.stop(true);
}

async function run(mode: Mode, wakes: number, gapUs: number, dir: string): Promise<RunResult> {
  // Blocking for the waker's read(2); non-blocking where Bun reads it.
  const fd = libc.symbols.eventfd(0, EFD_CLOEXEC | (mode === "eventfd-waitasync" ? 0 : EFD_NONBLOCK));
  const unixPath = join(dir, `wake-${mode}.sock`);
  const tid = libc.symbols.gettid();
  let seen = 0;
  const stop = await listen(mode, fd, unixPath, () => void (seen += 1));
  const sender = workerOf(SENDER);
  const cpu0 = threadCpuUs(tid);
  const process0 = process.cpuUsage();
  const done = new Promise<void>((resolve) => (sender.onmessage = () => resolve()));
  sender.postMessage({ fd, unixPath: mode === "bun-socket" ? unixPath : null, wakes, gapUs });
  await done;
  await Bun.sleep(50);
  const jsUs = threadCpuUs(tid) - cpu0;
  const used = process.cpuUsage(process0);
  sender.terminate();
  stop();
  libc.symbols.close(fd);
  const counted = Math.max(1, seen);
  return { wakes: seen, jsThreadUsPerWake: jsUs / counted, processUsPerWake: (used.user + used.system) / counted };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : Number(process.argv[at + 1]);
}

async function main(): Promise<void> {
  if (process.argv.includes("--help")) {
    console.log("Usage: bun bench/loop_wake_bench.ts [--wakes N (20000)] [--gap-us U (100)] [--runs R (3)]");
    return;
  }
  const wakes = option("--wakes", 20_000);
  const gapUs = option("--gap-us", 100);
  const runs = option("--runs", 3);
  const dir = mkdtempSync(join(tmpdir(), "lsvd-wake-"));
  const results = new Map<Mode, RunResult[]>(MODES.map((mode) => [mode, []]));
  try {
    for (let round = 0; round < runs; round++) {
      for (const mode of MODES) {
        const result = await run(mode, wakes, gapUs, dir);
        results.get(mode)!.push(result);
        console.error(`run ${round + 1} ${mode}: ${JSON.stringify(result)}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`mode               wakes seen (min)  JS thread us/wake (median; runs)      process us/wake (median)`);
  for (const [mode, rows] of results) {
    const js = rows.map((row) => row.jsThreadUsPerWake);
    console.log(`${mode.padEnd(18)} ${String(Math.min(...rows.map((row) => row.wakes))).padEnd(17)} ${median(js).toFixed(1).padEnd(6)} (${js.map((value) => value.toFixed(1)).join(" ")})`.padEnd(73) + median(rows.map((row) => row.processUsPerWake)).toFixed(1));
  }
  process.exit(0);
}

await main();
