// When a durable batch is migrated into the read cache (write-to-read migration, docs/architecture.md, "The read
// path"): the rules below, as data, checked in order; the first whose input holds skips the batch, and a batch no
// rule skips is migrated. A skipped batch's blocks are simply not in the cache: a read fills them from the backend.
//
// The first rule is why sustained writes pay nothing for migration: every migrated byte is written to the cache
// device a second time, and while many client writes wait for their journal records the device is what they wait
// on. After a burst, the batches that become durable once the writes have slowed are still migrated.

import { READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX, READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX } from "../constants.ts";

/** What a rule looks at. */
export type MigrationInput = "writesBusy" | "queueFull" | "overBudget";
export type MigrationDecision = "migrate" | "skipBusy" | "skipQueueFull" | "skipBudget";

export interface MigrationRule {
  skipWhen: MigrationInput;
  decision: Exclude<MigrationDecision, "migrate">;
  says: string;
}

export const MIGRATION_RULES: readonly MigrationRule[] = [
  {
    skipWhen: "writesBusy",
    decision: "skipBusy",
    says:
      `the volume's client writes are busy: more than ${READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX} queued and not yet acknowledged, ` +
      `or more than ${READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX / 1024 / 1024} MiB/s written since the previous durable batch`,
  },
  { skipWhen: "queueFull", decision: "skipQueueFull", says: "the copies already waiting for their slots and this batch's would pass READ_CACHE_ADOPT_BYTES_QUEUED_MAX" },
  { skipWhen: "overBudget", decision: "skipBudget", says: "the migration budget's token bucket does not hold this batch's bytes" },
];

/** A volume's client write load when one of its batches became durable (src/volume/write/write_load.ts). */
export interface WriteLoad {
  /** Client writes and trims queued and not yet acknowledged. */
  clientWritesInFlight: number;
  /** Client bytes written per second since the volume's previous durable batch. */
  bytesPerSecond: number;
}

/** Whether a volume's write load is too high to migrate. */
export function writesBusy(load: WriteLoad): boolean {
  return load.clientWritesInFlight > READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX || load.bytesPerSecond > READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX;
}

/**
 * The decision for one batch. `holds(input)` is asked in the rules' order and only as far as needed, so an input
 * that costs work (the batch's blocks, for the queue and the budget) is found only when the earlier rules pass.
 */
export function migrationDecision(holds: (input: MigrationInput) => boolean): MigrationDecision {
  for (const rule of MIGRATION_RULES) if (holds(rule.skipWhen)) return rule.decision;
  return "migrate";
}
