// The ObjectStore contract (src/backend/object_store.ts), as one suite every store runs: file, memory, RADOS, S3.
// A store that passes it can back a volume. Each run works under a fresh name prefix, so stores that outlive the
// test (a RADOS pool, an S3 bucket) can be shared between runs; the suite deletes what it wrote.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ObjectStore, ObjectVersion } from "../../src/backend/object_store.ts";
import { ConflictError, CorruptionError, InvalidArgumentError, NotFoundError } from "../../src/errors.ts";
import { rejection } from "../_support/rejection.ts";

export interface ContractOptions {
  /** Objects in the "many objects" test; above 1000 it crosses an S3 listing page. */
  manyObjects?: number;
  /** Per-test timeout (ms) for stores over a network. */
  timeoutMs?: number;
  /** Concurrent callers in the race tests (default 8). */
  racers?: number;
  /** Another client of the same store, for races between clients (default: openStore() again). */
  openSecondClient?: (first: ObjectStore) => Promise<ObjectStore>;
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

/** Settles every racer; returns the index of each winner and every loser's error. */
async function race<T>(racers: Array<() => Promise<T>>): Promise<{ winners: number[]; values: T[]; errors: unknown[] }> {
  const results = await Promise.allSettled(racers.map((run) => run()));
  const winners: number[] = [];
  const values: T[] = [];
  const errors: unknown[] = [];
  results.forEach((result, i) => {
    if (result.status === "fulfilled") {
      winners.push(i);
      values.push(result.value);
    } else {
      errors.push(result.reason);
    }
  });
  return { winners, values, errors };
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

    // A lent buffer (garbage collection's victim reads): the store may fill it or return a new one; either way the
    // bytes are the object's, and a buffer too small for the object is never written past its end.
    test("get into a lent buffer returns the object's bytes, large or small, whether the buffer fits or not", async () => {
      const big = pattern(3 * MIB + 4096, 10);
      const small = pattern(5000, 11);
      await Promise.all([store.put(`${ns}.into.big`, big), store.put(`${ns}.into.small`, small)]);
      const lent = new Uint8Array(4 * MIB).fill(0xee);
      const read = await store.get(`${ns}.into.big`, lent);
      expect(Buffer.from(read).equals(Buffer.from(big))).toBe(true);
      expect(Buffer.from(await store.get(`${ns}.into.small`, lent)).equals(Buffer.from(small))).toBe(true);
      const tooSmall = new Uint8Array(2 * MIB + 7).fill(0xee);
      expect(Buffer.from(await store.get(`${ns}.into.big`, tooSmall)).equals(Buffer.from(big))).toBe(true);
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
        expect(await rejection(store.getVersioned(bad))).toBeInstanceOf(InvalidArgumentError);
        expect(await rejection(store.putIfAbsent(bad, new Uint8Array(1)))).toBeInstanceOf(InvalidArgumentError);
        expect(await rejection(store.putIfVersion(bad, new Uint8Array(1), "1"))).toBeInstanceOf(InvalidArgumentError);
      }
    }, timeoutMs);

    const openSecondClient = options.openSecondClient ?? (() => openStore());
    conditionalContract(() => store, () => openSecondClient(store), ns, { racers: options.racers ?? 8, timeoutMs });
  });
}

