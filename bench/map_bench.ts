// Benchmark for src/map/extent_map.ts: memory per extent and lookup/update latency at 1M and 10M extents.
// Reference point (EuroSys 2022 LSVD paper, C++ map): ~24 bytes/extent, ~0.2 us lookup, ~0.5 us update.
//
// Usage: bun bench/map_bench.ts [--json] [--sizes=1000000,10000000] [--chunk=256] [--ops=1000000] [--seed=1]
// The map is built from random 4 KiB writes into every other 8-sector slot (lba = 16k), so no two extents are
// contiguous and none merge: extentCount equals the number of writes.
// Times are CPU time of this process (process.cpuUsage), not wall time: the bench machine is shared (2 cores), and
// CPU time leaves out the time spent descheduled (cache interference from neighbours still shows).
// Baseline, measured in the same run: the latency of one dependent random read in a buffer as large as the map's
// extent data (a pointer chase through a random cycle of cache lines). A lookup of a random key in a map that does not
// fit the CPU caches needs at least one such read, so `lookup / floor` says how much of a lookup is the search itself.

import { readFileSync } from "node:fs";
import { ExtentMap, MAP_CHUNK_EXTENTS_DEFAULT } from "../src/map/extent_map.ts";

interface Result {
  extents: number;
  chunkExtentsMax: number;
  buildNsPerExtent: number;
  bytesPerExtent: number;
  /** Growth of the process RSS while building, per extent: a cross-check of bytesUsed (allocator-dependent). */
  rssBytesPerExtent: number;
  lookupUs: number;
  /** One dependent random read in a buffer of the map's size: the floor for a random lookup. */
  memoryLatencyUs: number;
  /** update() of a whole existing extent (block rewritten in place). */
  updateOverwriteUs: number;
  /** update() into an unmapped slot: a new extent is inserted. */
  updateInsertUs: number;
  /** update() of the middle of an extent: the old one splits into three. */
  updateSplitUs: number;
  trimUs: number;
}

function argument(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  return process.argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length) ?? fallback;
}

/** xorshift32: deterministic inputs without allocation. */
function makeRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

function rssBytes(): number {
  Bun.gc(true);
  const pages = Number(readFileSync("/proc/self/statm", "utf8").split(" ")[1]);
  return pages * 4096;
}

/** CPU milliseconds used by this process so far. */
function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

const CACHE_LINE_WORDS = 16; // 64-byte lines of 4-byte words

/**
 * Microseconds per read when each read's address depends on the one before, over `bytes` of memory: a random cycle
 * through all cache lines of the buffer (Sattolo's shuffle), so neither the caches nor the prefetcher can help once
 * the buffer is larger than the caches.
 */
function dependentReadUs(bytes: number, reads: number, random: () => number): number {
  const lines = Math.max(2, Math.floor(bytes / (CACHE_LINE_WORDS * 4)));
  const cycle = new Uint32Array(lines);
  for (let i = 0; i < lines; i += 1) cycle[i] = i;
  for (let i = lines - 1; i > 0; i -= 1) {
    const j = random() % i; // j < i: one cycle through every line
    const t = cycle[i]!;
    cycle[i] = cycle[j]!;
    cycle[j] = t;
  }
  const words = new Uint32Array(lines * CACHE_LINE_WORDS);
  for (let i = 0; i < lines; i += 1) words[i * CACHE_LINE_WORDS] = cycle[i]! * CACHE_LINE_WORDS;
  let at = 0;
  const started = cpuMs();
  for (let i = 0; i < reads; i += 1) at = words[at]!;
  const us = ((cpuMs() - started) * 1000) / reads;
  if (at < 0) throw new Error("unreachable: keeps the chase from being optimised away");
  return us;
}

const SLOT_SECTORS = 16; // one 8-sector extent, then an 8-sector gap
const EXTENT_SECTORS = 8;

