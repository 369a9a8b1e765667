// Space back-pressure on the real volume code (sim world: memory store, memory cache device), with the collector's
// rounds driven by hand and a space wait bound of an hour, so that a write released at all was released by the
// collector's progress, never by its bound: garbage that a snapshot pins never makes a write wait, and garbage the
// collector can free makes writes wait only until its rounds free it, while the snapshot still pins its objects. The
// mark follows --gc-threshold: a collector told to clean only objects less than 0.3 live is not held to 1.8x.
// Nothing here depends on timing (docs/architecture.md, "Space back-pressure").

import { describe, expect, test } from "bun:test";
import type { Volume } from "../../src/volume/volume.ts";
import { immediateClock, makeWorld, openVolume, VolumeModel, type World } from "../sim/volume_world.ts";

const BLOCK = 4096;
const CHUNK = 256 * 1024;
const HOUR_MS = 3_600_000;
/** Rounds only when the test runs one; checkpoints asked for whenever retirees wait; a write may wait an hour. */
const OPTIONS = { clock: immediateClock, gc: true, gcIntervalMs: HOUR_MS, gcForceCheckpointMs: 0, batchIdleMs: HOUR_MS, spaceWaitMsMax: HOUR_MS };

interface GateView {
  waiting: number;
}

function gateOf(volume: Volume): GateView {
  return (volume as unknown as { writes: { spaceGate: GateView } }).writes.spaceGate;
}

function writeAt(volume: Volume, world: World, model: VolumeModel, offset: number, bytes: number): Promise<void> {
  const data = new Uint8Array(bytes);
  world.prng.fill(data);
  model.apply(offset, data, bytes);
  return volume.write(offset, data, false);
}

/** Every object of the log so far durable (the collector and the gate only count durable objects). */
async function settle(volume: Volume): Promise<void> {
  await volume.flush();
  await (volume as unknown as { writes: { sealOpen(force: boolean): Promise<void> } }).writes.sealOpen(false);
  const writes = (volume as unknown as { writes: { durableSeq: number; sequenceNext: number } }).writes;
  for (let tries = 0; tries < 2000 && writes.durableSeq < writes.sequenceNext - 1; tries++) await Bun.sleep(1);
  expect(writes.durableSeq).toBe(writes.sequenceNext - 1);
}

/**
 * Issues the writes one after another and, whenever one waits at the gate, runs a collector round (the progress that
 * releases it); fails if they do not all complete within `roundsMax` rounds. Returns the rounds run.
 */
async function writeWithRounds(volume: Volume, writes: Array<() => Promise<void>>, roundsMax: number): Promise<number> {
  let finished = false;
  let failure: unknown = null;
  void (async () => {
    for (const start of writes) await start();
  })().then(
    () => (finished = true),
    (error: unknown) => (failure = error),
  );
  let rounds = 0;
  for (let turn = 0; !finished; turn++) {
    if (failure) throw failure;
    if (gateOf(volume).waiting > 0) {
      if (rounds === roundsMax) throw new Error(`a write still waits for space after ${rounds} collector rounds`);
      rounds += 1;
      await volume.collectGarbage();
    }
    await Bun.sleep(1);
    if (turn > 100_000) throw new Error("writes did not complete");
  }
  return rounds;
}

describe("space back-pressure", () => {
  test("garbage a snapshot pins never makes writes wait; garbage the collector frees makes them wait only until it does", async () => {
    const world = await makeWorld(701, { volumeBytes: 4 * 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, OPTIONS);
    for (let offset = 0; offset < world.volumeBytes; offset += CHUNK) await writeAt(volume, world, model, offset, CHUNK);
    await settle(volume);
    await volume.createSnapshot("pin");
    // Everything the snapshot names is now garbage for the head: the backend holds twice the live data, all of it
    // pinned or live.
    for (let offset = 0; offset < world.volumeBytes; offset += CHUNK) await writeAt(volume, world, model, offset, CHUNK);
    await settle(volume);
    await volume.collectGarbage();
    // Some garbage the collector could free (objects a quarter live, below the garbage target: not cleaned yet).
    for (let block = 0; block < (1024 * 1024) / BLOCK; block++) if (block % 4 !== 0) await writeAt(volume, world, model, block * BLOCK, BLOCK);
    await settle(volume);
    await volume.collectGarbage();
    // Over 1.8x the live data if pinned objects counted; they do not, so a write goes at once, no round needed.
    const before = volume.stats().spaceWaits;
    expect(await writeWithRounds(volume, [() => writeAt(volume, world, model, 0, BLOCK)], 0)).toBe(0);
    expect(volume.stats().spaceWaits).toBe(before);

    // Overwrite the volume three times with no round between: the objects the collector may free pass the mark,
    // writes wait, and only the collector's rounds (not the hour-long bound) let them go.
    const overwrites: Array<() => Promise<void>> = [];
    for (let pass = 0; pass < 3; pass++) for (let offset = 0; offset < world.volumeBytes; offset += CHUNK) overwrites.push(() => writeAt(volume, world, model, offset, CHUNK));
    const rounds = await writeWithRounds(volume, overwrites, 200);
    expect(rounds).toBeGreaterThan(0);
    const stats = volume.stats();
    expect(stats.spaceWaits).toBeGreaterThan(before);
    expect(stats.spaceWaitsTimedOut).toBe(0);
    await settle(volume);
    const problem = model.diff(0, await volume.read(0, world.volumeBytes));
    if (problem) throw new Error(`data after the waits: ${problem}`);
    await volume.close();
  });

  test("the mark follows --gc-threshold: twice the live data is over it at the default, not for a collector told to clean below 0.3", async () => {
    const overAt = async (gcThreshold: number): Promise<{ over: boolean; ratio: number }> => {
      const world = await makeWorld(702, { volumeBytes: 4 * 1024 * 1024 });
      const model = new VolumeModel(world.volumeBytes);
      const volume = await openVolume(world, { ...OPTIONS, gcThreshold });
      for (let offset = 0; offset < world.volumeBytes; offset += CHUNK) await writeAt(volume, world, model, offset, CHUNK);
      await settle(volume);
      await volume.collectGarbage(); // counts the live data (the whole volume from now on); nothing to clean
      // Every other block twice: the first objects stay half live (a candidate for neither threshold), the second
      // ones die whole. The backend holds about twice the live data, and no round has run to free any of it.
      for (let pass = 0; pass < 2; pass++) for (let block = 0; block < world.volumeBytes / BLOCK; block += 2) await writeAt(volume, world, model, block * BLOCK, BLOCK);
      await settle(volume);
      const collector = (volume as unknown as { gc: { spaceState(): { overHighWater: boolean }; ledger: { spaceBytes: number } } }).gc;
      const over = collector.spaceState().overHighWater;
      const ratio = collector.ledger.spaceBytes / world.volumeBytes;
      const problem = model.diff(0, await volume.read(0, world.volumeBytes));
      if (problem) throw new Error(`data: ${problem}`);
      await volume.close();
      return { over, ratio };
    };
    const atDefault = await overAt(0.5);
    expect(atDefault.ratio).toBeGreaterThan(1.8);
    expect(atDefault.ratio).toBeLessThan(3);
    expect(atDefault.over).toBe(true);
    expect((await overAt(0.3)).over).toBe(false);
  });
});
