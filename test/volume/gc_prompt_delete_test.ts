// Garbage collection deletes a retired object as soon as a durable superblock allows it, not at the next round: a round
// can be busy cleaning for a long while, and at small batches hundreds of objects became deletable meanwhile (the
// backend held them: bench/RESULTS.md, "GC pacing peaks"). Sim world (memory store and cache); rounds only when the
// test asks, so any delete after the one round below was made between rounds.

import { describe, expect, test } from "bun:test";
import { CHECKPOINTS_KEPT } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World } from "../sim/volume_world.ts";

const BLOCK = 4096;

async function writeBlock(volume: Volume, world: World, model: VolumeModel, block: number): Promise<void> {
  const data = new Uint8Array(BLOCK);
  world.prng.fill(data);
  model.apply(block * BLOCK, data, BLOCK);
  await volume.write(block * BLOCK, data, false);
}

/** Every object of the log so far durable and the superblock up to date (the collector looks at durable objects). */
async function settle(volume: Volume): Promise<void> {
  await volume.flush();
  await (volume as unknown as { writes: { settle(): Promise<void> } }).writes.settle();
}

describe("garbage collection deletes between rounds", () => {
  test("retirees go once the superblock names enough newer checkpoints, with no further round", async () => {
    const world = await makeWorld(411, { volumeBytes: 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    // One round, by hand. Writes take a checkpoint every 4 objects, so the superblock names CHECKPOINTS_KEPT of them
    // before the round; after it, checkpoints come only when the collector asks (forced at once when retirees wait).
    const volume = await openVolume(world, { clock: immediateClock, gc: true, gcIntervalMs: 3_600_000, gcForceCheckpointMs: 0, batchIdleMs: 3_600_000, checkpointIntervalObjects: 4 });
    for (let pass = 0; pass < 4; pass++) {
      for (let block = 0; block < 64; block++) await writeBlock(volume, world, model, block);
      await settle(volume);
    }
    const objectsBefore = (await world.store.list(`${PREFIX}.`)).length;
    const named = () => (volume as unknown as { writes: { persistedCheckpoints: number[] } }).writes.persistedCheckpoints;
    expect(named().length).toBe(CHECKPOINTS_KEPT);
    const checkpointsBefore = volume.stats().checkpoints;
    // The round retires the objects the second pass emptied and asks for a checkpoint; none can be deleted yet.
    await volume.collectGarbage();
    const gc = () => volume.stats().gc!;
    expect(gc().rounds).toBe(1);
    expect(gc().retiredWaiting).toBeGreaterThan(0);
    // Each named checkpoint asks for the next; once CHECKPOINTS_KEPT newer ones are named, the retirees are deleted.
    for (let tries = 0; tries < 1000 && gc().retiredWaiting > 0; tries++) {
      await settle(volume);
      await Bun.sleep(1);
    }
    expect(volume.stats().checkpoints - checkpointsBefore).toBeGreaterThanOrEqual(CHECKPOINTS_KEPT);
    expect(gc().rounds).toBe(1);
    expect(gc().retiredWaiting).toBe(0);
    expect(gc().objectsDeleted).toBeGreaterThan(0);
    expect((await world.store.list(`${PREFIX}.`)).length).toBeLessThan(objectsBefore);
    for (let block = 0; block < 64; block++) expect(model.diff(block * BLOCK, await volume.read(block * BLOCK, BLOCK))).toBeNull();
    await volume.close();
  }, 30_000);
});
