// Helper of bench/serve_bench.sh: turns its results file (JSON lines from _fio_json.ts and the server records the
// script writes) into a table for people and one JSON line for machines, with medians per engine, the ratios
// lsvd/nbdkit and lsvd/raw-fio, and the bars from the data-path issue:
//   4 KiB random writes QD32: lsvd >= 1.0x nbdkit file and >= 0.9x fio io_uring on the raw cache file;
//   64 KiB sequential writes: backend bytes per client byte < 1.02.
//
// Usage: bun bench/_serve_report.ts RESULTS.jsonl CONFIG_JSON

export {}; // a module, for top-level await

const RANDWRITE_BAR_OVER_NBDKIT = 1.0;
const RANDWRITE_BAR_OVER_RAW = 0.9;
const BACKEND_BYTES_PER_CLIENT_BYTE_MAX = 1.02;

interface FioRecord {
  kind: "fio";
  workload: string;
  engine: string;
  run: number;
  iops: number;
  mibPerSecond: number;
  ioBytes: number;
  clatP50Us: number | null;
  clatP99Us: number | null;
  backend?: { newObjectBytes: number; dataObjectBytes: number; dataPayloadBytes: number };
}

interface ServerRecord {
  kind: "server";
  workload: string;
  phase: string;
  peakRssKiB: number;
  shutdownSeconds: number;
  stopLine: string;
}

const [resultsPath, configText] = process.argv.slice(2);
if (resultsPath === undefined || configText === undefined) throw new Error("usage: bun bench/_serve_report.ts RESULTS CONFIG_JSON");
const config = JSON.parse(configText);
const records = (await Bun.file(resultsPath).text())
  .split("\n")
  .filter((line) => line.trim() !== "")
  .map((line) => JSON.parse(line) as FioRecord | ServerRecord);
const fioRecords = records.filter((r): r is FioRecord => r.kind === "fio");
const serverRecords = records.filter((r): r is ServerRecord => r.kind === "server");

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** "lsvd" -> "", "lsvd-restart" -> "Restart": the part of the ratio keys that names the lsvd variant. */
function variantOf(engine: string): string {
  return engine.slice("lsvd".length).replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
}

function ratio(over: number | null, under: number | null): number | null {
  if (over === null || under === null || under === 0) return null;
  return Math.round((over / under) * 1000) / 1000;
}

const workloads = [...new Set(fioRecords.map((r) => r.workload))];
const summary: Record<string, unknown>[] = [];
const rows: string[][] = [];
for (const workload of workloads) {
  const ofWorkload = fioRecords.filter((r) => r.workload === workload);
  const engines = [...new Set(ofWorkload.map((r) => r.engine))];
  const medians: Record<string, { runs: number; iops: number | null; mibPerSecond: number | null; clatP50Us: number | null; clatP99Us: number | null }> = {};
  for (const engine of engines) {
    const runs = ofWorkload.filter((r) => r.engine === engine);
    medians[engine] = {
      runs: runs.length,
      iops: median(runs.map((r) => r.iops)),
      mibPerSecond: median(runs.map((r) => r.mibPerSecond)),
      clatP50Us: median(runs.flatMap((r) => (r.clatP50Us === null ? [] : [r.clatP50Us]))),
      clatP99Us: median(runs.flatMap((r) => (r.clatP99Us === null ? [] : [r.clatP99Us]))),
    };
  }
  const entry: Record<string, unknown> = { workload, medians };
  for (const lsvdEngine of engines.filter((e) => e.startsWith("lsvd"))) {
    const suffix = variantOf(lsvdEngine);
    entry[`ratioLsvd${suffix}OverNbdkit`] = ratio(medians[lsvdEngine]!.iops, medians.nbdkit?.iops ?? null);
    entry[`ratioLsvd${suffix}OverRaw`] = ratio(medians[lsvdEngine]!.iops, medians.raw?.iops ?? null);
  }
  const perByte = ofWorkload
    .filter((r) => r.engine === "lsvd" && r.backend !== undefined)
    .map((r) => r.backend!.newObjectBytes / r.ioBytes);
  if (perByte.length > 0) {
    entry.backendBytesPerClientByteMedian = Math.round(median(perByte)! * 10000) / 10000;
    entry.backendBytesPerClientByteMax = Math.round(Math.max(...perByte) * 10000) / 10000;
  }
  const peaks = serverRecords.filter((r) => r.workload === workload).map((r) => r.peakRssKiB);
  if (peaks.length > 0) entry.lsvdPeakRssMiB = Math.round(Math.max(...peaks) / 102.4) / 10;
  summary.push(entry);

  for (const engine of engines) {
    const m = medians[engine]!;
    const suffix = variantOf(engine);
    const isLsvd = engine.startsWith("lsvd");
    rows.push([
      workload,
      engine,
      String(m.runs),
      String(m.iops ?? "-"),
      String(m.mibPerSecond ?? "-"),
      String(m.clatP50Us ?? "-"),
      String(m.clatP99Us ?? "-"),
      isLsvd ? String(entry[`ratioLsvd${suffix}OverNbdkit`] ?? "-") : "",
      isLsvd ? String(entry[`ratioLsvd${suffix}OverRaw`] ?? "-") : "",
    ]);
  }
}

