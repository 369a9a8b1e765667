// Snapshots in the deterministic simulation (test/sim/volume_sim.ts, snapshot_tracker.ts): creates and deletes
// interleaved with random I/O, garbage collection on its timer, crashes between steps and at crash points; every
// snapshot the superblock lists is read back and compared with the model after every recovery and at the end; the
// same on a clone of a clone (its snapshots read through the chain), whose bases must not change. A
// failure prints the command that replays its seed (LSVD_SEED=<n>).

import { describe, expect, test } from "bun:test";
import { seedFromEnv } from "../sim/prng.ts";
import { replayCommand, simulate } from "../sim/volume_sim.ts";

const FILE = "test/volume/snapshot_sim_test.ts";
const totals = { created: 0, deleted: 0, checks: 0, gcDeleted: 0 };

describe("snapshot simulation", () => {
  const base = seedFromEnv(1);
  const seeds = process.env.LSVD_SEED ? [base] : Array.from({ length: 4 }, (_, index) => base + index);
  for (const seed of seeds) {
    test(`seed ${seed}: snapshots among random I/O, GC and crashes`, async () => {
      const result = await simulate(seed + 5000, { crashes: true, snapshots: true, steps: 500 }, replayCommand(seed, FILE, "snapshots among random I/O, GC and crashes"));
      totals.created += result.snapshots!.created;
      totals.deleted += result.snapshots!.deleted;
      totals.checks += result.snapshots!.checks;
      totals.gcDeleted += result.gc.deleted;
    }, 120_000);
    test(`seed ${seed}: snapshots of a clone of a clone among random I/O, GC and crashes; the bases never change`, async () => {
      const what = "snapshots of a clone of a clone among random I/O, GC and crashes; the bases never change";
      const result = await simulate(seed + 6000, { crashes: true, snapshots: true, clone: true, cloneOfClone: true, steps: 400 }, replayCommand(seed, FILE, what));
      totals.created += result.snapshots!.created;
      totals.checks += result.snapshots!.checks;
    }, 120_000);
  }
  if (seeds.length > 1) {
    test("the seeds made, deleted and checked snapshots while GC deleted objects", () => {
      console.log(`snapshot_sim_test: ${totals.created} snapshots made, ${totals.deleted} deleted, ${totals.checks} snapshot reads checked, ${totals.gcDeleted} objects deleted by GC`);
      expect(totals.created).toBeGreaterThan(0);
      expect(totals.deleted).toBeGreaterThan(0);
      expect(totals.checks).toBeGreaterThan(0);
      expect(totals.gcDeleted).toBeGreaterThan(0);
    });
  }
});
