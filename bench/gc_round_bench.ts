// What a garbage collection round costs the JS thread when there is little to clean, and what the space gate's
// question (GarbageCollector.spaceState, asked for every client write) costs, by object-table size: the collector of
// this tree against the one in --base-src (a checkout's src/, e.g. `git archive main src | tar -x -C /tmp/base`),
// both loaded in one process, runs alternating, medians with min-max. No backend I/O: a memory store, a table of
// durable DATA objects of 1 MiB each, 7% dead (below the garbage target, so rounds clean nothing), and before each
// round a few objects changed (a sector displaced in each, and given back so that runs stay alike).
//
//   bun bench/gc_round_bench.ts [--base-src DIR] [--objects 1000,10000,100000] [--rounds 200] [--changes 32] [--runs 5]

import { parseArgs } from "node:util";
import { resolve } from "node:path";

const { values } = parseArgs({
  options: { "base-src": { type: "string" }, objects: { type: "string" }, rounds: { type: "string" }, changes: { type: "string" }, runs: { type: "string" }, help: { type: "boolean" } },
});
if (values.help) {
  console.log("usage: bun bench/gc_round_bench.ts [--base-src DIR] [--objects 1000,10000,100000] [--rounds 200] [--changes 32] [--runs 5]");
  process.exit(0);
}
const objectCounts = (values.objects ?? "1000,10000,100000").split(",").map(Number);
const rounds = Number(values.rounds ?? 200);
const changes = Number(values.changes ?? 32);
const runs = Number(values.runs ?? 5);
const GATE_CALLS = 100_000;
const DATA_SECTORS = 2048;

interface Impl {
  name: string;
  load: () => Promise<Record<string, any>>;
}

async function loadTree(src: string): Promise<Record<string, any>> {
  const [gc, table, map, store, snaps] = await Promise.all(
    ["volume/garbage_collector.ts", "volume/object_table.ts", "map/extent_map.ts", "backend/memory_store.ts", "volume/snapshots.ts"].map((file) => import(resolve(src, file))),
  );
  return { ...gc, ...table, ...map, ...store, ...snaps };
}

/** xorshift32: the same displacements for both collectors. */
function prng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/** One run: a fresh collector over `count` objects; returns microseconds per round and nanoseconds per gate question. */
async function runOnce(tree: Record<string, any>, count: number, seed: number): Promise<{ roundUs: number; gateNs: number }> {
  const objects = new tree.ObjectTable();
  for (let seq = 1; seq <= count; seq++) objects.add(seq, { kind: tree.ObjectKind.Data, hdrSectors: 8, dataSectors: DATA_SECTORS, liveSectors: DATA_SECTORS - 150 });
  const writer = {
    copy: async () => {},
    durableSeq: count,
    sequenceNext: count + 1,
    unflushed: new Map(),
    failed: null,
    stats: { gcCopiedSectors: 0 },
    requestCheckpoint: () => {},
    spaceGate: { attach: () => {}, recheck: () => {} },
  };
  const clock = { nowMs: () => performance.now(), setTimer: () => ({ cancel: () => {} }) };
  const gc = new tree.GarbageCollector({
    store: new tree.MemoryStore(),
    prefix: "bench",
    volUuid: "00000000-0000-0000-0000-000000000000",
    map: new tree.ExtentMap(),
    objects,
    writer,
    isPinned: () => false,
    snapshotPins: new tree.SnapshotPins(),
    baseLastSeq: 0,
    clock,
    log: () => {},
    threshold: 0.5,
    intervalMs: 1000,
    batchBytes: DATA_SECTORS * 512,
    forceCheckpointMs: 30_000,
    checkpoints: [],
  });
  gc.start();
  const random = prng(seed);
  let roundNs = 0;
  for (let round = 0; round < rounds; round++) {
    for (let change = 0; change < changes; change++) {
      // One sector displaced and given back: the object changed (both collectors see it), the table stays as it was.
      const seq = 1 + Math.floor(random() * count);
      objects.displaced(seq, 1);
      objects.displaced(seq, -1);
    }
    const started = Bun.nanoseconds();
    await gc.runRound();
    roundNs += Bun.nanoseconds() - started;
  }
  const gateStarted = Bun.nanoseconds();
  let over = 0;
  for (let call = 0; call < GATE_CALLS; call++) if (gc.spaceState().overHighWater) over += 1;
  const gateNs = (Bun.nanoseconds() - gateStarted) / GATE_CALLS;
  await gc.stop();
  if (over !== 0) throw new Error("the bench's volume should stay below the high-water mark");
  return { roundUs: roundNs / rounds / 1000, gateNs };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function spread(values: number[]): string {
  return `${median(values).toFixed(2)} (${Math.min(...values).toFixed(2)}-${Math.max(...values).toFixed(2)})`;
}

const impls: Impl[] = [{ name: "this tree", load: () => loadTree(resolve(import.meta.dir, "../src")) }];
if (values["base-src"]) impls.push({ name: "base", load: () => loadTree(resolve(values["base-src"]!)) });
const trees = await Promise.all(impls.map((impl) => impl.load()));

console.log(`gc_round_bench: ${rounds} rounds per run, ${changes} sectors displaced before each, ${runs} runs alternating; round us, gate ns: median (min-max)`);
for (const count of objectCounts) {
  const results = impls.map(() => ({ roundUs: [] as number[], gateNs: [] as number[] }));
  for (let run = 0; run < runs; run++) {
    for (let turn = 0; turn < impls.length; turn++) {
      const index = (turn + run) % impls.length;
      const result = await runOnce(trees[index]!, count, 1000 + run);
      results[index]!.roundUs.push(result.roundUs);
      results[index]!.gateNs.push(result.gateNs);
    }
  }
  impls.forEach((impl, index) => {
    console.log(`objects ${String(count).padStart(7)}  ${impl.name.padEnd(9)}  round us ${spread(results[index]!.roundUs).padEnd(26)}  gate ns ${spread(results[index]!.gateNs)}`);
  });
  if (impls.length === 2) {
    const roundRatio = median(results[0]!.roundUs) / median(results[1]!.roundUs);
    const gateRatio = median(results[0]!.gateNs) / median(results[1]!.gateNs);
    console.log(`objects ${String(count).padStart(7)}  this tree / base: round ${roundRatio.toFixed(3)}x, gate ${gateRatio.toFixed(3)}x`);
  }
}
