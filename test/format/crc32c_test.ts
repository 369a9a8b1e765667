import { describe, expect, test } from "bun:test";
import { crc32c, crc32cCombine } from "../../src/format/crc32c.ts";
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

describe("crc32cCombine", () => {
  test("gives the CRC of a ++ b at every cut of buffers up to 300 bytes, and of an empty side", () => {
    const random = seededRandom("crc32c combine cuts");
    const backing = Uint8Array.from({ length: 300 }, () => random.int(256));
    for (let length = 0; length <= 300; length += 1 + (length >> 4)) {
      const whole = backing.subarray(0, length);
      for (let cut = 0; cut <= length; cut++) {
        const a = whole.subarray(0, cut);
        const b = whole.subarray(cut);
        expect(crc32cCombine(crc32c(a), crc32c(b), b.byteLength)).toBe(crc32cBitwise(whole));
      }
    }
  });

  test("at the sizes journal records and batches have, in chains of records", () => {
    const random = seededRandom("crc32c combine records");
    const data = Uint8Array.from({ length: 9 * 65536 + 4096 }, () => random.int(256));
    for (let round = 0; round < 20; round++) {
      let running = 0;
      let at = 0;
      while (at < data.byteLength) {
        const bytes = Math.min(data.byteLength - at, 4096 * (1 + random.int(20)) + (round % 2) * random.int(512));
        running = crc32cCombine(running, crc32c(data.subarray(at, at + bytes)), bytes);
        at += bytes;
      }
      expect(running).toBe(crc32c(data));
    }
  });

  test("is associative at lengths beyond memory (up to 2^50 bytes), and doubles 1 MiB of zeros into 8 MiB exactly", () => {
    const random = seededRandom("crc32c combine large");
    for (let round = 0; round < 200; round++) {
      const [a, b, c] = [random.int(2 ** 32), random.int(2 ** 32), random.int(2 ** 32)];
      const bytesB = random.int(2 ** 25) * 2 ** random.int(26);
      const bytesC = random.int(2 ** 25) * 2 ** random.int(26);
      const leftFirst = crc32cCombine(crc32cCombine(a, b, bytesB), c, bytesC);
      const rightFirst = crc32cCombine(a, crc32cCombine(b, c, bytesC), bytesB + bytesC);
      expect(leftFirst).toBe(rightFirst);
    }
    let doubled = crc32c(new Uint8Array(1 << 20));
    for (let bytes = 1 << 20; bytes < 8 << 20; bytes *= 2) doubled = crc32cCombine(doubled, doubled, bytes);
    expect(doubled).toBe(crc32c(new Uint8Array(8 << 20)));
  });

  test("refuses what is not a CRC or a byte count", () => {
    expect(() => crc32cCombine(-1, 0, 1)).toThrow();
    expect(() => crc32cCombine(0, 2 ** 32, 1)).toThrow();
    expect(() => crc32cCombine(0, 0, -1)).toThrow();
    expect(() => crc32cCombine(0, 0, 1.5)).toThrow();
    expect(crc32cCombine(0x12345678, 0, 0)).toBe(0x12345678);
  });
});
