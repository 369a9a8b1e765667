// Snapshots on the real volume code (sim world: memory store, memory cache device): made while writing, read through
// SnapshotDevice, kept whole by garbage collection, crashes and a lost cache, and freed again when deleted.

import { describe, expect, test } from "bun:test";
import { decodeSuperblock, encodeSuperblock, newSuperblock } from "../../src/format/superblock_object.ts";
import { withCloneRef, withoutCloneRef, withoutSnapshot, withSnapshot } from "../../src/volume/snapshots.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { SnapshotDevice } from "../../src/volume/snapshot_device.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { crashWorld, formatCache, fsckRepair, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World, writeRandomBlocks } from "../sim/volume_world.ts";

const BLOCK = 4096;
const MANUAL_GC = { clock: immediateClock, gc: true, gcThreshold: 0.9, gcIntervalMs: 3_600_000, gcForceCheckpointMs: 0, batchIdleMs: 3_600_000 };

async function readAll(device: { read(offset: number, length: number): Promise<Uint8Array> }, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += 256 * 1024) out.set(await device.read(offset, 256 * 1024), offset);
  return out;
}

async function expectSnapshot(world: World, name: string, model: VolumeModel, when: string): Promise<void> {
  const device = await SnapshotDevice.open(world.store, PREFIX, name);
  const problem = model.diff(0, await readAll(device, world.volumeBytes));
  if (problem) throw new Error(`snapshot ${name}, ${when}: ${problem}`);
}

async function expectHead(volume: Volume, world: World, model: VolumeModel, when: string): Promise<void> {
  const problem = model.diff(0, await readAll(volume, world.volumeBytes));
  if (problem) throw new Error(`head, ${when}: ${problem}`);
}

function copyModel(model: VolumeModel): VolumeModel {
  const copy = new VolumeModel(model.volumeBytes);
  copy.bytes.set(model.bytes);
  return copy;
}

async function backendBytes(world: World): Promise<number> {
  let total = 0;
  for (const name of await world.store.list(`${PREFIX}.`)) total += (await world.store.get(name)).byteLength;
  return total;
}

async function collectUntilQuiet(volume: Volume): Promise<void> {
  await volume.collectGarbageUntilQuiet();
  await Bun.sleep(5); // the superblock update after a checkpoint runs in the background
  await volume.collectGarbageUntilQuiet();
}

