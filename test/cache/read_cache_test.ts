// The SSD read cache: exact data back, misses for anything not whole, invalidation by writes, no caching of data a
// newer write may have replaced, eviction, and a slot reused under a reader.

import { describe, expect, test } from "bun:test";
import { ReadCache } from "../../src/cache/read_cache.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";

const BLOCK = 4096;
const SRC = { seq: 1, offsetSectors: 0 };

function blocks(prng: Prng, count: number): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(count * BLOCK);
  prng.fill(data);
  return data;
}

describe("read cache", () => {
  test("cached blocks read back exactly; a range with any uncached block is a miss", async () => {
    const prng = new Prng(1);
    const cache = new ReadCache(new MemoryCacheDevice(1 << 20, prng), new MemoryPool(), 4096, 64 * BLOCK);
    const data = blocks(prng, 4);
    await cache.insert(10, data, cache.currentEpoch, SRC);
    const out = new Uint8Array(4 * BLOCK);
    expect(await cache.read(10, 4, out)).toBe(true);
    expect(out).toEqual(data);
    expect(await cache.read(9, 2, new Uint8Array(2 * BLOCK))).toBe(false);
    expect(cache.hits).toBe(1);
  });

  test("a write invalidates overlapping blocks, and data fetched before it is not cached", async () => {
    const prng = new Prng(2);
    const cache = new ReadCache(new MemoryCacheDevice(1 << 20, prng), new MemoryPool(), 4096, 64 * BLOCK);
    await cache.insert(0, blocks(prng, 4), cache.currentEpoch, SRC);
    cache.invalidate(8 * 2 + 3, 1); // one sector inside block 2
    expect(await cache.read(0, 2, new Uint8Array(2 * BLOCK))).toBe(true);
    expect(await cache.read(2, 1, new Uint8Array(BLOCK))).toBe(false);
    const epochBeforeFetch = cache.currentEpoch;
    cache.invalidate(1000, 8); // a write lands while the fetch is out
    await cache.insert(20, blocks(prng, 1), epochBeforeFetch, SRC);
    expect(await cache.read(20, 1, new Uint8Array(BLOCK))).toBe(false);
    cache.invalidate(0, 64 * 8 * 8); // a large trim
    expect(cache.cachedBlocks).toBe(0);
  });

  test("the clock evicts when full, and stays within its region", async () => {
    const prng = new Prng(3);
    const device = new MemoryCacheDevice(1 << 20, prng);
    const before = device.data.slice(0, 4096);
    const cache = new ReadCache(device, new MemoryPool(), 4096, 8 * BLOCK);
    const all: Array<Uint8Array<ArrayBuffer>> = [];
    for (let block = 0; block < 20; block++) {
      const data = blocks(prng, 1);
      all.push(data);
      await cache.insert(block, data, cache.currentEpoch, SRC);
    }
    expect(cache.cachedBlocks).toBe(8);
    for (let block = 0; block < 20; block++) {
      const out = new Uint8Array(BLOCK);
      if (await cache.read(block, 1, out)) expect(out).toEqual(all[block]!);
    }
    expect(device.data.slice(0, 4096)).toEqual(before); // page 0 (the superblock) untouched
    expect(device.data.subarray(4096 + 8 * BLOCK).every((byte) => byte === 0)).toBe(true);
  });

  test("a slot reused while a reader waits on the device is a miss, not wrong data", async () => {
    const prng = new Prng(4);
    const cache = new ReadCache(new MemoryCacheDevice(1 << 20, prng), new MemoryPool(), 4096, 1 * BLOCK);
    await cache.insert(5, blocks(prng, 1), cache.currentEpoch, SRC);
    const reading = cache.read(5, 1, new Uint8Array(BLOCK));
    await cache.insert(6, blocks(prng, 1), cache.currentEpoch, SRC); // the only slot goes to block 6
    expect(await reading).toBe(false);
  });
});

const VOL = "6c1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e01";
const OTHER_VOL = "0b7f3c52-8d0e-4c3a-9a55-1d1f0c3b7e02";

