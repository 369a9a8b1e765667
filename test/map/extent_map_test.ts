// Tests for src/map/extent_map.ts: hand-written cases for overwrite/trim geometry and chunk boundaries, then a seeded
// randomized comparison against a per-sector reference model. LSVD_SEED=<n> replays one seed of the model test.

import { describe, expect, test } from "bun:test";
import { EXTENT_SECTORS_MAX, VOLUME_SECTORS_MAX } from "../../src/constants.ts";
import { ExtentMap } from "../../src/map/extent_map.ts";

type Extent = [lba: number, sectors: number, obj: number, offset: number];

function extentsOf(map: ExtentMap): Extent[] {
  const out: Extent[] = [];
  map.forEach((lba, sectors, obj, offset) => out.push([lba, sectors, obj, offset]));
  return out;
}

function lookupAll(map: ExtentMap, lba: number, sectors: number): Extent[] {
  const out: Extent[] = [];
  map.lookup(lba, sectors, (pieceLba, pieceSectors, obj, offset) => out.push([pieceLba, pieceSectors, obj, offset]));
  return out;
}

/** Records displaced pieces as [obj, sectors]. */
function recorder(): { calls: Array<[number, number]>; callback: (obj: number, sectors: number) => void } {
  const calls: Array<[number, number]> = [];
  return { calls, callback: (obj, sectors) => calls.push([obj, sectors]) };
}

