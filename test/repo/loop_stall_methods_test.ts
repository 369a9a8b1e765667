// bench/loop_stalls.sh charges the event loop's time to named methods of the server's classes: each must still be a
// method, or the bench fails when it starts (as it did once a GC rework removed GarbageCollector.scan).

import { expect, test } from "bun:test";
import { LOOP_STALL_METHODS } from "../../bench/_loop_stall_methods.ts";

test("every method the loop-stall sampler wraps exists", () => {
  const missing = LOOP_STALL_METHODS.filter(([proto, method]) => typeof proto[method] !== "function").map(([, , name]) => name);
  expect(missing).toEqual([]);
  expect(new Set(LOOP_STALL_METHODS.map(([, , name]) => name)).size).toBe(LOOP_STALL_METHODS.length);
});
