// The SSD read cache (src/cache/read_cache.ts): entries keyed by object location (log uuid, seq, offset) read back
// exactly; another log's same seq is another entry; misses for anything not whole; fills queued and written in
// batches (consecutive slots in one write), bounded; write-to-read migration gated by write load; eviction; a slot
// reused under a reader; the persisted index.

import { describe, expect, test } from "bun:test";
import { ReadCache } from "../../src/cache/read_cache.ts";
import { READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX, READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX, READ_CACHE_FILL_BLOCKS_QUEUED_MAX } from "../../src/constants.ts";
import { encodeIndexPage } from "../../src/format/read_cache_index.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";

const BLOCK = 4096;
const CACHE = "3a1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e00";
const OTHER_CACHE = "3a1f3c52-8d0e-4c3a-9a55-1d1f0c3b7eff";
const VOL = "6c1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e01";
const OTHER_VOL = "0b7f3c52-8d0e-4c3a-9a55-1d1f0c3b7e02";

function blocks(prng: Prng, count: number): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(count * BLOCK);
  prng.fill(data);
  return data;
}

function memoryCache(seed: number, regionBlocks: number, persist = false) {
  const prng = new Prng(seed);
  const device = new MemoryCacheDevice(1 << 22, prng);
  const cache = new ReadCache(device, new MemoryPool(), 4096, regionBlocks * BLOCK, persist ? { cacheUuid: CACHE } : undefined);
  return { prng, device, cache };
}

