// OutputQueue against a transport that takes only part of each write: every byte arrives, once, in order,
// and nothing is written while blocked (between a partial write and drain).

import { expect, test } from "bun:test";
import { OutputQueue, type Transport } from "../../src/nbd/output_queue.ts";

class StingyTransport implements Transport {
  received: number[] = [];
  /** Bytes the "kernel" takes before the next drain. */
  budget = 0;
  writesWhileFull = 0;
  closed = false;
  write(data: Uint8Array, byteOffset = 0, byteLength = data.length - byteOffset): number {
    if (this.closed) return -1;
    if (this.budget === 0) this.writesWhileFull++;
    const take = Math.min(this.budget, byteLength);
    for (let index = 0; index < take; index++) this.received.push(data[byteOffset + index]!);
    this.budget -= take;
    return take;
  }
  pause(): void {}
  resume(): void {}
  end(): void {}
}

function seededBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed;
  for (let index = 0; index < length; index++) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[index] = state >>> 24;
  }
  return bytes;
}

test("partial writes and drains lose and reorder nothing", async () => {
  const transport = new StingyTransport();
  const queue = new OutputQueue(transport);
  let drained = 0;
  queue.onDrained = () => drained++;
  const expected: number[] = [];
  for (let round = 0; round < 200; round++) {
    // Mix small headers written in place, small copied payloads and large payloads queued by reference.
    const header = queue.reserve(16);
    for (let index = 0; index < 16; index++) queue.staging[header + index] = (round + index) & 0xff;
    for (let index = 0; index < 16; index++) expected.push((round + index) & 0xff);
    const payload = seededBytes(round % 7 === 0 ? 100_000 + round : 1 + round * 37, round);
    queue.appendPayload(payload);
    expected.push(...payload);
    transport.budget = (round * 7919) % 50_000;
    if (round % 3 === 0) await Promise.resolve(); // let the microtask flush run sometimes
    queue.onDrain();
  }
  for (let guard = 0; guard < 10_000 && !queue.isEmpty; guard++) {
    transport.budget = 65_536;
    queue.flush();
    queue.onDrain();
  }
  expect(queue.isEmpty).toBe(true);
  expect(transport.received.length).toBe(expected.length);
  expect(Buffer.from(transport.received).equals(Buffer.from(expected))).toBe(true);
  expect(drained).toBeGreaterThan(0);
});

test("one write per turn when the socket takes everything", async () => {
  const transport = new StingyTransport();
  transport.budget = Number.MAX_SAFE_INTEGER;
  let writes = 0;
  const counting: Transport = {
    write: (data, offset, length) => (writes++, transport.write(data, offset, length)),
    pause: () => {},
    resume: () => {},
    end: () => {},
  };
  const queue = new OutputQueue(counting);
  for (let index = 0; index < 32; index++) {
    const at = queue.reserve(16);
    queue.staging.fill(index, at, at + 16);
    queue.appendPayload(new Uint8Array(4096).fill(index));
  }
  expect(writes).toBe(0);
  await Promise.resolve();
  expect(writes).toBe(1);
  expect(transport.received.length).toBe(32 * (16 + 4096));
});

test("a closed transport drops the queue", () => {
  const transport = new StingyTransport();
  transport.closed = true;
  const queue = new OutputQueue(transport);
  queue.appendPayload(new Uint8Array(10));
  queue.flush();
  expect(queue.isClosed).toBe(true);
  expect(queue.isEmpty).toBe(true);
});

test("a failed write reports once, and the closed queue takes nothing more (it stays empty)", () => {
  const transport = new StingyTransport();
  transport.budget = 1 << 20;
  const queue = new OutputQueue(transport);
  let failures = 0;
  queue.onFailed = () => failures++;
  queue.appendPayload(new Uint8Array(100));
  queue.flush();
  expect(transport.received.length).toBe(100);
  transport.closed = true;
  queue.appendPayload(new Uint8Array(10));
  queue.flush();
  expect(failures).toBe(1);
  // Replies of requests still in flight complete after the failure: a session waiting for the queue to empty
  // before it ends must see it empty, or the connection is never closed (issue 12, item 10).
  const at = queue.reserve(16);
  queue.staging.fill(7, at, at + 16);
  queue.appendPayload(new Uint8Array(100_000));
  queue.appendCopy(new Uint8Array(10));
  queue.flush();
  expect(queue.isEmpty).toBe(true);
  expect(queue.queuedBytes).toBe(0);
  expect(failures).toBe(1);
  expect(transport.received.length).toBe(100);
});

test("a queue closed by its owner does not report a failure", () => {
  const transport = new StingyTransport();
  const queue = new OutputQueue(transport);
  let failures = 0;
  queue.onFailed = () => failures++;
  queue.close();
  queue.appendPayload(new Uint8Array(10));
  queue.flush();
  expect(queue.isEmpty).toBe(true);
  expect(failures).toBe(0);
});
