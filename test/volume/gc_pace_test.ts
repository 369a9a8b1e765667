// Garbage collection pacing (src/volume/gc_pace.ts): the pure functions that turn what the collector saw into what a
// round may do, checked over grids of inputs from nothing to a terabyte, for the properties the collector relies on;
// and the space gate's rule (spaceGateAction), checked over every combination of its inputs.

import { describe, expect, test } from "bun:test";
import {
  CHECKPOINTS_KEPT,
  GC_CHECKPOINT_PAYBACK,
  GC_DELETES_PER_ROUND_MAX,
  GC_DELETES_PER_ROUND_MIN,
  GC_DELETES_RATE_FACTOR,
  GC_FORCE_CHECKPOINT_BYTES_MIN,
  GC_GARBAGE_TARGET_SHARE,
  GC_LIVE_BYTES_FLOOR,
  GC_ROUND_DELAY_GROWTH_MAX,
  GC_ROUND_GARBAGE_SHARE,
  GC_ROUND_READ_BYTES_MAX,
  GC_ROUND_READ_FACTOR,
  GC_ROUND_SPEEDUP_MAX,
  GC_THRESHOLD_DEFAULT,
  GC_WAITING_LIVE_SHARE,
  SPACE_HIGH_WATER_RATIO,
  SPACE_HIGH_WATER_THRESHOLD_SHARE,
} from "../../src/constants.ts";
import { gcCheckpointBurst, gcCheckpointDue, gcNextRoundDelayMs, gcRoundBudget, SPACE_GATE_RULES, spaceGateAction, spaceHighWaterRatio, spaceOverHighWater, type GcObservation } from "../../src/volume/gc_pace.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const BYTES = [0, 1, 4 * KIB, 64 * KIB, MIB - 1, MIB, 3 * MIB, 16 * MIB, 64 * MIB, 200 * MIB, GIB, 64 * GIB, 1024 * GIB];
const COUNTS = [0, 1, 7, 128, 8191, 8192, 100_000, 10_000_000];
const TIMES = [0, 1, 10, 999, 1000, 30_000, 3_600_000];
const INTERVALS = [0, 2, 1000, 3_600_000, 2 ** 31 - 1];

function* observations(): Generator<GcObservation> {
  for (const madeBytes of BYTES)
    for (const reclaimableBytes of BYTES)
      for (const garbageExtra of [0, MIB, 64 * GIB]) {
        // Reclaimable garbage is part of all garbage.
        const garbageBytes = reclaimableBytes + garbageExtra;
        for (const liveBytes of BYTES)
          for (const objectsMade of COUNTS) for (const drain of [false, true]) yield { madeBytes, reclaimableBytes, garbageBytes, liveBytes, objectsMade, drain };
      }
}

