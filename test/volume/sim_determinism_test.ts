// The simulator is deterministic: one seed, one run. The same seed simulated twice (crashes at steps and at crash
// points, faults, latency, garbage collection, a small journal that wraps) must give the same digest of every
// operation, its result and the virtual time it completed at; a component that read the wall clock or Math.random
// would make two runs part (mutants in the commit message). LSVD_SEED=<n> checks one seed.

import { describe, expect, test } from "bun:test";
import { seedFromEnv } from "../sim/prng.ts";
import { replayCommand, simulate, type SimOptions } from "../sim/volume_sim.ts";

const FILE = "test/volume/sim_determinism_test.ts";
const STEPS = 250;

/** Where two runs' digest lines first differ, for the failure message. */
function firstDifference(a: string[], b: string[]): string {
  for (let index = 0; index < Math.max(a.length, b.length); index++) {
    if (a[index] !== b[index]) return `line ${index}: "${a[index] ?? "(none)"}" vs "${b[index] ?? "(none)"}"`;
  }
  return "no line differs";
}

async function twice(seed: number, name: string, options: SimOptions): Promise<void> {
  const replay = replayCommand(seed, FILE, name);
  const first = await simulate(seed, options, replay, true);
  const second = await simulate(seed, options, replay, true);
  if (first.digest !== second.digest) {
    throw new Error(`seed ${seed}: two runs differ at ${firstDifference(first.lines!, second.lines!)}\nreplay: ${replay}`);
  }
  expect(first.lines!.length).toBeGreaterThan(STEPS / 2);
}

describe("deterministic simulation", () => {
  const base = seedFromEnv(11);
  const seeds = process.env.LSVD_SEED ? [base] : [base, base + 1];
  for (const seed of seeds) {
    test(`seed ${seed}: the same seed twice gives the same digest (crashes, faults, small journal)`, async () => {
      await twice(seed, "the same seed twice", { crashes: true, journalBytes: 640 * 1024, steps: STEPS });
    }, 240_000);
  }
  test("different seeds give different digests", async () => {
    const options = { crashes: false, steps: 40 };
    const a = await simulate(base, options, replayCommand(base, FILE));
    const b = await simulate(base + 1, options, replayCommand(base + 1, FILE));
    expect(a.digest).not.toBe(b.digest);
  }, 120_000);
});
