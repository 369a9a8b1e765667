// CKPT objects that runs killed at the wrong moment leave behind (docs/architecture.md, "Checkpoints"): the write
// path deletes those its own superblock updates stop needing, garbage collection (leftover_checkpoints.ts) those of
// earlier runs, fsck notes them and --repair deletes them; and a checkpoint a fallback recovery may still roll
// forward through is never deleted. Real volume code on a memory store (sim world); the crash states are built by
// putting back objects and superblocks exactly as a killed run leaves them.

import { describe, expect, test } from "bun:test";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { NIL as NIL_UUID } from "uuid";
import { encodeCheckpoint } from "../../src/format/checkpoint_object.ts";
import { decodeCommonHeader, ObjectType } from "../../src/format/object_header.ts";
import { objectName, parseObjectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock } from "../../src/format/superblock_object.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { fsckRepair, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World, writeRandomBlocks } from "../sim/volume_world.ts";


/** A memory store that keeps a copy of every CKPT object put, so a test can put one back after it was deleted. */
class RecordingStore extends MemoryStore {
  readonly checkpoints = new Map<number, Uint8Array>();
  override async put(name: string, data: Uint8Array): Promise<void> {
    if (parseObjectName(PREFIX, name) !== null && decodeCommonHeader(data).type === ObjectType.Checkpoint) this.checkpoints.set(decodeCommonHeader(data).seq, data.slice());
    return super.put(name, data);
  }
}

const OPTIONS = { clock: immediateClock, checkpointIntervalObjects: 2, batchIdleMs: 3_600_000, gcIntervalMs: 3_600_000, gcForceCheckpointMs: 3_600_000 };

/** Writes until the write path has taken `count` more checkpoints, then waits until the superblock names them. */
async function writeCheckpoints(volume: Volume, world: World, model: VolumeModel, count: number): Promise<void> {
  const target = volume.stats().checkpoints + count;
  for (let tries = 0; tries < 200 && volume.stats().checkpoints < target; tries++) await writeRandomBlocks(volume, world, model, 16);
  expect(volume.stats().checkpoints).toBeGreaterThanOrEqual(target);
  await (volume as unknown as { writes: { settle(): Promise<void> } }).writes.settle();
}

async function expectModel(volume: Volume, world: World, model: VolumeModel): Promise<void> {
  const problem = model.diff(0, await volume.read(0, world.volumeBytes));
  expect(problem).toBeNull();
}

async function named(world: World): Promise<number[]> {
  return decodeSuperblock(await world.store.get(PREFIX)).checkpoints;
}

async function exists(world: World, seq: number): Promise<boolean> {
  return (await world.store.stat(objectName(PREFIX, seq))) !== null;
}

/** A volume closed cleanly after several checkpoints (every CKPT object recorded), and its model. */
async function closedVolume(seed: number): Promise<{ world: World; store: RecordingStore; model: VolumeModel; all: number[] }> {
  const store = new RecordingStore();
  const world = await makeWorld(seed, { volumeBytes: 1024 * 1024, store });
  const model = new VolumeModel(world.volumeBytes);
  const volume = await openVolume(world, OPTIONS);
  await writeCheckpoints(volume, world, model, 6);
  await volume.close();
  const all = [...store.checkpoints.keys()].sort((a, b) => a - b);
  expect(all.length).toBeGreaterThanOrEqual(6);
  return { world, store, model, all };
}

