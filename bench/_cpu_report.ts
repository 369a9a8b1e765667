// Helper of bench/cpu_per_request.sh, two jobs:
// - the report: reads its results (one JSON line per run, from _fio_json.ts with the server's CPU seconds and the
//   split below added) and prints medians per workload and engine, as two tables and one JSON line;
// - --threads: one run's split of the server's CPU by thread kind (THREAD_KINDS) from the script's snapshots of
//   /proc/PID/task/*/stat, and what the machine spent outside the server, as one JSON object (seconds).
//
// Usage: bun bench/_cpu_report.ts RESULTS.jsonl DATE
//        bun bench/_cpu_report.ts --threads BEFORE SAMPLES PID PROCESS_TICKS TICKS_PER_SECOND OUTSIDE_BEFORE OUTSIDE_AFTER
//   BEFORE, SAMPLES: lines "tid<TAB>comm<TAB>flags<TAB>ticks<TAB>system ticks" (the threads before the run; snapshots during and after
//   it); PROCESS_TICKS: the process's utime+stime over the run; OUTSIDE_*: "kernel-threads busy irq+softirq ceph-osd
//   ceph-other" ticks (cpu_per_request.sh's outside_ticks; the script passes 0 then the kernel threads' growth).

export {};

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits;

/** Thread kinds by thread name (comm, 15 characters at most), first match wins; the process's first thread is
 * "main" whatever its name (the JS thread of the bun servers, nbdkit's main thread); no match is "other". */
const THREAD_KINDS: ReadonlyArray<readonly [kind: string, name: RegExp]> = [
  ["jsc", /^(JITWorker|HeapHelper|Heap Helper.*|mi-scavenger|JSCWarmUp|JSC .*)$/], // JavaScriptCore's JIT and GC, mimalloc
  ["pool", /^Bun Pool \d+$/], // Bun's thread pool: node:fs promise calls, koffi's .async calls
  ["io_uring", /^iou-(wrk|sqp)-\d+$/], // io_uring's kernel workers (io-wq, SQPOLL) of this process
  ["librados", /^(msgr-worker-\d+|ms_.*|safe_timer|fn_.*|taskfin_.*|io_context_poo.*|ceph.*|log|service|admin_socket|signal_handler|finisher.*|rados.*|lockdep)$/],
];
const KINDS = ["main", ...THREAD_KINDS.map(([kind]) => kind), "other", "gone"] as const;

function kindOf(tid: string, comm: string, pid: string): string {
  if (tid === pid) return "main";
  return THREAD_KINDS.find(([, name]) => name.test(comm))?.[0] ?? "other";
}

/** A thread name with its number dropped ("Bun Pool 1" -> "Bun Pool N"), so the by-name split adds like threads up. */
const nameGroup = (comm: string): string => comm.replace(/\d+$/, "N");

interface ThreadLine {
  tid: string;
  comm: string;
  ticks: number;
  /** Of ticks, those in the kernel (stime). */
  systemTicks: number;
}
function threadLines(text: string): ThreadLine[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      const [tid, comm, , ticks, systemTicks] = line.split("\t");
      return { tid: tid!, comm: comm!, ticks: Number(ticks), systemTicks: Number(systemTicks) };
    });
}

/** One run's split: each thread's growth from BEFORE (0 for a thread born during the run) to its last snapshot. */
async function threadsMain(args: string[]): Promise<void> {
  const [beforePath, samplesPath, pid, processTicks, ticksPerSecond, outsideBefore, outsideAfter] = args;
  if (outsideAfter === undefined) throw new Error("--threads wants 7 arguments (see the usage at the top)");
  const startLines = new Map(threadLines(await Bun.file(beforePath!).text()).map((line) => [line.tid, line]));
  const last = new Map<string, ThreadLine>();
  for (const line of threadLines(await Bun.file(samplesPath!).text())) {
    const seen = last.get(line.tid);
    if (seen === undefined || line.ticks >= seen.ticks) last.set(line.tid, line);
  }
  const perTick = 1 / Number(ticksPerSecond);
  const threads: Record<string, number> = Object.fromEntries(KINDS.map((kind) => [kind, 0]));
  const byName: Record<string, number> = {};
  let seenTicks = 0;
  let mainSystem = 0;
  for (const line of last.values()) {
    const grown = Math.max(0, line.ticks - (startLines.get(line.tid)?.ticks ?? 0));
    seenTicks += grown;
    const kind = kindOf(line.tid, line.comm, pid!);
    threads[kind]! += grown * perTick;
    if (kind === "main") mainSystem = Math.max(0, line.systemTicks - (startLines.get(line.tid)?.systemTicks ?? 0)) * perTick;
    const group = kind === "main" ? "(main)" : nameGroup(line.comm);
    byName[group] = (byName[group] ?? 0) + grown * perTick;
  }
  threads.gone = Math.max(0, Number(processTicks) - seenTicks) * perTick;
  const [kt0, busy0, irq0, osd0, ceph0] = outsideBefore!.split(" ").map(Number);
  const [kt1, busy1, irq1, osd1, ceph1] = outsideAfter.split(" ").map(Number);
  const seconds = (from: number | undefined, to: number | undefined): number => round(((to ?? 0) - (from ?? 0)) * perTick, 3);
  const outside = {
    kernelThreads: seconds(kt0, kt1),
    machineBusy: seconds(busy0, busy1),
    irq: seconds(irq0, irq1),
    cephOsd: seconds(osd0, osd1),
    cephOther: seconds(ceph0, ceph1),
  };
  const rounded = (record: Record<string, number>) =>
    Object.fromEntries(Object.entries(record).map(([key, value]) => [key, round(value, 3)]));
  // mainSystem: the part of main spent in the kernel (system calls: socket, io_uring, file I/O), not a kind of its own.
  console.log(JSON.stringify({ threads: rounded({ ...threads, mainSystem }), byName: rounded(byName), outside }));
}

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
  /** "file" or "rados" for the lsvd engines, "" for the others. */
  backend?: string;
  /** The --threads split of the run, when the script recorded it (seconds). */
  cpu?: { threads: Record<string, number>; byName: Record<string, number>; outside: Record<string, number> };
}

