// Whole writes after the cache is lost, in simulation (test/sim: memory backend, memory cache device), with the crash
// harness's history model. Writes up to 2 MiB go through 64 KiB batches, so most are split over many objects. After
// each crash the cache is either kept (every acknowledged op is there) or replaced by a fresh one: then the volume must
// read as the history up to an op boundary, every write wholly present or wholly absent (checkPrefix with wholeOps),
// possibly an earlier round's end when the objects of that round's replay had not all reached the backend.
// LSVD_SEED=<n> replays one seed.

import { describe, expect, test } from "bun:test";
import { JOURNAL_RECORD_DATA_BYTES_MAX } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { seedFromEnv } from "../sim/prng.ts";
import { crashWorld, formatCache, immediateClock, makeWorld, openVolume, SIM_GC, type World } from "../sim/volume_world.ts";
import { BLOCK_BYTES, History, checkPrefix, decodeBlock, stampBlock, type PrefixResult } from "./_harness.ts";

const VOLUME_BYTES = 8 * 1024 * 1024;
const BATCH_BYTES = 64 * 1024; // openVolume's default in test/sim
const ROUNDS = 6;
const OPS_PER_ROUND_MAX = 120;
const INFLIGHT_MAX = 8;
/** Objects that ended inside a write, across the seeds: the test must have made some. */
let objectsEndingInsideWrite = 0;

async function readState(volume: Volume, blocks: number): Promise<Array<number | string>> {
  const bytes = await volume.read(0, blocks * BLOCK_BYTES);
  return Array.from({ length: blocks }, (_, block) => decodeBlock(bytes.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES), block));
}

/** Mostly small ops, a quarter larger than a batch, a few of many batches. */
function pickBlocks(world: World): number {
  const roll = world.prng.int(100);
  if (roll < 60) return 1 + world.prng.int(8);
  if (roll < 90) return 17 + world.prng.int(48);
  return 256 + world.prng.int(257);
}

/** Sends one round of ops (never two overlapping), some FUA, some flushes; returns when the round's ops are sent. */
async function runOps(world: World, volume: Volume, history: History, inFlight: Set<Promise<void>>): Promise<void> {
  const { prng } = world;
  const busy = new Uint8Array(history.blocks);
  const ops = 20 + prng.int(OPS_PER_ROUND_MAX);
  for (let index = 0; index < ops; index++) {
    while (inFlight.size >= INFLIGHT_MAX) await Promise.race(inFlight);
    const count = pickBlocks(world);
    const block = prng.int(history.blocks - count + 1);
    let free = true;
    for (let b = block; b < block + count; b++) free &&= busy[b] === 0;
    if (!free) continue;
    const roll = prng.int(100);
    const op = history.add(roll < 85 ? "write" : roll < 93 ? "trim" : "zero", block, count);
    busy.fill(1, block, block + count);
    let request: Promise<void>;
    if (op.kind === "write") {
      const data = new Uint8Array(count * BLOCK_BYTES);
      for (let b = 0; b < count; b++) stampBlock(data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES), op.id, block + b);
      request = volume.write(block * BLOCK_BYTES, data, prng.chance(0.1));
    } else if (op.kind === "trim") {
      request = volume.trim(block * BLOCK_BYTES, count * BLOCK_BYTES, false);
    } else {
      request = volume.writeZeroes(block * BLOCK_BYTES, count * BLOCK_BYTES, false);
    }
    // After the crash the dead incarnation's promises may reject; only acknowledgements before it count.
    const tracked = request.then(
      () => {
        op.acked = true;
      },
      () => {},
    );
    void tracked.finally(() => busy.fill(0, block, block + count));
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
    if (prng.chance(0.3)) await new Promise((resolve) => setTimeout(resolve, prng.int(3)));
  }
}

/** The check after losing the cache: whole ops of this round, or (the round's objects lost with it) an earlier round's. */
function checkAfterLoss(history: History, observed: Array<number | string>): PrefixResult & { rolledBack: boolean } {
  const check = checkPrefix(history, observed, history.firstUnit - 1, true);
  if (check.ok) return { ...check, rolledBack: false };
  for (let index = history.past.length - 1; index >= 0; index--) {
    const past = history.past[index]!;
    const earlier = checkPrefix(past, observed, past.firstUnit - 1, true);
    if (earlier.ok) return { ...earlier, kMin: history.firstUnit - 1, kMax: history.firstUnit - 1, rolledBack: true };
  }
  return { ...check, rolledBack: false };
}

async function runSeed(seed: number): Promise<void> {
  const world = await makeWorld(seed, { volumeBytes: VOLUME_BYTES });
  const { prng } = world;
  const blocks = VOLUME_BYTES / BLOCK_BYTES;
  const history = new History(blocks, Math.min(BATCH_BYTES, JOURNAL_RECORD_DATA_BYTES_MAX) / BLOCK_BYTES);
  let volume = await openVolume(world, { clock: immediateClock, ...SIM_GC });
  for (let round = 0; round < ROUNDS; round++) {
    const inFlight = new Set<Promise<void>>();
    await runOps(world, volume, history, inFlight);
    // Crash at a random moment after the last op was sent, with whatever is in flight.
    await new Promise((resolve) => setTimeout(resolve, prng.int(20)));
    objectsEndingInsideWrite += volume.stats().objectsEndingInsideWrite;
    const cacheLost = round === ROUNDS - 1 || prng.chance(0.6);
    const acked = history.maxAcked();
    crashWorld(world, volume);
    if (cacheLost) {
      world.device = new MemoryCacheDevice(world.device.sizeBytes, prng);
      formatCache(world.device, world.volUuid, 1000 + prng.int(1_000_000));
    }
    volume = await openVolume(world, { clock: immediateClock, ...SIM_GC });
    const observed = await readState(volume, blocks);
    const check = cacheLost ? checkAfterLoss(history, observed) : { ...checkPrefix(history, observed, acked), rolledBack: false };
    if (!check.ok) {
      throw new Error(`seed ${seed} round ${round} (${cacheLost ? "cache lost" : "cache kept"}): ${check.message}\n${world.logs.slice(-12).join("\n")}`);
    }
    history.nextRound(Int32Array.from(observed as number[]), check.kMax);
  }
  await volume.close();
}

describe("cache loss in simulation: every write wholly present or wholly absent", () => {
  const base = seedFromEnv(1);
  const seeds = process.env.LSVD_SEED ? [base] : Array.from({ length: 6 }, (_, index) => base + index);
  for (const seed of seeds) {
    test(`seed ${seed}: writes up to 32 batches, crashes that keep or lose the cache`, async () => {
      await runSeed(seed + 8000);
    }, 120_000);
  }
  if (seeds.length > 1) {
    test("the seeds split writes over objects (objects ended inside a write)", () => {
      expect(objectsEndingInsideWrite).toBeGreaterThan(0);
    });
  }
});
