// WRITE payloads the session must copy (src/nbd/session.ts, nbd/payload_buffers.ts): split across received chunks, or
// in a transient chunk (io_uring's receive buffers, reused once feed() returns). They land in buffers the session
// reuses by size class, and a buffer is reused only once the WRITE it held is answered. Chunks are fed by hand, and
// the device holds every write until the test completes it.

import { expect, test } from "bun:test";
import { NBD_ASSEMBLY_BUFFER_BYTES, NBD_INFLIGHT_PER_CONNECTION_MAX } from "../../src/constants.ts";
import { PAYLOAD_CLASS_BYTES, PayloadBuffers, payloadClassOf } from "../../src/nbd/payload_buffers.ts";
import type { Transport } from "../../src/nbd/output_queue.ts";
import { newNbdStats, type ChunkKeeper, type NbdSession } from "../../src/nbd/session.ts";
import { NBD_CMD_WRITE, encodeRequestHeader } from "../../src/nbd/wire.ts";
import { WritesOnlyDevice, testSession } from "./session_fixtures.ts";

/** Takes every byte, never pauses anything. */
class SinkTransport implements Transport {
  write(data: Uint8Array, byteOffset = 0, byteLength = data.length - byteOffset): number {
    return byteLength;
  }
  pause(): void {}
  resume(): void {}
  end(): void {}
}

interface HeldWrite {
  data: Uint8Array;
  copy: Uint8Array;
  complete: () => void;
}

/** Holds every write (with a copy of its payload as it was given) until the test completes it. */
class HoldingDevice extends WritesOnlyDevice {
  readonly held: HeldWrite[] = [];
  write(_offset: number, data: Uint8Array): Promise<void> {
    return new Promise((complete) => this.held.push({ data, copy: data.slice(), complete }));
  }
}


/** Feeds one WRITE in two chunks, split inside its payload, so that the session must assemble it. */
function feedSplitWrite(session: NbdSession, index: number, payload: Uint8Array): void {
  const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 65536, length: payload.length });
  session.feed(new Uint8Array(Buffer.concat([header, payload.subarray(0, 100)])));
  session.feed(payload.slice(100));
}

function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let index = 0; index < length; index++) bytes[index] = (index * 13 + seed * 101) & 0xff;
  return bytes;
}

/** Lets the promise callbacks of completed writes run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test("split payloads in flight together have their own buffers; answered ones are reused; large ones get a new buffer", async () => {
  const device = new HoldingDevice();
  const session = testSession(device, new SinkTransport());
  const lengths = [512, 4096, 65536, NBD_ASSEMBLY_BUFFER_BYTES, 4096, 65536];
  for (let index = 0; index < lengths.length; index++) feedSplitWrite(session, index, payload(lengths[index]!, index));
  expect(device.held.length).toBe(lengths.length);
  // Every held payload is still what it was when it was given, and is what the client sent.
  for (let index = 0; index < lengths.length; index++) {
    expect(device.held[index]!.data).toEqual(device.held[index]!.copy);
    expect(device.held[index]!.copy).toEqual(payload(lengths[index]!, index));
  }
  const buffersInUse = new Set(device.held.map((write) => write.data.buffer));
  expect(buffersInUse.size).toBe(lengths.length);

  // Answer them; the next split payloads land in the buffers just given back.
  for (const write of device.held.splice(0)) write.complete();
  await settle();
  expect(session.inflight).toBe(0);
  // Three payloads of the 4 KiB class: the three 4 KiB-class buffers given back (512, 4096, 4096 bytes).
  for (let index = 0; index < 3; index++) feedSplitWrite(session, 10 + index, payload(4000 + index, 10 + index));
  for (const write of device.held) expect(buffersInUse.has(write.data.buffer)).toBe(true);
  for (let index = 0; index < 3; index++) expect(device.held[index]!.copy).toEqual(payload(4000 + index, 10 + index));

  // Above NBD_ASSEMBLY_BUFFER_BYTES: a buffer of its own, never one of the reused ones.
  feedSplitWrite(session, 20, payload(NBD_ASSEMBLY_BUFFER_BYTES + 512, 20));
  const large = device.held[3]!;
  expect(buffersInUse.has(large.data.buffer)).toBe(false);
  expect(large.copy).toEqual(payload(NBD_ASSEMBLY_BUFFER_BYTES + 512, 20));
  for (const write of device.held.splice(0)) write.complete();
  await settle();
  session.checkInvariants();
  expect(session.inflight).toBe(0);
});

/** Takes nothing while `full`: the session pauses and keeps the unparsed rest of a chunk in its backlog. */
class PausingTransport extends SinkTransport {
  paused = false;
  override pause(): void {
    this.paused = true;
  }
  override resume(): void {
    this.paused = false;
  }
}

