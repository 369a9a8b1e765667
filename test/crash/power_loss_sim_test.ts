// Crash consistency in simulation (test/sim: memory backend, memory cache device with a crash model, virtual time),
// with the crash harness's history model: power loss keeps everything a completed FLUSH covered, a process crash keeps
// every acknowledged op, and either way the volume reads as a prefix of the history. Runs the real volume code, no
// server. A failure prints the command that replays its seed (LSVD_SEED=<n>).

import { describe, test } from "bun:test";
import { seedFromEnv } from "../sim/prng.ts";
import { checkPrefix } from "./_harness.ts";
import { closeAtEnd, makeSimWorld, recoverAndRead, roundThenCrash, simFailure, SimOps } from "./_sim_ops.ts";

const FILE = "test/crash/power_loss_sim_test.ts";
const VOLUME_BYTES = 2 * 1024 * 1024;
const ROUNDS = 6;
const OPS_PER_ROUND_MAX = 300;
const INFLIGHT_MAX = 16;

async function runSeed(base: number, seed: number, name: string, powerLoss: boolean, journalBytes?: number): Promise<void> {
  const { world, history, volume: first } = await makeSimWorld(seed, VOLUME_BYTES, journalBytes);
  const { prng } = world;
  let volume = first;
  for (let round = 0; round < ROUNDS; round++) {
    const ops = new SimOps(world, volume, history);
    const count = 20 + prng.int(OPS_PER_ROUND_MAX);
    await roundThenCrash(
      world,
      volume,
      async () => {
        for (let index = 0; index < count; index++) {
          await ops.waitBelow(INFLIGHT_MAX);
          if (prng.chance(0.08)) {
            ops.flush();
            continue;
          }
          const blocks = prng.chance(0.8) ? 1 + prng.int(4) : 5 + prng.int(40);
          const block = prng.int(history.blocks - blocks + 1);
          const roll = prng.int(100);
          if (!ops.send(roll < 80 ? "write" : roll < 90 ? "trim" : "zero", block, blocks, prng.chance(0.05))) continue;
          if (prng.chance(0.3)) await ops.pause(0);
        }
      },
      { powerLoss },
    );
    // The crash took whatever was in flight.
    const lowerBound = powerLoss ? history.flushedBound : Math.max(history.maxAcked(), history.flushedBound);
    const recovered = await recoverAndRead(world, history.blocks);
    volume = recovered.volume;
    const observed = recovered.observed;
    const check = checkPrefix(history, observed, lowerBound);
    if (!check.ok) throw simFailure(seed, base, FILE, name, round, powerLoss ? "power loss" : "process crash", check.message, world);
    history.nextRound(Int32Array.from(observed as number[]));
  }
  await closeAtEnd(world, volume);
}

describe("crash simulation with the harness's history model", () => {
  const base = seedFromEnv(1);
  const seeds = process.env.LSVD_SEED ? [base] : Array.from({ length: 6 }, (_, index) => base + index);
  for (const seed of seeds) {
    const cases: Array<[string, number, boolean, number | undefined]> = [
      ["power loss keeps every flushed op, state is a prefix", 5000, true, undefined],
      ["process crash keeps every acknowledged op, state is a prefix", 6000, false, undefined],
      ["power loss with a small journal (wrap-around, back-pressure)", 7000, true, 640 * 1024],
    ];
    for (const [name, offset, powerLoss, journalBytes] of cases) {
      test(`seed ${seed}: ${name}`, async () => {
        await runSeed(seed, seed + offset, name, powerLoss, journalBytes);
      }, 120_000);
    }
  }
});
