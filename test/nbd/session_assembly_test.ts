// WRITE payloads split across received chunks (src/nbd/session.ts): they are assembled in buffers the session reuses,
// and a buffer is reused only once the WRITE it held is answered. Chunks are fed by hand, so every payload here is
// split, and the device holds every write until the test completes it.

import { expect, test } from "bun:test";
import { NBD_ASSEMBLY_BUFFER_BYTES } from "../../src/constants.ts";
import type { Transport } from "../../src/nbd/output_queue.ts";
import type { NbdSession } from "../../src/nbd/session.ts";
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
  for (let index = 0; index < 3; index++) feedSplitWrite(session, 10 + index, payload(8192, 10 + index));
  for (const write of device.held) expect(buffersInUse.has(write.data.buffer)).toBe(true);
  for (let index = 0; index < 3; index++) expect(device.held[index]!.copy).toEqual(payload(8192, 10 + index));

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