describe("gcRoundBudget", () => {
  test("holds the garbage at its target: reclaims the excess and the rate, nothing below it; reads and deletes bounded", () => {
    let checked = 0;
    for (const seen of observations()) {
      const { reclaimBytes, readBytesMax, deletesMax } = gcRoundBudget(seen);
      const { madeBytes, reclaimableBytes, garbageBytes, liveBytes, objectsMade, drain } = seen;
      const where = JSON.stringify(seen);
      const fail = (what: string) => {
        throw new Error(`${what} for ${where}: ${JSON.stringify({ reclaimBytes, readBytesMax, deletesMax })}`);
      };
      if (!Number.isSafeInteger(reclaimBytes) || reclaimBytes < 0 || reclaimBytes > reclaimableBytes) fail("reclaim outside [0, reclaimable]");
      const targetBytes = GC_GARBAGE_TARGET_SHARE * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR);
      // Above the target: everything above it, and what clients made (the rate), as far as there is anything to
      // take. So garbage never grows past the target while there are candidates to clean.
      if (reclaimBytes < Math.min(reclaimableBytes, garbageBytes + madeBytes - targetBytes - 1)) fail("reclaims less than the excess and the rate");
      if (garbageBytes >= targetBytes && reclaimBytes < Math.min(reclaimableBytes, madeBytes)) fail("falls behind the rate above the target");
      // Below the target (with what the rate adds by the next round): nothing is copied, so objects that clients
      // empty on their own are not copied first. Draining (lsvd gc) takes everything.
      if (drain && reclaimBytes !== reclaimableBytes) fail("drain leaves reclaimable garbage");
      if (!drain && garbageBytes + madeBytes <= targetBytes && reclaimBytes !== 0) fail("copies while the garbage is below the target");
      if (!drain && reclaimBytes > Math.max(0, garbageBytes + madeBytes - targetBytes + 1)) fail("reclaims more than the excess and the rate");
      // Reads: bounded, and enough for the reclaim target whenever victims are below the default threshold.
      if (readBytesMax > GC_ROUND_READ_BYTES_MAX) fail("reads over the round bound");
      if (readBytesMax < Math.min(GC_ROUND_READ_BYTES_MAX, reclaimBytes / (1 - GC_THRESHOLD_DEFAULT))) fail("reads too few for the target");
      // Deletes: bounded, at least the floor, and ahead of the rate objects are made.
      if (deletesMax > GC_DELETES_PER_ROUND_MAX || deletesMax < GC_DELETES_PER_ROUND_MIN) fail("deletes outside [min, max]");
      if (deletesMax < Math.min(GC_DELETES_PER_ROUND_MAX, GC_DELETES_RATE_FACTOR * objectsMade)) fail("deletes fall behind the objects made");
      checked += 1;
    }
    expect(checked).toBe(BYTES.length ** 3 * 3 * COUNTS.length * 2);
  });

  test("more garbage made, more reclaimable or more garbage never means a smaller budget", () => {
    const base: GcObservation = { madeBytes: 0, reclaimableBytes: 0, garbageBytes: 0, liveBytes: 0, objectsMade: 0, drain: false };
    for (const liveBytes of BYTES)
      for (const madeBytes of BYTES)
        for (const reclaimableBytes of BYTES)
          for (const garbageExtra of [0, MIB, GIB]) {
            const seen = { ...base, liveBytes, madeBytes, reclaimableBytes, garbageBytes: reclaimableBytes + garbageExtra };
            const reclaim = gcRoundBudget(seen).reclaimBytes;
            for (const more of [{ madeBytes: madeBytes * 2 + 1 }, { garbageBytes: seen.garbageBytes * 2 + 1 }, { reclaimableBytes: reclaimableBytes + 1, garbageBytes: seen.garbageBytes + 1 }]) {
              const bigger = gcRoundBudget({ ...seen, ...more }).reclaimBytes;
              if (bigger < reclaim) throw new Error(`${JSON.stringify(seen)} + ${JSON.stringify(more)}: ${reclaim} -> ${bigger}`);
            }
          }
  });

  test("the read bound allows the default threshold's victims; inputs that are not byte counts are refused", () => {
    expect(GC_ROUND_READ_FACTOR).toBeGreaterThanOrEqual(1 / (1 - GC_THRESHOLD_DEFAULT));
    const seen: GcObservation = { madeBytes: 0, reclaimableBytes: 0, garbageBytes: 0, liveBytes: 0, objectsMade: 0, drain: false };
    for (const bad of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      for (const key of ["madeBytes", "reclaimableBytes", "garbageBytes", "liveBytes", "objectsMade"] as const) {
        expect(() => gcRoundBudget({ ...seen, [key]: bad })).toThrow("gc pacing");
      }
    }
  });
});

describe("gcNextRoundDelayMs", () => {
  test("sooner as garbage comes faster, so a round comes before GC_ROUND_GARBAGE_SHARE of the live data is made", () => {
    for (const madeBytes of BYTES)
      for (const elapsedMs of TIMES)
        for (const liveBytes of BYTES)
          for (const intervalMs of INTERVALS)
            for (const previousDelayMs of [0, 1, 10, 500, 1000, 3_600_000])
              for (const boundHit of [false, true]) {
                const input = { madeBytes, elapsedMs, liveBytes, intervalMs, boundHit, previousDelayMs };
                const delay = gcNextRoundDelayMs(input);
                const where = JSON.stringify({ ...input, delay });
                const floor = intervalMs / GC_ROUND_SPEEDUP_MAX;
                const grown = Math.max(floor, GC_ROUND_DELAY_GROWTH_MAX * previousDelayMs);
                if (!(delay >= floor && delay <= intervalMs)) throw new Error(`delay outside [interval/${GC_ROUND_SPEEDUP_MAX}, interval]: ${where}`);
                if (boundHit && delay !== floor) throw new Error(`a round cut short by its bound is not followed at once: ${where}`);
                // One quiet window does not push the next round far away: at most GROWTH times the previous delay.
                if (delay > grown) throw new Error(`the delay grew more than ${GC_ROUND_DELAY_GROWTH_MAX}x the previous one: ${where}`);
                if (!boundHit && madeBytes === 0 && delay !== Math.min(intervalMs, grown)) throw new Error(`no garbage, yet sooner than the interval allows: ${where}`);
                // At the rate just seen, the garbage made until the next round stays within the share of the live
                // data, unless the delay is already at its floor.
                if (madeBytes > 0 && delay > floor) {
                  const madeUntilNext = (madeBytes * delay) / Math.max(elapsedMs, Number.MIN_VALUE);
                  if (madeUntilNext > GC_ROUND_GARBAGE_SHARE * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR) * (1 + 1e-9)) throw new Error(`garbage outruns the rounds: ${where}`);
                }
                // Faster garbage never means a later round.
                const faster = gcNextRoundDelayMs({ ...input, madeBytes: madeBytes * 2 + 1 });
                if (faster > delay) throw new Error(`more garbage, later round (${faster}): ${where}`);
              }
  });
});