test("a transient chunk (a reused receive buffer): payloads whole in it, split across it and the backlog are copies", async () => {
  const device = new HoldingDevice();
  const transport = new PausingTransport();
  const stats = newNbdStats();
  const session = testSession(device, transport, stats);
  // More WRITEs than the session takes at once, back to back in one chunk, the last one split into the next chunk:
  // the rest waits in the backlog.
  const count = NBD_INFLIGHT_PER_CONNECTION_MAX + 4;
  const parts: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    parts.push(encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 4096, length: 4096 }));
    parts.push(payload(4096, index));
  }
  const stream = new Uint8Array(Buffer.concat(parts));
  const cut = stream.length - 1000;
  const receiveBuffer = new Uint8Array(stream.length);
  const feedTransient = (bytes: Uint8Array): void => {
    receiveBuffer.set(bytes);
    session.feed(receiveBuffer.subarray(0, bytes.length), true);
    receiveBuffer.fill(0xee); // the transport reuses its buffer at once
  };
  feedTransient(stream.subarray(0, cut));
  expect(transport.paused).toBe(true);
  expect(device.held.length).toBe(NBD_INFLIGHT_PER_CONNECTION_MAX);
  feedTransient(stream.subarray(cut));
  // Answer what the device holds, a few rounds, until every WRITE came through. Each payload the device holds must
  // still be what the client sent when it is answered, long after the receive buffer was overwritten.
  let answered = 0;
  for (let round = 0; round < 4 && answered < count; round++) {
    for (const write of device.held.splice(0)) {
      expect(write.data).toEqual(payload(4096, answered));
      answered += 1;
      write.complete();
    }
    await settle();
  }
  expect(answered).toBe(count);
  // Into payload buffers: those parsed from the transient chunk and the split one; the rest lay whole in the
  // backlog, which is the session's own copy of the chunk's rest.
  expect(stats.payloadCopies).toBe(NBD_INFLIGHT_PER_CONNECTION_MAX + 1);
  session.checkInvariants();
  expect(session.inflight).toBe(0);
});

test("payload size classes: 4 KiB doubling to the assembly size; idle buffers bounded per class and in all", () => {
  expect(PAYLOAD_CLASS_BYTES[0]).toBe(4096);
  expect(PAYLOAD_CLASS_BYTES.at(-1)).toBe(NBD_ASSEMBLY_BUFFER_BYTES);
  expect([1, 4096, 4097, 8192, 65536, 65537, NBD_ASSEMBLY_BUFFER_BYTES].map(payloadClassOf)).toEqual([0, 0, 1, 1, 4, 5, 5]);
  expect(payloadClassOf(NBD_ASSEMBLY_BUFFER_BYTES + 1)).toBe(-1);
  const buffers = new PayloadBuffers();
  const taken = Array.from({ length: 2 * NBD_INFLIGHT_PER_CONNECTION_MAX }, () => buffers.take(NBD_ASSEMBLY_BUFFER_BYTES));
  for (const buffer of taken) buffers.give(buffer);
  for (const bytes of PAYLOAD_CLASS_BYTES) {
    const more = Array.from({ length: 2 * NBD_INFLIGHT_PER_CONNECTION_MAX }, () => buffers.take(bytes));
    for (const buffer of more) buffers.give(buffer);
  }
  expect(buffers.idleBytes).toBe(PayloadBuffers.IDLE_BYTES_MAX);
  expect(PayloadBuffers.IDLE_BYTES_MAX).toBeLessThanOrEqual(6 * 1024 * 1024);
  // A buffer above every class is never kept.
  buffers.give(buffers.take(NBD_ASSEMBLY_BUFFER_BYTES + 1));
  expect(buffers.idleBytes).toBe(PayloadBuffers.IDLE_BYTES_MAX);
});

/**
 * Receive buffers a session may keep, with the ring's rule (ffi/uring_buffers.ts): a buffer is out while anyone holds
 * it, and keep() refuses a buffer not yet kept once more than `keptMax` are out.
 */
class TestKeeper implements ChunkKeeper {
  readonly holds = new Map<number, number>();
  constructor(private readonly keptMax: number) {}
  receive(id: number): void {
    expect(this.holds.has(id)).toBe(false);
    this.holds.set(id, 1);
  }
  keep(id: number): boolean {
    const holds = this.holds.get(id)!;
    expect(holds).toBeGreaterThanOrEqual(1);
    if (holds === 1 && this.holds.size > this.keptMax) return false;
    this.holds.set(id, holds + 1);
    return true;
  }
  give(id: number): void {
    const holds = this.holds.get(id)!;
    expect(holds).toBeGreaterThanOrEqual(1);
    if (holds === 1) this.holds.delete(id);
    else this.holds.set(id, holds - 1);
  }
}

