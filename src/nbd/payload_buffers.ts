// A connection's reusable WRITE payload buffers, in size classes: 4 KiB doubling up to NBD_ASSEMBLY_BUFFER_BYTES.
// A payload takes the smallest class that holds it and gives the buffer back when its WRITE is answered (the device
// keeps a payload only until then: nbd/session.ts). So a steady stream of WRITEs allocates nothing once each class
// has as many buffers as the stream keeps in flight; larger payloads get a buffer of their own.
//
// Bound: the idle buffers of one class hold at most NBD_PAYLOAD_IDLE_BYTES_PER_CLASS (at least one buffer, at most one
// per request slot), so a connection keeps at most IDLE_BYTES_MAX (5.5 MiB) once its WRITEs are answered; the rest are
// left to the collector.

import { NBD_ASSEMBLY_BUFFER_BYTES, NBD_INFLIGHT_PER_CONNECTION_MAX, NBD_PAYLOAD_IDLE_BYTES_PER_CLASS } from "../constants.ts";
import { assert } from "../errors.ts";

const SMALLEST_CLASS_BYTES = 4096;

/** Bytes of each class, smallest first. */
export const PAYLOAD_CLASS_BYTES: readonly number[] = (() => {
  const classes: number[] = [];
  for (let bytes = SMALLEST_CLASS_BYTES; bytes <= NBD_ASSEMBLY_BUFFER_BYTES; bytes *= 2) classes.push(bytes);
  assert(classes.at(-1) === NBD_ASSEMBLY_BUFFER_BYTES, "the largest class is the assembly buffer size");
  return classes;
})();

/** The class index of a payload of `length` bytes, or -1 when it is larger than every class. */
export function payloadClassOf(length: number): number {
  assert(Number.isSafeInteger(length) && length > 0, "a payload has bytes");
  if (length > NBD_ASSEMBLY_BUFFER_BYTES) return -1;
  let index = 0;
  while (PAYLOAD_CLASS_BYTES[index]! < length) index++;
  return index;
}

/** Idle buffers a class keeps: its byte bound, at least one, at most one per request slot. */
function idleMaxOf(classBytes: number): number {
  return Math.max(1, Math.min(NBD_INFLIGHT_PER_CONNECTION_MAX, Math.floor(NBD_PAYLOAD_IDLE_BYTES_PER_CLASS / classBytes)));
}

export class PayloadBuffers {
  /** The most idle bytes a connection may hold. */
  static readonly IDLE_BYTES_MAX = PAYLOAD_CLASS_BYTES.reduce((sum, bytes) => sum + idleMaxOf(bytes) * bytes, 0);

  private readonly idle: Uint8Array[][] = PAYLOAD_CLASS_BYTES.map(() => []);
  private readonly idleMax: number[] = PAYLOAD_CLASS_BYTES.map(idleMaxOf);

  /** A buffer of at least `length` bytes (a pooled one up to the largest class, else a new one of exactly that). */
  take(length: number): Uint8Array {
    const index = payloadClassOf(length);
    if (index < 0) return new Uint8Array(length);
    return this.idle[index]!.pop() ?? new Uint8Array(PAYLOAD_CLASS_BYTES[index]!);
  }

  /** Gives back a buffer take() returned; kept if its class has room, else left to the collector. */
  give(buffer: Uint8Array): void {
    const index = PAYLOAD_CLASS_BYTES.indexOf(buffer.byteLength);
    if (index < 0) return;
    const idle = this.idle[index]!;
    if (idle.length < this.idleMax[index]!) idle.push(buffer);
  }

  /** Idle bytes held (checkInvariants bounds it). */
  get idleBytes(): number {
    let bytes = 0;
    for (let index = 0; index < PAYLOAD_CLASS_BYTES.length; index++) bytes += this.idle[index]!.length * PAYLOAD_CLASS_BYTES[index]!;
    return bytes;
  }
}