/** The conditional operations (getVersioned, putIfAbsent, putIfVersion): what ownership and fencing rely on. */
function conditionalContract(
  current: () => ObjectStore,
  openSecondClient: () => Promise<ObjectStore>,
  ns: string,
  options: { racers: number; timeoutMs: number },
): void {
  const { racers, timeoutMs } = options;
  describe("conditional operations", () => {
    // A second store (its own connection, handles and lock descriptor): racers alternate between the two, so the
    // races are between clients, not only between calls of one client.
    let other: ObjectStore;
    beforeAll(async () => {
      other = await openSecondClient();
    }, 120_000);
    afterAll(async () => {
      if (other !== undefined && other !== current()) await other.close();
    }, 120_000);
    const storeOf = (i: number) => (i % 2 === 0 ? current() : other);

    test("getVersioned of a missing object is null; of an object, its bytes and the version putIfAbsent gave", async () => {
      const store = current();
      expect(await store.getVersioned(`${ns}.v.missing`)).toBeNull();
      const data = pattern(5000, 20);
      const version = await store.putIfAbsent(`${ns}.v.a`, data);
      expect(typeof version).toBe("string");
      const read = await store.getVersioned(`${ns}.v.a`);
      expect(read).not.toBeNull();
      expect(read!.data).toEqual(data);
      expect(read!.version).toBe(version);
      expect(await store.get(`${ns}.v.a`)).toEqual(data);
      // Also the empty object.
      const emptyVersion = await store.putIfAbsent(`${ns}.v.empty`, new Uint8Array(0));
      expect(await store.getVersioned(`${ns}.v.empty`)).toEqual({ data: new Uint8Array(0), version: emptyVersion });
    }, timeoutMs);

    test("putIfAbsent without a version wanted creates the object whole; it resolves with \"\" or the real version", async () => {
      const store = current();
      const name = `${ns}.v.log`;
      const data = pattern(MIB, 31);
      const version = await store.putIfAbsent(name, data, false);
      const read = await other.getVersioned(name);
      expect(Buffer.compare(read!.data, data)).toBe(0);
      expect(version === "" || version === read!.version).toBe(true);
      expect(await rejection(other.putIfAbsent(name, pattern(1, 1), false))).toBeInstanceOf(ConflictError);
    }, timeoutMs);

    test("getVersioned reads a large object whole (1 MiB + 1 byte)", async () => {
      const store = current();
      const data = pattern(MIB + 1, 29);
      const version = await store.putIfAbsent(`${ns}.v.large`, data);
      const read = await other.getVersioned(`${ns}.v.large`);
      expect(read?.version).toBe(version);
      expect(Buffer.compare(read!.data, data)).toBe(0);
    }, timeoutMs);

    test("putIfAbsent on an existing object is ConflictError naming it, and changes nothing", async () => {
      const store = current();
      const name = `${ns}.v.exists`;
      await store.put(name, pattern(100, 21));
      const before = await store.getVersioned(name);
      const error = await rejection(store.putIfAbsent(name, pattern(200, 22)));
      expect(error).toBeInstanceOf(ConflictError);
      expect(error.message).toContain(name);
      expect(await store.getVersioned(name)).toEqual(before);
      // Created with putIfAbsent, too.
      expect(await rejection(other.putIfAbsent(`${ns}.v.a`, pattern(1, 1)))).toBeInstanceOf(ConflictError);
    }, timeoutMs);

    test("putIfVersion replaces only at the expected version; a stale version is ConflictError and changes nothing", async () => {
      const store = current();
      const name = `${ns}.v.cas`;
      const v1 = await store.putIfAbsent(name, pattern(300, 23));
      const v2 = await store.putIfVersion(name, pattern(400, 24), v1);
      expect(v2).not.toBe(v1);
      expect(await store.getVersioned(name)).toEqual({ data: pattern(400, 24), version: v2 });
      const stale = await rejection(other.putIfVersion(name, pattern(500, 25), v1));
      expect(stale).toBeInstanceOf(ConflictError);
      expect(stale.message).toContain(name);
      expect(await store.getVersioned(name)).toEqual({ data: pattern(400, 24), version: v2 });
      // The other client, at the right version, succeeds.
      const v3 = await other.putIfVersion(name, pattern(500, 25), v2);
      expect(await store.getVersioned(name)).toEqual({ data: pattern(500, 25), version: v3 });
    }, timeoutMs);

    test("putIfVersion of a missing object is ConflictError (also at a version the name once had)", async () => {
      const store = current();
      const name = `${ns}.v.gone`;
      const version = await store.putIfAbsent(name, pattern(100, 26));
      await store.delete(name);
      const error = await rejection(store.putIfVersion(name, pattern(100, 27), version));
      expect(error).toBeInstanceOf(ConflictError);
      expect(error.message).toContain(name);
      expect(await store.getVersioned(name)).toBeNull();
      expect(await rejection(store.putIfVersion(`${ns}.v.never`, pattern(1, 1), version))).toBeInstanceOf(ConflictError);
      expect(await store.stat(`${ns}.v.never`)).toBeNull();
      // After a delete the name can be created again.
      const again = await store.putIfAbsent(name, pattern(100, 28));
      expect(await store.getVersioned(name)).toEqual({ data: pattern(100, 28), version: again });
    }, timeoutMs);

    test("every write of new bytes gives a new version (put, putIfAbsent, putIfVersion)", async () => {
      const store = current();
      const name = `${ns}.v.seq`;
      const seen = new Set<ObjectVersion>();
      let version = await store.putIfAbsent(name, pattern(64, 30));
      seen.add(version);
      for (let i = 1; i <= 6; i++) {
        const data = pattern(64 + (i % 3), 30 + i);
        if (i % 2 === 0) {
          await store.put(name, data);
          version = (await store.getVersioned(name))!.version;
        } else {
          version = await store.putIfVersion(name, data, version);
        }
        expect(seen.has(version)).toBe(false);
        seen.add(version);
        expect(await store.getVersioned(name)).toEqual({ data, version });
      }
    }, timeoutMs);

    test("a plain put or a delete after getVersioned invalidates the version", async () => {
      const store = current();
      const name = `${ns}.v.inval`;
      await store.put(name, pattern(100, 40));
      const read = (await store.getVersioned(name))!;
      await other.put(name, pattern(100, 41));
      expect(await rejection(store.putIfVersion(name, pattern(100, 42), read.version))).toBeInstanceOf(ConflictError);
      expect(await store.get(name)).toEqual(pattern(100, 41));
      const again = (await store.getVersioned(name))!;
      await other.delete(name);
      expect(await rejection(store.putIfVersion(name, pattern(100, 43), again.version))).toBeInstanceOf(ConflictError);
      expect(await store.stat(name)).toBeNull();
    }, timeoutMs);

    test(`${racers} concurrent putIfAbsent of one name: exactly one wins, the others are ConflictError`, async () => {
      for (let round = 0; round < 5; round++) {
        const name = `${ns}.race.create.${round}`;
        const datas = Array.from({ length: racers }, (_, i) => pattern(1000 + i, 100 * round + i));
        const { winners, values, errors } = await race(datas.map((data, i) => () => storeOf(i).putIfAbsent(name, data)));
        expect({ round, winners: winners.length }).toEqual({ round, winners: 1 });
        for (const error of errors) expect(error).toBeInstanceOf(ConflictError);
        expect(await current().getVersioned(name)).toEqual({ data: datas[winners[0]!]!, version: values[0]! });
      }
    }, timeoutMs * 2);

    test(`${racers} concurrent putIfVersion from one version: exactly one wins, the others are ConflictError`, async () => {
      const name = `${ns}.race.cas`;
      let version = await current().putIfAbsent(name, pattern(10, 1));
      for (let round = 0; round < 5; round++) {
        const from = version;
        const datas = Array.from({ length: racers }, (_, i) => pattern(2000 + i, 1000 * round + i));
        const { winners, values, errors } = await race(datas.map((data, i) => () => storeOf(i).putIfVersion(name, data, from)));
        expect({ round, winners: winners.length }).toEqual({ round, winners: 1 });
        for (const error of errors) expect(error).toBeInstanceOf(ConflictError);
        version = values[0]!;
        expect(await current().getVersioned(name)).toEqual({ data: datas[winners[0]!]!, version });
      }
    }, timeoutMs * 2);

    test(`${racers} clients increment a counter with read + putIfVersion: no update is lost`, async () => {
      const name = `${ns}.race.counter`;
      // Each writer's bytes name it: competing writers never write equal bytes (object_store.ts says why).
      const encode = (n: number, writer: number) => new TextEncoder().encode(`${String(n).padStart(8, "0")} ${writer}`);
      const decode = (data: Uint8Array) => Number(new TextDecoder().decode(data).split(" ")[0]);
      await current().putIfAbsent(name, encode(0, -1));
      const incrementsEach = 4;
      let conflicts = 0;
      await Promise.all(
        Array.from({ length: racers }, async (_, i) => {
          const store = storeOf(i);
          for (let done = 0; done < incrementsEach; ) {
            const read = (await store.getVersioned(name))!;
            const value = decode(read.data);
            try {
              await store.putIfVersion(name, encode(value + 1, i), read.version);
              done += 1;
            } catch (error) {
              if (!(error instanceof ConflictError)) throw error;
              conflicts += 1;
            }
          }
        }),
      );
      expect(decode(await current().get(name))).toBe(racers * incrementsEach);
      // Some attempts met another's write (otherwise this test proved nothing about races).
      expect(conflicts).toBeGreaterThan(0);
    }, timeoutMs * 4);
  });
}