describe("ExtentMap basics", () => {
  test("empty map", () => {
    const map = new ExtentMap();
    expect(map.extentCount).toBe(0);
    expect(lookupAll(map, 0, 100)).toEqual([]);
    expect(map.trim(0, 100)).toBe(0);
    map.checkInvariants();
  });

  test("insert into gaps keeps order; lookup clips and skips gaps", () => {
    const map = new ExtentMap();
    expect(map.update(100, 10, 3, 0)).toBe(0);
    expect(map.update(0, 10, 1, 0)).toBe(0);
    expect(map.update(50, 10, 2, 0)).toBe(0);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [0, 10, 1, 0],
      [50, 10, 2, 0],
      [100, 10, 3, 0],
    ]);
    expect(lookupAll(map, 5, 100)).toEqual([
      [5, 5, 1, 5],
      [50, 10, 2, 0],
      [100, 5, 3, 0],
    ]);
    expect(lookupAll(map, 10, 40)).toEqual([]);
    expect(lookupAll(map, 109, 1000)).toEqual([[109, 1, 3, 9]]);
  });

  test("overwrite middle splits into three with correct remnant offsets", () => {
    const map = new ExtentMap();
    map.update(0, 100, 7, 1000);
    const displaced = recorder();
    expect(map.update(40, 20, 8, 0, displaced.callback)).toBe(20);
    expect(displaced.calls).toEqual([[7, 20]]);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [0, 40, 7, 1000],
      [40, 20, 8, 0],
      [60, 40, 7, 1060],
    ]);
  });

  test("overwrite start and end trim the old extent", () => {
    const map = new ExtentMap();
    map.update(100, 100, 7, 0);
    const displaced = recorder();
    expect(map.update(90, 20, 8, 0, displaced.callback)).toBe(10);
    expect(map.update(190, 20, 9, 0, displaced.callback)).toBe(10);
    expect(displaced.calls).toEqual([
      [7, 10],
      [7, 10],
    ]);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [90, 20, 8, 0],
      [110, 80, 7, 10],
      [190, 20, 9, 0],
    ]);
  });

  test("overwrite spanning many extents, partial at both ends", () => {
    const map = new ExtentMap({ chunkExtentsMax: 4 });
    for (let i = 0; i < 50; i += 1) map.update(i * 10, 8, i + 1, 0);
    map.checkInvariants();
    const displaced = recorder();
    // [14, 456): cuts extent 1 (10..18) at 14, removes 2..44, cuts extent 45 (450..458) at 456.
    expect(map.update(14, 442, 99, 0, displaced.callback)).toBe(4 + 43 * 8 + 6);
    map.checkInvariants();
    expect(displaced.calls[0]).toEqual([2, 4]);
    expect(displaced.calls.at(-1)).toEqual([46, 6]);
    expect(displaced.calls.length).toBe(45);
    const all = extentsOf(map);
    expect(all.slice(0, 4)).toEqual([
      [0, 8, 1, 0],
      [10, 4, 2, 0],
      [14, 442, 99, 0],
      [456, 2, 46, 6],
    ]);
    expect(all.length).toBe(4 + 4);
    expect(map.extentCount).toBe(8);
  });

  test("exact overwrite reports displaced and replaces in place", () => {
    const map = new ExtentMap();
    map.update(0, 8, 1, 0);
    map.update(16, 8, 2, 0);
    const displaced = recorder();
    expect(map.update(16, 8, 3, 40, displaced.callback)).toBe(8);
    expect(displaced.calls).toEqual([[2, 8]]);
    expect(extentsOf(map)).toEqual([
      [0, 8, 1, 0],
      [16, 8, 3, 40],
    ]);
    map.checkInvariants();
  });

  test("runsMappedTo: the runs of a range still mapped to one object at the matching offsets", () => {
    const map = new ExtentMap();
    map.update(100, 64, 7, 0); // a copy of lba 100..164 taken from object 7 at offset 0
    map.update(110, 4, 9, 0); // overwritten by another object
    map.trim(130, 2); // trimmed
    map.update(140, 10, 7, 500); // same object, but not where the copy came from
    map.update(150, 20, 7, 50); // continues the copy's offsets, then runs past the range
    const runs: Array<[number, number]> = [];
    map.runsMappedTo(100, 64, 7, 0, (lba, sectors) => runs.push([lba, sectors]));
    expect(runs).toEqual([
      [100, 10],
      [114, 16],
      [132, 8],
      [150, 14],
    ]);
    // Pieces that continue each other in the object form one run even where the map keeps two extents (an extent
    // longer than EXTENT_SECTORS_MAX is stored in pieces).
    const split = new ExtentMap();
    split.update(0, EXTENT_SECTORS_MAX + 8, 3, 0);
    expect(split.extentCount).toBe(2);
    const whole: Array<[number, number]> = [];
    split.runsMappedTo(4, EXTENT_SECTORS_MAX, 3, 4, (lba, sectors) => whole.push([lba, sectors]));
    expect(whole).toEqual([[4, EXTENT_SECTORS_MAX]]);
    const none: Array<[number, number]> = [];
    split.runsMappedTo(0, 24, 4, 0, (lba, sectors) => none.push([lba, sectors]));
    expect(none).toEqual([]);
  });

  test("contiguous writes merge; non-contiguous offsets do not", () => {
    const map = new ExtentMap();
    map.update(0, 8, 5, 0);
    map.update(8, 8, 5, 8); // contiguous in lba and offset: merges left
    map.update(24, 8, 5, 24);
    map.update(16, 8, 5, 16); // bridges: merges both sides
    expect(extentsOf(map)).toEqual([[0, 32, 5, 0]]);
    map.update(32, 8, 5, 100); // same object, offset jumps: separate
    map.update(40, 8, 6, 108); // other object: separate
    expect(map.extentCount).toBe(3);
    map.checkInvariants();
    // Exact overwrite that makes a piece contiguous again merges it back.
    map.update(32, 8, 5, 32);
    expect(extentsOf(map)).toEqual([
      [0, 40, 5, 0],
      [40, 8, 6, 108],
    ]);
    // Rewriting the middle with its own location displaces it but leaves one extent.
    const displaced = recorder();
    expect(map.update(10, 4, 5, 10, displaced.callback)).toBe(4);
    expect(displaced.calls).toEqual([[5, 4]]);
    expect(extentsOf(map)).toEqual([
      [0, 40, 5, 0],
      [40, 8, 6, 108],
    ]);
    map.checkInvariants();
  });

  test("trim: middle, edges, spanning, gaps", () => {
    const map = new ExtentMap({ chunkExtentsMax: 4 });
    for (let i = 0; i < 20; i += 1) map.update(i * 10, 10, i + 1, i * 10);
    // All separate objects, so no merging: 20 extents.
    expect(map.extentCount).toBe(20);
    const displaced = recorder();
    expect(map.trim(5, 3, displaced.callback)).toBe(3);
    expect(map.trim(35, 30, displaced.callback)).toBe(30);
    expect(map.trim(1000, 10, displaced.callback)).toBe(0);
    map.checkInvariants();
    expect(extentsOf(map).slice(0, 5)).toEqual([
      [0, 5, 1, 0],
      [8, 2, 1, 8],
      [10, 10, 2, 10],
      [20, 10, 3, 20],
      [30, 5, 4, 30],
    ]);
    expect(lookupAll(map, 30, 40)).toEqual([
      [30, 5, 4, 30],
      [65, 5, 7, 65],
    ]);
    expect(displaced.calls).toEqual([
      [1, 3],
      [4, 5],
      [5, 10],
      [6, 10],
      [7, 5],
    ]);
    expect(map.trim(0, 200)).toBe(200 - 33);
    expect(map.extentCount).toBe(0);
    map.checkInvariants();
    map.update(3, 1, 1, 0);
    expect(extentsOf(map)).toEqual([[3, 1, 1, 0]]);
  });

  test("clear empties the map", () => {
    const map = new ExtentMap({ chunkExtentsMax: 4 });
    for (let i = 0; i < 100; i += 1) map.update(i * 2, 1, 1, i * 7);
    map.clear();
    expect(map.extentCount).toBe(0);
    expect(extentsOf(map)).toEqual([]);
    map.checkInvariants();
    map.update(0, 1, 1, 0);
    expect(map.extentCount).toBe(1);
  });

  test("high LBAs (above 2^32) and the 2^36 boundary round-trip", () => {
    const map = new ExtentMap();
    const high = 2 ** 35 + 12345;
    map.update(high, 16, 0xffffffff, 0xffffffff - 16);
    map.update(VOLUME_SECTORS_MAX - 8, 8, 2, 0);
    map.update(2 ** 32 - 4, 8, 3, 0); // straddles 2^32
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [2 ** 32 - 4, 8, 3, 0],
      [high, 16, 0xffffffff, 0xffffffff - 16],
      [VOLUME_SECTORS_MAX - 8, 8, 2, 0],
    ]);
    expect(lookupAll(map, 2 ** 32, 2)).toEqual([[2 ** 32, 2, 3, 4]]);
    map.update(high + 4, 4, 5, 0);
    expect(lookupAll(map, high, 16)).toEqual([
      [high, 4, 0xffffffff, 0xffffffff - 16],
      [high + 4, 4, 5, 0],
      [high + 8, 8, 0xffffffff, 0xffffffff - 8],
    ]);
    map.checkInvariants();
  });

  test("extents longer than EXTENT_SECTORS_MAX are stored in pieces", () => {
    const map = new ExtentMap();
    const cap = EXTENT_SECTORS_MAX;
    const sectors = 2 * cap + 100;
    map.update(10, sectors, 4, 100);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [10, cap, 4, 100],
      [10 + cap, cap, 4, 100 + cap],
      [10 + 2 * cap, 100, 4, 100 + 2 * cap],
    ]);
    // A hole near the end of the second piece leaves a 20-sector remnant that now fits together with the 100-sector
    // third piece, so invariant 5 requires them to merge.
    map.update(10 + 2 * cap - 30, 10, 9, 0);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [10, cap, 4, 100],
      [10 + cap, cap - 30, 4, 100 + cap],
      [10 + 2 * cap - 30, 10, 9, 0],
      [10 + 2 * cap - 20, 120, 4, 100 + 2 * cap - 20],
    ]);
    const displaced = recorder();
    expect(map.trim(0, VOLUME_SECTORS_MAX, displaced.callback)).toBe(sectors);
    expect(map.extentCount).toBe(0);
    map.checkInvariants();
  });

  test("a trim's left remnant merges with a neighbour it was kept apart from by EXTENT_SECTORS_MAX", () => {
    const cap = EXTENT_SECTORS_MAX;
    for (const cut of ["trim", "update"]) {
      const map = new ExtentMap();
      map.update(10, 100, 4, 100);
      map.update(110, cap, 4, 200); // contiguous, but 100 + cap does not fit one extent
      expect(map.extentCount).toBe(2);
      if (cut === "trim") map.trim(140, 10);
      else map.update(140, 10, 9, 0);
      map.checkInvariants();
      expect(extentsOf(map)[0]).toEqual([10, 130, 4, 100]);
      expect(extentsOf(map).at(-1)).toEqual([150, cap - 40, 4, 240]);
    }
  });

  test("asserts bad arguments", () => {
    const map = new ExtentMap();
    expect(() => map.update(-1, 8, 1, 0)).toThrow();
    expect(() => map.update(0.5, 8, 1, 0)).toThrow();
    expect(() => map.update(0, 0, 1, 0)).toThrow();
    expect(() => map.update(0, 8, 0, 0)).toThrow();
    expect(() => map.update(0, 8, 2 ** 32, 0)).toThrow();
    expect(() => map.update(0, 8, 1, -1)).toThrow();
    expect(() => map.update(0, 8, 1, 2 ** 32 - 4)).toThrow();
    expect(() => map.update(VOLUME_SECTORS_MAX - 4, 8, 1, 0)).toThrow();
    expect(() => map.trim(0, 0)).toThrow();
    expect(() => map.lookup(0, -1, () => {})).toThrow();
    expect(() => map.updateIfUnchanged(0, 8, 0, 0, 1, 0)).toThrow();
    expect(() => new ExtentMap({ chunkExtentsMax: 3 })).toThrow();
    expect(map.extentCount).toBe(0);
  });
});

