// Test helpers for the format codecs: a byte builder for hand-made fixtures (independent of the encoders), a
// bitwise CRC-32C reference, and loops that corrupt or truncate bytes and demand CorruptionError.

import { expect } from "bun:test";
import { crc32 as zlibCrc32 } from "node:zlib";
import { CorruptionError } from "../../src/errors.ts";

/** Bit-at-a-time CRC-32C, straight from the definition: the reference the fast one is checked against. */
export function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function zlibCrc(data: Uint8Array): number {
  return zlibCrc32(data) >>> 0;
}

/** Little-endian bytes, appended field by field. */
export class ByteBuilder {
  private readonly bytes: number[] = [];
  get length(): number {
    return this.bytes.length;
  }
  u8(value: number): this {
    this.bytes.push(value & 0xff);
    return this;
  }
  u16(value: number): this {
    return this.u8(value).u8(value >>> 8);
  }
  u32(value: number): this {
    return this.u16(value & 0xffff).u16(Math.floor(value / 0x10000));
  }
  u64(value: number | bigint): this {
    const big = BigInt(value);
    for (let i = 0n; i < 8n; i++) this.u8(Number((big >> (8n * i)) & 0xffn));
    return this;
  }
  ascii(text: string): this {
    for (const char of text) this.u8(char.charCodeAt(0));
    return this;
  }
  /** "01234567-89ab-..." as its 16 raw bytes, parsed here rather than with the uuid package. */
  uuid(text: string): this {
    const hex = text.replaceAll("-", "");
    expect(hex.length).toBe(32);
    for (let i = 0; i < 32; i += 2) this.u8(Number.parseInt(hex.slice(i, i + 2), 16));
    return this;
  }
  raw(data: Iterable<number>): this {
    for (const byte of data) this.u8(byte);
    return this;
  }
  zeros(count: number): this {
    for (let i = 0; i < count; i++) this.u8(0);
    return this;
  }
  padTo(length: number): this {
    expect(this.bytes.length).toBeLessThanOrEqual(length);
    return this.zeros(length - this.bytes.length);
  }
  build(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

export function setU32(bytes: Uint8Array, offset: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setUint32(offset, value >>> 0, true);
}

export function getU32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset, true);
}

/** CRC of bytes with the 4-byte fields at `zeroed` read as zero (computed on a copy). */
export function crcWithZeroed(bytes: Uint8Array, zeroed: number[], crc: (data: Uint8Array) => number): number {
  const copy = bytes.slice();
  for (const offset of zeroed) copy.fill(0, offset, offset + 4);
  return crc(copy);
}

/** Recomputes the CRCs of a backend object header (our layout when extCrcOffset is given), after a deliberate edit. */
export function resealObject(header: Uint8Array, extCrcOffset: number | null): void {
  if (extCrcOffset !== null) setU32(header, extCrcOffset, crcWithZeroed(header, [40, extCrcOffset], crc32cBitwise));
  setU32(header, 40, crcWithZeroed(header, [40], zlibCrc));
}

export function expectCorruption(run: () => unknown): CorruptionError {
  let caught: unknown = null;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  if (!(caught instanceof CorruptionError)) {
    throw new Error(`expected CorruptionError, got ${caught === null ? "no error" : String(caught)}`);
  }
  return caught;
}

/** Flips every byte in [start, end) of `bytes`, one at a time, and demands that decode throws CorruptionError. */
export function expectEveryFlipDetected(bytes: Uint8Array, decode: (corrupted: Uint8Array) => unknown, start = 0, end = bytes.byteLength): void {
  const corrupted = bytes.slice();
  for (let i = start; i < end; i++) {
    corrupted[i] = bytes[i]! ^ 0xff;
    try {
      expectCorruption(() => decode(corrupted));
    } catch (error) {
      throw new Error(`flipping byte ${i}: ${(error as Error).message}`);
    }
    corrupted[i] = bytes[i]!;
  }
}

/** Every proper prefix of `bytes` must be rejected with CorruptionError. */
export function expectEveryTruncationRejected(bytes: Uint8Array, decode: (truncated: Uint8Array) => unknown, end = bytes.byteLength): void {
  for (let length = 0; length < end; length++) {
    try {
      expectCorruption(() => decode(bytes.slice(0, length)));
    } catch (error) {
      throw new Error(`truncating to ${length} bytes: ${(error as Error).message}`);
    }
  }
}

/** Deterministic PRNG (mulberry32): randomized tests print their seed and replay with LSVD_SEED. */
export function seededRandom(label: string): { next: () => number; int: (limit: number) => number; seed: number } {
  const seed = process.env.LSVD_SEED !== undefined ? Number(process.env.LSVD_SEED) : (Math.random() * 2 ** 32) >>> 0;
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  console.log(`${label}: LSVD_SEED=${seed}`);
  return { next, int: (limit: number) => Math.floor(next() * limit), seed };
}

export const VOL_UUID = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
export const CACHE_UUID = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";
export const BASE_UUID = "11111111-2222-4333-8444-555555555555";

/**
 * For each named edit: a fresh object from `make`, the edit, both header CRCs made valid again (so the structural
 * check itself is what must reject it), then `decode` must throw CorruptionError. A miss names the edit.
 */
export function expectEachEditRejected(
  edits: Array<[string, (bytes: Uint8Array) => unknown]>,
  make: () => Uint8Array,
  extCrcOffset: number | null,
  decode: (bytes: Uint8Array) => unknown,
): void {
  for (const [name, edit] of edits) {
    const bytes = make();
    edit(bytes);
    resealObject(bytes, extCrcOffset);
    let error: Error;
    try {
      error = expectCorruption(() => decode(bytes));
    } catch (failure) {
      throw new Error(`${name}: ${(failure as Error).message}`);
    }
    expect(error.message).toContain("Cannot decode");
  }
}
