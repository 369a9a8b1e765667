// Garbage collection keeps the backend bounded under sustained overwrite at the smallest batch size (sim world: the
// real volume code on a memory store and a memory cache device). Rounds are driven by hand, one after each burst of
// random 4 KiB overwrites, so the test decides how much garbage each round faces; nothing depends on timing.
// With the old pacing (one batch's worth of live data copied per round, 64 victims and 256 deletes per round) the
// backend grows without bound here: a round cleans 64 KiB while each burst makes 2 MiB of garbage.

import { describe, expect, test } from "bun:test";
import { CHECKPOINT_INTERVAL_OBJECTS, SECTOR_BYTES } from "../../src/constants.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { crashWorld, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World } from "../sim/volume_world.ts";

const BLOCK = 4096;
const VOLUME_BYTES = 8 * 1024 * 1024;
/** Superblock, CHECKPOINTS_KEPT checkpoints, object headers: what the backend holds besides data. */
const SLACK_BYTES = 1024 * 1024;

interface WritesView {
  settle(): Promise<void>;
  sequenceNext: number;
  durableSeq: number;
}

/** Until the write path is idle: everything durable, and no checkpoint that a named one set off still pending. */
async function quiesce(volume: Volume): Promise<void> {
  const writes = (volume as unknown as { writes: WritesView }).writes;
  for (let pass = 0; pass < 100; pass++) {
    const before = writes.sequenceNext;
    await writes.settle();
    await Bun.sleep(0);
    if (writes.sequenceNext === before && writes.durableSeq >= writes.sequenceNext - 1) return;
  }
  throw new Error("the write path did not go idle");
}

async function backendBytes(store: ObjectStore): Promise<number> {
  let total = 0;
  for (const name of await store.list(PREFIX)) total += (await store.stat(name))?.size ?? 0;
  return total;
}

async function burst(volume: Volume, world: World, model: VolumeModel, blocks: number): Promise<void> {
  const writes: Array<Promise<void>> = [];
  for (let index = 0; index < blocks; index++) {
    const block = world.prng.int(VOLUME_BYTES / BLOCK);
    const data = new Uint8Array(BLOCK);
    world.prng.fill(data);
    model.apply(block * BLOCK, data, BLOCK);
    writes.push(volume.write(block * BLOCK, data, false));
  }
  await Promise.all(writes);
}

describe("garbage collection pacing", () => {
  test("at 64 KiB batches, sustained random overwrite keeps the backend within 2x the live data (+ slack)", async () => {
    const world = await makeWorld(601, { volumeBytes: VOLUME_BYTES, cacheBytes: 64 * 1024 * 1024 });
    const model = new VolumeModel(VOLUME_BYTES);
    // Rounds only when the test runs one; checkpoints at the real default interval, or when the collector asks.
    let volume = await openVolume(world, {
      clock: immediateClock,
      gc: true,
      gcIntervalMs: 3_600_000,
      gcForceCheckpointMs: 3_600_000,
      batchIdleMs: 3_600_000,
      batchBytes: 64 * 1024,
      checkpointIntervalObjects: CHECKPOINT_INTERVAL_OBJECTS,
    });
    for (let offset = 0; offset < VOLUME_BYTES; offset += 64 * 1024) {
      const data = new Uint8Array(64 * 1024);
      world.prng.fill(data);
      model.apply(offset, data, data.byteLength);
      await volume.write(offset, data, false);
    }
    const rounds = 160;
    const warmUp = 40;
    // Each burst overwrites 1/16 of the volume's worth of random blocks (512 KiB of garbage), what the collector lets
    // clients make between two rounds when they write fast (GC_ROUND_GARBAGE_SHARE).
    const blocksPerRound = VOLUME_BYTES / BLOCK / 16;
    const ratios: number[] = [];
    const checkBound = async (round: number, when: string) => {
      const bytes = await backendBytes(world.store);
      ratios.push(bytes / VOLUME_BYTES);
      if (round >= warmUp && bytes > 2 * VOLUME_BYTES + SLACK_BYTES) {
        const seen = ratios.map((ratio) => ratio.toFixed(2)).join(" ");
        throw new Error(`round ${round}, ${when}: the backend holds ${bytes} bytes, over 2x the ${VOLUME_BYTES} live bytes + ${SLACK_BYTES}; backend / live so far: ${seen}`);
      }
    };
    for (let round = 0; round < rounds; round++) {
      await burst(volume, world, model, blocksPerRound);
      await quiesce(volume);
      await checkBound(round, "after the writes");
      await volume.collectGarbage();
      await quiesce(volume);
      await checkBound(round, "after the round");
    }
    const stats = volume.stats();
    expect(stats.gc!.errors).toBe(0);
    // The collector did the work, not luck: it copied data out and deleted most of what the log made.
    expect(stats.gcCopiedSectors * SECTOR_BYTES).toBeGreaterThan(VOLUME_BYTES);
    expect(stats.gc!.objectsDeleted).toBeGreaterThan(stats.objects / 2);
    const problem = model.diff(0, await volume.read(0, VOLUME_BYTES));
    if (problem) throw new Error(`after ${rounds} rounds: ${problem}`);

    // Everything the collector deleted stays deleted correctly: a crash, recovery from what is left, fsck.
    crashWorld(world, volume);
    volume = await openVolume(world, { clock: immediateClock, batchBytes: 64 * 1024 });
    const afterCrash = model.diff(0, await volume.read(0, VOLUME_BYTES));
    if (afterCrash) throw new Error(`after the crash: ${afterCrash}`);
    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
  }, 120_000);
});
