import { describe, expect, test } from "bun:test";
import { decodeLease, encodeLease, LEASE_FIXED_BYTES, LeaseState, type LeaseRecord } from "../../src/format/lease_object.ts";
import {
  ByteBuilder,
  CACHE_UUID,
  VOL_UUID,
  crc32cBitwise,
  crcWithZeroed,
  expectCorruption,
  expectEveryFlipDetected,
  expectEveryTruncationRejected,
  seededRandom,
  setU32,
} from "./_helpers.ts";

const value: LeaseRecord = {
  state: LeaseState.Held,
  epoch: 7,
  durationMs: 30_000,
  acquiredAtMs: 1_760_000_000_000,
  renewedAtMs: 1_760_000_010_000,
  cookie: VOL_UUID,
  bootId: CACHE_UUID,
  pid: 4242,
  processStartTicks: 123_456,
  host: "h1",
  command: "serve",
  addresses: ["nbd+unix:///?socket=/s"],
};

function reseal(bytes: Uint8Array): void {
  setU32(bytes, 8, crcWithZeroed(bytes, [8], crc32cBitwise));
}

/** The lease above, byte by byte (independent of the encoder). */
function handMade(): Uint8Array {
  const address = "nbd+unix:///?socket=/s";
  const b = new ByteBuilder()
    .ascii("LSVL").u32(1).u32(0).u32(96 + 3 + 6 + 1 + 1 + address.length)
    .u32(1).u32(30_000).u64(7).u64(1_760_000_000_000).u64(1_760_000_010_000)
    .uuid(VOL_UUID).uuid(CACHE_UUID).u64(123_456).u32(4242).u32(0);
  expect(b.length).toBe(LEASE_FIXED_BYTES);
  b.u8(2).ascii("h1").u8(5).ascii("serve").u8(1).u8(address.length).ascii(address);
  const bytes = b.build();
  reseal(bytes);
  return bytes;
}

describe("lease object", () => {
  test("encoder output equals the hand-made bytes, and decodes back", () => {
    expect(encodeLease(value)).toEqual(handMade());
    expect(decodeLease(handMade())).toEqual(value);
  });

  test("randomized round trips", () => {
    const random = seededRandom("lease round trips");
    const text = (max: number) => "h".repeat(1 + random.int(max - 2)) + (random.int(2) ? "é" : "");
    for (let round = 0; round < 300; round++) {
      const acquiredAtMs = random.int(2 ** 50);
      const lease: LeaseRecord = {
        state: ([LeaseState.Held, LeaseState.Released, LeaseState.Broken] as const)[random.int(3)]!,
        epoch: 1 + random.int(2 ** 53 - 1),
        durationMs: 1 + random.int(24 * 3600 * 1000),
        acquiredAtMs,
        renewedAtMs: acquiredAtMs + random.int(2 ** 40),
        cookie: VOL_UUID,
        bootId: random.int(2) ? CACHE_UUID : "00000000-0000-0000-0000-000000000000",
        pid: random.int(2 ** 32),
        processStartTicks: random.int(2 ** 53),
        host: text(250),
        command: text(60),
        addresses: Array.from({ length: random.int(9) }, () => text(250)),
      };
      const bytes = encodeLease(lease);
      expect(decodeLease(bytes)).toEqual(lease);
      expect(bytes.byteLength).toBeLessThanOrEqual(4096);
    }
  });

  test("every single-byte corruption and every truncation is detected; longer objects too", () => {
    expectEveryFlipDetected(handMade(), decodeLease);
    expectEveryTruncationRejected(handMade(), decodeLease);
    const longer = new Uint8Array(handMade().byteLength + 1);
    longer.set(handMade());
    expectCorruption(() => decodeLease(longer));
  });

  test("foreign objects are refused: another record's magic, a future version, a superblock", () => {
    const foreign = handMade();
    foreign.set([0x4c, 0x53, 0x56, 0x44], 0); // "LSVD": a backend object, not a lease
    reseal(foreign);
    expect(expectCorruption(() => decodeLease(foreign)).message).toContain("bad magic");
    const future = handMade();
    setU32(future, 4, 2);
    reseal(future);
    expect(expectCorruption(() => decodeLease(future)).message).toContain("unsupported version 2");
    expectCorruption(() => decodeLease(new Uint8Array(4096)));
    expectCorruption(() => decodeLease(new Uint8Array(5000)));
  });

  test("structurally wrong records are refused even with a valid CRC", () => {
    const edits: [string, (b: Uint8Array) => void][] = [
      ["record_bytes wrong", (b) => setU32(b, 12, b.byteLength - 1)],
      ["state 0", (b) => setU32(b, 16, 0)],
      ["state 4", (b) => setU32(b, 16, 4)],
      ["duration 0", (b) => setU32(b, 20, 0)],
      ["duration above a day", (b) => setU32(b, 20, 24 * 3600 * 1000 + 1)],
      ["epoch 0", (b) => b.fill(0, 24, 32)],
      ["epoch past 2^53", (b) => (b[31] = 0x80)],
      ["renewed before acquired", (b) => b.fill(0, 40, 48)],
      ["cookie not a UUID", (b) => (b[48 + 6] = 0)],
      ["reserved not zero", (b) => setU32(b, 92, 1)],
      ["host length 0", (b) => (b[96] = 0)],
      ["host runs past the record", (b) => (b[96] = 200)],
      ["command too long", (b) => (b[99] = 65)],
      ["too many addresses", (b) => (b[105] = 9)],
      ["an address missing", (b) => (b[105] = 2)],
      ["host not UTF-8", (b) => (b[97] = 0xff)],
    ];
    for (const [name, edit] of edits) {
      const bytes = handMade();
      edit(bytes);
      reseal(bytes);
      try {
        expectCorruption(() => decodeLease(bytes));
      } catch (error) {
        throw new Error(`${name}: ${(error as Error).message}`);
      }
    }
    // Bytes after the last address (record_bytes and the CRC made to agree): refused.
    const trailing = new Uint8Array(handMade().byteLength + 1);
    trailing.set(handMade());
    setU32(trailing, 12, trailing.byteLength);
    reseal(trailing);
    expect(expectCorruption(() => decodeLease(trailing)).message).toContain("after the last address");
  });

  test("encode refuses what decode would refuse", () => {
    expect(() => encodeLease({ ...value, epoch: 0 })).toThrow();
    expect(() => encodeLease({ ...value, durationMs: 0 })).toThrow();
    expect(() => encodeLease({ ...value, renewedAtMs: value.acquiredAtMs - 1 })).toThrow();
    expect(() => encodeLease({ ...value, host: "" })).toThrow();
    expect(() => encodeLease({ ...value, host: "x".repeat(256) })).toThrow();
    expect(() => encodeLease({ ...value, command: "c".repeat(65) })).toThrow();
    expect(() => encodeLease({ ...value, addresses: Array.from({ length: 9 }, () => "a") })).toThrow();
    expect(() => encodeLease({ ...value, cookie: "nope" })).toThrow();
    expect(() => encodeLease({ ...value, state: 9 as LeaseState })).toThrow();
  });
});