if (process.argv[2] === "--threads") {
  await threadsMain(process.argv.slice(3));
  process.exit(0);
}
const [resultsPath, date] = process.argv.slice(2);
if (resultsPath === undefined) throw new Error("usage: bun bench/_cpu_report.ts RESULTS.jsonl DATE");
const runs: Run[] = (await Bun.file(resultsPath).text())
  .split("\n")
  .filter((line) => line.trim() !== "")
  .map((line) => JSON.parse(line) as Run)
  // An lsvd engine on RADOS is its own row: "lsvd-b/rados".
  .map((run) => (run.backend === "rados" ? { ...run, engine: `${run.engine}/rados` } : run));


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
  /** Server CPU per request, IOPS and fio's p99 of each run, in run order (the noise). */
  serverCpuUsPerIoRuns: number[];
  iopsRuns: number[];
  clatP99UsRuns: number[];
  /** Medians of each thread kind's CPU per request (--threads), and of each run (by kind, run order). */
  threadUsPerIo?: Record<string, number>;
  threadUsPerIoRuns?: Record<string, number[]>;
  /** Medians of each thread name's CPU per request ("Bun Pool N", "msgr-worker-N", "(main)"). */
  threadNameUsPerIo?: Record<string, number>;
  /** Medians of the outside counters per request: kernel threads, machine busy, irq+softirq, Ceph daemons. */
  outsideUsPerIo?: Record<string, number>;
}

/** The per-request medians of the --threads split over some runs of one row; nothing when a run lacks it. */
function split(mine: Run[]): Pick<Row, "threadUsPerIo" | "threadUsPerIoRuns" | "threadNameUsPerIo" | "outsideUsPerIo"> {
  if (mine.some((run) => run.cpu === undefined)) return {};
  const perIo = (pick: (run: Run) => number | undefined) => mine.map((run) => round(((pick(run) ?? 0) * 1e6) / run.ios, 2));
  const medians = (keys: string[], pick: (run: Run, key: string) => number | undefined) =>
    Object.fromEntries(keys.map((key) => [key, round(median(perIo((run) => pick(run, key))), 2)]));
  const names = [...new Set(mine.flatMap((run) => Object.keys(run.cpu!.byName)))];
  return {
    threadUsPerIo: medians([...KINDS, "mainSystem"], (run, kind) => run.cpu!.threads[kind]),
    threadUsPerIoRuns: Object.fromEntries(KINDS.map((kind) => [kind, perIo((run) => run.cpu!.threads[kind])])),
    threadNameUsPerIo: medians(names, (run, name) => run.cpu!.byName[name]),
    outsideUsPerIo: medians(Object.keys(mine[0]!.cpu!.outside), (run, key) => run.cpu!.outside[key]),
  };
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
      iopsRuns: mine.map((run) => Math.round(run.iops)),
      clatP99UsRuns: mine.map((run) => Math.round(run.clatP99Us)),
      ...split(mine),
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
printSplit(rows);
console.log(JSON.stringify({ bench: "cpu_per_request", date, rows }));

/** The second table: server CPU per request by thread kind, then what the machine spent outside the server. */
function printSplit(rows: Row[]): void {
  const withSplit = rows.filter((row) => row.threadUsPerIo !== undefined);
  if (withSplit.length === 0) return;
  const outsideKeys = ["kernelThreads", "irq", "cephOsd", "cephOther", "machineBusy"];
  const header = ["workload", "engine", ...KINDS, "main sys", "| kthreads", "irq+soft", "ceph-osd", "ceph-other", "machine", "main per run"];
  const table = [header];
  for (const row of withSplit) {
    table.push([
      row.workload,
      row.engine,
      ...KINDS.map((kind) => String(row.threadUsPerIo![kind])),
      String(row.threadUsPerIo!.mainSystem),
      ...outsideKeys.map((key, i) => (i === 0 ? "| " : "") + String(row.outsideUsPerIo![key] ?? 0)),
      row.threadUsPerIoRuns!.main!.join(" "),
    ]);
  }
  const widths = header.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)));
  console.log("server CPU per request by thread kind, us (medians; main sys: main's time in the kernel, part of main);");
  console.log("after |: outside the server, machine-wide (other users' work included), per request");
  for (const cells of table) console.log(cells.map((cell, column) => cell.padEnd(widths[column]!)).join("  "));
}
