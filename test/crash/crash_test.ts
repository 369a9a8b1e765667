// Crash tests of the real server: writes over NBD, SIGKILL at random points, damage to the cache or the backend,
// restart, and a full read checked against the write history (cases and promises: _cases.ts; model: _harness.ts).
// A few seeds per case keep this short; bench/crash_matrix.ts runs many. LSVD_SEED=<n> runs one seed of each case,
// LSVD_CRASH_SEEDS=<n> runs n seeds; LSVD_KEEP=1 keeps a failing seed's temp dir; LSVD_BIN=dist/lsvd tests the binary.

import { describe, expect, test } from "bun:test";
import { CRASH_CASES, runCrashCase, type CrashCase } from "./_cases.ts";

const SEEDS_PER_CASE: Record<CrashCase, number> = { intact: 3, wiped: 3, "wiped-large": 3, "objects-lost": 3, "journal-torn": 3, "recovery-crash": 2 };
const CASE_TIMEOUT_MS = 120_000;

function seedsFor(crashCase: CrashCase): number[] {
  if (process.env.LSVD_SEED) return [Number(process.env.LSVD_SEED)];
  const count = process.env.LSVD_CRASH_SEEDS ? Number(process.env.LSVD_CRASH_SEEDS) : SEEDS_PER_CASE[crashCase];
  return Array.from({ length: count }, (_, index) => 1 + index);
}

describe("crash: real server, SIGKILL, restart", () => {
  for (const crashCase of CRASH_CASES) {
    for (const seed of seedsFor(crashCase)) {
      test(`${crashCase}, seed ${seed}`, async () => {
        const result = await runCrashCase(crashCase, seed, { rounds: 2 });
        if (result.failure) throw new Error(result.failure);
        expect(result.killPoints).toBeGreaterThanOrEqual(2);
        expect(result.rounds.length).toBe(2);
        expect(result.opsAcked).toBeGreaterThan(0);
      }, CASE_TIMEOUT_MS);
    }
  }
});

/** The same cases through the daemon form of serve (one seed each; bench/crash_matrix.ts --daemon runs many). */
describe("crash: a daemon's export, SIGKILL, restart", () => {
  const seed = process.env.LSVD_SEED ? Number(process.env.LSVD_SEED) : 1;
  for (const crashCase of CRASH_CASES) {
    test(`${crashCase}, seed ${seed}`, async () => {
      const result = await runCrashCase(crashCase, seed, { rounds: 2, daemon: true });
      if (result.failure) throw new Error(result.failure);
      expect(result.killPoints).toBeGreaterThanOrEqual(2);
      expect(result.opsAcked).toBeGreaterThan(0);
    }, CASE_TIMEOUT_MS);
  }
});
