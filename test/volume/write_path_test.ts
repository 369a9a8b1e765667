// The write path's failures reach the caller, and its waits are woken by events (src/volume/write_path.ts and its
// parts under src/volume/write/); the client write load it reports to read-cache migration.

import { describe, expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { JOURNAL_WRITES_INFLIGHT_MAX } from "../../src/constants.ts";
import type { Clock } from "../../src/util/clock.ts";
import { WriteLoadMeter } from "../../src/volume/write/write_load.ts";
import { makeWorld, openVolume, PREFIX, VolumeModel } from "../sim/volume_world.ts";

const BLOCK = 4096;
const MIB = 1024 * 1024;

async function writeBlocks(volume: { write(offset: number, data: Uint8Array, fua: boolean): Promise<void> }, model: VolumeModel, count: number, fill: (data: Uint8Array) => void): Promise<void> {
  const writes: Promise<void>[] = [];
  for (let block = 0; block < count; block++) {
    const data = new Uint8Array(BLOCK);
    fill(data);
    model.apply(block * BLOCK, data, BLOCK);
    writes.push(volume.write(block * BLOCK, data, false));
  }
  await Promise.all(writes);
}

async function superblockCheckpoints(store: FaultyStore): Promise<number[]> {
  const { decodeVolumeSuperblock } = await import("../../src/volume/superblock_store.ts");
  return decodeVolumeSuperblock(PREFIX, await store.get(PREFIX)).superblock.checkpoints;
}

describe("a failed superblock rewrite", () => {
  test("fails close() (the rewrite and its one retry failed); the next close retries it and succeeds", async () => {
    const world = await makeWorld(7);
    const faulty = new FaultyStore(world.store, { seed: 7 });
    world.store = faulty;
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world);
    await writeBlocks(volume, model, 32, (data) => world.prng.fill(data));
    const before = await superblockCheckpoints(faulty);
    // The close's checkpoint is put; the superblock rewrite naming it fails, and so does settle's retry.
    faulty.failNext("putIfVersion", 2);
    await expect(volume.close()).rejects.toThrow();
    expect(world.logs.some((line) => line.includes("superblock update for checkpoint"))).toBe(true);
    expect(await superblockCheckpoints(faulty)).toEqual(before);
    // The store is back: closing again rewrites the superblock, which now names the close's checkpoint.
    await volume.close();
    const after = await superblockCheckpoints(faulty);
    expect(after.length).toBeGreaterThan(0);
    expect(after).not.toEqual(before);
  });

  test("that fails once is retried by settle: close() succeeds and the superblock names the checkpoint", async () => {
    const world = await makeWorld(8);
    const faulty = new FaultyStore(world.store, { seed: 8 });
    world.store = faulty;
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world);
    await writeBlocks(volume, model, 32, (data) => world.prng.fill(data));
    const before = await superblockCheckpoints(faulty);
    faulty.failNext("putIfVersion", 1);
    await volume.close();
    expect(world.logs.some((line) => line.includes("superblock update for checkpoint"))).toBe(true);
    expect(await superblockCheckpoints(faulty)).not.toEqual(before);
  });
});

describe("draining the write path", () => {
  test("close() waits for queued writes without sleeping (woken when the pump goes idle)", async () => {
    const world = await makeWorld(9);
    const model = new VolumeModel(world.volumeBytes);
    let sleeps = 0;
    // A clock that counts sleeps: nothing on this path (no put fails, GC is off) may poll.
    const clock: Clock = {
      nowMs: () => Date.now(),
      setTimer(delayMs, fn) {
        const timer = setTimeout(fn, delayMs);
        return { cancel: () => clearTimeout(timer) };
      },
      sleep(delayMs) {
        sleeps += 1;
        return new Promise((resolve) => setTimeout(resolve, delayMs));
      },
    };
    const volume = await openVolume(world, { clock });
    // Writes still queued (not yet formed into records) when close() starts draining.
    const writes: Promise<void>[] = [];
    for (let block = 0; block < 64; block++) {
      const data = new Uint8Array(BLOCK);
      world.prng.fill(data);
      model.apply(block * BLOCK, data, BLOCK);
      writes.push(volume.write(block * BLOCK, data, false));
    }
    await volume.close();
    await Promise.all(writes);
    expect(sleeps).toBe(0);
    const reopened = await openVolume(world);
    expect(model.diff(0, await reopened.read(0, 64 * BLOCK))).toBeNull();
    await reopened.close();
  });
});