describe("gcCheckpointDue", () => {
  test("asks when what waits pays for the checkpoint and is a share of the live data, or when none came for long", () => {
    for (const waitingBytes of BYTES)
      for (const checkpointBytes of BYTES)
        for (const liveBytes of BYTES)
          for (const sinceCheckpointMs of TIMES)
            for (const forceCheckpointMs of [0, 30_000, 3_600_000]) {
              const input = { waitingBytes, checkpointBytes, liveBytes, sinceCheckpointMs, forceCheckpointMs };
              const due = gcCheckpointDue(input);
              const where = JSON.stringify({ ...input, due });
              if (waitingBytes === 0) {
                if (due) throw new Error(`a checkpoint with nothing waiting: ${where}`);
                continue;
              }
              if (sinceCheckpointMs >= forceCheckpointMs) {
                if (!due) throw new Error(`garbage kept past forceCheckpointMs: ${where}`);
                continue;
              }
              const worthIt = waitingBytes >= GC_CHECKPOINT_PAYBACK * checkpointBytes && waitingBytes >= GC_FORCE_CHECKPOINT_BYTES_MIN;
              const tooMuchWaits = waitingBytes >= GC_WAITING_LIVE_SHARE * liveBytes;
              if (due !== (worthIt && tooMuchWaits)) throw new Error(`wrong answer: ${where}`);
            }
  });

  test("what waits for a checkpoint is bounded by a share of the live data wherever checkpoints are cheap", () => {
    // A checkpoint maps at most one extent per 4 KiB block plus its objects: 16 bytes per entry. Then the share of
    // the live data, not the payback, decides, once the volume holds more than a few MiB.
    for (const liveBytes of [16 * MIB, 64 * MIB, GIB, 1024 * GIB]) {
      const checkpointBytes = (liveBytes / 4096) * 16 * 2;
      const waitingBytes = Math.ceil(GC_WAITING_LIVE_SHARE * liveBytes);
      expect(gcCheckpointDue({ waitingBytes, checkpointBytes, liveBytes, sinceCheckpointMs: 0, forceCheckpointMs: 30_000 })).toBe(true);
    }
  });
});

describe("gcCheckpointBurst", () => {
  test("all CHECKPOINTS_KEPT back to back exactly when what waits pays for all of them, else one", () => {
    for (const waitingBytes of BYTES)
      for (const checkpointBytes of BYTES) {
        const count = gcCheckpointBurst({ waitingBytes, checkpointBytes });
        // Written out, not the function's formula: the waiting bytes against payback x kept x size, in whole bytes.
        const paysForAll = waitingBytes / checkpointBytes >= GC_CHECKPOINT_PAYBACK * CHECKPOINTS_KEPT || checkpointBytes === 0;
        expect({ waitingBytes, checkpointBytes, count }).toEqual({ waitingBytes, checkpointBytes, count: paysForAll ? CHECKPOINTS_KEPT : 1 });
      }
    // Around the edge: one byte short asks for one.
    for (const checkpointBytes of [1, 4 * KIB, 200 * KIB, 64 * MIB]) {
      const edge = GC_CHECKPOINT_PAYBACK * CHECKPOINTS_KEPT * checkpointBytes;
      expect([gcCheckpointBurst({ waitingBytes: edge - 1, checkpointBytes }), gcCheckpointBurst({ waitingBytes: edge, checkpointBytes })]).toEqual([1, CHECKPOINTS_KEPT]);
    }
  });

  test("more waiting never asks for fewer", () => {
    for (const checkpointBytes of BYTES) {
      let previous = 0;
      for (const waitingBytes of BYTES) {
        const count = gcCheckpointBurst({ waitingBytes, checkpointBytes });
        expect(count).toBeGreaterThanOrEqual(previous);
        previous = count;
      }
    }
  });
});

