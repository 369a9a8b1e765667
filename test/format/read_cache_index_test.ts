// The read cache index page codec (src/format/read_cache_index.ts, docs/format.md "Read cache index page"): a round
// trip keeps every entry in place; any damage, a page written at the wrong place or another volume's page is refused.

import { describe, expect, test } from "bun:test";
import { CorruptionError } from "../../src/errors.ts";
import { decodeIndexPage, encodeIndexPage, indexSplit, INDEX_ENTRIES_PER_PAGE, type IndexEntry } from "../../src/format/read_cache_index.ts";

const VOL = "6c1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e01";
const OTHER = "0b7f3c52-8d0e-4c3a-9a55-1d1f0c3b7e02";

function entries(): Array<IndexEntry | null> {
  const list: Array<IndexEntry | null> = Array.from({ length: INDEX_ENTRIES_PER_PAGE }, () => null);
  list[0] = { block: 0, seq: 1, offsetSectors: 0, dataCrc: 0 };
  list[5] = { block: 2 ** 40, seq: 0xffffffff, offsetSectors: 16376, dataCrc: 0xdeadbeef };
  list[INDEX_ENTRIES_PER_PAGE - 1] = { block: 7, seq: 3, offsetSectors: 8, dataCrc: 1 };
  return list;
}

describe("read cache index page", () => {
  test("round trip: entries in their positions, empty slots stay empty", () => {
    expect(decodeIndexPage(encodeIndexPage(3, VOL, entries()), 3, VOL)).toEqual(entries());
  });

  test("a flipped bit, a page read at another place, another volume's page, a zero page are refused", () => {
    const page = encodeIndexPage(3, VOL, entries());
    for (const offset of [0, 4, 8, 12, 20, 40, 2000, 4095]) {
      const damaged = page.slice();
      damaged[offset]! ^= 0x10;
      expect(() => decodeIndexPage(damaged, 3, VOL)).toThrow(CorruptionError);
    }
    expect(() => decodeIndexPage(page, 4, VOL)).toThrow(/holds page 3/);
    expect(() => decodeIndexPage(page, 3, OTHER)).toThrow(/belongs to volume/);
    expect(() => decodeIndexPage(new Uint8Array(4096), 0, VOL)).toThrow(/bad magic/);
  });

  test("the split names every slot with the fewest index pages", () => {
    for (const pages of [1, 2, 169, 170, 171, 340, 341, 8191, 262144]) {
      const { indexPages, slots } = indexSplit(pages);
      expect(indexPages + slots).toBe(pages);
      expect(indexPages * INDEX_ENTRIES_PER_PAGE).toBeGreaterThanOrEqual(slots);
      expect((indexPages - 1) * INDEX_ENTRIES_PER_PAGE).toBeLessThan(pages - indexPages + 1);
    }
  });
});