describe("read cache persisted index", () => {
  test("entries survive a clean close; a reopen keeps only what the map confirms", async () => {
    const prng = new Prng(11);
    const device = new MemoryCacheDevice(1 << 20, prng);
    const cache = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { volUuid: VOL });
    const data = blocks(prng, 4);
    await cache.insert(10, data, cache.currentEpoch, { seq: 7, offsetSectors: 16 });
    await cache.close();
    const again = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { volUuid: VOL });
    // Block 12 now maps elsewhere (a write or GC copy since): dropped; the others name seq 7 at 16 + 8 * i.
    const counts = await again.load((block, seq, offset) => block !== 12 && seq === 7 && offset === 16 + 8 * (block - 10));
    expect(counts).toEqual({ kept: 3, dropped: 1 });
    const out = new Uint8Array(2 * BLOCK);
    expect(await again.read(10, 2, out)).toBe(true);
    expect(out).toEqual(data.subarray(0, 2 * BLOCK));
    expect(await again.read(12, 1, new Uint8Array(BLOCK))).toBe(false);
    const other = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { volUuid: OTHER_VOL });
    expect(await other.load(() => true)).toEqual({ kept: 0, dropped: 0 }); // another volume's index is not read
  });

  test("a slot whose data no longer matches its entry is a miss, never wrong data", async () => {
    const prng = new Prng(12);
    const device = new MemoryCacheDevice(1 << 20, prng);
    const cache = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { volUuid: VOL });
    await cache.insert(3, blocks(prng, 1), cache.currentEpoch, { seq: 2, offsetSectors: 0 });
    await cache.close();
    device.data.fill(0xee, 4096 + 2 * BLOCK, 4096 + 3 * BLOCK); // the first data slot (after 2 index pages)
    const again = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { volUuid: VOL });
    expect((await again.load(() => true)).kept).toBe(1);
    expect(await again.read(3, 1, new Uint8Array(BLOCK))).toBe(false);
    expect(again.cachedBlocks).toBe(0);
  });

  test("random inserts, overwrites, persists and crashes (power loss too): every hit after a reopen is current", async () => {
    let warmTotal = 0;
    for (let seed = 100; seed < 140; seed++) {
      const prng = new Prng(seed);
      let device = new MemoryCacheDevice(1 << 20, prng);
      const region = 40 * BLOCK; // 39 slots for 24 blocks: eviction happens
      // The model: block -> the object and data the volume's map points at.
      const model = new Map<number, { seq: number; data: Uint8Array<ArrayBuffer> }>();
      let nextSeq = 1;
      let cache = new ReadCache(device, new MemoryPool(), 4096, region, { volUuid: VOL });
      const check = (block: number, seq: number, offset: number) => model.get(block)?.seq === seq && offset === 0;
      let hits = 0;
      let warm = 0;
      for (let step = 0; step < 300; step++) {
        const block = prng.int(24);
        const choice = prng.int(10);
        if (choice < 3) {
          // A write: new data in a new object; the cache loses the block before the write is acknowledged.
          cache.invalidate(block * 8, 8);
          model.set(block, { seq: nextSeq++, data: blocks(prng, 1) });
        } else if (choice < 6) {
          const current = model.get(block);
          if (current) {
            const inserting = cache.insert(block, current.data, cache.currentEpoch, { seq: current.seq, offsetSectors: 0 });
            if (prng.int(2) === 0) await inserting; // else it is still in flight at the next steps, a crash too
          }
        } else if (choice < 8) {
          const out = new Uint8Array(BLOCK);
          if (await cache.read(block, 1, out)) {
            hits += 1;
            expect(out).toEqual(model.get(block)!.data);
          }
        } else if (choice === 8) {
          await cache.persist().catch(() => undefined);
        } else if (prng.int(4) === 0) {
          device = device.crash({ powerLoss: prng.int(2) === 0 });
          cache = new ReadCache(device, new MemoryPool(), 4096, region, { volUuid: VOL });
          warm += (await cache.load(check)).kept;
        }
      }
      expect(hits).toBeGreaterThan(0);
      warmTotal += warm;
    }
    expect(warmTotal).toBeGreaterThan(0); // the crashes left persisted entries that were used
  });
});