describe("ExtentMap chunk boundaries", () => {
  test("ascending appends fill chunks completely", () => {
    const map = new ExtentMap({ chunkExtentsMax: 8 });
    for (let i = 0; i < 800; i += 1) map.update(i * 2, 1, 1 + (i % 3), 0);
    map.checkInvariants();
    const perChunkBytes = 8 * 16;
    // 100 full chunks plus the small index; halving would need ~200 chunks.
    expect(map.bytesUsed()).toBeLessThan(110 * (perChunkBytes + 96) + 4096);
  });

  test("descending inserts fill chunks from the front", () => {
    const map = new ExtentMap({ chunkExtentsMax: 8 });
    for (let i = 799; i >= 0; i -= 1) map.update(i * 2, 1, 1 + (i % 3), 0);
    map.checkInvariants();
    expect(map.bytesUsed()).toBeLessThan(110 * (8 * 16 + 96) + 4096);
    expect(extentsOf(map).length).toBe(800);
  });

  test("splits, lending, and removal at every position of small chunks", () => {
    for (const chunkExtentsMax of [4, 5, 8]) {
      for (let hole = 0; hole < 40; hole += 1) {
        const map = new ExtentMap({ chunkExtentsMax });
        for (let i = 0; i < 40; i += 1) if (i !== hole) map.update(i * 4, 2, 1 + (i % 2), 0);
        map.checkInvariants();
        map.update(hole * 4, 2, 9, 0); // insert into a full chunk at each position
        map.checkInvariants();
        expect(extentsOf(map).map((extent) => extent[0])).toEqual(Array.from({ length: 40 }, (_, i) => i * 4));
        map.trim(hole * 4 + 1, 4); // trims across a neighbour, possibly across a chunk boundary
        map.checkInvariants();
        map.trim(hole * 4, 160); // drops every chunk from the hole on
        map.checkInvariants();
        expect(extentsOf(map).length).toBe(hole);
      }
    }
  });

  test("removing everything chunk by chunk merges sparse chunks and empties the map", () => {
    const map = new ExtentMap({ chunkExtentsMax: 8 });
    for (let i = 0; i < 200; i += 1) map.update(i * 3, 2, 1 + (i % 2), 0);
    // White-box: chunk count is policy, not API. Scattered removals would leave most chunks nearly empty but alive;
    // merging sparse chunks frees them (their slots are reused, see the next test).
    const chunkCount = (): number => (map as unknown as { chunkCount: number }).chunkCount;
    const fullChunks = chunkCount();
    for (let i = 0; i < 200; i += 1) {
      const index = (i * 37) % 200;
      map.trim(index * 3, 2);
      map.checkInvariants();
      if (i === 175) expect(chunkCount()).toBeLessThan(fullChunks * 0.5);
    }
    expect(map.extentCount).toBe(0);
  });

  test("slots of removed chunks are reused, so churn does not grow memory", () => {
    const map = new ExtentMap({ chunkExtentsMax: 8 });
    const fill = (obj: number): void => {
      for (let i = 0; i < 500; i += 1) map.update(((i * 7919) % 500) * 2, 1, obj, i);
    };
    fill(1);
    const bytes: number[] = [];
    for (let round = 0; round < 5; round += 1) {
      map.trim(0, 1000);
      expect(map.extentCount).toBe(0);
      fill(2 + round);
      map.checkInvariants();
      bytes.push(map.bytesUsed());
    }
    // The first round grows the free list once; after that the same slots are reused each round.
    expect(new Set(bytes.slice(1)).size).toBe(1);
    expect(bytes[0]).toBe(bytes[1]!);
  });
});

