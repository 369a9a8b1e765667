// The ObjectStore contract (src/backend/object_store.ts), as one suite every store runs: file, memory, RADOS, S3.
// A store that passes it can back a volume. Each run works under a fresh name prefix, so stores that outlive the
// test (a RADOS pool, an S3 bucket) can be shared between runs; the suite deletes what it wrote.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError } from "../../src/errors.ts";

export interface ContractOptions {
  /** Objects in the "many objects" test; above 1000 it crosses an S3 listing page. */
  manyObjects?: number;
  /** Per-test timeout (ms) for stores over a network. */
  timeoutMs?: number;
}

const MIB = 1024 * 1024;

/** Deterministic bytes: a different pattern per seed, every byte value present. */
export function pattern(length: number, seed: number): Uint8Array {
  const data = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    data[i] = x & 0xff;
  }
  return data;
}

/** Runs `task` over `items`, at most `limit` at once. */
export async function forEachLimited<T>(items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a rejection, got success");
}

export function objectStoreContract(
  label: string,
  openStore: () => Promise<ObjectStore>,
  options: ContractOptions = {},
): void {
  const manyObjects = options.manyObjects ?? 1100;
  const timeoutMs = options.timeoutMs ?? 30_000;
  describe(`ObjectStore contract: ${label}`, () => {
    let store: ObjectStore;
    // A fresh namespace per run: "c" + time + random, no '/' and no leading '.'.
    const ns = `c${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

    beforeAll(async () => {
      store = await openStore();
    }, 120_000);

    afterAll(async () => {
      if (store === undefined) return;
      const names = await store.list(ns);
      await forEachLimited(names, 16, (name) => store.delete(name));
      expect(await store.list(ns)).toEqual([]);
      await store.close();
    }, 120_000);

    test("put then get returns the same bytes; stat gives the size", async () => {
      const data = pattern(100_000, 1);
      await store.put(`${ns}.a`, data);
      expect(await store.get(`${ns}.a`)).toEqual(data);
      expect(await store.stat(`${ns}.a`)).toEqual({ size: 100_000 });
    }, timeoutMs);

    test("every byte value survives (binary data, not text)", async () => {
      const data = new Uint8Array(512);
      for (let i = 0; i < 512; i++) data[i] = (i * 37 + (i >> 8)) & 0xff;
      data[0] = 0;
      data[511] = 0xff;
      await store.put(`${ns}.binary`, data);
      expect(await store.get(`${ns}.binary`)).toEqual(data);
    }, timeoutMs);

    test("an empty object exists and has size 0", async () => {
      await store.put(`${ns}.empty`, new Uint8Array(0));
      expect((await store.get(`${ns}.empty`)).length).toBe(0);
      expect(await store.stat(`${ns}.empty`)).toEqual({ size: 0 });
      expect((await store.getRange(`${ns}.empty`, 0, 0)).length).toBe(0);
    }, timeoutMs);

    test("getRange returns exactly the bytes asked for", async () => {
      const data = pattern(70_000, 2);
      await store.put(`${ns}.range`, data);
      expect(await store.getRange(`${ns}.range`, 0, 10)).toEqual(data.slice(0, 10));
      expect(await store.getRange(`${ns}.range`, 12_345, 4096)).toEqual(data.slice(12_345, 12_345 + 4096));
      // A range ending exactly at the end of the object is inside it.
      expect(await store.getRange(`${ns}.range`, 69_000, 1000)).toEqual(data.slice(69_000));
      expect(await store.getRange(`${ns}.range`, 0, 70_000)).toEqual(data);
      expect((await store.getRange(`${ns}.range`, 70_000, 0)).length).toBe(0);
    }, timeoutMs);

    test("getRange past the end is CorruptionError naming the object", async () => {
      await store.put(`${ns}.short`, pattern(1000, 3));
      const across = await rejection(store.getRange(`${ns}.short`, 900, 200));
      expect(across).toBeInstanceOf(CorruptionError);
      expect(across.message).toContain(`${ns}.short`);
      const beyond = await rejection(store.getRange(`${ns}.short`, 5000, 10));
      expect(beyond).toBeInstanceOf(CorruptionError);
      expect(beyond.message).toContain(`${ns}.short`);
    }, timeoutMs);

    test("a missing object: get and getRange throw NotFoundError naming it, stat is null", async () => {
      const missing = `${ns}.missing`;
      const get = await rejection(store.get(missing));
      expect(get).toBeInstanceOf(NotFoundError);
      expect(get.message).toContain(missing);
      const range = await rejection(store.getRange(missing, 0, 10));
      expect(range).toBeInstanceOf(NotFoundError);
      expect(range.message).toContain(missing);
      expect(await store.stat(missing)).toBeNull();
    }, timeoutMs);

    test("delete removes; deleting again (or something never there) succeeds", async () => {
      await store.put(`${ns}.del`, pattern(10, 4));
      await store.delete(`${ns}.del`);
      expect(await store.stat(`${ns}.del`)).toBeNull();
      expect(await rejection(store.get(`${ns}.del`))).toBeInstanceOf(NotFoundError);
      await store.delete(`${ns}.del`);
      await store.delete(`${ns}.never`);
      expect(await store.list(`${ns}.del`)).toEqual([]);
    }, timeoutMs);

    test("overwrite replaces the whole object, longer or shorter", async () => {
      const long = pattern(50_000, 5);
      const short = pattern(300, 6);
      await store.put(`${ns}.over`, long);
      await store.put(`${ns}.over`, short);
      expect(await store.get(`${ns}.over`)).toEqual(short);
      expect(await store.stat(`${ns}.over`)).toEqual({ size: 300 });
      await store.put(`${ns}.over`, long);
      expect(await store.get(`${ns}.over`)).toEqual(long);
    }, timeoutMs);

    test("overwrites are atomic: concurrent readers see the old or the new object, never a mix", async () => {
      const versions = [pattern(256 * 1024, 7), pattern(300 * 1024, 8)];
      const name = `${ns}.atomic`;
      await store.put(name, versions[0]!);
      let writing = true;
      const writer = (async () => {
        for (let i = 1; i <= 12; i++) await store.put(name, versions[i % 2]!);
        writing = false;
      })();
      let reads = 0;
      const readers = Array.from({ length: 3 }, async () => {
        while (writing || reads < 3) {
          const seen = await store.get(name);
          reads += 1;
          const same = seen.length === versions[0]!.length ? versions[0]! : versions[1]!;
          expect(seen.length === versions[0]!.length || seen.length === versions[1]!.length).toBe(true);
          expect(Buffer.compare(seen, same)).toBe(0);
        }
      });
      await Promise.all([writer, ...readers]);
      expect(await store.get(name)).toEqual(versions[0]!);
    }, timeoutMs);

    test("8 MiB objects (one default batch), whole and by range", async () => {
      const big = pattern(8 * MIB + 4096, 9);
      await Promise.all([store.put(`${ns}.big.1`, big), store.put(`${ns}.big.2`, big.subarray(4096))]);
      expect(await store.get(`${ns}.big.1`)).toEqual(big);
      expect(await store.getRange(`${ns}.big.2`, 8 * MIB - 4096, 4096)).toEqual(big.subarray(8 * MIB, 8 * MIB + 4096));
      expect(await store.stat(`${ns}.big.2`)).toEqual({ size: 8 * MIB });
    }, timeoutMs * 2);

    test(`many objects (${manyObjects}): list by prefix returns exactly them, sorted`, async () => {
      const base = `${ns}.many`;
      // Written in a shuffled order so a store that lists in write order does not pass by accident.
      const names = Array.from({ length: manyObjects }, (_, i) => `${base}.${i.toString(16).padStart(8, "0")}`);
      const shuffled = names.map((name, i) => ({ name, key: (i * 7919) % manyObjects })).sort((a, b) => a.key - b.key);
      await forEachLimited(shuffled, 16, ({ name }) => store.put(name, pattern(16, name.length)));
      expect(await store.list(`${base}.`)).toEqual(names);
      // A narrower prefix, and a prefix that is itself an object name.
      expect(await store.list(`${base}.0000001`)).toEqual(names.slice(16, 32));
      await store.put(base, pattern(16, 1));
      expect((await store.list(base)).length).toBe(manyObjects + 1);
      expect((await store.list(base))[0]).toBe(base);
      expect(await store.list(`${ns}.nomatch`)).toEqual([]);
      // The empty prefix lists everything, ours included.
      if (manyObjects <= 1100) expect((await store.list("")).filter((n) => n.startsWith(`${base}.`)).length).toBe(manyObjects);
    }, timeoutMs * 4);

    test("callers cannot alias stored data", async () => {
      const data = pattern(1000, 10);
      const copy = data.slice();
      await store.put(`${ns}.alias`, data);
      data.fill(0);
      const first = await store.get(`${ns}.alias`);
      expect(first).toEqual(copy);
      first.fill(1);
      expect(await store.get(`${ns}.alias`)).toEqual(copy);
      const range = await store.getRange(`${ns}.alias`, 0, 100);
      range.fill(2);
      expect(await store.getRange(`${ns}.alias`, 0, 100)).toEqual(copy.slice(0, 100));
    }, timeoutMs);

    test("invalid names are InvalidArgumentError", async () => {
      for (const bad of ["", "a/b", ".hidden", "x".repeat(300), "nul\0byte"]) {
        expect(await rejection(store.put(bad, new Uint8Array(1)))).toBeInstanceOf(InvalidArgumentError);
        expect(await rejection(store.get(bad))).toBeInstanceOf(InvalidArgumentError);
        expect(await rejection(store.stat(bad))).toBeInstanceOf(InvalidArgumentError);
      }
    }, timeoutMs);
  });
}