test("a transient chunk the transport lets the session keep: whole payloads are views of it until answered", async () => {
  const device = new HoldingDevice();
  const keeper = new TestKeeper(2);
  const stats = newNbdStats();
  const session = testSession(device, new SinkTransport(), stats, keeper);
  const writeAt = (index: number, length: number): Uint8Array[] => [
    encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 65536, length }),
    payload(length, index),
  ];
  // Buffer 7: two whole WRITEs and the head of a third, split into buffer 8 (that one is assembled, not kept).
  const first = Buffer.concat([...writeAt(0, 4096), ...writeAt(1, 65536), ...writeAt(2, 8192)]);
  const cut = first.length - 5000;
  const buffers = new Map<number, Uint8Array>();
  const feedBuffer = (id: number, bytes: Uint8Array): void => {
    const buffer = new Uint8Array(bytes);
    buffers.set(id, buffer);
    keeper.receive(id);
    session.feed(buffer, true, id);
    keeper.give(id);
  };
  feedBuffer(7, first.subarray(0, cut));
  feedBuffer(8, first.subarray(cut));
  expect(device.held.length).toBe(3);
  expect(device.held[0]!.data.buffer).toBe(buffers.get(7)!.buffer);
  expect(device.held[1]!.data.buffer).toBe(buffers.get(7)!.buffer);
  expect(device.held[2]!.data.buffer).not.toBe(buffers.get(7)!.buffer);
  expect(device.held[2]!.data.buffer).not.toBe(buffers.get(8)!.buffer);
  for (let index = 0; index < 3; index++) expect(device.held[index]!.copy).toEqual(payload(device.held[index]!.data.length, index));
  expect([...keeper.holds]).toEqual([[7, 2]]); // buffer 8 went back when feed() returned
  expect(stats.payloadCopies).toBe(1);

  // Two more buffers out: keep() refuses a fourth buffer (3 out > keptMax 2), so its payload is a copy.
  feedBuffer(9, Buffer.concat(writeAt(3, 4096)));
  keeper.receive(20); // a buffer out elsewhere (another connection's receive)
  feedBuffer(10, Buffer.concat(writeAt(4, 4096)));
  keeper.give(20);
  expect(device.held[3]!.data.buffer).toBe(buffers.get(9)!.buffer);
  expect(device.held[4]!.data.buffer).not.toBe(buffers.get(10)!.buffer);
  expect(device.held[4]!.copy).toEqual(payload(4096, 4));
  expect(stats.payloadCopies).toBe(2);
  expect([...keeper.holds.keys()].sort()).toEqual([7, 9]);

  // Answering gives each kept buffer back once its last WRITE is answered.
  device.held[0]!.complete();
  await settle();
  expect(keeper.holds.get(7)).toBe(1);
  for (const write of device.held.splice(0)) write.complete();
  await settle();
  expect(keeper.holds.size).toBe(0);
  session.checkInvariants();
  expect(session.inflight).toBe(0);
});

test("a payload that starts a chunk (its header ended the one before) is whole in it: kept, not copied", async () => {
  const device = new HoldingDevice();
  const keeper = new TestKeeper(8);
  const stats = newNbdStats();
  const session = testSession(device, new SinkTransport(), stats, keeper);
  const feedBuffer = (id: number, bytes: Uint8Array): Uint8Array => {
    const buffer = new Uint8Array(bytes);
    keeper.receive(id);
    session.feed(buffer, true, id);
    keeper.give(id);
    return buffer;
  };
  const header = (index: number, length: number): Uint8Array =>
    encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 65536, length });
  // Header alone, then the payload whole in the next chunk, followed by the next request's header.
  feedBuffer(1, header(0, 65536));
  expect(device.held.length).toBe(0);
  const second = feedBuffer(2, Buffer.concat([payload(65536, 0), header(1, 8192)]));
  expect(device.held.length).toBe(1);
  expect(device.held[0]!.data.buffer).toBe(second.buffer);
  // That header's payload comes in two chunks: assembled, one copy.
  feedBuffer(3, payload(8192, 1).subarray(0, 5000));
  feedBuffer(4, payload(8192, 1).subarray(5000));
  expect(device.held.length).toBe(2);
  expect(device.held[1]!.copy).toEqual(payload(8192, 1));
  expect(stats.payloadCopies).toBe(1);
  expect([...keeper.holds]).toEqual([[2, 1]]); // the kept payload's hold
  session.checkInvariants();
  for (const write of device.held.splice(0)) write.complete();
  await settle();
  expect(keeper.holds.size).toBe(0);
  expect(session.inflight).toBe(0);
});
