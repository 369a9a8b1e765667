// What durable object puts on a disk cost a journal-like write stream on the same disk, with no lsvd in the way:
// fio writes like the journal (O_DIRECT, io_uring, random 32 KiB records, QD4: about 8 client writes of 4 KiB per
// record) while this script puts 8 MiB objects the way the file backend does (a new temporary file written with
// O_DIRECT in 512 KiB writes, fsync, rename, fsync of the directory; every 20th object back, deleted and the
// directory fsynced), at the rate lsvd puts them under 4 KiB random writes. Three cases, alternating, each run:
//   alone     fio by itself;
//   puts      fio beside the durable puts;
//   no-sync   fio beside the same writes, renames and deletes without any fsync (the bytes without the flushes).
// Prints fio's IOPS and completion-latency p50/p99/p99.9 per case (medians of the runs, every run listed) and the
// ratios to `alone`. Timing only: never part of the test suite.
//
//   bun bench/flush_tail.ts [--runs 3] [--seconds 10] [--puts-per-second 12] [--dir /var/tmp]

import { closeSync, fsyncSync, mkdtempSync, openSync, renameSync, rmSync, unlinkSync, writeSync, constants } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    "puts-per-second": { type: "string", default: "12" },
    dir: { type: "string", default: "/var/tmp" },
  },
  strict: true,
});
const runs = Number(values.runs);
const seconds = Number(values.seconds);
const putsPerSecond = Number(values["puts-per-second"]);
if (!(runs > 0 && seconds > 0 && putsPerSecond > 0)) throw new Error("--runs, --seconds and --puts-per-second must be positive");

const OBJECT_BYTES = 8 * 1024 * 1024;
const PIECE_BYTES = 512 * 1024;
const OBJECTS_KEPT = 20;
type Case = "alone" | "puts" | "no-sync";
const CASES: Case[] = ["alone", "puts", "no-sync"];

interface Sample {
  iops: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  puts: number;
}

const work = mkdtempSync(join(values.dir!, "lsvd-flush-tail."));
// Large Bun buffers are page-aligned, which O_DIRECT needs (the file store relies on the same).
const object = new Uint8Array(OBJECT_BYTES).fill(0x5a);

function startFio(): ReturnType<typeof Bun.spawn> {
  return Bun.spawn({
    cmd: ["fio", "--name=journal", `--directory=${work}`, "--filename=journal.dat", "--size=512m", "--ioengine=io_uring",
      "--direct=1", "--rw=randwrite", "--bs=32k", "--iodepth=4", "--time_based", `--runtime=${seconds}`,
      "--percentile_list=50:99:99.9", "--output-format=json"],
    stdout: "pipe",
    stderr: "pipe",
  });
}

/** One durable (or, with sync false, merely written) put of a new object, as the file backend does it. */
function putObject(index: number, sync: boolean, directory: number): void {
  const temp = join(work, `.tmp.${index}`);
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT, 0o644);
  try {
    for (let at = 0; at < OBJECT_BYTES; at += PIECE_BYTES) writeSync(fd, object, at, PIECE_BYTES, at);
    if (sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, join(work, `obj.${index}`));
  if (sync) fsyncSync(directory);
  if (index >= OBJECTS_KEPT) {
    unlinkSync(join(work, `obj.${index - OBJECTS_KEPT}`));
    if (sync) fsyncSync(directory);
  }
}

/** Puts at the given rate until fio exits; returns how many were made. */
async function putWhile(fio: ReturnType<typeof Bun.spawn>, sync: boolean): Promise<number> {
  const directory = openSync(work, constants.O_RDONLY | constants.O_DIRECTORY);
  let exited = false;
  void fio.exited.then(() => (exited = true));
  let made = 0;
  try {
    const intervalMs = 1000 / putsPerSecond;
    while (!exited) {
      const started = performance.now();
      putObject(made++, sync, directory);
      await Bun.sleep(Math.max(0, intervalMs - (performance.now() - started)));
    }
  } finally {
    closeSync(directory);
  }
  for (let index = Math.max(0, made - OBJECTS_KEPT); index < made; index++) rmSync(join(work, `obj.${index}`), { force: true });
  return made;
}

async function runCase(which: Case): Promise<Sample> {
  const fio = startFio();
  const puts = which === "alone" ? 0 : await putWhile(fio, which === "puts");
  const [text, errors, code] = await Promise.all([new Response(fio.stdout as ReadableStream).text(), new Response(fio.stderr as ReadableStream).text(), fio.exited]);
  if (code !== 0) throw new Error(`fio failed (exit ${code}): ${errors.trim()}`);
  const write = JSON.parse(text.slice(text.indexOf("{"))).jobs[0].write;
  const percentile = write.clat_ns.percentile as Record<string, number>;
  const ms = (key: string) => (percentile[key] ?? NaN) / 1e6;
  return { iops: write.iops, p50Ms: ms("50.000000"), p99Ms: ms("99.000000"), p999Ms: ms("99.900000"), puts };
}

const median = (numbers: number[]) => [...numbers].sort((a, b) => a - b)[Math.floor(numbers.length / 2)]!;

try {
  const samples = new Map<Case, Sample[]>(CASES.map((each) => [each, []]));
  console.log(`${work}: ${runs} run(s) of ${seconds} s per case, ${putsPerSecond} puts of 8 MiB a second beside fio`);
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? CASES : [...CASES].reverse();
    for (const which of order) {
      const sample = await runCase(which);
      samples.get(which)!.push(sample);
      console.log(`run ${run + 1} ${which}: ${JSON.stringify(sample)}`);
    }
  }
  const alone = samples.get("alone")!;
  console.log("case     IOPS    p50 ms  p99 ms  p99.9 ms  puts/s  IOPS/alone  p99/alone  p99.9/alone  p99 per run");
  for (const which of CASES) {
    const all = samples.get(which)!;
    const row = {
      iops: median(all.map((each) => each.iops)),
      p50: median(all.map((each) => each.p50Ms)),
      p99: median(all.map((each) => each.p99Ms)),
      p999: median(all.map((each) => each.p999Ms)),
      puts: median(all.map((each) => each.puts)) / seconds,
    };
    const base = { iops: median(alone.map((each) => each.iops)), p99: median(alone.map((each) => each.p99Ms)), p999: median(alone.map((each) => each.p999Ms)) };
    console.log(
      `${which.padEnd(8)} ${row.iops.toFixed(0).padStart(6)}  ${row.p50.toFixed(2).padStart(6)}  ${row.p99.toFixed(2).padStart(6)}  ${row.p999.toFixed(2).padStart(8)}  ${row.puts.toFixed(1).padStart(6)}  ${(row.iops / base.iops).toFixed(2).padStart(10)}  ${(row.p99 / base.p99).toFixed(2).padStart(9)}  ${(row.p999 / base.p999).toFixed(2).padStart(11)}  ${all.map((each) => each.p99Ms.toFixed(2)).join(" ")}`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