describe("ExtentMap storage segments", () => {
  test("a map spanning several segments keeps order through inserts, trims and refills", () => {
    // 2048-extent chunks are 32 KiB, so a 1 MiB segment holds 32 of them; ~60 chunks need a second segment.
    const map = new ExtentMap({ chunkExtentsMax: 2048 });
    const slots = 100_000;
    // Ascending (append path) keeps this fast; random orders with small chunks are covered by the model test.
    for (let slot = 0; slot < slots; slot += 1) map.update(slot * 4, 2, 1 + (slot % 1000), slot);
    map.checkInvariants();
    expect(map.bytesUsed()).toBeGreaterThan(1024 * 1024);
    expect(map.extentCount).toBe(slots);
    let expected = 0;
    let wrong = 0;
    map.forEach((lba, sectors, obj, offset) => {
      if (lba !== expected * 4 || sectors !== 2 || obj !== 1 + (expected % 1000) || offset !== expected) wrong += 1;
      expected += 1;
    });
    expect([expected, wrong]).toEqual([slots, 0]);
    // Trim the middle half: whole chunks go, and their slots are reused by the refill.
    map.trim(slots, slots * 2);
    map.checkInvariants();
    expect(map.extentCount).toBe(slots / 2);
    const bytes = map.bytesUsed();
    for (let slot = slots / 4; slot < (slots * 3) / 4; slot += 1) map.update(slot * 4, 2, 1 + (slot % 1000), slot);
    map.checkInvariants();
    expect(map.extentCount).toBe(slots);
    expect(map.bytesUsed()).toBeLessThanOrEqual(bytes);
  });
});

