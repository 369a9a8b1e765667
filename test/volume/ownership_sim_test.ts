// Ownership and fencing with the real volume code on a memory backend (docs/architecture.md, "Ownership and
// fencing"): two owners of one volume, one after the other, where the first was paused past its lease (SIGSTOP on
// virtual time) and resumes after the second took over and wrote; puts of the first held in the store and released
// late; a superblock or an object name taken by someone else. The successor's data must read back byte for byte.

import { describe, expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { GuardedStore } from "../../src/backend/guarded_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import type { CacheDevice } from "../../src/cache/cache_device.ts";
import type { Clock } from "../../src/util/clock.ts";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { objectName, parseObjectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock, skippedRangeOf } from "../../src/format/superblock_object.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { FencedError, type Lease } from "../../src/volume/lease.ts";
import { takeOwnership } from "../../src/volume/ownership.ts";
import { Volume } from "../../src/volume/volume.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { VirtualLeaseClock } from "../sim/virtual_lease_clock.ts";
import { formatCache, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World } from "../sim/volume_world.ts";
import { rejection } from "../_support/rejection.ts";

const MIB = 1024 * 1024;
const DURATION_MS = 30_000;

interface Owner {
  volume: Volume;
  lease: Lease;
  /** Between the owner's guarded view and the backend: what it has started reaches the backend through here. */
  faulty: FaultyStore;
  logs: string[];
}

/** Opens the volume as process `pid` of host `host`, with its own cache device, on the lease clock given. */
async function openAs(world: World, host: string, pid: number, device: CacheDevice, clock: VirtualLeaseClock, volumeClock: Clock = immediateClock): Promise<Owner> {
  const logs: string[] = [];
  const faulty = new FaultyStore(world.store, { seed: pid });
  const { lease, owner } = await takeOwnership({
    store: world.store,
    prefix: PREFIX,
    command: "serve",
    durationMs: DURATION_MS,
    clock,
    identity: { host, bootId: "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", pid, processStartTicks: 1 },
    processRuns: () => false,
    log: (line) => logs.push(line),
  });
  const store = new GuardedStore(faulty, () => lease.check());
  const volume = await Volume.open({
    owner,
    store,
    prefix: PREFIX,
    cache: device,
    pool: world.pool,
    batchBytes: 64 * 1024,
    batchIdleMs: 5,
    checkpointIntervalObjects: 4,
    // Puts held in the store must not stop the writes here (at 64 KiB batches the bound on objects ahead of the
    // backend would): the journal absorbs them, as at large batches.
    sealedObjectsAheadMax: 1024,
    gc: false,
    clock: volumeClock,
    log: (line) => logs.push(line),
  });
  return { volume, lease, faulty, logs };
}

/** A second cache device for the volume (the successor runs elsewhere). */
function otherCache(world: World): MemoryCacheDevice {
  const device = new MemoryCacheDevice(40 * MIB, world.prng);
  formatCache(device, world.volUuid, 5_000_000 + world.prng.int(1000));
  return device;
}

/** Writes `count` random 16 KiB blocks (stamped by the PRNG) and records them in the model. */
async function writeBlocks(volume: Volume, world: World, model: VolumeModel | null, count: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    const offset = world.prng.int(world.volumeBytes / 16384) * 16384;
    const data = new Uint8Array(16384);
    world.prng.fill(data);
    model?.apply(offset, data, data.byteLength);
    await volume.write(offset, data, false);
  }
}

async function readAll(volume: Volume, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += MIB) out.set(await volume.read(offset, MIB), offset);
  return out;
}

/** Every object name and its bytes, to show that nothing changed. */
async function snapshot(store: ObjectStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await store.list("")) out.set(name, Buffer.from(await store.get(name)).toString("base64"));
  return out;
}

async function waitUntil(what: string, condition: () => boolean): Promise<void> {
  for (let tries = 0; tries < 2000 && !condition(); tries++) await Bun.sleep(2);
  if (!condition()) throw new Error(`timed out waiting until ${what}`);
}

/** A cache device whose write completions can be held back (a journal write in flight when the process stops). */
class HoldingDevice implements CacheDevice {
  holding = false;
  private held: Array<() => void> = [];
  constructor(private readonly inner: MemoryCacheDevice) {}
  get path(): string {
    return this.inner.path;
  }
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.inner.read(offset, buffer);
  }
  readCached(offset: number, buffer: Uint8Array): Promise<void> {
    return this.inner.readCached(offset, buffer);
  }
  async write(offset: number, buffers: Uint8Array[]): Promise<void> {
    await this.inner.write(offset, buffers);
    if (this.holding) await new Promise<void>((resolve) => this.held.push(resolve));
  }
  fdatasync(): Promise<void> {
    return this.inner.fdatasync();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  release(): void {
    this.holding = false;
    for (const wake of this.held.splice(0)) wake();
  }
  get heldCount(): number {
    return this.held.length;
  }
}

