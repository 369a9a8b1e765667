// The batching counters of NbdStats (src/nbd/session.ts, output_queue.ts): `receives` counts the socket reads handed
// to a session, `replyWrites` every socket write of its replies, a retry after a partial write included. In process,
// with transports that count their own calls, so the expected figures are exact.

import { expect, test } from "bun:test";
import type { WriteListener } from "../../src/nbd/block_device.ts";
import { OutputQueue, type Transport } from "../../src/nbd/output_queue.ts";
import { newNbdStats } from "../../src/nbd/session.ts";
import { NBD_CMD_WRITE, encodeRequestHeader } from "../../src/nbd/wire.ts";
import { WritesOnlyDevice, testSession } from "./session_fixtures.ts";

/** Takes `budget` bytes per write (all when it is Infinity) and counts its write calls. */
class CountingTransport implements Transport {
  writes = 0;
  budget = Number.POSITIVE_INFINITY;
  write(data: Uint8Array, byteOffset = 0, byteLength = data.length - byteOffset): number {
    this.writes++;
    return Math.min(this.budget, byteLength);
  }
  pause(): void {}
  resume(): void {}
  end(): void {}
}

/** Holds every write until the test answers it (through writeThen, as the volume does). */
class HoldingDevice extends WritesOnlyDevice {
  readonly held: WriteListener[] = [];
  writeThen(_offset: number, _data: Uint8Array, _fua: boolean, listener: WriteListener): void {
    this.held.push(listener);
  }
  write(): Promise<void> {
    throw new Error("not used");
  }
}


/** `count` 4 KiB WRITEs, back to back, as one stream of bytes. */
function writeRequests(first: number, count: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let index = first; index < first + count; index++) {
    parts.push(encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 4096, length: 4096 }));
    parts.push(new Uint8Array(4096).fill(index));
  }
  return new Uint8Array(Buffer.concat(parts));
}

test("a session counts each socket read it is fed and each socket write of its replies", async () => {
  const device = new HoldingDevice();
  const transport = new CountingTransport();
  const stats = newNbdStats();
  const session = testSession(device, transport, stats);
  // 12 WRITEs in 3 reads, the second one split inside a payload; an empty read is not a read.
  const stream = writeRequests(0, 12);
  const cuts = [0, 5 * 4124 + 100, 9 * 4124, stream.length];
  for (let index = 0; index + 1 < cuts.length; index++) session.feed(stream.slice(cuts[index], cuts[index + 1]));
  session.feed(new Uint8Array(0));
  expect(stats.receives).toBe(3);
  expect(device.held.length).toBe(12);
  expect(stats.replyWrites).toBe(0);

  // Two completion bursts in two turns: one socket write each.
  for (const listener of device.held.splice(0, 7)) listener.writeDone();
  await Promise.resolve();
  for (const listener of device.held.splice(0)) listener.writeDone();
  await Promise.resolve();
  expect(stats.replyWrites).toBe(2);
  expect(transport.writes).toBe(2);
  session.checkInvariants();
});

test("replyWrites counts the retries after partial writes and the segments of large payloads", async () => {
  const transport = new CountingTransport();
  const queue = new OutputQueue(transport);
  const counters = { replyWrites: 0 };
  queue.counters = counters;
  for (let round = 0; round < 50; round++) {
    const at = queue.reserve(16);
    queue.staging.fill(round, at, at + 16);
    // Large payloads are queued by reference: they go out as segments of their own.
    queue.appendPayload(new Uint8Array(round % 5 === 0 ? 100_000 : 4096).fill(round));
    transport.budget = (round * 7919) % 30_000;
    if (round % 3 === 0) await Promise.resolve();
    queue.onDrain();
  }
  transport.budget = Number.POSITIVE_INFINITY;
  for (let guard = 0; guard < 1000 && !queue.isEmpty; guard++) {
    queue.flush();
    queue.onDrain();
  }
  expect(queue.isEmpty).toBe(true);
  expect(transport.writes).toBeGreaterThan(50);
  expect(counters.replyWrites).toBe(transport.writes);
});