describe("read cache", () => {
  test("offered blocks read back exactly under their object's name; another log's same name is a miss", async () => {
    const { prng, cache } = memoryCache(1, 64);
    const vol = cache.logId(VOL);
    const other = cache.logId(OTHER_VOL);
    expect(cache.logId(VOL)).toBe(vol);
    const data = blocks(prng, 4);
    cache.offer(vol, 7, 16, data);
    await cache.settle();
    const out = new Uint8Array(4 * BLOCK);
    expect(await cache.read(vol, 7, 16, 4, out)).toBe(true);
    expect(out).toEqual(data);
    expect(await cache.read(vol, 7, 24, 1, out.subarray(0, BLOCK))).toBe(true); // the object's second 4 KiB
    expect(out.subarray(0, BLOCK)).toEqual(data.subarray(BLOCK, 2 * BLOCK));
    expect(await cache.read(vol, 7, 8, 2, new Uint8Array(2 * BLOCK))).toBe(false); // one block before it is not cached
    expect(await cache.read(vol, 8, 16, 1, new Uint8Array(BLOCK))).toBe(false);
    expect(await cache.read(other, 7, 16, 1, new Uint8Array(BLOCK))).toBe(false); // a clone's own seq 7 is not its base's
    expect(cache.hits).toBe(2);
    expect(cache.inserts).toBe(4);
  });

  test("write-to-read migration: a batch is adopted while few client writes are in flight, skipped unlooked-at while many are", async () => {
    const { prng, cache } = memoryCache(3, 64);
    const vol = cache.logId(VOL);
    const data = blocks(prng, 4);
    const offsets = [0, 8, 16, 24];
    let listed = 0;
    const blocksOf = () => {
      listed += 1;
      return offsets;
    };
    const copyInto = (into: Uint8Array, which: number[]) => into.set(data.subarray(0, which.length * BLOCK));
    cache.adopt(vol, 5, { clientWritesInFlight: READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX + 1, bytesPerSecond: 0 }, blocksOf, copyInto);
    await cache.settle();
    expect(listed).toBe(0); // busy: the batch's blocks are not even listed
    expect(cache.adoptSkippedBusy).toBe(1);
    expect(await cache.read(vol, 5, 0, 1, new Uint8Array(BLOCK))).toBe(false);
    cache.adopt(vol, 6, { clientWritesInFlight: READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX, bytesPerSecond: READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX }, blocksOf, copyInto);
    await cache.settle();
    expect(listed).toBe(1);
    expect(cache.adoptSkippedBusy).toBe(1);
    expect(cache.adopted).toBe(4);
    const out = new Uint8Array(4 * BLOCK);
    expect(await cache.read(vol, 6, 0, 4, out)).toBe(true);
    expect(out).toEqual(data);
  });

  test("hits read their slots through the page cache (readCached), one device read per run of consecutive slots", async () => {
    const { prng, device, cache } = memoryCache(11, 64);
    const vol = cache.logId(VOL);
    const data = blocks(prng, 3);
    cache.offer(vol, 3, 0, data);
    await cache.settle();
    const out = new Uint8Array(3 * BLOCK);
    const before = device.cachedReads;
    expect(await cache.read(vol, 3, 0, 3, out)).toBe(true);
    expect(out).toEqual(data);
    expect(device.cachedReads - before).toBe(1);
  });

  test("fills are batched: blocks offered while a batch is written go out together, consecutive slots in one write", async () => {
    const { prng, cache } = memoryCache(2, 256);
    const vol = cache.logId(VOL);
    const all = blocks(prng, 72);
    // 72 misses answered close together, as at queue depth 32 and more: one offer each.
    for (let index = 0; index < 72; index++) cache.offer(vol, 3, index * 8, all.subarray(index * BLOCK, (index + 1) * BLOCK));
    await cache.settle();
    expect(cache.inserts).toBe(72);
    // The 64th offer starts a batch of 64 (fewer wait up to READ_CACHE_FILL_GATHER_MS for more); the last 8 go as
    // one more batch (settle starts it at once). Consecutive slots: one write each.
    expect(cache.fillBatches).toBe(2);
    expect(cache.fillWrites).toBe(2);
    const out = new Uint8Array(72 * BLOCK);
    expect(await cache.read(vol, 3, 0, 72, out)).toBe(true);
    expect(out).toEqual(all);
  });

  test("the fill queue is bounded: blocks beyond it are skipped, not held", async () => {
    const { prng, device, cache } = memoryCache(3, 4096);
    const vol = cache.logId(VOL);
    device.failWritesAfter = device.writes; // every fill write fails: the queue only drains when batches finish
    const data = blocks(prng, 1);
    const offered = READ_CACHE_FILL_BLOCKS_QUEUED_MAX + 600;
    for (let index = 0; index < offered; index++) cache.offer(vol, 1, index * 8, data);
    expect(cache.fillsSkipped).toBeGreaterThanOrEqual(offered - READ_CACHE_FILL_BLOCKS_QUEUED_MAX - 2);
    await cache.settle();
    expect(cache.cachedBlocks).toBe(0);
  });

  test("no buffer for a fill batch (pool full or closed): its blocks are dropped, their slots free again, reads still answer", async () => {
    const prng = new Prng(6);
    const pool = new MemoryPool();
    const cache = new ReadCache(new MemoryCacheDevice(1 << 22, prng), pool, 4096, 4 * BLOCK);
    const vol = cache.logId(VOL);
    const acquire = pool.acquire.bind(pool);
    pool.acquire = () => {
      throw new Error("test: no buffer");
    };
    cache.offer(vol, 1, 0, blocks(prng, 4));
    await cache.settle();
    expect(cache.cachedBlocks).toBe(0);
    expect(cache.fillsSkipped).toBe(4);
    expect(await cache.read(vol, 1, 0, 1, new Uint8Array(BLOCK))).toBe(false);
    pool.acquire = acquire;
    const data = blocks(prng, 4);
    cache.offer(vol, 2, 0, data); // the 4 slots were given back: all of them are taken again
    await cache.settle();
    expect(cache.cachedBlocks).toBe(4);
    const out = new Uint8Array(4 * BLOCK);
    expect(await cache.read(vol, 2, 0, 4, out)).toBe(true);
    expect(out).toEqual(data);
  });

  test("the clock evicts when full, and stays within its region", async () => {
    const { prng, device, cache } = memoryCache(4, 8);
    const vol = cache.logId(VOL);
    const before = device.data.slice(0, 4096);
    const all: Array<Uint8Array<ArrayBuffer>> = [];
    for (let seq = 1; seq <= 20; seq++) {
      const data = blocks(prng, 1);
      all.push(data);
      cache.offer(vol, seq, 0, data);
      await cache.settle();
    }
    expect(cache.cachedBlocks).toBe(8);
    for (let seq = 1; seq <= 20; seq++) {
      const out = new Uint8Array(BLOCK);
      if (await cache.read(vol, seq, 0, 1, out)) expect(out).toEqual(all[seq - 1]!);
    }
    expect(device.data.slice(0, 4096)).toEqual(before); // page 0 (the superblock) untouched
    expect(device.data.subarray(4096 + 8 * BLOCK).every((byte) => byte === 0)).toBe(true);
  });

  test("a slot reused while a reader waits on the device is a miss, not wrong data", async () => {
    const { prng, cache } = memoryCache(5, 1);
    const vol = cache.logId(VOL);
    cache.offer(vol, 5, 0, blocks(prng, 1));
    await cache.settle();
    const reading = cache.read(vol, 5, 0, 1, new Uint8Array(BLOCK));
    cache.offer(vol, 6, 0, blocks(prng, 1)); // the only slot goes to object 6
    await cache.settle();
    expect(await reading).toBe(false);
  });
});

