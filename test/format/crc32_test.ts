import { describe, expect, test } from "bun:test";
import { crc32 } from "../../src/format/crc32.ts";
import { seededRandom, zlibCrc } from "./_helpers.ts";

describe("crc32 (IEEE, zlib)", () => {
  test("check value", () => {
    expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  test("matches node:zlib crc32, and the seed continues", () => {
    const random = seededRandom("crc32 vs zlib");
    for (let round = 0; round < 100; round++) {
      const data = Uint8Array.from({ length: random.int(10000) }, () => random.int(256));
      const slice = data.subarray(random.int(8));
      expect(crc32(slice)).toBe(zlibCrc(slice));
      const cut = random.int(slice.length + 1);
      expect(crc32(slice.subarray(cut), crc32(slice.subarray(0, cut)))).toBe(zlibCrc(slice));
    }
  });
});