describe("a holder paused past its lease, resumed after a successor took over", () => {
  test("it acknowledges nothing more, puts nothing more, and the successor's data reads back byte for byte", async () => {
    const world = await makeWorld(501, { volumeBytes: 4 * MIB });
    const clock = new VirtualLeaseClock();
    // The first holder's volume timers (the idle seal) fire only when the test says: they run after it resumes.
    const timers: Array<() => void> = [];
    const manual: Clock = { ...immediateClock, setTimer: (_ms, fn) => (timers.push(fn), { cancel: () => undefined }) };
    const device = new HoldingDevice(world.device);
    const first = await openAs(world, "a", 1, device, clock, manual);
    await writeBlocks(first.volume, world, null, 40);
    await first.volume.flush();
    const writer = (first.volume as unknown as { writes: { objectWriter: { putsInFlight: number } } }).writes.objectWriter;
    await waitUntil("the first holder's puts are done", () => writer.putsInFlight === 0);
    // Acknowledged, in its open batch, not yet sealed: the idle seal will want to put it.
    await writeBlocks(first.volume, world, null, 2);
    // A write whose journal record is on the device but not yet reported complete when the process stops.
    device.holding = true;
    const pending = first.volume.write(0, new Uint8Array(4096).fill(0xaa), false);
    pending.catch(() => undefined);
    await waitUntil("the journal write is held", () => device.heldCount > 0);
    // SIGSTOP: time passes, nothing of the first holder runs.
    clock.stop(DURATION_MS);
    const putsBefore = first.faulty.calls.putIfAbsent + first.faulty.calls.putIfVersion + first.faulty.calls.delete;

    const second = await openAs(world, "b", 2, otherCache(world), clock);
    expect(second.lease.taken.case).toBe("@E");
    expect(second.volume.recovery.skippedRange).not.toBeNull(); // unclean: the log continues above a margin
    const model = new VolumeModel(world.volumeBytes);
    model.bytes.set(await readAll(second.volume, world.volumeBytes));
    await writeBlocks(second.volume, world, model, 60);
    await second.volume.close();
    await second.lease.release();
    const before = await snapshot(world.store);

    // SIGCONT: the first holder runs again: its journal write completes, its idle seal fires, its lease timers run.
    device.release();
    for (const fire of timers.splice(0)) fire();
    await clock.advance(0);
    expect(await rejection(pending)).toBeInstanceOf(FencedError);
    expect(first.lease.fencedReason).toContain("ran out");
    expect(await rejection(first.volume.write(4096, new Uint8Array(4096), false))).toBeInstanceOf(FencedError);
    expect(await rejection(first.volume.read(0, 4096))).toBeInstanceOf(FencedError);
    expect(await rejection(first.volume.flush())).toBeInstanceOf(FencedError);
    expect(await rejection(first.volume.close())).toBeInstanceOf(FencedError);
    await Bun.sleep(30); // its put loop gets its turn
    for (const fire of timers.splice(0)) fire();
    await Bun.sleep(10);
    // Nothing it did after the stop reached the store.
    expect(first.faulty.calls.putIfAbsent + first.faulty.calls.putIfVersion + first.faulty.calls.delete).toBe(putsBefore);
    expect(await snapshot(world.store)).toEqual(before);
    expect(first.logs.some((line) => line.includes("fenced"))).toBe(true);

    // A third owner (after the second's clean release) reads exactly what the second left.
    const third = await openVolume(world);
    expect(Buffer.from(await readAll(third, world.volumeBytes)).equals(Buffer.from(model.bytes))).toBe(true);
    await third.close();
    const report = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(report.remaining).toEqual([]);
  }, 30_000);
});