const bars: Record<string, unknown> = {};
const randwrite = summary.find((s) => s.workload === "randwrite-4k-qd32");
if (randwrite) {
  const overNbdkit = randwrite.ratioLsvdOverNbdkit as number | null;
  const overRaw = randwrite.ratioLsvdOverRaw as number | null;
  bars.randwriteOverNbdkit = { value: overNbdkit, min: RANDWRITE_BAR_OVER_NBDKIT, pass: overNbdkit !== null && overNbdkit >= RANDWRITE_BAR_OVER_NBDKIT };
  bars.randwriteOverRaw = { value: overRaw, min: RANDWRITE_BAR_OVER_RAW, pass: overRaw !== null && overRaw >= RANDWRITE_BAR_OVER_RAW };
}
const seqwrite = summary.find((s) => s.workload === "seqwrite-64k-qd8");
if (seqwrite && seqwrite.backendBytesPerClientByteMax !== undefined) {
  const worst = seqwrite.backendBytesPerClientByteMax as number;
  bars.seqwriteBackendBytesPerClientByte = { value: worst, maxExclusive: BACKEND_BYTES_PER_CLIENT_BYTE_MAX, pass: worst < BACKEND_BYTES_PER_CLIENT_BYTE_MAX };
}
const allPeaks = serverRecords.map((r) => r.peakRssKiB);
const lsvdPeakRssMiB = allPeaks.length === 0 ? null : Math.round(Math.max(...allPeaks) / 102.4) / 10;

const header = ["workload", "engine", "runs", "IOPS", "MiB/s", "p50 us", "p99 us", "/nbdkit", "/raw"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
const format = (row: string[]) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ");
console.log(`lsvd serve bench: ${config.runtimeSeconds} s per run, ${config.runs} run(s) per engine, medians; ratios are lsvd IOPS over nbdkit file / raw fio io_uring`);
console.log(format(header));
for (const row of rows) console.log(format(row));
for (const s of summary) {
  if (s.backendBytesPerClientByteMedian !== undefined) {
    console.log(`${s.workload}: backend bytes per client byte median ${s.backendBytesPerClientByteMedian}, worst ${s.backendBytesPerClientByteMax}`);
  }
}
for (const r of serverRecords) {
  console.log(`lsvd server (${r.workload}, ${r.phase}): peak RSS ${Math.round(r.peakRssKiB / 102.4) / 10} MiB, shutdown ${r.shutdownSeconds} s; ${r.stopLine}`);
}
console.log(`lsvd peak RSS (max over servers): ${lsvdPeakRssMiB ?? "-"} MiB`);
for (const [name, bar] of Object.entries(bars)) {
  const b = bar as { value: number | null; pass: boolean; min?: number; maxExclusive?: number };
  const rule = b.min !== undefined ? `>= ${b.min}` : `< ${b.maxExclusive}`;
  console.log(`bar ${name}: ${b.value ?? "-"} (${rule}) ${b.pass ? "PASS" : "FAIL"}`);
}
console.log(JSON.stringify({ bench: "serve_bench", config, summary, lsvdPeakRssMiB, bars }));
