// ObjectWriter (src/volume/object_writer.ts) after puts failed: each failure is an error line, and the first put that
// lands again says once that the backend is reachable again, with how long (first failure to landing, on the
// writer's clock) and how many retries. No outage, no such line.

import { expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { ObjectWriter } from "../../src/volume/object_writer.ts";
import type { Clock } from "../../src/util/clock.ts";

function virtualClock(): Clock {
  let nowMs = 0;
  return {
    nowMs: () => nowMs,
    setTimer: () => ({ cancel: () => undefined }),
    sleep: async (ms: number) => void (nowMs += ms),
  };
}

async function putAll(writer: ObjectWriter, seqs: number[]): Promise<void> {
  for (const seq of seqs) {
    await writer.waitForSlot();
    writer.start(seq, new Uint8Array([seq]));
  }
  await writer.waitIdle();
}

test("after failed puts, the first landing says the backend is reachable again, once", async () => {
  const faulty = new FaultyStore(new MemoryStore(), { seed: 1 });
  const logs: string[] = [];
  const fields: unknown[] = [];
  const writer = new ObjectWriter(faulty, "disk", 1, virtualClock(), (line, lineFields) => {
    logs.push(line);
    if (lineFields !== undefined) fields.push(lineFields);
  }, () => {}, 0);
  await putAll(writer, [1]);
  expect(logs).toEqual([]);
  faulty.failNext("putIfAbsent", 3, { transient: false });
  await putAll(writer, [2, 3]);
  expect(logs.length).toBe(4);
  expect(logs.slice(0, 3).every((line) => line.startsWith("error: put of disk.00000002 failed, retrying in 5000 ms"))).toBe(true);
  expect(logs[3]).toBe("warning: backend reachable again after 15.0 s, 3 retries (object puts land again)");
  expect(fields).toEqual([{ outageSeconds: 15, retries: 3 }]);
  expect(writer.durableSeq).toBe(3);
});
