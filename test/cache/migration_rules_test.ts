// Write-to-read migration's rules (src/cache/migration_rules.ts): every combination of the inputs against the
// decision written out by hand, the inputs asked only as far as needed, and the write-load bounds' edges.

import { describe, expect, test } from "bun:test";
import { MIGRATION_RULES, migrationDecision, writesBusy, type MigrationDecision, type MigrationInput } from "../../src/cache/migration_rules.ts";
import { READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX, READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX } from "../../src/constants.ts";

const INPUTS: MigrationInput[] = ["writesBusy", "queueFull", "overBudget"];

/** [writesBusy, queueFull, overBudget] -> decision, all eight rows. */
const EXPECTED: Array<[boolean, boolean, boolean, MigrationDecision]> = [
  [false, false, false, "migrate"],
  [false, false, true, "skipBudget"],
  [false, true, false, "skipQueueFull"],
  [false, true, true, "skipQueueFull"],
  [true, false, false, "skipBusy"],
  [true, false, true, "skipBusy"],
  [true, true, false, "skipBusy"],
  [true, true, true, "skipBusy"],
];

describe("write-to-read migration rules", () => {
  test("every combination of the inputs gets the decision of the table; inputs are asked in order, no further than needed", () => {
    expect(EXPECTED.length).toBe(2 ** INPUTS.length);
    for (const [busy, full, over, decision] of EXPECTED) {
      const values: Record<MigrationInput, boolean> = { writesBusy: busy, queueFull: full, overBudget: over };
      const asked: MigrationInput[] = [];
      const got = migrationDecision((input) => {
        asked.push(input);
        return values[input];
      });
      expect(`${busy} ${full} ${over} ${got}`).toBe(`${busy} ${full} ${over} ${decision}`);
      const decidedBy = INPUTS.findIndex((input) => values[input]);
      expect(asked).toEqual(decidedBy === -1 ? INPUTS : INPUTS.slice(0, decidedBy + 1));
    }
  });

  test("each input has one rule, write load first", () => {
    expect(MIGRATION_RULES.map((rule) => rule.skipWhen)).toEqual(INPUTS);
    for (const rule of MIGRATION_RULES) expect(rule.says.length).toBeGreaterThan(0);
  });

  test("the write load is busy above either bound (writes in flight, bytes a second), not at it", () => {
    const rate = READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX;
    for (let inFlight = 0; inFlight <= 64; inFlight++) {
      for (const bytesPerSecond of [0, rate - 1, rate, rate + 1, 10 * rate]) {
        const busy = inFlight > READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX || bytesPerSecond > rate;
        expect(`${inFlight} ${bytesPerSecond} ${writesBusy({ clientWritesInFlight: inFlight, bytesPerSecond })}`).toBe(`${inFlight} ${bytesPerSecond} ${busy}`);
      }
    }
  });
});