describe("ExtentMap.updateIfUnchanged", () => {
  test("remaps only pieces that still point to the expected location", () => {
    const map = new ExtentMap({ chunkExtentsMax: 4 });
    // Object 5 was written as one 64-sector run at lba 100..164, offsets 0..64.
    map.update(100, 64, 5, 0);
    // Later overwrites: [110, 120) by obj 6, [130, 140) trimmed, [150, 152) rewritten by obj 5 at another offset.
    map.update(110, 10, 6, 0);
    map.trim(130, 10);
    map.update(150, 2, 5, 500);
    const displaced = recorder();
    // GC copies obj 5's data area [0, 64) to obj 9 at offset 1000.
    expect(map.updateIfUnchanged(100, 64, 5, 0, 9, 1000, displaced.callback)).toBe(64 - 10 - 10 - 2);
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [100, 10, 9, 1000],
      [110, 10, 6, 0],
      [120, 10, 9, 1020],
      [140, 10, 9, 1040],
      [150, 2, 5, 500],
      [152, 12, 9, 1052],
    ]);
    expect(displaced.calls.every(([obj]) => obj === 5)).toBe(true);
    expect(displaced.calls.reduce((sum, [, sectors]) => sum + sectors, 0)).toBe(42);
  });

  test("a sub-range and no-match leave the rest alone", () => {
    const map = new ExtentMap();
    map.update(0, 32, 5, 100);
    expect(map.updateIfUnchanged(8, 8, 5, 108, 7, 0)).toBe(8);
    expect(map.updateIfUnchanged(16, 8, 5, 0, 7, 8)).toBe(0); // wrong expected offset
    expect(map.updateIfUnchanged(16, 8, 4, 116, 7, 8)).toBe(0); // wrong expected object
    map.checkInvariants();
    expect(extentsOf(map)).toEqual([
      [0, 8, 5, 100],
      [8, 8, 7, 0],
      [16, 16, 5, 116],
    ]);
    // Relocating the neighbour right after it in the same target object merges the two.
    expect(map.updateIfUnchanged(16, 16, 5, 116, 7, 8)).toBe(16);
    expect(extentsOf(map)).toEqual([
      [0, 8, 5, 100],
      [8, 24, 7, 0],
    ]);
    map.checkInvariants();
  });
});

// ---- randomized model test ----

/** sfc32: small, fast, seedable; good enough to drive a test. */
function makeRandom(seed: number): (limit: number) => number {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = seed >>> 0;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i += 1) next();
  return (limit) => Math.floor(next() * limit);
}

