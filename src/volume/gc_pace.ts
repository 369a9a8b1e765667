// Garbage collection pacing (docs/architecture.md, "Garbage collection"): pure functions from what the collector
// observed to what one round may do. No I/O, no clock: the collector measures, these decide, tests check them over
// grids of inputs.
//
// The collector must reclaim space as fast as clients turn data into garbage, whatever the batch size: a budget of
// "one batch's worth per round" cleans 64 KiB a second at --batch-size 64k while clients overwrite tens of MB. So a
// round's budget is counted in garbage bytes. It holds the garbage in the backend's objects near a target share of
// the live data (GC_GARBAGE_TARGET_SHARE): everything above the target, plus what was made since the previous round
// (the rate, fed forward); nothing while the garbage stays below the target, so objects that clients empty
// anyway are not copied first (every byte copied is a byte written twice). Rounds come sooner when garbage is made
// fast relative to the live data.

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
  GC_WAITING_LIVE_SHARE,
  SPACE_HIGH_WATER_RATIO,
  SPACE_HIGH_WATER_THRESHOLD_SHARE,
} from "../constants.ts";
import { assert } from "../errors.ts";

/** What the collector saw at the start of a round (bytes are data-area bytes of DATA objects). */
export interface GcObservation {
  /** Sectors clients overwrote or trimmed since the previous round, in bytes (the collector's own copies excluded). */
  madeBytes: number;
  /** Dead bytes in the objects cleaning may take now: durable, not retired, live share below the threshold. */
  reclaimableBytes: number;
  /** Dead bytes in every durable DATA object not retired (what cleaning works on, candidate or not). */
  garbageBytes: number;
  /** Live bytes: what the volume's map points at. */
  liveBytes: number;
  /** Objects the log gained since the previous round (each will need one delete some day). */
  objectsMade: number;
  /** `lsvd gc`: take every reclaimable byte (subject to the read bound), not a paced share. */
  drain: boolean;
}

export interface GcBudget {
  /** Victims are taken, least live first, until their dead bytes reach this (0: no cleaning this round). */
  reclaimBytes: number;
  /** Victims are read whole: their bytes together stay below this, except that the first one is always taken. */
  readBytesMax: number;
  /** Retired objects this round may delete. */
  deletesMax: number;
}

function checkBytes(value: number, what: string): void {
  assert(Number.isSafeInteger(value) && value >= 0, `gc pacing: ${what} is ${value}, not a byte count`);
}

/** This round's budget. */
export function gcRoundBudget(seen: GcObservation): GcBudget {
  const { madeBytes, reclaimableBytes, garbageBytes, liveBytes, objectsMade, drain } = seen;
  for (const [value, what] of [[madeBytes, "made"], [reclaimableBytes, "reclaimable"], [garbageBytes, "garbage"], [liveBytes, "live"], [objectsMade, "objects made"]] as const) {
    checkBytes(value, what);
  }
  // Where the garbage would be at the next round without cleaning (at the rate just seen), over the target.
  const targetBytes = Math.floor(GC_GARBAGE_TARGET_SHARE * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR));
  const excessBytes = Math.max(0, garbageBytes + madeBytes - targetBytes);
  const reclaimBytes = drain ? reclaimableBytes : Math.min(reclaimableBytes, excessBytes);
  const readBytesMax = Math.min(GC_ROUND_READ_BYTES_MAX, GC_ROUND_READ_FACTOR * reclaimBytes);
  const deletesMax = Math.min(GC_DELETES_PER_ROUND_MAX, Math.max(GC_DELETES_PER_ROUND_MIN, GC_DELETES_RATE_FACTOR * objectsMade));
  return { reclaimBytes, readBytesMax, deletesMax };
}