describe("left-over checkpoints", () => {
  test("a checkpoint stored but never named (killed before the superblock rewrite) is deleted by the write path once named ones pass it", async () => {
    const { world, model } = await closedVolume(401);
    // The state of a run killed after its newest checkpoint was stored, before the superblock named it.
    const listed = await named(world);
    const unnamed = listed[listed.length - 1]!;
    const superblock = decodeSuperblock(await world.store.get(PREFIX));
    await world.store.put(PREFIX, encodeSuperblock({ ...superblock, checkpoints: listed.slice(0, -1) }));
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).exitCode).toBe(0);

    // Garbage collection off: this is the write path's own job.
    const volume = await openVolume(world, { ...OPTIONS, gc: false });
    await expectModel(volume, world, model);
    await writeCheckpoints(volume, world, model, 1);
    // The oldest named checkpoint is still below it: a fallback recovery from there rolls forward through it.
    expect(Math.min(...(await named(world)))).toBeLessThan(unnamed);
    expect(await exists(world, unnamed)).toBe(true);
    await writeCheckpoints(volume, world, model, 3);
    expect(Math.min(...(await named(world)))).toBeGreaterThan(unnamed);
    expect(await exists(world, unnamed)).toBe(false);
    await volume.close();
    const report = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(report.exitCode).toBe(0);
    expect(report.leftoverCheckpointsCount).toBe(0);
  }, 30_000);

  /**
   * The state a run killed before naming its newest checkpoint `a`, then a run killed between naming [n, b, c] and
   * deleting m, leave: superblock [n, b, c]; m stored (a left-over below n); a stored and unnamed, above n (a recovery
   * falling back to n rolls forward through it). Built from a clean run's objects, so every checkpoint agrees with them.
   */
  async function killedTwice(seed: number) {
    const { world, store, model, all } = await closedVolume(seed);
    const [a, b, c] = await named(world);
    const older = all.filter((seq) => seq < a!);
    expect(older.length).toBeGreaterThanOrEqual(2);
    const [m, n] = older.slice(-2) as [number, number];
    const superblock = decodeSuperblock(await world.store.get(PREFIX));
    await world.store.put(PREFIX, encodeSuperblock({ ...superblock, checkpoints: [n, b!, c!] }));
    for (const seq of [m, n]) await world.store.put(objectName(PREFIX, seq), store.checkpoints.get(seq)!);
    return { world, store, model, m, n, a: a! };
  }

  test("earlier runs' left-overs: fsck notes them (exit 0); GC deletes those below the oldest named checkpoint and keeps one above it", async () => {
    const { world, model, m, n, a } = await killedTwice(402);
    const before = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(before.problems).toEqual([]);
    expect(before.exitCode).toBe(0);
    expect(before.leftoverCheckpoints).toEqual([m]);
    expect(before.notes.join("\n")).toContain("left-overs of a run killed");

    const volume = await openVolume(world, { ...OPTIONS, gc: true });
    await volume.collectGarbage();
    await volume.collectGarbage();
    expect(await exists(world, m)).toBe(false);
    expect(volume.stats().gc!.leftoverCheckpointsDeleted).toBe(1);
    expect(await exists(world, a)).toBe(true);
    await expectModel(volume, world, model);
    // Once the named checkpoints pass a, it goes too (n goes by the write path: the superblock named it).
    await writeCheckpoints(volume, world, model, 3);
    await volume.collectGarbage();
    expect(Math.min(...(await named(world)))).toBeGreaterThan(a);
    expect(await exists(world, n)).toBe(false);
    expect(await exists(world, a)).toBe(false);
    expect(volume.stats().gc!.leftoverCheckpointsDeleted).toBe(2);
    await expectModel(volume, world, model);
    await volume.close();
    const after = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(after.exitCode).toBe(0);
    expect(after.leftoverCheckpointsCount).toBe(0);
  }, 30_000);

  test("fsck --repair deletes left-overs as a clean-up (exit 0) and keeps the named checkpoints and the one above the oldest", async () => {
    const { world, m, a } = await killedTwice(403);
    const repaired = await fsckRepair(world);
    expect(repaired.exitCode).toBe(0);
    expect(repaired.problems).toEqual([]);
    expect(repaired.repairs).toEqual([]);
    expect(repaired.cleanups.join(" ")).toContain("deleted 1 left-over checkpoint");
    expect(await exists(world, m)).toBe(false);
    expect(await exists(world, a)).toBe(true);
    for (const seq of await named(world)) expect(await exists(world, seq)).toBe(true);
    expect((await fsckRepair(world)).cleanups).toEqual([]);
  }, 30_000);

  test("an unnamed checkpoint that disagrees with the objects: a note below the oldest named one, a problem above it", async () => {
    const { world, m, a } = await killedTwice(404);
    // A checkpoint whose object table disagrees with object 1's header.
    const forged = (seq: number) => encodeCheckpoint({
      volUuid: world.volUuid, seq, cacheSeq: 0, checkpoints: [], deferredDeletes: [],
      objects: [{ seq: 1, hdrSectors: 8, dataSectors: 99_999, liveSectors: 0 }],
      mapEntries: new Uint8Array(0), cacheUuid: NIL_UUID, cacheSeqLast: 0,
    });
    await world.store.put(objectName(PREFIX, m), forged(m));
    const below = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(below.exitCode).toBe(0);
    expect(below.leftoverCheckpoints).toEqual([m]);
    await world.store.put(objectName(PREFIX, a), forged(a));
    const above = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(above.exitCode).toBe(4);
    expect(above.problems.map((found) => found.seq)).toEqual([a]);
    expect(above.problems[0]!.message).toContain("(not listed) disagrees with the objects");
  }, 30_000);
});
