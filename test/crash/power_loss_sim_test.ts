// Crash consistency in simulation (test/sim: memory backend, memory cache device with a crash model), with the crash
// harness's history model: power loss keeps everything a completed FLUSH covered, a process crash keeps every
// acknowledged op, and either way the volume reads as a prefix of the history. Runs the real volume code, no server.
// LSVD_SEED=<n> replays one seed.

import { describe, test } from "bun:test";
import { JOURNAL_RECORD_DATA_BYTES_MAX } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { seedFromEnv } from "../sim/prng.ts";
import { crashWorld, immediateClock, makeWorld, openVolume, SIM_GC, type World } from "../sim/volume_world.ts";
import { BLOCK_BYTES, History, checkPrefix, decodeBlock, stampBlock } from "./_harness.ts";

const VOLUME_BYTES = 2 * 1024 * 1024;
const BATCH_BYTES = 64 * 1024; // openVolume's default in test/sim
const ROUNDS = 6;
const OPS_PER_ROUND_MAX = 300;
const INFLIGHT_MAX = 16;

async function readState(volume: Volume, blocks: number): Promise<Array<number | string>> {
  const bytes = await volume.read(0, blocks * BLOCK_BYTES);
  return Array.from({ length: blocks }, (_, block) => decodeBlock(bytes.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES), block));
}

async function runSeed(seed: number, powerLoss: boolean, journalBytes?: number): Promise<void> {
  const world: World = await makeWorld(seed, { volumeBytes: VOLUME_BYTES, journalBytes });
  const { prng } = world;
  const blocks = VOLUME_BYTES / BLOCK_BYTES;
  const history = new History(blocks, Math.min(BATCH_BYTES, JOURNAL_RECORD_DATA_BYTES_MAX) / BLOCK_BYTES);
  let volume = await openVolume(world, { clock: immediateClock, ...SIM_GC });
  for (let round = 0; round < ROUNDS; round++) {
    const busy = new Uint8Array(blocks);
    const inFlight = new Set<Promise<void>>();
    const ops = 20 + prng.int(OPS_PER_ROUND_MAX);
    for (let index = 0; index < ops; index++) {
      while (inFlight.size >= INFLIGHT_MAX) await Promise.race(inFlight);
      if (prng.chance(0.08)) {
        const bound = history.ackedPrefix();
        const flush = volume.flush().then(
          () => {
            history.flushedBound = Math.max(history.flushedBound, bound);
          },
          () => {}, // the crash below fails what the dead incarnation still had in flight
        );
        inFlight.add(flush);
        void flush.finally(() => inFlight.delete(flush));
        continue;
      }
      const count = prng.chance(0.8) ? 1 + prng.int(4) : 5 + prng.int(40);
      const block = prng.int(blocks - count + 1);
      let free = true;
      for (let b = block; b < block + count; b++) free &&= busy[b] === 0;
      if (!free) continue;
      const roll = prng.int(100);
      const op = history.add(roll < 80 ? "write" : roll < 90 ? "trim" : "zero", block, count);
      busy.fill(1, block, block + count);
      let request: Promise<void>;
      if (op.kind === "write") {
        const data = new Uint8Array(count * BLOCK_BYTES);
        for (let b = 0; b < count; b++) stampBlock(data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES), op.id, block + b);
        request = volume.write(block * BLOCK_BYTES, data, prng.chance(0.05));
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
      if (prng.chance(0.3)) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    // Crash with whatever is in flight.
    const lowerBound = powerLoss ? history.flushedBound : Math.max(history.maxAcked(), history.flushedBound);
    crashWorld(world, volume, { powerLoss });
    volume = await openVolume(world, { clock: immediateClock, ...SIM_GC });
    const observed = await readState(volume, blocks);
    const check = checkPrefix(history, observed, lowerBound);
    if (!check.ok) {
      throw new Error(`seed ${seed} round ${round} (${powerLoss ? "power loss" : "process crash"}): ${check.message}\n${world.logs.slice(-10).join("\n")}`);
    }
    history.nextRound(Int32Array.from(observed as number[]));
  }
  await volume.close();
}

describe("crash simulation with the harness's history model", () => {
  const base = seedFromEnv(1);
  const seeds = process.env.LSVD_SEED ? [base] : Array.from({ length: 6 }, (_, index) => base + index);
  for (const seed of seeds) {
    test(`seed ${seed}: power loss keeps every flushed op, state is a prefix`, async () => {
      await runSeed(seed + 5000, true);
    }, 60_000);
    test(`seed ${seed}: process crash keeps every acknowledged op, state is a prefix`, async () => {
      await runSeed(seed + 6000, false);
    }, 60_000);
    test(`seed ${seed}: power loss with a small journal (wrap-around, back-pressure)`, async () => {
      await runSeed(seed + 7000, true, 640 * 1024);
    }, 60_000);
  }
});
