// Each row of the journal table (src/volume/recovery/rules.ts, JOURNAL_CASES) on a real volume: the situation that
// leads to it, the case recovery reports, and what the decision means for the data. For the discarding cases the
// proof is the next crash: the hand-over object must make the journal continue the log again (@B), or writes made
// after this open would be discarded by the next one.

import { describe, expect, test } from "bun:test";
import { parseObjectName } from "../../src/format/object_name.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { crashWorld, formatCache, immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";

const KIB = 1024;
/** Batches never seal on their own: a crash leaves the writes in the journal only. */
const HOLD = { clock: immediateClock, batchIdleMs: 60_000 } as const;

function filled(bytes: number, value: number): Uint8Array {
  return new Uint8Array(bytes).fill(value);
}

/** Deletes every object of the log above `keepUpTo` (a backend that lost its newest objects). */
async function loseObjectsAbove(world: World, keepUpTo: number): Promise<void> {
  for (const name of await world.store.list(`${PREFIX}.`)) {
    const seq = parseObjectName(PREFIX, name);
    if (seq !== null && seq > keepUpTo) await world.store.delete(name);
  }
}

/** A write after the open, a crash before any put, a reopen: the write must come back from the journal (@B). */
async function writeCrashReopen(world: World, value: number): Promise<void> {
  const volume = await openVolume(world, HOLD);
  await volume.write(64 * KIB, filled(16 * KIB, value), true);
  crashWorld(world, volume);
  const again = await openVolume(world, { clock: immediateClock });
  expect(again.recovery.journalCase).toBe("@B");
  expect(await again.read(64 * KIB, 16 * KIB)).toEqual(filled(16 * KIB, value));
  await again.close();
  expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
}

describe("the journal table on a volume: each case and what it does", () => {
  test("@A: a cache formatted for another volume is refused, nothing written", async () => {
    const world = await makeWorld(61);
    const other = await makeWorld(62);
    world.device = other.device;
    const before = (await world.store.list(`${PREFIX}.`)).length;
    await expect(openVolume(world)).rejects.toThrow(/belongs to volume .*refusing to use it/);
    expect((await world.store.list(`${PREFIX}.`)).length).toBe(before);
  });

  test("@B: the writer's journal continues the log: every acknowledged write after L is replayed", async () => {
    const world = await makeWorld(63);
    let volume = await openVolume(world, { clock: immediateClock });
    await volume.write(0, filled(16 * KIB, 1), false);
    await volume.close();
    volume = await openVolume(world, HOLD);
    await volume.write(0, filled(16 * KIB, 2), true);
    crashWorld(world, volume);
    volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@B");
    expect(volume.recovery.journalRecordsReplayed).toBe(1);
    expect(await volume.read(0, 16 * KIB)).toEqual(filled(16 * KIB, 2));
    await volume.close();
  });

  test("@C: the backend lost objects whose records the journal released: journal discarded, handed over", async () => {
    const world = await makeWorld(64);
    let volume = await openVolume(world, { clock: immediateClock });
    await volume.write(0, filled(16 * KIB, 1), false);
    await volume.close();
    const kept = Math.max(...(await world.store.list(`${PREFIX}.`)).map((name) => parseObjectName(PREFIX, name) ?? 0));
    volume = await openVolume(world, { clock: immediateClock });
    await volume.write(0, filled(16 * KIB, 2), false);
    await volume.close();
    await loseObjectsAbove(world, kept);
    volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@C");
    expect(await volume.read(0, 16 * KIB)).toEqual(filled(16 * KIB, 1));
    await volume.close();
    await writeCrashReopen(world, 3);
  });

  test("@D: nothing reached the backend yet: every record from the tail is replayed", async () => {
    const world = await makeWorld(65);
    const volume = await openVolume(world, HOLD);
    await volume.write(0, filled(16 * KIB, 4), true);
    await volume.write(32 * KIB, filled(16 * KIB, 5), true);
    crashWorld(world, volume);
    const again = await openVolume(world, { clock: immediateClock });
    expect(again.recovery.journalCase).toBe("@D");
    expect(again.recovery.journalRecordsReplayed).toBe(2);
    expect(await again.read(0, 16 * KIB)).toEqual(filled(16 * KIB, 4));
    expect(await again.read(32 * KIB, 16 * KIB)).toEqual(filled(16 * KIB, 5));
    await again.close();
  });

  test("@E: no writer in the log but the journal's tail moved on: journal discarded, handed over", async () => {
    const world = await makeWorld(66);
    let volume = await openVolume(world, { clock: immediateClock });
    await volume.write(0, filled(16 * KIB, 1), false);
    await volume.close();
    await loseObjectsAbove(world, 0);
    volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@E");
    expect(await volume.read(0, 16 * KIB)).toEqual(filled(16 * KIB, 0));
    await volume.close();
    await writeCrashReopen(world, 6);
  });

  test("@F: the log went on with another cache: this journal's records are stale and discarded, handed over", async () => {
    const world = await makeWorld(67);
    formatCache(world.device, world.volUuid, 900_000); // this cache's seqs lie far above the other cache's
    let volume = await openVolume(world, HOLD);
    await volume.write(0, filled(16 * KIB, 7), true); // only in this journal when the process dies
    crashWorld(world, volume);
    const first = world.device;
    world.device = new MemoryCacheDevice(first.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 1000);
    volume = await openVolume(world, { clock: immediateClock });
    await volume.write(0, filled(16 * KIB, 8), false);
    await volume.close();
    world.device = first;
    volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@F");
    expect(volume.recovery.journalRecordsReplayed).toBe(0);
    expect(await volume.read(0, 16 * KIB)).toEqual(filled(16 * KIB, 8));
    await volume.close();
    await writeCrashReopen(world, 9);
  });
});
