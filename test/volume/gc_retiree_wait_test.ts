// What a retired object waits for before garbage collection deletes it, and that it waits no longer than that:
// - CHECKPOINTS_KEPT checkpoints newer than its retirement, asked for back to back (gcCheckpointBurst), so their puts
//   overlap instead of each waiting for the previous one to be named;
// - then nothing: it is deleted as soon as the durable superblock allows it, not at the next round (a round can be
//   busy cleaning for a long while; at small batches hundreds of objects became deletable meanwhile, and the backend
//   held them: bench/RESULTS.md, "GC pacing peaks").
// Sim world (memory store and cache); rounds only when the test asks, so any delete after the one round below was
// made between rounds.

import { describe, expect, test } from "bun:test";
import { CHECKPOINTS_KEPT } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, writeBlock } from "../sim/volume_world.ts";

const BLOCK = 4096;

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
    const sequenceBefore = (volume as unknown as { writes: { sequenceNext: number } }).writes.sequenceNext;
    await volume.collectGarbage();
    const gc = () => volume.stats().gc!;
    expect(gc().rounds).toBe(1);
    expect(gc().retiredWaiting).toBeGreaterThan(0);
    // What waits pays for CHECKPOINTS_KEPT checkpoints many times over: the round asked for all of them at once, and
    // they were queued back to back (nothing was being written: no data object between them).
    expect(volume.stats().checkpoints - checkpointsBefore).toBe(CHECKPOINTS_KEPT);
    expect((volume as unknown as { writes: { sequenceNext: number } }).writes.sequenceNext - sequenceBefore).toBe(CHECKPOINTS_KEPT);
    // Once they are named, the retirees are deleted, with no further round.
    for (let tries = 0; tries < 1000 && gc().retiredWaiting > 0; tries++) {
      await settle(volume);
      await Bun.sleep(1);
    }
    expect(gc().rounds).toBe(1);
    expect(gc().retiredWaiting).toBe(0);
    expect(gc().objectsDeleted).toBeGreaterThan(0);
    expect((await world.store.list(`${PREFIX}.`)).length).toBeLessThan(objectsBefore);
    for (let block = 0; block < 64; block++) expect(model.diff(block * BLOCK, await volume.read(block * BLOCK, BLOCK))).toBeNull();
    await volume.close();
  }, 30_000);
});
