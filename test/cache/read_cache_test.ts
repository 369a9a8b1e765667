// The SSD read cache: exact data back, misses for anything not whole, invalidation by writes, no caching of data a
// newer write may have replaced, eviction, and a slot reused under a reader.

import { describe, expect, test } from "bun:test";
import { ReadCache } from "../../src/cache/read_cache.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";

const BLOCK = 4096;

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
    await cache.insert(10, data, cache.currentEpoch);
    const out = new Uint8Array(4 * BLOCK);
    expect(await cache.read(10, 4, out)).toBe(true);
    expect(out).toEqual(data);
    expect(await cache.read(9, 2, new Uint8Array(2 * BLOCK))).toBe(false);
    expect(cache.hits).toBe(1);
  });

  test("a write invalidates overlapping blocks, and data fetched before it is not cached", async () => {
    const prng = new Prng(2);
    const cache = new ReadCache(new MemoryCacheDevice(1 << 20, prng), new MemoryPool(), 4096, 64 * BLOCK);
    await cache.insert(0, blocks(prng, 4), cache.currentEpoch);
    cache.invalidate(8 * 2 + 3, 1); // one sector inside block 2
    expect(await cache.read(0, 2, new Uint8Array(2 * BLOCK))).toBe(true);
    expect(await cache.read(2, 1, new Uint8Array(BLOCK))).toBe(false);
    const epochBeforeFetch = cache.currentEpoch;
    cache.invalidate(1000, 8); // a write lands while the fetch is out
    await cache.insert(20, blocks(prng, 1), epochBeforeFetch);
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
      await cache.insert(block, data, cache.currentEpoch);
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
    await cache.insert(5, blocks(prng, 1), cache.currentEpoch);
    const reading = cache.read(5, 1, new Uint8Array(BLOCK));
    await cache.insert(6, blocks(prng, 1), cache.currentEpoch); // the only slot goes to block 6
    expect(await reading).toBe(false);
  });
});