const MODEL_SECTORS = 512;
const MODEL_OBJECTS = 6;

/** Per-sector reference: objs[x] == 0 means unmapped. */
class Model {
  readonly objs = new Uint32Array(MODEL_SECTORS);
  readonly offsets = new Float64Array(MODEL_SECTORS);

  /** Maps the range and returns the sectors displaced per object. */
  update(lba: number, sectors: number, obj: number, offset: number): Map<number, number> {
    const displaced = this.trim(lba, sectors);
    for (let i = 0; i < sectors; i += 1) {
      this.objs[lba + i] = obj;
      this.offsets[lba + i] = offset + i;
    }
    return displaced;
  }

  trim(lba: number, sectors: number): Map<number, number> {
    const displaced = new Map<number, number>();
    for (let x = lba; x < lba + sectors && x < MODEL_SECTORS; x += 1) {
      const obj = this.objs[x]!;
      if (obj !== 0) displaced.set(obj, (displaced.get(obj) ?? 0) + 1);
      this.objs[x] = 0;
    }
    return displaced;
  }

  /** Canonical extents: maximal runs contiguous in lba, obj and offset. */
  extents(from = 0, to = MODEL_SECTORS): Extent[] {
    const out: Extent[] = [];
    for (let x = from; x < to; x += 1) {
      const obj = this.objs[x]!;
      if (obj === 0) continue;
      const last = out.at(-1);
      if (last && last[0] + last[1] === x && last[2] === obj && last[3] + last[1] === this.offsets[x]) last[1] += 1;
      else out.push([x, 1, obj, this.offsets[x]!]);
    }
    return out;
  }

  liveSectors(): Map<number, number> {
    const live = new Map<number, number>();
    for (const obj of this.objs) if (obj !== 0) live.set(obj, (live.get(obj) ?? 0) + 1);
    return live;
  }
}

function sumOf(values: Iterable<number>): number {
  let sum = 0;
  for (const value of values) sum += value;
  return sum;
}

function runModel(seed: number, chunkExtentsMax: number, operations: number): void {
  const random = makeRandom(seed);
  const map = new ExtentMap({ chunkExtentsMax });
  const model = new Model();
  // Live sectors per object according to the map's displaced callbacks.
  const live = new Map<number, number>();
  let written = 0;
  let displacedTotal = 0;
  let opDisplaced = new Map<number, number>();
  const onDisplaced = (obj: number, sectors: number): void => {
    expect(sectors).toBeGreaterThan(0);
    opDisplaced.set(obj, (opDisplaced.get(obj) ?? 0) + sectors);
    live.set(obj, (live.get(obj) ?? 0) - sectors);
    displacedTotal += sectors;
  };
  const addLive = (obj: number, sectors: number): void => {
    live.set(obj, (live.get(obj) ?? 0) + sectors);
    written += sectors;
  };
  const randomRange = (): [number, number] => {
    const lba = random(MODEL_SECTORS);
    const sectors = 1 + random(random(4) === 0 ? 200 : 24);
    return [lba, Math.min(sectors, MODEL_SECTORS - lba)];
  };
  for (let op = 0; op < operations; op += 1) {
    const context = `seed ${seed} chunkExtentsMax ${chunkExtentsMax} op ${op}`;
    opDisplaced = new Map();
    const kind = random(10);
    let expected: Map<number, number> | undefined;
    let returned = -1;
    if (kind < 6) {
      const [lba, sectors] = randomRange();
      const obj = 1 + random(MODEL_OBJECTS);
      // Offsets equal to the lba make neighbouring writes of one object contiguous, exercising merges.
      const offset = random(3) === 0 ? random(1000) : lba;
      expected = model.update(lba, sectors, obj, offset);
      returned = map.update(lba, sectors, obj, offset, onDisplaced);
      addLive(obj, sectors);
    } else if (kind < 8) {
      const [lba, sectors] = randomRange();
      expected = model.trim(lba, sectors);
      returned = map.trim(lba, sectors, onDisplaced);
    } else if (kind < 9) {
      // GC relocation: expect what some sector currently maps to, so matches are common but not total.
      const [lba, sectors] = randomRange();
      const probe = lba + random(sectors);
      const expectObj = model.objs[probe] || 1 + random(MODEL_OBJECTS);
      const expectOffset = Math.max(0, (model.objs[probe] ? model.offsets[probe]! : random(600)) - (probe - lba));
      const obj = 1 + random(MODEL_OBJECTS);
      const offset = random(1000);
      expected = new Map();
      let remapped = 0;
      for (let x = lba; x < lba + sectors; x += 1) {
        if (model.objs[x] === expectObj && model.offsets[x] === expectOffset + (x - lba)) {
          model.objs[x] = obj;
          model.offsets[x] = offset + (x - lba);
          remapped += 1;
        }
      }
      if (remapped > 0) expected.set(expectObj, remapped);
      returned = map.updateIfUnchanged(lba, sectors, expectObj, expectOffset, obj, offset, onDisplaced);
      addLive(obj, remapped);
    } else {
      const [lba, sectors] = randomRange();
      const pieces = lookupAll(map, lba, sectors);
      expect(pieces, context).toEqual(model.extents(lba, lba + sectors).map(([x, n, o, off]) => [x, n, o, off]));
    }
    map.checkInvariants();
    if (expected) {
      expect(opDisplaced, context).toEqual(expected);
      expect(returned, context).toBe(sumOf(expected.values()));
    }
    // The whole map is the canonical form of the model (invariant 5), checked every op.
    expect(extentsOf(map), context).toEqual(model.extents());
    expect(map.extentCount).toBe(model.extents().length);
    const modelLive = model.liveSectors();
    for (const [obj, sectors] of live) expect(sectors, `${context} obj ${obj}`).toBe(modelLive.get(obj) ?? 0);
    expect(displacedTotal + sumOf(modelLive.values()), context).toBe(written);
  }
}

