// The hardware CRC-32C (ISA-L through koffi) must equal the portable one bit for bit, including seed chaining and
// unaligned views, or the journal written with one could not be read with the other.

import { describe, expect, test } from "bun:test";
import { loadIsalCrc32c } from "../../ffi/isal_crc32c.ts";
import { crc32c, crc32cIsAccelerated, crc32cTable, installCrc32cAccelerator } from "../../src/format/crc32c.ts";
import { Prng } from "../sim/prng.ts";

describe("ISA-L crc32c", () => {
  const native = loadIsalCrc32c();

  test("loads (libisal2 is a runtime dependency)", () => {
    expect(native.reason).toBe("");
    expect(native.crc32c).not.toBeNull();
  });

  test("equals the table implementation on random buffers, offsets and seeds", () => {
    const prng = new Prng(7);
    const buffer = new Uint8Array(70_000);
    prng.fill(buffer);
    for (let round = 0; round < 500; round++) {
      const start = prng.int(1000);
      const length = prng.int(round < 100 ? 600 : 65_000);
      const seed = prng.nextU32();
      const view = buffer.subarray(start, start + length);
      expect(native.crc32c!(view, seed)).toBe(crc32cTable(view, seed));
    }
    expect(native.crc32c!(new TextEncoder().encode("123456789"), 0)).toBe(0xe3069283);
  });

  test("crc32c() dispatches to it once installed, and a wrong candidate is refused", () => {
    expect(installCrc32cAccelerator(() => 42)).toBe(false);
    expect(installCrc32cAccelerator(native.crc32c)).toBe(true);
    expect(crc32cIsAccelerated()).toBe(true);
    const data = new Uint8Array(8192).fill(0x5a);
    expect(crc32c(data, 99)).toBe(crc32cTable(data, 99));
    expect(crc32c(data.subarray(1, 4001))).toBe(crc32cTable(data.subarray(1, 4001)));
    installCrc32cAccelerator(null);
    expect(crc32cIsAccelerated()).toBe(false);
  });
});
