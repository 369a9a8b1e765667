// The read cache index page codec (src/format/read_cache_index.ts, docs/format.md "Read cache index page"): a round
// trip keeps every entry in place; any damage, a page written at the wrong place, another formatting's page or a
// version 1 page is refused.

import { describe, expect, test } from "bun:test";
import { CorruptionError } from "../../src/errors.ts";
import { decodeIndexPage, encodeIndexPage, indexPageVersion, indexSplit, INDEX_ENTRIES_PER_PAGE, type IndexEntry } from "../../src/format/read_cache_index.ts";

const CACHE = "6c1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e01";
const OTHER = "0b7f3c52-8d0e-4c3a-9a55-1d1f0c3b7e02";
const BASE = "1d2e3f40-8d0e-4c3a-9a55-1d1f0c3b7e03";

function entries(): Array<IndexEntry | null> {
  const list: Array<IndexEntry | null> = Array.from({ length: INDEX_ENTRIES_PER_PAGE }, () => null);
  list[0] = { logUuid: BASE, seq: 1, offsetSectors: 0, dataCrc: 0 };
  list[5] = { logUuid: OTHER, seq: 0xffffffff, offsetSectors: 16376, dataCrc: 0xdeadbeef };
  list[INDEX_ENTRIES_PER_PAGE - 1] = { logUuid: BASE, seq: 3, offsetSectors: 2 ** 21 - 8, dataCrc: 1 };
  return list;
}

describe("read cache index page", () => {
  test("round trip: entries in their positions, empty slots stay empty", () => {
    expect(decodeIndexPage(encodeIndexPage(3, CACHE, entries()), 3, CACHE)).toEqual(entries());
    expect(INDEX_ENTRIES_PER_PAGE).toBe(127);
  });

  test("a flipped bit, a page read at another place, another formatting's page, a zero page, a version 1 page are refused", () => {
    const page = encodeIndexPage(3, CACHE, entries());
    for (const offset of [0, 4, 8, 12, 20, 40, 60, 2000, 4095]) {
      const damaged = page.slice();
      damaged[offset]! ^= 0x10;
      expect(() => decodeIndexPage(damaged, 3, CACHE)).toThrow(CorruptionError);
    }
    expect(() => decodeIndexPage(page, 4, CACHE)).toThrow(/holds page 3/);
    expect(() => decodeIndexPage(page, 3, OTHER)).toThrow(/belongs to cache/);
    expect(() => decodeIndexPage(new Uint8Array(4096), 0, CACHE)).toThrow(/bad magic/);
    const v1 = page.slice();
    new DataView(v1.buffer).setUint32(4, 1, true);
    expect(() => decodeIndexPage(v1, 3, CACHE)).toThrow(/unsupported version 1/);
    expect(indexPageVersion(v1)).toBe(1);
    expect(indexPageVersion(new Uint8Array(4096))).toBe(null);
  });

  test("the split names every slot with the fewest index pages", () => {
    for (const pages of [1, 2, 127, 128, 129, 256, 257, 8191, 262144]) {
      const { indexPages, slots } = indexSplit(pages);
      expect(indexPages + slots).toBe(pages);
      expect(indexPages * INDEX_ENTRIES_PER_PAGE).toBeGreaterThanOrEqual(slots);
      expect((indexPages - 1) * INDEX_ENTRIES_PER_PAGE).toBeLessThan(pages - indexPages + 1);
    }
  });
});
