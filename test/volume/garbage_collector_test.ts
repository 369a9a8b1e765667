// Garbage collection on the real volume code (sim world: memory store, memory cache device). Rounds are driven by
// hand (collectGarbage) so each test decides when cleaning, checkpoints and deletes happen; the random-I/O sims in
// volume_sim_test.ts run the collector on its timer against crashes as well.

import { describe, expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { GC_CLEAN_SLICE_EXTENTS, GC_READ_BUFFERS_IDLE_MS, SECTOR_BYTES } from "../../src/constants.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import type { Volume } from "../../src/volume/volume.ts";
import type { WritePath } from "../../src/volume/write_path.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { crashWorld, formatCache, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World, writeBlock } from "../sim/volume_world.ts";

const BLOCK = 4096;
/** Rounds only when a test asks (collectGarbage); a checkpoint is forced whenever retirees wait. */
const MANUAL_GC = { clock: immediateClock, gc: true, gcIntervalMs: 3_600_000, gcForceCheckpointMs: 0, batchIdleMs: 3_600_000 };

/** Where the map says a block lives: [object seq, data-area sector]. */
function placeOf(volume: Volume, block: number): [number, number] {
  const found: Array<[number, number]> = [];
  const map = (volume as unknown as { state: { map: { lookup(lba: number, sectors: number, visit: (lba: number, sectors: number, obj: number, offset: number) => void): void } } }).state.map;
  map.lookup((block * BLOCK) / SECTOR_BYTES, BLOCK / SECTOR_BYTES, (_lba, _sectors, obj, offset) => found.push([obj, offset]));
  expect(found.length).toBe(1);
  return found[0]!;
}

async function readAll(volume: Volume, world: World): Promise<Uint8Array> {
  const out = new Uint8Array(world.volumeBytes);
  for (let offset = 0; offset < world.volumeBytes; offset += 256 * 1024) out.set(await volume.read(offset, 256 * 1024), offset);
  return out;
}

async function expectModel(volume: Volume, world: World, model: VolumeModel, when: string): Promise<void> {
  const problem = model.diff(0, await readAll(volume, world));
  if (problem) throw new Error(`${when}: ${problem}`);
}

async function dataObjectCount(store: { list(prefix: string): Promise<string[]> }): Promise<number> {
  return (await store.list(`${PREFIX}.`)).length;
}

/** Waits until every object of the log so far is durable (the collector only looks at durable objects). */
async function settle(volume: Volume): Promise<void> {
  await volume.flush();
  await (volume as unknown as { writes: { sealOpen(force: boolean): Promise<void> } }).writes.sealOpen(false);
  for (let tries = 0; tries < 2000; tries++) {
    const writes = (volume as unknown as { writes: { durableSeq: number; sequenceNext: number } }).writes;
    if (writes.durableSeq >= writes.sequenceNext - 1) return;
    await Bun.sleep(1);
  }
  throw new Error("objects did not become durable");
}

/** Rounds until the collector has nothing left to do (bounded). */
async function collectUntilQuiet(volume: Volume): Promise<void> {
  for (let round = 0; round < 50; round++) {
    await settle(volume);
    const before = JSON.stringify(volume.stats().gc);
    await volume.collectGarbage();
    await settle(volume);
    await Bun.sleep(2); // the superblock update after a checkpoint runs in the background
    if (JSON.stringify(volume.stats().gc).replace(/"rounds":\d+,/, "") === before.replace(/"rounds":\d+,/, "")) return;
  }
}

describe("garbage collection", () => {
  test("half-dead objects are cleaned, dead ones deleted; the data survives reopen, crash and a lost cache", async () => {
    const world = await makeWorld(301, { volumeBytes: 4 * 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    let volume = await openVolume(world, MANUAL_GC);
    const blocks = world.volumeBytes / BLOCK;
    for (let block = 0; block < blocks; block++) await writeBlock(volume, world, model, block);
    // Every other block again (objects of the first pass become half dead), then a quarter once more.
    for (let block = 0; block < blocks; block += 2) await writeBlock(volume, world, model, block);
    for (let block = 1; block < blocks; block += 4) await writeBlock(volume, world, model, block);
    await settle(volume);
    const objectsBefore = await dataObjectCount(world.store);
    await collectUntilQuiet(volume);
    const gc = volume.stats().gc!;
    expect(gc.objectsCleaned).toBeGreaterThan(0);
    expect(gc.objectsDeleted).toBeGreaterThan(0);
    expect(gc.errors).toBe(0);
    const objectsAfter = await dataObjectCount(world.store);
    expect(objectsAfter).toBeLessThan(objectsBefore);
    // What is left in the backend is mostly live: no more than the threshold's worth of garbage per object.
    await expectModel(volume, world, model, "after collection");

    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
    volume = await openVolume(world, MANUAL_GC);
    await expectModel(volume, world, model, "after clean reopen");

    // More garbage, collected, then a crash before anything is flushed further.
    for (let block = 0; block < blocks; block += 3) await writeBlock(volume, world, model, block);
    await collectUntilQuiet(volume);
    crashWorld(world, volume);
    volume = await openVolume(world, MANUAL_GC);
    await expectModel(volume, world, model, "after crash");
    await volume.close();

    // The SSD is lost: a new cache, recovery from the backend alone (everything was flushed at close).
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 5_000_000);
    volume = await openVolume(world, MANUAL_GC);
    await expectModel(volume, world, model, "on a new cache");
    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
  }, 60_000);

  test("a victim's extents are handed over a slice per event-loop turn, each looked up once, the data intact", async () => {
    // Blocks written in a shuffled order: one object with ~1,000 separate extents; 3 in 4 overwritten, so it is a victim.
    let turn = 0;
    const clock = { ...immediateClock, sleep: (delayMs: number) => immediateClock.sleep(delayMs).then(() => void (turn += 1)) };
    const world = await makeWorld(311, { volumeBytes: 4 * 1024 * 1024, cacheBytes: 64 * 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, { ...MANUAL_GC, clock, batchBytes: 8 * 1024 * 1024 });
    const blocks = Array.from({ length: world.volumeBytes / BLOCK }, (_, block) => block);
    world.prng.shuffle(blocks);
    for (const block of blocks) await writeBlock(volume, world, model, block);
    await settle(volume);
    const [victim] = placeOf(volume, blocks[0]!);
    world.prng.shuffle(blocks);
    for (const block of blocks.filter((block) => block % 4 !== 0)) await writeBlock(volume, world, model, block);
    await settle(volume);
    const writes = (volume as unknown as { writes: Pick<WritePath, "copyExtents"> }).writes;
    const copyExtents = writes.copyExtents.bind(writes);
    const copiesByTurn = new Map<number, number>();
    writes.copyExtents = (source, extents, firstOffset) => {
      if (source.obj === victim) copiesByTurn.set(turn, (copiesByTurn.get(turn) ?? 0) + extents.length);
      return copyExtents(source, extents, firstOffset);
    };
    // Each extent handed over is looked up once, when its copy's record forms; the collector looks nothing up itself.
    const map = (volume as unknown as { state: { map: { lookup: (...args: unknown[]) => void } } }).state.map;
    const lookup = map.lookup.bind(map);
    let lookups = 0;
    map.lookup = (...args: unknown[]) => {
      lookups += 1;
      lookup(...args);
    };
    await volume.collectGarbage();
    map.lookup = lookup;
    await settle(volume);
    expect(volume.stats().gc!.objectsCleaned).toBeGreaterThan(0);
    const copied = [...copiesByTurn.values()].reduce((sum, count) => sum + count, 0);
    expect(lookups).toBe(copied);
    expect(copied).toBeGreaterThanOrEqual(4 * GC_CLEAN_SLICE_EXTENTS); // 1,024 blocks not adjacent: an extent each
    expect(copiesByTurn.size).toBeGreaterThanOrEqual(Math.ceil(copied / GC_CLEAN_SLICE_EXTENTS));
    expect(Math.max(...copiesByTurn.values())).toBeLessThanOrEqual(GC_CLEAN_SLICE_EXTENTS);
    await expectModel(volume, world, model, "after cleaning in slices");
    await volume.close();
  }, 60_000);

  /**
   * 16 blocks written and flushed to one object; then, in one turn, a client write of new bytes to `block` and a GC
   * copy of its old bytes from where the map says they are, queued in the order asked.
   */
  async function raceCopyAndWrite(seed: number, block: number, copyFirst: boolean) {
    const world = await makeWorld(seed, { volumeBytes: 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, MANUAL_GC);
    for (let index = 0; index < 16; index++) await writeBlock(volume, world, model, index);
    await settle(volume);
    const writes = (volume as unknown as { writes: Pick<WritePath, "copyExtents"> }).writes;
    const [obj, offset] = placeOf(volume, block);
    const old = await volume.read(block * BLOCK, BLOCK);
    const fresh = new Uint8Array(BLOCK).fill(0xab);
    model.apply(block * BLOCK, fresh, BLOCK);
    const area = new Uint8Array(offset * SECTOR_BYTES + BLOCK);
    area.set(old, offset * SECTOR_BYTES);
    const copy = () => writes.copyExtents({ obj, area }, [{ lba: (block * BLOCK) / SECTOR_BYTES, sectors: BLOCK / SECTOR_BYTES }], offset);
    const client = () => volume.write(block * BLOCK, fresh, false);
    await Promise.all(copyFirst ? [copy(), client()] : [client(), copy()]);
    return { world, model, volume };
  }

  test("a client write queued before a copy of the same blocks wins", async () => {
    const { world, model, volume } = await raceCopyAndWrite(302, 3, false);
    expect(volume.stats().gcSupersededSectors).toBe(BLOCK / SECTOR_BYTES);
    expect(volume.stats().gcCopiedSectors).toBe(0);
    await expectModel(volume, world, model, "after the race");
    await volume.close();
    const reopened = await openVolume(world, MANUAL_GC);
    await expectModel(reopened, world, model, "after reopen");
    await reopened.close();
  }, 30_000);

  test("a copy queued before a client write is overwritten by it, in memory and after replay", async () => {
    const { world, model, volume } = await raceCopyAndWrite(303, 5, true);
    expect(volume.stats().gcCopiedSectors).toBe(BLOCK / SECTOR_BYTES);
    await expectModel(volume, world, model, "after the copy and the write");
    crashWorld(world, volume); // both records are only in the journal: replay must keep their order
    const reopened = await openVolume(world, MANUAL_GC);
    await expectModel(reopened, world, model, "after journal replay");
    await reopened.close();
  }, 30_000);

  test("an object is not deleted while a read of it is in flight", async () => {
    const faulty = new FaultyStore(new MemoryStore());
    const world = await makeWorld(304, { volumeBytes: 1024 * 1024, store: faulty });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, MANUAL_GC);
    for (let block = 0; block < 16; block++) await writeBlock(volume, world, model, block);
    await settle(volume);
    const before = await volume.read(0, 16 * BLOCK);
    // A read of the first object hangs in the store; then every block is overwritten, so that object is dead.
    faulty.hang("getRange");
    const stuckRead = volume.read(0, 16 * BLOCK);
    await Bun.sleep(5);
    expect(faulty.hungCount).toBeGreaterThan(0);
    for (let block = 0; block < 16; block++) await writeBlock(volume, world, model, block);
    await collectUntilQuiet(volume);
    expect(await world.store.stat(`${PREFIX}.00000001`)).not.toBeNull();
    expect(volume.stats().gc!.retiredWaiting).toBeGreaterThan(0);
    faulty.release();
    // The read started before the overwrite: it returns the old bytes, from an object that still exists.
    expect(Buffer.from(await stuckRead).equals(Buffer.from(before))).toBe(true);
    await collectUntilQuiet(volume);
    expect(await world.store.stat(`${PREFIX}.00000001`)).toBeNull();
    await expectModel(volume, world, model, "after the delete");
    await volume.close();
  }, 30_000);

  test("victims with a damaged header or data are skipped (logged once each), the others cleaned, no data changes", async () => {
    const world = await makeWorld(306, { volumeBytes: 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, MANUAL_GC);
    const blocks = world.volumeBytes / BLOCK;
    for (let block = 0; block < blocks; block++) await writeBlock(volume, world, model, block);
    await settle(volume);
    // Three of every four blocks again: every first-pass object is a quarter live.
    for (let block = 0; block < blocks; block++) if (block % 4 !== 0) await writeBlock(volume, world, model, block);
    await settle(volume);
    // One victim's header is damaged; another's data area is, in a block that is dead (no client read sees it):
    // copying its live blocks out would give bytes from a damaged object a new, valid CRC.
    const [headerDamaged] = placeOf(volume, 0);
    const [dataDamaged, liveOffset] = placeOf(volume, blocks - 4);
    // The object's blocks are consecutive: pick one of them the second pass overwrote (index % 4 != 0).
    const firstBlock = blocks - 4 - liveOffset / (BLOCK / SECTOR_BYTES);
    const deadIndex = (5 - (firstBlock % 4)) % 4;
    expect(dataDamaged).not.toBe(headerDamaged);
    const nameOf = (seq: number) => `${PREFIX}.${seq.toString(16).padStart(8, "0")}`;
    const damage = async (seq: number, at: number) => {
      const bytes = await world.store.get(nameOf(seq));
      bytes[at]! ^= 0xff;
      await world.store.put(nameOf(seq), bytes);
    };
    await damage(headerDamaged, 100); // inside the header: its CRC no longer matches
    const info = (volume as unknown as { state: { objects: { get(seq: number): { hdrSectors: number } } } }).state.objects.get(dataDamaged);
    expect((firstBlock + deadIndex) % 4).not.toBe(0);
    await damage(dataDamaged, info.hdrSectors * SECTOR_BYTES + deadIndex * BLOCK + 7);
    for (let round = 0; round < 4; round++) await collectUntilQuiet(volume);
    const gc = volume.stats().gc!;
    expect(gc.errors).toBe(2);
    expect(gc.objectsCleaned).toBeGreaterThan(0);
    for (const seq of [headerDamaged, dataDamaged]) {
      expect(world.logs.filter((line) => line.includes(`cannot clean ${nameOf(seq)}`)).length).toBe(1);
      expect(await world.store.stat(nameOf(seq))).not.toBeNull();
    }
    await expectModel(volume, world, model, "after rounds around a damaged object");
    await volume.close();
  }, 30_000);

  test("victims' read buffers stay across rounds without a victim, and go once none has come for a while", async () => {
    let skewMs = 0;
    const clock = { ...immediateClock, nowMs: () => Date.now() + skewMs };
    const world = await makeWorld(317, { volumeBytes: 4 * 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    const volume = await openVolume(world, { ...MANUAL_GC, clock });
    const blocks = world.volumeBytes / BLOCK;
    for (let block = 0; block < blocks; block++) await writeBlock(volume, world, model, block);
    for (let block = 0; block < blocks; block += 2) await writeBlock(volume, world, model, block);
    for (let block = 1; block < blocks; block += 4) await writeBlock(volume, world, model, block);
    await settle(volume);
    const gc = (volume as unknown as { gc: { idleReadBufferBytes: number } }).gc;
    await collectUntilQuiet(volume); // victims cleaned, then rounds that find none
    expect(volume.stats().gc!.objectsCleaned).toBeGreaterThan(0);
    const kept = gc.idleReadBufferBytes;
    expect(kept).toBeGreaterThan(0);
    skewMs = GC_READ_BUFFERS_IDLE_MS / 2;
    await volume.collectGarbage();
    expect(gc.idleReadBufferBytes).toBe(kept);
    skewMs = GC_READ_BUFFERS_IDLE_MS + 1_000;
    await volume.collectGarbage();
    expect(gc.idleReadBufferBytes).toBe(0);
    await expectModel(volume, world, model, "after the buffers went");
    await volume.close();
  });

  test("no deletes before the superblock names a checkpoint newer than the retirement", async () => {
    const world = await makeWorld(305, { volumeBytes: 1024 * 1024 });
    const model = new VolumeModel(world.volumeBytes);
    // Checkpoints only at close, never forced: dead objects must stay however many rounds run.
    const volume = await openVolume(world, { ...MANUAL_GC, gcForceCheckpointMs: 3_600_000, checkpointIntervalObjects: 1000 });
    for (let pass = 0; pass < 3; pass++) for (let block = 0; block < 64; block++) await writeBlock(volume, world, model, block);
    await settle(volume);
    const objects = await dataObjectCount(world.store);
    for (let round = 0; round < 5; round++) await volume.collectGarbage();
    await settle(volume);
    expect(volume.stats().gc!.objectsDeleted).toBe(0);
    expect(await dataObjectCount(world.store)).toBeGreaterThanOrEqual(objects);
    await expectModel(volume, world, model, "with dead objects kept");
    await volume.close();
  }, 30_000);
});