describe("read cache persisted index", () => {
  test("entries survive a clean close whole; another formatting's pages and version 1 pages leave their slots empty", async () => {
    const { prng, device, cache } = memoryCache(11, 300, true);
    const data = blocks(prng, 4);
    cache.offer(cache.logId(VOL), 7, 16, data.subarray(0, 2 * BLOCK));
    cache.offer(cache.logId(OTHER_VOL), 7, 16, data.subarray(2 * BLOCK));
    await cache.close();
    const again = new ReadCache(device, new MemoryPool(), 4096, 300 * BLOCK, { cacheUuid: CACHE });
    expect(await again.load()).toEqual({ kept: 4, dropped: 0, oldFormatPages: 0 });
    const out = new Uint8Array(2 * BLOCK);
    expect(await again.read(again.logId(OTHER_VOL), 7, 16, 2, out)).toBe(true);
    expect(out).toEqual(data.subarray(2 * BLOCK));
    expect(await again.read(again.logId(VOL), 7, 16, 2, out)).toBe(true);
    expect(out).toEqual(data.subarray(0, 2 * BLOCK));
    const reformatted = new ReadCache(device, new MemoryPool(), 4096, 300 * BLOCK, { cacheUuid: OTHER_CACHE });
    expect(await reformatted.load()).toEqual({ kept: 0, dropped: 0, oldFormatPages: 0 });
    // A version 1 page (entries keyed by volume block) where page 1 of the index is: dropped, and rewritten.
    const v1 = encodeIndexPage(1, CACHE, []);
    new DataView(v1.buffer).setUint32(4, 1, true);
    device.data.set(v1, 4096 + BLOCK);
    const upgraded = new ReadCache(device, new MemoryPool(), 4096, 300 * BLOCK, { cacheUuid: CACHE });
    expect(await upgraded.load()).toEqual({ kept: 4, dropped: 0, oldFormatPages: 1 });
    await upgraded.close();
    const after = new ReadCache(device, new MemoryPool(), 4096, 300 * BLOCK, { cacheUuid: CACHE });
    expect(await after.load()).toEqual({ kept: 4, dropped: 0, oldFormatPages: 0 });
  });

  test("a slot whose data no longer matches its entry is a miss, never wrong data", async () => {
    const { prng, device, cache } = memoryCache(12, 200, true);
    cache.offer(cache.logId(VOL), 2, 0, blocks(prng, 1));
    await cache.close();
    device.data.fill(0xee, 4096 + 2 * BLOCK, 4096 + 3 * BLOCK); // the first data slot (after 2 index pages)
    const again = new ReadCache(device, new MemoryPool(), 4096, 200 * BLOCK, { cacheUuid: CACHE });
    expect((await again.load()).kept).toBe(1);
    expect(await again.read(again.logId(VOL), 2, 0, 1, new Uint8Array(BLOCK))).toBe(false);
    expect(again.cachedBlocks).toBe(0);
  });

  test("random fills, reads, persists and crashes (power loss too) over immutable objects: every hit is the object's bytes", async () => {
    let warmHits = 0;
    for (let seed = 100; seed < 140; seed++) {
      const prng = new Prng(seed);
      let device = new MemoryCacheDevice(1 << 20, prng);
      const region = 40 * BLOCK; // 39 slots for up to 48 pieces: eviction happens
      // The model: (log, seq) -> the object's 2 blocks, never changed once made (a log never writes a name twice).
      const objects = new Map<string, Uint8Array<ArrayBuffer>>();
      const logs = [VOL, OTHER_VOL];
      let cache = new ReadCache(device, new MemoryPool(), 4096, region, { cacheUuid: CACHE });
      let sinceCrash = 0;
      for (let step = 0; step < 300; step++) {
        const log = logs[prng.int(2)]!;
        const seq = 1 + prng.int(12);
        const offset = 8 * prng.int(2);
        const key = `${log}/${seq}`;
        if (!objects.has(key)) objects.set(key, blocks(prng, 2));
        const bytes = objects.get(key)!;
        const choice = prng.int(10);
        if (choice < 4) cache.offer(cache.logId(log), seq, offset, bytes.slice((offset / 8) * BLOCK, (offset / 8 + 1) * BLOCK));
        else if (choice < 8) {
          const out = new Uint8Array(BLOCK);
          if (await cache.read(cache.logId(log), seq, offset, 1, out)) {
            expect(out).toEqual(bytes.subarray((offset / 8) * BLOCK, (offset / 8 + 1) * BLOCK));
            if (sinceCrash === 0) warmHits += 1;
          }
        } else if (choice === 8) {
          // Fills gather before they are written (READ_CACHE_FILL_GATHER_MS): sometimes wait for them first.
          if (prng.int(2) === 0) await cache.settle().catch(() => undefined);
          await cache.persist().catch(() => undefined);
        } else if (prng.int(4) === 0) {
          device = device.crash({ powerLoss: prng.int(2) === 0 });
          cache = new ReadCache(device, new MemoryPool(), 4096, region, { cacheUuid: CACHE });
          await cache.load();
          sinceCrash = 0;
          continue;
        } else {
          await Bun.sleep(0); // fill writes complete meanwhile (some: the device completes a random subset)
        }
        if (choice < 4) sinceCrash += 1;
      }
    }
    expect(warmHits).toBeGreaterThan(0); // hits served from entries that came through a crash
  });
});