describe("group commit", () => {
  test("writes that arrive while every journal write slot is taken join one record when a slot frees", async () => {
    const world = await makeWorld(11);
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world);
    // The device holds every write until released, so the slots stay taken.
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const write = world.device.write.bind(world.device);
    world.device.write = async (offset, buffers) => {
      await released;
      return write(offset, buffers);
    };
    const records = () => volume.stats().records;
    const before = records();
    const writes: Promise<void>[] = [];
    const writeBlock = (block: number) => {
      const data = new Uint8Array(BLOCK).fill(block + 1);
      model.apply(block * BLOCK, data, BLOCK);
      writes.push(volume.write(block * BLOCK, data, false));
    };
    // One write per event-loop turn: a record each, until every slot is taken.
    for (let block = 0; block < JOURNAL_WRITES_INFLIGHT_MAX; block++) {
      writeBlock(block);
      await Bun.sleep(0);
    }
    expect(records() - before).toBe(JOURNAL_WRITES_INFLIGHT_MAX);
    // Four more, each in a turn of its own, while no slot is free: none forms a record yet.
    for (let block = JOURNAL_WRITES_INFLIGHT_MAX; block < JOURNAL_WRITES_INFLIGHT_MAX + 4; block++) {
      writeBlock(block);
      await Bun.sleep(0);
    }
    expect(records() - before).toBe(JOURNAL_WRITES_INFLIGHT_MAX);
    release();
    await Promise.all(writes);
    expect(records() - before).toBe(JOURNAL_WRITES_INFLIGHT_MAX + 1);
    expect(model.diff(0, await volume.read(0, (JOURNAL_WRITES_INFLIGHT_MAX + 4) * BLOCK))).toBeNull();
    await volume.close();
  });
});

describe("checkpoint memory", () => {
  test("a checkpoint is built in the memory of one that became durable before it", async () => {
    const world = await makeWorld(12);
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world);
    const writes = volume["writes"];
    const scheduler = writes["scheduler"];
    const buffers = scheduler["checkpointBuffers"];
    const checkpointAfterWrites = async (fill: number) => {
      await writeBlocks(volume, model, 64, (data) => data.fill(fill));
      const before = volume.stats().checkpoints;
      writes.requestCheckpoint(1);
      for (let tries = 0; tries < 2000 && (volume.stats().checkpoints === before || buffers.lentCount > 0); tries++) await Bun.sleep(1);
      expect(volume.stats().checkpoints).toBe(before + 1);
      expect(buffers.lentCount).toBe(0); // durable: given back
    };
    await checkpointAfterWrites(1);
    const idle = buffers.idleBytes;
    expect(idle).toBeGreaterThan(0);
    await checkpointAfterWrites(2);
    expect(buffers.idleBytes).toBe(idle); // the same buffer, taken and given back: no new one
    expect(model.diff(0, await volume.read(0, 64 * BLOCK))).toBeNull();
    await volume.close();
    const reopened = await openVolume(world);
    expect(model.diff(0, await reopened.read(0, 64 * BLOCK))).toBeNull();
    await reopened.close();
  });
});

describe("the client write load read-cache migration looks at", () => {
  test("client writes count as in flight from queued until told, then not", async () => {
    const world = await makeWorld(10);
    const volume = await openVolume(world);
    let told = 0;
    let wake: () => void = () => {};
    const allTold = new Promise<void>((resolve) => (wake = resolve));
    const listener = {
      writeDone: () => ++told === 12 && wake(),
      writeFailed: (error: unknown) => {
        throw error;
      },
    };
    for (let block = 0; block < 12; block++) volume.writeThen(block * BLOCK, new Uint8Array(BLOCK).fill(block + 1), false, listener);
    expect(volume["writes"].clientWritesInFlight).toBe(12);
    await allTold;
    expect(volume["writes"].clientWritesInFlight).toBe(0);
    await volume.close();
  });

  test("the meter's rate covers the time since its previous look; the first look's is 0", () => {
    const meter = new WriteLoadMeter();
    expect(meter.look(1000, 64 * MIB, 7)).toEqual({ clientWritesInFlight: 7, bytesPerSecond: 0 });
    expect(meter.look(1500, 80 * MIB, 3)).toEqual({ clientWritesInFlight: 3, bytesPerSecond: 32 * MIB });
    expect(meter.look(3500, 82 * MIB, 0)).toEqual({ clientWritesInFlight: 0, bytesPerSecond: MIB });
    expect(meter.look(3500, 82 * MIB, 0).bytesPerSecond).toBe(0); // no time passed: nothing written either
  });
});