/**
 * How long until the next round: intervalMs when garbage comes slowly, sooner when the rate seen over the last
 * elapsedMs would make GC_ROUND_GARBAGE_SHARE of the live data garbage before then, never below
 * intervalMs / GC_ROUND_SPEEDUP_MAX; that floor too when the round stopped at its read bound with work left. Never more
 * than GC_ROUND_DELAY_GROWTH_MAX times the previous delay (previousDelayMs): one short window with little garbage in
 * it says little about the rate, and a round a whole interval away is a whole interval of garbage at full speed.
 */
export function gcNextRoundDelayMs(input: { madeBytes: number; elapsedMs: number; liveBytes: number; intervalMs: number; boundHit: boolean; previousDelayMs: number }): number {
  const { madeBytes, elapsedMs, liveBytes, intervalMs, boundHit, previousDelayMs } = input;
  checkBytes(madeBytes, "made");
  checkBytes(liveBytes, "live");
  assert(elapsedMs >= 0 && intervalMs >= 0 && previousDelayMs >= 0, "gc pacing: times are not negative");
  const floor = intervalMs / GC_ROUND_SPEEDUP_MAX;
  if (boundHit) return floor;
  const grown = Math.max(floor, GC_ROUND_DELAY_GROWTH_MAX * previousDelayMs);
  if (madeBytes === 0) return Math.min(intervalMs, grown);
  const untilShare = (GC_ROUND_GARBAGE_SHARE * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR) * elapsedMs) / madeBytes;
  return Math.min(intervalMs, grown, Math.max(floor, untilShare));
}

/**
 * Whether to ask the write path for a checkpoint now. Retired objects are deleted only once every checkpoint the
 * superblock names is newer than their retirement (CHECKPOINTS_KEPT of them), so what waits is freed by at most that
 * many checkpoints. Ask when it is worth it: what waits holds at least GC_CHECKPOINT_PAYBACK times a checkpoint's
 * size, GC_WAITING_LIVE_SHARE of the live data and GC_FORCE_CHECKPOINT_BYTES_MIN (so garbage waiting stays a small
 * share of the backend at every batch size); or when no checkpoint has come for forceCheckpointMs (an idle volume).
 */
export function gcCheckpointDue(input: { waitingBytes: number; checkpointBytes: number; liveBytes: number; sinceCheckpointMs: number; forceCheckpointMs: number }): boolean {
  const { waitingBytes, checkpointBytes, liveBytes, sinceCheckpointMs, forceCheckpointMs } = input;
  checkBytes(waitingBytes, "waiting");
  checkBytes(checkpointBytes, "checkpoint");
  checkBytes(liveBytes, "live");
  if (waitingBytes === 0) return false;
  if (sinceCheckpointMs >= forceCheckpointMs) return true;
  return waitingBytes >= Math.max(GC_CHECKPOINT_PAYBACK * checkpointBytes, GC_WAITING_LIVE_SHARE * liveBytes, GC_FORCE_CHECKPOINT_BYTES_MIN);
}

/**
 * How many checkpoints to ask for back to back once one is due. A retired object is deleted once CHECKPOINTS_KEPT
 * checkpoints newer than its retirement are named; asked for one at a time, each waits for the previous one to be
 * put and named, and what waits sits through all of them in turn. Back to back their puts overlap and only the
 * superblock rewrites follow one another. All of them when what waits pays for all (GC_CHECKPOINT_PAYBACK times their
 * size), else one.
 */
export function gcCheckpointBurst(input: { waitingBytes: number; checkpointBytes: number }): number {
  const { waitingBytes, checkpointBytes } = input;
  checkBytes(waitingBytes, "waiting");
  checkBytes(checkpointBytes, "checkpoint");
  return waitingBytes >= GC_CHECKPOINT_PAYBACK * CHECKPOINTS_KEPT * checkpointBytes ? CHECKPOINTS_KEPT : 1;
}

/** What the space gate knows when a client write arrives, or when a waiting one is looked at again. */
export interface SpaceGateInput {
  /** The write path failed or is closing: nothing will free space for this write. */
  closing: boolean;
  /** This write has waited SPACE_WAIT_MS_MAX already. */
  waitedOut: boolean;
  /** The objects the collector may clean or delete hold more than spaceHighWaterRatio(threshold) x the live data. */
  overHighWater: boolean;
  /** The collector has something it can free: retired objects, or candidates with dead bytes (snapshot pins excluded). */
  reclaimable: boolean;
}