describe("ExtentMap randomized against a per-sector model", () => {
  const replay = process.env.LSVD_SEED;
  const cases: Array<[seed: number, chunkExtentsMax: number]> =
    replay !== undefined
      ? [4, 5, 8, 16].map((chunkExtentsMax) => [Number(replay), chunkExtentsMax])
      : [
          [1, 4],
          [2, 5],
          [3, 8],
          [4, 16],
          [5, 4],
          [6, 256],
        ];
  for (const [seed, chunkExtentsMax] of cases) {
    test(`seed ${seed}, chunkExtentsMax ${chunkExtentsMax}`, () => {
      console.log(`extent map model test: seed ${seed} chunkExtentsMax ${chunkExtentsMax} (LSVD_SEED=${seed} replays)`);
      runModel(seed, chunkExtentsMax, 2500);
    });
  }
});

describe("ExtentMap.copyExtentWords", () => {
  /** The words copyExtentWords writes, decoded back into extents. */
  function copiedExtents(map: ExtentMap, slack = 0): Extent[] {
    const words = new Uint32Array(map.extentCount * 4 + slack).fill(0xdeadbeef);
    expect(map.copyExtentWords(words)).toBe(map.extentCount);
    for (let at = map.extentCount * 4; at < words.length; at += 1) expect(words[at]).toBe(0xdeadbeef); // nothing past the end
    return Array.from({ length: map.extentCount }, (_, index) => {
      const at = index * 4;
      return [(words[at + 1]! & 0xf) * 2 ** 32 + words[at]!, words[at + 1]! >>> 4, words[at + 2]!, words[at + 3]!] as Extent;
    });
  }

  test("every extent in lba order, as forEach visits them, across many chunks and high lbas", () => {
    for (const chunkExtentsMax of [4, 7, 256]) {
      const map = new ExtentMap({ chunkExtentsMax });
      expect(copiedExtents(map)).toEqual([]);
      for (let i = 0; i < 3000; i += 1) map.update(((i * 7919) % 4001) * 8, 8, 1 + (i % 13), i * 8);
      map.update(2 ** 35 + 3, 24, 0xffffffff, 0xffffffff - 24);
      map.update(VOLUME_SECTORS_MAX - 8, 8, 2, 0);
      map.trim(800, 1600); // leaves chunks partly full
      map.checkInvariants();
      expect(copiedExtents(map, 5)).toEqual(extentsOf(map));
    }
  });

  test("refuses a destination too small", () => {
    const map = new ExtentMap();
    map.update(0, 8, 1, 0);
    map.update(16, 8, 1, 8);
    expect(() => map.copyExtentWords(new Uint32Array(7))).toThrow(/words hold 2 extents/);
  });
});