describe("puts of a holder that lost the volume, held in the store and landing late", () => {
  for (const when of ["before the successor writes", "after the successor wrote"] as const) {
    test(`land ${when}: in the skipped range or refused, and change nothing the successor reads`, async () => {
      const world = await makeWorld(when === "before the successor writes" ? 502 : 503, { volumeBytes: 4 * MIB });
      const clock = new VirtualLeaseClock();
      const first = await openAs(world, "a", 1, world.device, clock);
      await writeBlocks(first.volume, world, null, 20);
      await first.volume.flush();
      await waitUntil("some objects are put", () => first.volume.stats().durableSeq >= 2);
      // From now on the first holder's puts and superblock rewrites hang in the store: started, not landed.
      first.faulty.hang("putIfAbsent");
      first.faulty.hang("putIfVersion");
      first.faulty.hang("delete");
      await writeBlocks(first.volume, world, null, 40);
      await first.volume.flush();
      await waitUntil("puts are held", () => first.faulty.hungCount >= 2);
      clock.stop(DURATION_MS); // and then it is paused (or cut off) past its lease

      const second = await openAs(world, "b", 2, otherCache(world), clock);
      const range = second.volume.recovery.skippedRange!;
      expect(range).not.toBeNull();
      const model = new VolumeModel(world.volumeBytes);
      model.bytes.set(await readAll(second.volume, world.volumeBytes));
      const held = first.faulty.hungCount;
      if (when === "before the successor writes") {
        first.faulty.release();
        await Bun.sleep(20);
      }
      await writeBlocks(second.volume, world, model, 60);
      if (when === "after the successor wrote") {
        first.faulty.release();
        await Bun.sleep(20);
      }
      await second.volume.close();
      await second.lease.release();

      // What the first holder landed late lies in the skipped range; its superblock rewrite did not land.
      const landed = (await world.store.list(`${PREFIX}.`)).map((name) => parseObjectName(PREFIX, name)).filter((seq): seq is number => seq !== null && seq >= range.first && seq <= range.last);
      expect(held).toBeGreaterThan(0);
      expect(landed.length).toBeGreaterThan(0);
      const superblock = decodeSuperblock(await world.store.get(PREFIX));
      expect(superblock.ownerEpoch).toBe(second.lease.epoch);
      for (const seq of landed) expect(skippedRangeOf(superblock.skipped, seq)).not.toBeNull();

      const third = await openVolume(world);
      expect(Buffer.from(await readAll(third, world.volumeBytes)).equals(Buffer.from(model.bytes))).toBe(true);
      await third.close();
      // The left-overs were deleted when the third owner opened.
      const after = (await world.store.list(`${PREFIX}.`)).map((name) => parseObjectName(PREFIX, name));
      for (const seq of landed) expect(after).not.toContain(seq);
    }, 30_000);
  }
});

describe("our own puts are not someone else's", () => {
  test("a put that landed though the store reported a failure is found at the retry: no fencing, nothing lost", async () => {
    const world = await makeWorld(506, { volumeBytes: 2 * MIB });
    const clock = new VirtualLeaseClock();
    const owner = await openAs(world, "a", 1, world.device, clock);
    owner.faulty.failNextAfterApply("putIfAbsent", 3); // no RetryingStore here: the object writer itself retries
    const model = new VolumeModel(world.volumeBytes);
    model.bytes.set(await readAll(owner.volume, world.volumeBytes));
    await writeBlocks(owner.volume, world, model, 40);
    await owner.volume.close();
    expect(owner.faulty.injected).toBeGreaterThanOrEqual(1);
    expect(owner.lease.fencedReason).toBeNull();
    expect(owner.logs.some((line) => line.includes("retrying"))).toBe(true);
    await owner.lease.release();
    const again = await openVolume(world);
    expect(Buffer.from(await readAll(again, world.volumeBytes)).equals(Buffer.from(model.bytes))).toBe(true);
    await again.close();
  }, 30_000);
});

describe("someone else writes under a running owner", () => {
  test("a superblock rewritten by another writer fences the owner at its next superblock write", async () => {
    const world = await makeWorld(504, { volumeBytes: 2 * MIB });
    const clock = new VirtualLeaseClock();
    const owner = await openAs(world, "a", 1, world.device, clock);
    const current = decodeSuperblock(await world.store.get(PREFIX));
    await world.store.put(PREFIX, encodeSuperblock({ ...current, ownerEpoch: current.ownerEpoch + 1 }));
    // Enough objects for a checkpoint: its superblock rewrite is refused, and the volume stops.
    await writeBlocks(owner.volume, world, null, 40).catch(() => undefined);
    await waitUntil("the owner is fenced", () => owner.lease.fencedReason !== null);
    expect(owner.lease.fencedReason).toContain("changed by another writer");
    expect(await rejection(owner.volume.write(0, new Uint8Array(512), false))).toBeInstanceOf(FencedError);
    expect(decodeSuperblock(await world.store.get(PREFIX)).ownerEpoch).toBe(current.ownerEpoch + 1);
  }, 30_000);

  test("an object of another writer under a name this owner writes stops the owner; it never overwrites it", async () => {
    const world = await makeWorld(505, { volumeBytes: 2 * MIB });
    const clock = new VirtualLeaseClock();
    const owner = await openAs(world, "a", 1, world.device, clock);
    const next = owner.volume.recovery.logStartSeq;
    const foreign = new Uint8Array(4096).fill(7);
    await world.store.put(objectName(PREFIX, next), foreign);
    // Writes are acknowledged from the journal until the put of the first object finds the name taken.
    await writeBlocks(owner.volume, world, null, 10).catch(() => undefined);
    await waitUntil("the owner is fenced", () => owner.lease.fencedReason !== null);
    expect(owner.lease.fencedReason).toContain("another writer's object");
    expect(Buffer.from(await world.store.get(objectName(PREFIX, next))).equals(Buffer.from(foreign))).toBe(true);
    expect(await rejection(owner.volume.write(0, new Uint8Array(SECTOR_BYTES), false))).toBeInstanceOf(FencedError);
  }, 30_000);
});