export type SpaceGateAction = "proceed" | "wait";

/**
 * The space gate's rule, first matching row wins (docs/architecture.md, "Space back-pressure"). A write waits only
 * while the backend is over its high-water mark with garbage the collector can free, and never longer than
 * SPACE_WAIT_MS_MAX: so it cannot wait forever on garbage that snapshots pin (left out of the measure and of
 * `reclaimable`), on a collector that cannot progress, or on a write path that is closing.
 */
export const SPACE_GATE_RULES: ReadonlyArray<{ when: Partial<SpaceGateInput>; then: SpaceGateAction; why: string }> = [
  { when: { closing: true }, then: "proceed", why: "the write path is failing or closing: the write goes on to be written or refused" },
  { when: { waitedOut: true }, then: "proceed", why: "bounded: a write waits at most SPACE_WAIT_MS_MAX, freed or not" },
  { when: { overHighWater: false }, then: "proceed", why: "the backend is within its high-water mark" },
  { when: { reclaimable: false }, then: "proceed", why: "nothing the collector can free: waiting would not bring space" },
  { when: {}, then: "wait", why: "over the mark with garbage the collector can free: wait for its progress" },
];

function spaceGateRuleAction(input: SpaceGateInput): SpaceGateAction {
  for (const rule of SPACE_GATE_RULES) {
    const matches = (Object.keys(rule.when) as Array<keyof SpaceGateInput>).every((key) => rule.when[key] === input[key]);
    if (matches) return rule.then;
  }
  assert(false, "the space gate's rules end with a row that matches everything");
}

/** The rules evaluated once for all 16 inputs (every client write asks: no allocation, no walk of the rows). */
const SPACE_GATE_LOOKUP: SpaceGateAction[] = Array.from({ length: 16 }, (_, bits) =>
  spaceGateRuleAction({ closing: (bits & 8) !== 0, waitedOut: (bits & 4) !== 0, overHighWater: (bits & 2) !== 0, reclaimable: (bits & 1) !== 0 }),
);

/** What SPACE_GATE_RULES say for these inputs. */
export function spaceGateDecide(closing: boolean, waitedOut: boolean, overHighWater: boolean, reclaimable: boolean): SpaceGateAction {
  return SPACE_GATE_LOOKUP[(closing ? 8 : 0) | (waitedOut ? 4 : 0) | (overHighWater ? 2 : 0) | (reclaimable ? 1 : 0)]!;
}

export function spaceGateAction(input: SpaceGateInput): SpaceGateAction {
  return spaceGateDecide(input.closing, input.waitedOut, input.overHighWater, input.reclaimable);
}

/**
 * The high-water mark, in times the live data, for a collector that cleans objects less than `threshold` live:
 * SPACE_HIGH_WATER_RATIO, or more where the threshold cannot hold that (SPACE_HIGH_WATER_THRESHOLD_SHARE / threshold);
 * none (Infinity) at threshold 0, where only objects with nothing live are ever freed.
 */
export function spaceHighWaterRatio(threshold: number): number {
  assert(threshold >= 0 && threshold < 1, `a GC threshold in [0, 1), not ${threshold}`);
  if (threshold === 0) return Infinity;
  return Math.max(SPACE_HIGH_WATER_RATIO, SPACE_HIGH_WATER_THRESHOLD_SHARE / threshold);
}

/** Whether the bytes the collector may free stand above spaceHighWaterRatio(threshold) times the live data. */
export function spaceOverHighWater(spaceBytes: number, liveBytes: number, threshold: number): boolean {
  checkBytes(spaceBytes, "space");
  checkBytes(liveBytes, "live");
  return spaceBytes > spaceHighWaterRatio(threshold) * Math.max(liveBytes, GC_LIVE_BYTES_FLOOR);
}
