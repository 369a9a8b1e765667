// Offline snapshot operations (src/volume/snapshot_admin.ts) on the sim world: create, delete and rollback, each
// stopped at every crash point it has (the old state or the new one afterwards, never wrong data); the refusals
// (an unclean previous owner without a cache, a live clone); rollback's fresh journal identity.

import { describe, expect, test } from "bun:test";
import { encodeSuperblock, newSuperblock, decodeSuperblock } from "../../src/format/superblock_object.ts";
import { objectName } from "../../src/format/object_name.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { createSnapshotOffline, deleteSnapshotOffline, rollbackToSnapshot, type SnapshotAdminOptions } from "../../src/volume/snapshot_admin.ts";
import { SnapshotDevice } from "../../src/volume/snapshot_device.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { crashWorld, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World, writeRandomBlocks } from "../sim/volume_world.ts";

const OPTIONS = { clock: immediateClock, gc: false, batchIdleMs: 3_600_000 };

class Stop extends Error {}

function admin(world: World, stopAt: string | null = null): SnapshotAdminOptions {
  world.incarnation += 1;
  return {
    store: world.store,
    prefix: PREFIX,
    command: "snapshot",
    identity: { host: "sim", bootId: "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", pid: 1000 + world.incarnation, processStartTicks: 1 },
    processRuns: () => false,
    crashPoint: async (point) => {
      if (point === stopAt) throw new Stop(point);
    },
  };
}

/** Closes the volume cleanly and gives its lease back, as a stopped `lsvd serve` does. */
async function stopCleanly(world: World, volume: Volume): Promise<void> {
  await volume.close();
  await world.lease!.release();
  world.lease = null;
}

async function readAll(device: { read(offset: number, length: number): Promise<Uint8Array> }, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += 256 * 1024) out.set(await device.read(offset, 256 * 1024), offset);
  return out;
}

function copy(model: VolumeModel): VolumeModel {
  const out = new VolumeModel(model.volumeBytes);
  out.bytes.set(model.bytes);
  return out;
}

async function matches(device: { read(offset: number, length: number): Promise<Uint8Array> }, world: World, model: VolumeModel): Promise<boolean> {
  return model.diff(0, await readAll(device, world.volumeBytes)) === null;
}

/** A volume with snapshot "s" (content a) and a head written on since (content b), stopped cleanly. */
async function fixture(seed: number): Promise<{ world: World; a: VolumeModel; b: VolumeModel }> {
  const world = await makeWorld(seed, { volumeBytes: 1024 * 1024 });
  const b = new VolumeModel(world.volumeBytes);
  let volume = await openVolume(world, OPTIONS);
  await writeRandomBlocks(volume, world, b, 100);
  await stopCleanly(world, volume);
  await createSnapshotOffline(admin(world), "s");
  const a = copy(b);
  volume = await openVolume(world, OPTIONS);
  await writeRandomBlocks(volume, world, b, 100);
  await stopCleanly(world, volume);
  return { world, a, b };
}

