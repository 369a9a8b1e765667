// One shared read-cache device for every volume of a process (src/cache/shared_read_cache.ts): 4 clones of one base
// opened in one process read the base's data once from the backend (the entries are keyed by the base's log, so every
// clone and the base hit them); each clone's and the base's own writes after the clone, which reuse the same seqs in
// different logs, never read as each other's; the cache is warm after the process restarts, with every DATA
// object read refused by the backend; and a volume replaced under the same uuid (mkdisk --force) never reads the old
// log's entries, because its log starts above every name the old one used.

import { describe, expect, test } from "bun:test";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { MeteredStore } from "../../src/backend/metered_store.ts";
import { WrappingStore, type StoreOp } from "../../src/backend/wrapping_store.ts";
import { SharedReadCache } from "../../src/cache/shared_read_cache.ts";
import { IOError } from "../../src/errors.ts";
import { encodeReadCacheDeviceSuperblock, readCacheDeviceLayout } from "../../src/format/read_cache_superblock.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";
import { formatCache, makeCloneWorld, makeWorld, openVolume, type World } from "../sim/volume_world.ts";
import { createVolume } from "../../src/volume/ownership.ts";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import type { Volume } from "../../src/volume/volume.ts";

const MIB = 1024 * 1024;
const WORKING_SET = 8 * MIB;
const READ_BYTES = 64 * 1024;
const CACHE_UUID = "3a1f3c52-8d0e-4c3a-9a55-1d1f0c3b7e00";

/** Refuses ranged reads of DATA objects while `refuse` is set: what the backend serves then must come from elsewhere. */
class RefusingStore extends WrappingStore {
  refuse = false;
  protected override call<T>(op: StoreOp, name: string, forward: () => Promise<T>): Promise<T> {
    if (this.refuse && op === "getRange" && /\.[0-9a-f]{8}$/.test(name)) return Promise.reject(new IOError(`test: ${name} is unreadable`));
    return forward();
  }
  override close(): Promise<void> {
    return this.inner.close();
  }
}

function sharedDevice(prng: Prng): MemoryCacheDevice {
  const device = new MemoryCacheDevice(48 * MIB, prng, undefined, "shared-read-cache");
  device.data.set(encodeReadCacheDeviceSuperblock(readCacheDeviceLayout(CACHE_UUID, device.sizeBytes)), 0);
  return device;
}

/** Reads [0, bytes) in 64 KiB reads; every MiB lets the cache's fills catch up (a memory backend outruns them, and the fill queue is bounded: what overflows it is skipped). */
async function readAll(volume: Volume, bytes: number, shared?: SharedReadCache): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += READ_BYTES) {
    out.set(await volume.read(offset, READ_BYTES), offset);
    if ((offset + READ_BYTES) % MIB === 0) await shared?.cache.settle();
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a).equals(Buffer.from(b));
}

