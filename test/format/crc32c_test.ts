import { describe, expect, test } from "bun:test";
import { crc32c } from "../../src/format/crc32c.ts";
import { crc32cBitwise, seededRandom } from "./_helpers.ts";

const ascii = (text: string) => new TextEncoder().encode(text);

describe("crc32c", () => {
  test("check value and RFC 3720 vectors", () => {
    expect(crc32c(ascii("123456789"))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  test("matches the bitwise definition at every length, alignment and content", () => {
    const random = seededRandom("crc32c lengths");
    const backing = Uint8Array.from({ length: 600 }, () => random.int(256));
    for (let offset = 0; offset < 8; offset++) {
      for (let length = 0; length <= 300; length++) {
        const slice = backing.subarray(offset, offset + length);
        expect(crc32c(slice)).toBe(crc32cBitwise(slice));
      }
    }
  });

  test("seed continues over several buffers", () => {
    const random = seededRandom("crc32c chaining");
    for (let round = 0; round < 50; round++) {
      const data = Uint8Array.from({ length: random.int(5000) }, () => random.int(256));
      const cut1 = random.int(data.length + 1);
      const cut2 = cut1 + random.int(data.length - cut1 + 1);
      let crc = crc32c(data.subarray(0, cut1));
      crc = crc32c(data.subarray(cut1, cut2), crc);
      crc = crc32c(data.subarray(cut2), crc);
      expect(crc).toBe(crc32c(data));
      expect(crc).toBe(crc32cBitwise(data));
    }
  });

  test("a single bit flip in a page changes the CRC", () => {
    const page = new Uint8Array(4096);
    const clean = crc32c(page);
    for (const bit of [0, 7, 8 * 2048 + 3, 8 * 4096 - 1]) {
      page[bit >>> 3] ^= 1 << (bit & 7);
      expect(crc32c(page)).not.toBe(clean);
      page[bit >>> 3] ^= 1 << (bit & 7);
    }
  });
});