function run(extents: number, chunkExtentsMax: number, ops: number, seed: number): Result {
  const random = makeRandom(seed);
  // Random order of slots: Fisher-Yates over a typed array.
  const order = new Uint32Array(extents);
  for (let i = 0; i < extents; i += 1) order[i] = i;
  for (let i = extents - 1; i > 0; i -= 1) {
    const j = random() % (i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  const keys = new Uint32Array(ops);
  for (let i = 0; i < ops; i += 1) keys[i] = random() % extents;

  const baseline = rssBytes();
  const map = new ExtentMap({ chunkExtentsMax });
  let started = cpuMs();
  for (let i = 0; i < extents; i += 1) {
    const slot = order[i]!;
    map.update(slot * SLOT_SECTORS, EXTENT_SECTORS, 1 + (slot % 4093), (slot * EXTENT_SECTORS) % 2 ** 31);
  }
  const buildMs = cpuMs() - started;
  if (map.extentCount !== extents) throw new Error(`expected ${extents} extents, have ${map.extentCount}`);
  const rssGrowthBytes = rssBytes() - baseline;
  const bytesPerExtent = map.bytesUsed() / map.extentCount;

  let checksum = 0;
  const visit = (lba: number, sectors: number, obj: number, offset: number): void => {
    checksum = (checksum + lba + sectors + obj + offset) % 1_000_000_007;
  };
  started = cpuMs();
  for (let i = 0; i < ops; i += 1) map.lookup(keys[i]! * SLOT_SECTORS, EXTENT_SECTORS, visit);
  const lookupUs = ((cpuMs() - started) * 1000) / ops;
  if (checksum === 0) throw new Error("lookups found nothing");

  started = cpuMs();
  for (let i = 0; i < ops; i += 1) map.update(keys[i]! * SLOT_SECTORS, EXTENT_SECTORS, 5000 + (i & 1023), i * 8);
  const updateOverwriteUs = ((cpuMs() - started) * 1000) / ops;

  // The remaining kinds change the extent count, so run fewer of them (at most 10% growth).
  const changeOps = Math.min(ops, Math.floor(extents / 10));
  started = cpuMs();
  for (let i = 0; i < changeOps; i += 1) {
    // Slot gaps start at 16k + 8; keys repeat rarely, and a repeat is an exact overwrite, which is fine.
    map.update(keys[i]! * SLOT_SECTORS + EXTENT_SECTORS, EXTENT_SECTORS, 7000 + (i & 1023), i * 8);
  }
  const updateInsertUs = ((cpuMs() - started) * 1000) / changeOps;

  started = cpuMs();
  for (let i = 0; i < changeOps; i += 1) map.update(keys[ops - 1 - i]! * SLOT_SECTORS + 2, 4, 9000, i * 4);
  const updateSplitUs = ((cpuMs() - started) * 1000) / changeOps;

  started = cpuMs();
  for (let i = 0; i < changeOps; i += 1) map.trim(keys[(i * 7) % ops]! * SLOT_SECTORS, SLOT_SECTORS);
  const trimUs = ((cpuMs() - started) * 1000) / changeOps;

  const memoryLatencyUs = dependentReadUs(map.bytesUsed(), ops, random);

  return {
    extents,
    chunkExtentsMax,
    buildNsPerExtent: (buildMs * 1e6) / extents,
    bytesPerExtent,
    rssBytesPerExtent: rssGrowthBytes / extents,
    lookupUs,
    memoryLatencyUs,
    updateOverwriteUs,
    updateInsertUs,
    updateSplitUs,
    trimUs,
  };
}

function main(): void {
  const json = process.argv.includes("--json");
  const sizes = argument("sizes", "1000000,10000000").split(",").map(Number);
  const chunkExtentsMax = Number(argument("chunk", String(MAP_CHUNK_EXTENTS_DEFAULT)));
  const ops = Number(argument("ops", "1000000"));
  const seed = Number(argument("seed", "1"));
  const results: Result[] = [];
  for (const extents of sizes) results.push(run(extents, chunkExtentsMax, ops, seed));
  if (json) {
    console.log(JSON.stringify({ bench: "extent_map", seed, ops, results }, null, 2));
    return;
  }
  const columns: Array<[string, (r: Result) => string]> = [
    ["extents", (r) => String(r.extents)],
    ["chunk", (r) => String(r.chunkExtentsMax)],
    ["build ns/ext", (r) => r.buildNsPerExtent.toFixed(0)],
    ["B/extent", (r) => r.bytesPerExtent.toFixed(2)],
    ["rss B/ext", (r) => r.rssBytesPerExtent.toFixed(2)],
    ["lookup us", (r) => r.lookupUs.toFixed(3)],
    ["floor us", (r) => r.memoryLatencyUs.toFixed(3)],
    ["lookup/floor", (r) => (r.lookupUs / r.memoryLatencyUs).toFixed(2)],
    ["overwrite us", (r) => r.updateOverwriteUs.toFixed(3)],
    ["insert us", (r) => r.updateInsertUs.toFixed(3)],
    ["split us", (r) => r.updateSplitUs.toFixed(3)],
    ["trim us", (r) => r.trimUs.toFixed(3)],
  ];
  const rows = [columns.map(([name]) => name), ...results.map((r) => columns.map(([, cell]) => cell(r)))];
  const widths = columns.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join("  "));
}

main();