describe("offline snapshots", () => {
  test("rollback stopped at each crash point leaves the old head or the new one; the snapshot stays; the old cache replays nothing over it", async () => {
    const points = ["recovery.log-started", "snapshot.rollback-before-checkpoint", "snapshot.rollback-before-superblock", null];
    for (const point of points) {
      const { world, a, b } = await fixture(1410);
      if (point === null) await rollbackToSnapshot(admin(world), "s");
      else await expect(rollbackToSnapshot(admin(world, point), "s")).rejects.toThrow(Stop);
      let volume = await openVolume(world, OPTIONS);
      const old = await matches(volume, world, b);
      const rolled = await matches(volume, world, a);
      expect(old || rolled).toBe(true);
      expect(rolled).toBe(point === null);
      expect(await matches(await SnapshotDevice.open(world.store, PREFIX, "s"), world, a)).toBe(true);
      await stopCleanly(world, volume);
      if (point !== null) await rollbackToSnapshot(admin(world), "s"); // run again: it completes
      // The old cache after the rollback: its journal does not continue the rolled-back log.
      volume = await openVolume(world, OPTIONS);
      expect(volume.recovery.journalRecordsReplayed).toBe(0);
      expect(await matches(volume, world, a)).toBe(true);
      await writeRandomBlocks(volume, world, a, 20);
      crashWorld(world, volume);
      volume = await openVolume(world, OPTIONS);
      expect(await matches(volume, world, a)).toBe(true);
      await stopCleanly(world, volume);
      const report = await fsckVolume({ store: world.store, prefix: PREFIX, repair: false });
      if (report.problems.length > 0) console.log(point, JSON.stringify(report.checkpoints), report.notes ?? "", report.holesBeforeCheckpoint);
      expect(report.problems).toEqual([]);
    }
  });

  test("create and delete stopped before their superblock rewrite change nothing; a delete stopped after it is done", async () => {
    const { world, a, b } = await fixture(1411);
    await expect(createSnapshotOffline(admin(world, "snapshot.create-before-superblock"), "t")).rejects.toThrow(Stop);
    expect(decodeSuperblock(await world.store.get(PREFIX)).snapshots.map((snap) => snap.name)).toEqual(["s"]);
    await createSnapshotOffline(admin(world), "t");
    expect(await matches(await SnapshotDevice.open(world.store, PREFIX, "t"), world, b)).toBe(true);

    await expect(deleteSnapshotOffline(admin(world, "snapshot.delete-before-superblock"), "s")).rejects.toThrow(Stop);
    expect(await matches(await SnapshotDevice.open(world.store, PREFIX, "s"), world, a)).toBe(true);
    const sSeq = decodeSuperblock(await world.store.get(PREFIX)).snapshots.find((snap) => snap.name === "s")!.seq;
    // Stopped after its superblock rewrite (when its checkpoint may go at once), or done (when it may not yet).
    const stopped = await deleteSnapshotOffline(admin(world, "snapshot.delete-before-checkpoint-delete"), "s").then(() => false, (error: unknown) => error instanceof Stop);
    expect(decodeSuperblock(await world.store.get(PREFIX)).snapshots.map((snap) => snap.name)).toEqual(["t"]);
    // Its checkpoint is a left-over then: fsck --repair or garbage collection delete it.
    const report = await fsckVolume({ store: world.store, prefix: PREFIX, repair: false });
    expect(report.problems).toEqual([]);
    if (stopped) expect(report.leftoverCheckpoints).toContain(sSeq);
    const volume = await openVolume(world, OPTIONS);
    expect(await matches(volume, world, b)).toBe(true);
    await stopCleanly(world, volume);
  });

  test("fsck reports a snapshot whose checkpoint is missing or damaged", async () => {
    const { world } = await fixture(1413);
    const seq = decodeSuperblock(await world.store.get(PREFIX)).snapshots[0]!.seq;
    expect((await fsckVolume({ store: world.store, prefix: PREFIX, repair: false })).problems).toEqual([]);
    const bytes = await world.store.get(objectName(PREFIX, seq));
    const damaged = bytes.slice();
    damaged[200]! ^= 1;
    await world.store.put(objectName(PREFIX, seq), damaged);
    const report = await fsckVolume({ store: world.store, prefix: PREFIX, repair: false });
    expect(report.problems.filter((found) => found.kind === "snapshot").map((found) => found.seq)).toEqual([seq]);
    await world.store.delete(objectName(PREFIX, seq));
    const missing = await fsckVolume({ store: world.store, prefix: PREFIX, repair: false });
    expect(missing.problems.find((found) => found.kind === "snapshot")?.message).toContain("missing");
  });

  test("refusals: an unclean previous owner without its cache, a taken name, a live clone (a stale registration is ignored)", async () => {
    const { world } = await fixture(1412);
    let volume = await openVolume(world, OPTIONS);
    await writeRandomBlocks(volume, world, new VolumeModel(world.volumeBytes), 10);
    crashWorld(world, volume);
    await expect(createSnapshotOffline(admin(world), "u")).rejects.toThrow("--cache");
    await expect(rollbackToSnapshot(admin(world), "s")).rejects.toThrow("--cache");
    volume = await openVolume(world, OPTIONS);
    await stopCleanly(world, volume);
    await expect(createSnapshotOffline(admin(world), "s")).rejects.toThrow("exists already");

    // Registrations: "c1" has a superblock naming this volume at s (live), "c2" one naming another base, "c3" none
    // (both stale).
    const superblock = decodeSuperblock(await world.store.get(PREFIX));
    const s = superblock.snapshots.find((snap) => snap.name === "s")!;
    const cloneUuid = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";
    await world.store.put("c1", encodeSuperblock({ ...newSuperblock(cloneUuid, superblock.volSectors), clone: { baseUuid: superblock.volUuid, lastSeq: s.seq, baseName: PREFIX } }));
    const otherUuid = "11111111-2222-4333-8444-555555555555";
    await world.store.put("c2", encodeSuperblock({ ...newSuperblock(otherUuid, superblock.volSectors), clone: { baseUuid: otherUuid, lastSeq: s.seq, baseName: "other" } }));
    const registered = { ...superblock, cloneRefs: [{ snapSeq: s.seq, cloneUuid, name: "c1" }, { snapSeq: s.seq, cloneUuid: otherUuid, name: "c2" }, { snapSeq: s.seq, cloneUuid: otherUuid, name: "c3" }] };
    const raw = await world.store.getVersioned(PREFIX);
    await world.store.putIfVersion(PREFIX, encodeSuperblock(registered), raw!.version);
    await expect(deleteSnapshotOffline(admin(world), "s")).rejects.toThrow("clones: c1");
    await world.store.delete("c1");
    await deleteSnapshotOffline(admin(world), "s");
    const after = decodeSuperblock(await world.store.get(PREFIX));
    expect(after.snapshots.map((snap) => snap.name)).toEqual([]);
    expect(after.cloneRefs).toEqual([]);
    expect(await world.store.stat(objectName(PREFIX, s.seq))).toBeNull();
  });
});