describe("spaceGateAction (the space gate's rule as data)", () => {
  test("every combination: a write waits only while over the mark with something the collector can free, never past its bound or on close", () => {
    let waits = 0;
    for (const closing of [false, true])
      for (const waitedOut of [false, true])
        for (const overHighWater of [false, true])
          for (const reclaimable of [false, true]) {
            const input = { closing, waitedOut, overHighWater, reclaimable };
            const expected = !closing && !waitedOut && overHighWater && reclaimable ? "wait" : "proceed";
            const action = spaceGateAction(input);
            if (action !== expected) throw new Error(`${JSON.stringify(input)}: ${action}, expected ${expected}`);
            if (action === "wait") waits += 1;
            // Bounded: the same write, once it has waited its bound, always goes.
            expect(spaceGateAction({ ...input, waitedOut: true })).toBe("proceed");
          }
    expect(waits).toBe(1);
  });

  test("every rule is the first to match some input, and the last matches everything", () => {
    const hit = new Set<number>();
    for (const closing of [false, true])
      for (const waitedOut of [false, true])
        for (const overHighWater of [false, true])
          for (const reclaimable of [false, true]) {
            const input = { closing, waitedOut, overHighWater, reclaimable };
            const index = SPACE_GATE_RULES.findIndex((rule) => Object.entries(rule.when).every(([key, value]) => input[key as keyof typeof input] === value));
            hit.add(index);
          }
    expect([...hit].sort()).toEqual(SPACE_GATE_RULES.map((_, index) => index));
    expect(Object.keys(SPACE_GATE_RULES.at(-1)!.when)).toEqual([]);
  });

  test("the high-water mark: over only above SPACE_HIGH_WATER_RATIO times the live data (an empty volume counts as GC_LIVE_BYTES_FLOOR) at the default threshold", () => {
    for (const liveBytes of BYTES)
      for (const spaceBytes of BYTES) {
        const over = spaceOverHighWater(spaceBytes, liveBytes, GC_THRESHOLD_DEFAULT);
        expect(over).toBe(spaceBytes > SPACE_HIGH_WATER_RATIO * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR));
      }
    expect(spaceOverHighWater(2 * MIB, MIB, GC_THRESHOLD_DEFAULT)).toBe(true);
    expect(spaceOverHighWater(MIB + MIB / 2, MIB, GC_THRESHOLD_DEFAULT)).toBe(false);
    expect(() => spaceOverHighWater(-1, MIB, GC_THRESHOLD_DEFAULT)).toThrow();
  });

  test("the mark rises for thresholds the fixed ratio does not fit: never below SPACE_HIGH_WATER_RATIO, none at 0", () => {
    expect(spaceHighWaterRatio(GC_THRESHOLD_DEFAULT)).toBe(SPACE_HIGH_WATER_RATIO);
    expect(spaceHighWaterRatio(0)).toBe(Infinity);
    expect(spaceHighWaterRatio(0.3)).toBeCloseTo(3, 12);
    let previous = Infinity;
    for (let step = 0; step < 100; step++) {
      const threshold = step / 100;
      const ratio = spaceHighWaterRatio(threshold);
      // The fixed ratio, or the share of the worst case 1/threshold the collector can be held to, whichever is more.
      expect(ratio).toBe(threshold === 0 ? Infinity : Math.max(SPACE_HIGH_WATER_RATIO, SPACE_HIGH_WATER_THRESHOLD_SHARE / threshold));
      expect(ratio).toBeGreaterThanOrEqual(SPACE_HIGH_WATER_RATIO);
      expect(ratio).toBeLessThanOrEqual(previous); // a higher threshold never raises the mark
      previous = ratio;
      for (const liveBytes of BYTES)
        for (const spaceBytes of BYTES) {
          expect(spaceOverHighWater(spaceBytes, liveBytes, threshold)).toBe(spaceBytes > ratio * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR));
        }
    }
    // Twice the live data is over the default's mark, not over that of a collector told to clean below 0.3.
    expect(spaceOverHighWater(2 * GIB, GIB, 0.3)).toBe(false);
    expect(spaceOverHighWater(2 * GIB, GIB, 0)).toBe(false);
    expect(() => spaceHighWaterRatio(1)).toThrow();
    expect(() => spaceHighWaterRatio(-0.1)).toThrow();
  });
});