describe("shared read cache", () => {
  test("4 clones of one base on one shared cache: the backend serves the base's data about once; own writes stay apart; warm after a restart", async () => {
    const counted = { getRangeBytes: 0 };
    const meter = { done: (op: StoreOp, _s: number, error: unknown, bytesRead: number) => void (op === "getRange" && error === null && (counted.getRangeBytes += bytesRead)) };
    const refusing = new RefusingStore(new MemoryStore());
    const base = await makeWorld(21, { store: new MeteredStore(refusing, meter) });
    const prng = new Prng(22);
    const image = new Uint8Array(WORKING_SET);
    prng.fill(image);
    let volume = await openVolume(base);
    for (let offset = 0; offset < WORKING_SET; offset += MIB) await volume.write(offset, image.subarray(offset, offset + MIB), false);
    await volume.close();
    const clones: World[] = [];
    for (let index = 1; index <= 4; index++) clones.push(await makeCloneWorld(base, `clone${index}`));

    let device = sharedDevice(prng);
    let shared = await SharedReadCache.open(device, new MemoryPool());
    const open = async () => {
      const volumes = [];
      for (const world of [base, ...clones]) volumes.push(await openVolume(world, { readCache: false, sharedReadCache: shared }));
      return volumes;
    };
    let volumes = await open();
    const before = counted.getRangeBytes;
    for (const clone of volumes.slice(1)) {
      expect(equal(await readAll(clone, WORKING_SET, shared), image)).toBe(true);
    }
    expect(equal(await readAll(volumes[0]!, WORKING_SET), image)).toBe(true); // the base reads the same entries
    const served = counted.getRangeBytes - before;
    console.log(`shared read cache: 4 clones and the base read ${WORKING_SET / MIB} MiB each; the backend served ${(served / MIB).toFixed(2)} MiB`);
    expect(served).toBeGreaterThanOrEqual(WORKING_SET);
    expect(served).toBeLessThan(1.1 * WORKING_SET);

    // Own writes after the clone: the base and every clone write the same range, in objects whose seqs coincide
    // across the logs. Once durable (closed), each reads its own through the shared cache.
    const own = volumes.map((_volume, index) => new Uint8Array(MIB).fill(index + 1));
    for (const [index, each] of volumes.entries()) await each.write(0, own[index]!, false);
    for (const each of volumes) await each.close();
    volumes = await open();
    for (const [index, each] of volumes.entries()) expect(equal(await each.read(0, MIB), own[index]!)).toBe(true);
    await shared.cache.settle();
    for (const [index, each] of volumes.entries()) expect(equal(await each.read(0, MIB), own[index]!)).toBe(true);

    // The process restarts: everything closed, the shared cache last; then no DATA object can be read.
    for (const each of volumes) await each.close();
    await shared.close();
    device = new MemoryCacheDevice(device.sizeBytes, prng, device.data, device.path);
    shared = await SharedReadCache.open(device, new MemoryPool());
    expect(shared.loaded.kept).toBeGreaterThanOrEqual(WORKING_SET / 4096);
    volumes = await open();
    refusing.refuse = true;
    for (const [index, each] of volumes.entries()) {
      const expected = image.slice();
      expected.set(own[index]!, 0);
      expect(equal(await readAll(each, WORKING_SET), expected)).toBe(true);
    }
    refusing.refuse = false;
    for (const each of volumes) await each.close();
    await shared.close();
  }, 120_000);

  test("mkdisk --force over a volume, even under the same uuid, starts its log above the old names: the old log's entries are never served for it", async () => {
    const world = await makeWorld(24);
    const prng = new Prng(25);
    const device = sharedDevice(prng);
    const shared = await SharedReadCache.open(device, new MemoryPool());
    const old = new Uint8Array(MIB).fill(0xa1);
    let volume = await openVolume(world, { readCache: false, sharedReadCache: shared });
    await volume.write(0, old, false);
    await volume.close();
    volume = await openVolume(world, { readCache: false, sharedReadCache: shared });
    expect(equal(await volume.read(0, MIB), old)).toBe(true);
    await shared.cache.settle();
    expect(equal(await volume.read(0, MIB), old)).toBe(true);
    expect(volume.stats().readCache.hits).toBeGreaterThan(0); // the old log's data is in the shared cache
    await volume.close();
    await world.lease!.release(); // the server exited cleanly
    world.lease = null;
    // As `lsvd mkdisk --force --uuid <the same uuid>` does (the CLI's lease identity), with a fresh cache for it.
    const oldSeqs = (await world.store.list(`${world.prefix}.`)).map((name) => parseObjectName(world.prefix, name) ?? 0);
    const replaced = await createVolume({
      store: world.store,
      prefix: world.prefix,
      volUuid: world.volUuid,
      volSectors: world.volumeBytes / SECTOR_BYTES,
      replace: true,
      lease: { command: "mkdisk", identity: { host: "sim", bootId: "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", pid: 0, processStartTicks: 1 }, processRuns: () => false },
    });
    expect(replaced.deleted).toBeGreaterThan(0);
    expect(replaced.nextSeq).toBeGreaterThan(Math.max(...oldSeqs)); // no name of the old log is written again
    world.device = new MemoryCacheDevice(world.device.sizeBytes, prng);
    formatCache(world.device, world.volUuid, 7);
    const fresh = new Uint8Array(MIB).fill(0xb2);
    volume = await openVolume(world, { readCache: false, sharedReadCache: shared });
    await volume.write(0, fresh, false);
    await volume.close();
    volume = await openVolume(world, { readCache: false, sharedReadCache: shared });
    expect(equal(await volume.read(0, MIB), fresh)).toBe(true); // the new log's objects, never the old log's entries
    await volume.close();
    await shared.close();
  });

  test("a byte copy of a volume under another prefix (same uuid, another log) is kept off the shared cache the original uses", async () => {
    const original = await makeWorld(26);
    const prng = new Prng(27);
    const shared = await SharedReadCache.open(sharedDevice(prng), new MemoryPool());
    let volume = await openVolume(original, { readCache: false, sharedReadCache: shared });
    await volume.write(0, new Uint8Array(MIB).fill(0x11), false);
    await volume.close();
    await original.lease!.release();
    original.lease = null;
    for (const name of await original.store.list(original.prefix)) {
      if (name === original.prefix || /\.[0-9a-f]{8}$/.test(name)) await original.store.put(`copy${name.slice(original.prefix.length)}`, await original.store.get(name));
    }
    const copyDevice = new MemoryCacheDevice(original.device.sizeBytes, prng);
    formatCache(copyDevice, original.volUuid, 9);
    const copy: World = { ...original, prefix: "copy", device: copyDevice, logs: [], lease: null, volume: null, incarnation: 0, fence: null };
    volume = await openVolume(original, { readCache: false, sharedReadCache: shared });
    const copied = await openVolume(copy, { readCache: false, sharedReadCache: shared });
    expect(copy.logs.join("\n")).toMatch(/warning: read cache: not using shared device .*is at .* vol for another volume of this process, not at .* copy/);
    expect(original.logs.join("\n")).not.toContain("warning: read cache");
    await copied.write(0, new Uint8Array(MIB).fill(0x22), false);
    expect(equal(await copied.read(0, MIB), new Uint8Array(MIB).fill(0x22))).toBe(true);
    expect(equal(await volume.read(0, MIB), new Uint8Array(MIB).fill(0x11))).toBe(true);
    await copied.close();
    await volume.close();
    await shared.close();
  });

  test("a volume's cache device is refused as a shared read-cache device, with the reason", async () => {
    const world = await makeWorld(23);
    await expect(SharedReadCache.open(world.device, new MemoryPool())).rejects.toThrow(/is a volume's cache .*mkcache --read-cache-only/);
    await expect(SharedReadCache.open(new MemoryCacheDevice(MIB, new Prng(1)), new MemoryPool())).rejects.toThrow(/not a shared read-cache device/);
  });
});
