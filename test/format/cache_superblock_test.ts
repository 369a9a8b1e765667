import { describe, expect, test } from "bun:test";
import {
  CACHE_SUPERBLOCK_BYTES,
  decodeCacheSuperblock,
  encodeCacheSuperblock,
  type CacheSuperblock,
} from "../../src/format/cache_superblock.ts";
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

const MIB = 1024 * 1024;
const value: CacheSuperblock = {
  cacheUuid: CACHE_UUID,
  volUuid: VOL_UUID,
  sizeBytes: 1024 * MIB,
  journalStartBytes: 4096,
  journalBytes: 512 * MIB,
  readCacheStartBytes: 4096 + 512 * MIB,
  readCacheBytes: 512 * MIB - 4096,
  startSeq: 2 ** 40 + 5,
  replayOffsetBytes: 4096 * 10,
  replaySeq: 2 ** 40 + 7,
  generation: 3,
};

function reseal(page: Uint8Array): void {
  setU32(page, 8, crcWithZeroed(page, [8], crc32cBitwise));
}

function handMade(): Uint8Array {
  const page = new ByteBuilder()
    .ascii("LSVC").u32(1).u32(0).u32(0)
    .uuid(CACHE_UUID).uuid(VOL_UUID)
    .u64(1024 * MIB).u64(4096).u64(512 * MIB).u64(4096 + 512 * MIB).u64(512 * MIB - 4096)
    .u64(2 ** 40 + 5).u64(4096 * 10).u64(2 ** 40 + 7).u64(3)
    .padTo(4096)
    .build();
  reseal(page);
  return page;
}

describe("cache superblock", () => {
  test("encoder output equals the hand-made page, and decodes back", () => {
    expect(CACHE_SUPERBLOCK_BYTES).toBe(4096);
    expect(encodeCacheSuperblock(value)).toEqual(handMade());
    expect(decodeCacheSuperblock(handMade())).toEqual(value);
  });

  test("randomized round trips", () => {
    const random = seededRandom("cache superblock round trips");
    for (let round = 0; round < 200; round++) {
      const pages = 3 + random.int(2 ** 30);
      const journalPages = 1 + random.int(pages - 2);
      const readCachePages = random.int(pages - 1 - journalPages + 1);
      const readCacheFirst = random.int(2) === 1;
      const startSeq = random.int(2 ** 53 - 2 ** 40);
      const s: CacheSuperblock = {
        cacheUuid: CACHE_UUID,
        volUuid: VOL_UUID,
        sizeBytes: pages * 4096,
        journalStartBytes: (readCacheFirst ? 1 + readCachePages : 1) * 4096,
        journalBytes: journalPages * 4096,
        readCacheStartBytes: (readCacheFirst ? 1 : 1 + journalPages) * 4096,
        readCacheBytes: readCachePages * 4096,
        startSeq,
        replayOffsetBytes: 0,
        replaySeq: startSeq + random.int(2 ** 40),
        generation: random.int(2 ** 53),
      };
      s.replayOffsetBytes = s.journalStartBytes + random.int(journalPages) * 4096;
      expect(decodeCacheSuperblock(encodeCacheSuperblock(s))).toEqual(s);
    }
  });

  test("every single-byte corruption and every truncation is detected", () => {
    expectEveryFlipDetected(handMade(), decodeCacheSuperblock);
    expectEveryTruncationRejected(handMade(), decodeCacheSuperblock);
    expectCorruption(() => decodeCacheSuperblock(new Uint8Array(8192)));
  });

  test("inconsistent layouts are rejected (CRC made valid again) and refused by encode", () => {
    const edits: [keyof CacheSuperblock, number][] = [
      ["sizeBytes", 1024 * MIB + 512],
      ["sizeBytes", 512 * MIB],
      ["journalStartBytes", 0],
      ["journalStartBytes", 4096 + 512],
      ["journalBytes", 0],
      ["journalBytes", 512 * MIB + 4096],
      ["readCacheStartBytes", 8192],
      ["readCacheStartBytes", 0],
      ["readCacheBytes", 512 * MIB],
      ["readCacheBytes", 100],
      ["replayOffsetBytes", 0],
      ["replayOffsetBytes", 4096 + 512 * MIB],
      ["replayOffsetBytes", 4096 * 10 + 1],
      ["replaySeq", 2 ** 40 + 4],
    ];
    const offsets: Partial<Record<keyof CacheSuperblock, number>> = {
      sizeBytes: 48, journalStartBytes: 56, journalBytes: 64, readCacheStartBytes: 72, readCacheBytes: 80,
      startSeq: 88, replayOffsetBytes: 96, replaySeq: 104,
    };
    for (const [field, bad] of edits) {
      expect(() => encodeCacheSuperblock({ ...value, [field]: bad })).toThrow();
      const page = handMade();
      new DataView(page.buffer).setBigUint64(offsets[field]!, BigInt(bad), true);
      reseal(page);
      let error: Error;
      try {
        error = expectCorruption(() => decodeCacheSuperblock(page));
      } catch (failure) {
        throw new Error(`${field} = ${bad}: ${(failure as Error).message}`);
      }
      expect(error.message).toStartWith("Cannot decode cache superblock");
    }
    // A read cache may be empty; then where it "starts" does not matter beyond alignment.
    const empty = { ...value, readCacheStartBytes: 4096, readCacheBytes: 0 };
    expect(decodeCacheSuperblock(encodeCacheSuperblock(empty))).toEqual(empty);
  });

  test("reserved bytes, huge u64s and bad uuids are rejected", () => {
    const cases: ((page: Uint8Array) => void)[] = [
      (page) => (page[12] = 1),
      (page) => (page[4095] = 1),
      (page) => (page[120] = 1),
      (page) => (page[119] = 0x80), // generation > 2^53
      (page) => (page[16 + 6] = 0), // cache uuid version nibble
      (page) => (page[0] = 0),
      (page) => setU32(page, 4, 2),
    ];
    for (const edit of cases) {
      const page = handMade();
      edit(page);
      reseal(page);
      expectCorruption(() => decodeCacheSuperblock(page));
    }
  });
});
