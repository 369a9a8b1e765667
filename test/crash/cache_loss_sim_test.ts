// Whole writes after the cache is lost, in simulation (test/sim: memory backend, memory cache device, virtual time),
// with the crash harness's history model. Writes up to 2 MiB go through 64 KiB batches, so most are split over many
// objects. After each crash the cache is either kept (every acknowledged op is there) or replaced by a fresh one: then
// the volume must read as the history up to an op boundary, every write wholly present or wholly absent (checkPrefix
// with wholeOps), possibly an earlier round's end when the objects of that round's replay had not all reached the
// backend. A failure prints the command that replays its seed (LSVD_SEED=<n>).

import { describe, expect, test } from "bun:test";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { seedFromEnv } from "../sim/prng.ts";
import { formatCache, type World } from "../sim/volume_world.ts";
import { History, checkPrefix, type PrefixResult } from "./_harness.ts";
import { closeAtEnd, makeSimWorld, recoverAndRead, roundThenCrash, simFailure, SimOps } from "./_sim_ops.ts";

const FILE = "test/crash/cache_loss_sim_test.ts";
const NAME = "writes up to 32 batches, crashes that keep or lose the cache";
const VOLUME_BYTES = 8 * 1024 * 1024;
const ROUNDS = 6;
const OPS_PER_ROUND_MAX = 120;
const INFLIGHT_MAX = 8;
/** Objects that ended inside a write, across the seeds: the test must have made some. */
let objectsEndingInsideWrite = 0;

/** Mostly small ops, a quarter larger than a batch, a few of many batches. */
function pickBlocks(world: World): number {
  const roll = world.prng.int(100);
  if (roll < 60) return 1 + world.prng.int(8);
  if (roll < 90) return 17 + world.prng.int(48);
  return 256 + world.prng.int(257);
}

/** Sends one round of ops (never two overlapping), some FUA; returns when the round's ops are sent. */
async function runOps(ops: SimOps): Promise<void> {
  const { prng } = ops.world;
  const count = 20 + prng.int(OPS_PER_ROUND_MAX);
  for (let index = 0; index < count; index++) {
    await ops.waitBelow(INFLIGHT_MAX);
    const blocks = pickBlocks(ops.world);
    const block = prng.int(ops.history.blocks - blocks + 1);
    const roll = prng.int(100);
    if (!ops.send(roll < 85 ? "write" : roll < 93 ? "trim" : "zero", block, blocks, prng.chance(0.1))) continue;
    if (prng.chance(0.3)) await ops.pause(prng.int(3));
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

async function runSeed(base: number, seed: number): Promise<void> {
  const { world, history, volume: first } = await makeSimWorld(seed, VOLUME_BYTES);
  const { prng } = world;
  let volume = first;
  for (let round = 0; round < ROUNDS; round++) {
    const ops = new SimOps(world, volume, history);
    // Crash at a random moment after the last op was sent, with whatever is in flight (or at a crash point).
    await roundThenCrash(world, volume, async () => {
      await runOps(ops);
      await ops.pause(prng.int(20));
    });
    objectsEndingInsideWrite += volume.stats().objectsEndingInsideWrite;
    const cacheLost = round === ROUNDS - 1 || prng.chance(0.6);
    const acked = history.maxAcked();
    if (cacheLost) {
      const device = new MemoryCacheDevice(world.device.sizeBytes, prng);
      device.clock = world.clock!;
      world.device = device;
      formatCache(device, world.volUuid, 1000 + prng.int(1_000_000), undefined, prng);
    }
    const recovered = await recoverAndRead(world, history.blocks);
    volume = recovered.volume;
    const observed = recovered.observed;
    const check = cacheLost ? checkAfterLoss(history, observed) : { ...checkPrefix(history, observed, acked), rolledBack: false };
    if (!check.ok) throw simFailure(seed, base, FILE, NAME, round, cacheLost ? "cache lost" : "cache kept", check.message, world);
    history.nextRound(Int32Array.from(observed as number[]), check.kMax);
  }
  await closeAtEnd(world, volume);
}

describe("cache loss in simulation: every write wholly present or wholly absent", () => {
  const base = seedFromEnv(1);
  const seeds = process.env.LSVD_SEED ? [base] : Array.from({ length: 6 }, (_, index) => base + index);
  for (const seed of seeds) {
    test(`seed ${seed}: ${NAME}`, async () => {
      await runSeed(seed, seed + 8000);
    }, 120_000);
  }
  if (seeds.length > 1) {
    test("the seeds split writes over objects (objects ended inside a write)", () => {
      expect(objectsEndingInsideWrite).toBeGreaterThan(0);
    });
  }
});