describe("snapshots", () => {
  test("made while writing, they read as the volume did; GC, a crash and a lost cache keep them; deleting them frees the space", async () => {
    const world = await makeWorld(1401, { volumeBytes: 2 * 1024 * 1024 });
    const head = new VolumeModel(world.volumeBytes);
    let volume = await openVolume(world, MANUAL_GC);
    const snaps: Array<{ name: string; model: VolumeModel }> = [];
    for (let round = 0; round < 4; round++) {
      // Writes in flight while the snapshot is made: the snapshot holds every write acknowledged before the call.
      await writeRandomBlocks(volume, world, head, 200);
      const name = `s${round}`;
      const seq = await volume.createSnapshot(name);
      snaps.push({ name, model: copyModel(head) });
      expect(volume.snapshots().map((snap) => snap.name)).toContain(name);
      expect(decodeSuperblock(await world.store.get(PREFIX)).snapshots).toContainEqual({ seq, name });
    }
    await writeRandomBlocks(volume, world, head, 300);
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after writes");
    await collectUntilQuiet(volume);
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after GC");
    await expectHead(volume, world, head, "after GC");
    expect((await fsckVolume({ store: world.store, prefix: PREFIX, repair: false })).problems).toEqual([]);

    crashWorld(world, volume);
    // fsck --repair deletes left-over checkpoints: never a snapshot's.
    const repaired = await fsckRepair(world);
    expect(repaired.problems).toEqual([]);
    expect(repaired.checkpoints.filter((info) => info.snapshots.length > 0).length).toBe(snaps.length);
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after fsck --repair");
    volume = await openVolume(world, MANUAL_GC);
    await expectHead(volume, world, head, "after a crash");
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after a crash");
    await collectUntilQuiet(volume);
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after a crash and GC");

    // The cache is lost: the snapshots are in the backend alone.
    crashWorld(world, volume);
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 5000);
    volume = await openVolume(world, MANUAL_GC);
    for (const snap of snaps) await expectSnapshot(world, snap.name, snap.model, "after the cache was lost");
    await volume.close();
    volume = await openVolume(world, MANUAL_GC);

    const pinnedBytes = await backendBytes(world);
    for (const snap of snaps) await volume.deleteSnapshot(snap.name);
    expect(volume.snapshots()).toEqual([]);
    await collectUntilQuiet(volume);
    await expectHead(volume, world, head, "after the snapshots were deleted and GC");
    const freedBytes = await backendBytes(world);
    console.log(`snapshots_test: backend ${pinnedBytes} bytes with 4 snapshots after GC, ${freedBytes} bytes once they were deleted and GC ran; head live ${world.volumeBytes} bytes at most`);
    expect(freedBytes).toBeLessThan(pinnedBytes);
    expect(freedBytes).toBeLessThan(2 * world.volumeBytes);
    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX, repair: false })).problems).toEqual([]);
  });

  test("GC neither cleans nor deletes what a snapshot names: copying it would free nothing", async () => {
    const world = await makeWorld(1403, { volumeBytes: 1024 * 1024 });
    const head = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, MANUAL_GC);
    const blocks = world.volumeBytes / BLOCK;
    for (let block = 0; block < blocks; block++) {
      const data = new Uint8Array(BLOCK);
      world.prng.fill(data);
      head.apply(block * BLOCK, data, BLOCK);
      await volume.write(block * BLOCK, data, false);
    }
    await volume.createSnapshot("base");
    const base = copyModel(head);
    // Every other block again: the snapshot's objects are half dead for the head, and all of them pinned.
    for (let block = 0; block < blocks; block += 2) {
      const data = new Uint8Array(BLOCK);
      world.prng.fill(data);
      head.apply(block * BLOCK, data, BLOCK);
      await volume.write(block * BLOCK, data, false);
    }
    await collectUntilQuiet(volume);
    expect(volume.stats().gc!.objectsCleaned).toBe(0);
    expect(volume.stats().gc!.objectsDeleted).toBe(0);
    await expectSnapshot(world, "base", base, "after GC");
    await volume.deleteSnapshot("base");
    await collectUntilQuiet(volume);
    expect(volume.stats().gc!.objectsCleaned).toBeGreaterThan(0);
    await expectHead(volume, world, head, "after the snapshot was deleted and GC");
    await volume.close();
  });

  test("names are checked: taken, bad characters, unknown on delete", async () => {
    const world = await makeWorld(1402, { volumeBytes: 1024 * 1024 });
    const volume = await openVolume(world, MANUAL_GC);
    await writeRandomBlocks(volume, world, new VolumeModel(world.volumeBytes), 10);
    await volume.createSnapshot("a");
    await expect(volume.createSnapshot("a")).rejects.toThrow("exists already");
    await expect(volume.createSnapshot("a@b")).rejects.toThrow("'@'");
    await expect(volume.createSnapshot("")).rejects.toThrow("not empty");
    await expect(volume.deleteSnapshot("nope")).rejects.toThrow("no snapshot 'nope'");
    await volume.close();
  });
});

describe("snapshot superblock edits", () => {
  const volUuid = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
  const cloneUuid = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";

  test("add and remove snapshots and clone registrations; the rules are kept; the result encodes", () => {
    let superblock = { ...newSuperblock(volUuid, 2048), nextSeq: 100 };
    superblock = withSnapshot(superblock, { name: "a", seq: 10, createdMs: 5 });
    superblock = withSnapshot(superblock, { name: "b", seq: 10, createdMs: 6 }); // a second name for one checkpoint
    expect(superblock.snapshotTimes).toEqual([{ seq: 10, createdMs: 5 }]);
    expect(() => withSnapshot(superblock, { name: "a", seq: 20, createdMs: 7 })).toThrow("exists already");
    expect(() => withCloneRef(superblock, { snapSeq: 11, cloneUuid, name: "c" })).toThrow("no snapshot has seq 11");
    superblock = withCloneRef(superblock, { snapSeq: 10, cloneUuid, name: "c" });
    superblock = withCloneRef(superblock, { snapSeq: 10, cloneUuid, name: "c" }); // a retry replaces it
    expect(superblock.cloneRefs).toHaveLength(1);
    expect(() => withoutSnapshot(superblock, "vol", "a", ["c"])).toThrow("has clones: c");
    expect(decodeSuperblock(encodeSuperblock(superblock))).toEqual(superblock);
    superblock = withoutSnapshot(superblock, "vol", "a", []);
    expect(superblock.snapshotTimes).toEqual([{ seq: 10, createdMs: 5 }]); // "b" still names seq 10
    expect(superblock.cloneRefs).toHaveLength(1);
    superblock = withoutSnapshot(superblock, "vol", "b", []);
    expect(superblock).toEqual({ ...newSuperblock(volUuid, 2048), nextSeq: 100 });
    expect(withoutCloneRef(withCloneRef(withSnapshot(superblock, { name: "x", seq: 3, createdMs: 1 }), { snapSeq: 3, cloneUuid, name: "c" }), "c").cloneRefs).toEqual([]);
  });
});
