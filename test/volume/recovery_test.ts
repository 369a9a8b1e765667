// Backend recovery when the newest objects are lost (an SSD-less restart after a backend rollback, or a crash between
// a checkpoint's put and the superblock's): a checkpoint the superblock lists but recovery could not use must stop
// being listed before its seq is reused, or a later superblock would name a DATA object as a checkpoint. And the
// roll-forward rule for client writes split over several objects: the log ends at the last write boundary unless the
// journal holds the rest of the write.

import { describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { encodeCheckpoint } from "../../src/format/checkpoint_object.ts";
import { encodeDataObjectHeader } from "../../src/format/data_object.ts";
import { objectName, parseObjectName } from "../../src/format/object_name.ts";
import { encodeSuperblock } from "../../src/format/superblock_object.ts";
import type { ExtentMap } from "../../src/map/extent_map.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { ObjectKind } from "../../src/volume/object_table.ts";
import { dropUnfinishedTail, keepUnfinishedTail, readSuperblock, recoverBackend } from "../../src/volume/recovery/backend.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";
import { crashWorld, formatCache, fsckRepair, immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";

const MIB = 1024 * 1024;

test("a lost newest checkpoint is dropped from the superblock; its seq is reused for data and fsck stays clean", async () => {
  const world = await makeWorld(11, { volumeBytes: 4 * MIB });
  const prng = new Prng(12);
  const first = new Uint8Array(MIB);
  const second = new Uint8Array(MIB);
  prng.fill(first);
  prng.fill(second);

  let volume = await openVolume(world, { clock: immediateClock });
  await volume.write(0, first, false);
  await volume.close();
  volume = await openVolume(world, { clock: immediateClock });
  await volume.write(MIB, second, false);
  await volume.close();
  const listed = (await readSuperblock(world.store, PREFIX)).checkpoints;
  expect(listed.length).toBeGreaterThanOrEqual(2);
  const lost = listed.at(-1)!;

  // Lose the newest checkpoint and every object from the last one before it onwards: the second session's data
  // is gone from the backend, the first session's is intact behind the older checkpoint.
  const previous = listed.at(-2)!;
  for (const name of await world.store.list(`${PREFIX}.`)) {
    const seq = parseObjectName(PREFIX, name);
    if (seq !== null && seq > previous) await world.store.delete(name);
  }

  volume = await openVolume(world, { clock: immediateClock });
  expect((await readSuperblock(world.store, PREFIX)).checkpoints).not.toContain(lost);
  expect(world.logs.some((line) => line.includes("no longer lists unusable checkpoint"))).toBe(true);
  expect(await volume.read(0, MIB)).toEqual(first);
  // New data takes the lost checkpoint's seq (and later ones); a clean close writes a fresh checkpoint.
  await volume.write(2 * MIB, second, false);
  await volume.close();

  const report = await fsckVolume({ store: world.store, prefix: PREFIX });
  expect(report.problems).toEqual([]);
  expect(report.exitCode).toBe(0);
  volume = await openVolume(world, { clock: immediateClock });
  expect(await volume.read(0, MIB)).toEqual(first);
  expect(await volume.read(2 * MIB, MIB)).toEqual(second);
  await volume.close();
});

test("an older listed checkpoint the backend lost is dropped too; a clean close leaves fsck clean", async () => {
  const world = await makeWorld(13, { volumeBytes: 4 * MIB });
  const data = new Uint8Array(MIB);
  new Prng(14).fill(data);
  for (let session = 0; session < 3; session++) {
    const volume = await openVolume(world, { clock: immediateClock });
    await volume.write(session * MIB, data, false);
    await volume.close();
  }
  const listed = (await readSuperblock(world.store, PREFIX)).checkpoints;
  expect(listed.length).toBeGreaterThanOrEqual(2);
  const lost = listed.at(-2)!;
  await world.store.delete(objectName(PREFIX, lost));

  const volume = await openVolume(world, { clock: immediateClock });
  const now = (await readSuperblock(world.store, PREFIX)).checkpoints;
  expect(now).not.toContain(lost);
  expect(now).toContain(listed.at(-1)!);
  expect(world.logs.some((line) => line.includes(`no longer lists unusable checkpoint(s) ${objectName(PREFIX, lost)}`))).toBe(true);
  for (let session = 0; session < 3; session++) expect(await volume.read(session * MIB, MIB)).toEqual(data);
  await volume.close();
  const report = await fsckVolume({ store: world.store, prefix: PREFIX });
  expect(report.problems).toEqual([]);
  expect(report.exitCode).toBe(0);
});

// ---- The roll-forward rule for write boundaries (recovery/backend.ts: "unfinished tail") -----------------------------------

/** A DATA object of one extent of `sectors` sectors at `lba`, filled with `fill`, flagged as asked. */
function dataObject(volUuid: string, seq: number, lba: number, sectors: number, fill: number, writeContinues: boolean): Uint8Array {
  const data = new Uint8Array(sectors * SECTOR_BYTES).fill(fill);
  const header = encodeDataObjectHeader(
    { volUuid, seq, cacheSeq: 100 + seq, cacheSeqLast: 100 + seq, cacheUuid: WRITER_CACHE, objsCleaned: [], extents: [{ lba, sectors }], trims: [], writeContinues },
    data,
  );
  const object = new Uint8Array(header.byteLength + data.byteLength);
  object.set(header);
  object.set(data, header.byteLength);
  return object;
}

const WRITER_CACHE = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";

/** A store with a superblock and DATA objects 1.. as listed ("c": WRITE_CONTINUES, "b": ends on a boundary, null: missing). */
async function logOf(flags: Array<"c" | "b" | null>): Promise<{ store: MemoryStore; volUuid: string }> {
  const store = new MemoryStore();
  const volUuid = randomUUID();
  await store.put(PREFIX, encodeSuperblock({ volUuid, volSectors: 2048, checkpoints: [], clone: null, snapshots: [], nextSeq: 0, ownerEpoch: 0, skipped: [], snapshotTimes: [], cloneRefs: [], rollbackSeq: 0 }));
  for (const [index, flag] of flags.entries()) {
    const seq = index + 1;
    if (flag !== null) await store.put(objectName(PREFIX, seq), dataObject(volUuid, seq, seq * 8, 8, seq, flag === "c"));
  }
  return { store, volUuid };
}

/** Which objects the map points at (one extent per object at lba seq*8). */
function mappedObjects(map: ExtentMap): number[] {
  const seqs: number[] = [];
  map.forEach((_lba, _sectors, obj) => seqs.push(obj));
  return seqs;
}

describe("roll-forward ends at the last write boundary", () => {
  test("objects ending inside a write are held, then applied when an object ending on a boundary follows", async () => {
    const { store } = await logOf(["c", "c", "b", "c", "b"]);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect(state.unfinished).toBeNull();
    expect(state.nextSeq).toBe(6);
    expect(mappedObjects(state.map)).toEqual([1, 2, 3, 4, 5]);
    expect(state.rolledForward).toBe(5);
    expect(state.writerCacheSeqLast).toBe(105);
  });

  test("a tail of objects ending inside a write is not applied: the log ends before it, the caller decides", async () => {
    const { store } = await logOf(["b", "c", "b", "c", "c"]);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect(state.nextSeq).toBe(4);
    expect(mappedObjects(state.map)).toEqual([1, 2, 3]);
    expect(state.rolledForward).toBe(3);
    expect(state.writerCacheSeqLast).toBe(103);
    expect(state.unfinished?.objects.map((object) => object.seq)).toEqual([4, 5]);
    expect(state.unfinished?.writerCacheSeqLast).toBe(105);
    expect(state.unfinished?.writerCacheUuid).toBe(WRITER_CACHE);
    // Nothing is deleted yet: only the journal decision says whether the tail stays.
    expect(await store.stat(objectName(PREFIX, 5))).not.toBeNull();
  });

  test("keepUnfinishedTail applies the tail as the log's end (the journal holds the rest of its write)", async () => {
    const { store } = await logOf(["b", "c", "c"]);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    keepUnfinishedTail(PREFIX, state);
    expect(state.unfinished).toBeNull();
    expect(state.nextSeq).toBe(4);
    expect(mappedObjects(state.map)).toEqual([1, 2, 3]);
    expect([state.rolledForward, state.writerCacheSeqLast]).toEqual([3, 103]);
    expect(state.objects.get(3)?.liveSectors).toBe(8);
  });

  test("dropUnfinishedTail ends the log at the last boundary and leaves the tail beyond it, undeleted", async () => {
    const { store } = await logOf(["b", "c", "c", "c"]);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    dropUnfinishedTail(PREFIX, state);
    expect([state.nextSeq, state.unfinished, state.beyondGap]).toEqual([2, null, [2, 3, 4]]);
    expect(mappedObjects(state.map)).toEqual([1]);
    // Names are never written twice: the tail stays until the new log start skips it (ownership.ts, beginLog).
    for (const seq of [2, 3, 4]) expect(await store.stat(objectName(PREFIX, seq))).not.toBeNull();
    // A second recovery decides the same way.
    const again = await recoverBackend(store, PREFIX, { verifyData: true });
    expect(again.unfinished?.objects.map((object) => object.seq)).toEqual([2, 3, 4]);
    expect(again.nextSeq).toBe(2);
  });

  test("an invalid object ends the log as a missing one would (@L3): never applied, reported beyond the end", async () => {
    const { store } = await logOf(["b", "b", "b"]);
    const damaged = await store.get(objectName(PREFIX, 2));
    damaged[damaged.byteLength - 1]! ^= 0xff; // a data CRC mismatch
    await store.put(objectName(PREFIX, 2), damaged);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect([state.nextSeq, state.beyondGap, mappedObjects(state.map)]).toEqual([2, [2, 3], [1]]);
    expect(state.notes.some((note) => note.includes("is invalid") && note.includes("treated as missing"))).toBe(true);
  });

  test("a CKPT object the superblock does not list counts as present in the roll-forward (@L4)", async () => {
    const { store, volUuid } = await logOf(["b", null, "b"]);
    const checkpoint = encodeCheckpoint({
      volUuid,
      seq: 2,
      cacheSeq: 0,
      checkpoints: [],
      objects: [{ seq: 1, hdrSectors: 8, dataSectors: 8, liveSectors: 8 }],
      deferredDeletes: [],
      mapEntries: new Uint8Array(0),
      cacheUuid: WRITER_CACHE,
      cacheSeqLast: 101,
    });
    await store.put(objectName(PREFIX, 2), checkpoint);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect([state.checkpointSeq, state.nextSeq, state.beyondGap, mappedObjects(state.map)]).toEqual([0, 4, [], [1, 3]]);
    expect(state.objects.get(2)?.kind).toBe(ObjectKind.Checkpoint);
    expect(state.writerCacheSeqLast).toBe(103);
  });

  test("a gap ends the log first: held objects before it are the tail, objects beyond it are reported", async () => {
    const { store } = await logOf(["b", "c", null, "b"]);
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect(state.unfinished?.objects.map((object) => object.seq)).toEqual([2]);
    expect(state.beyondGap).toEqual([4]);
    expect(await store.stat(objectName(PREFIX, 4))).not.toBeNull();
    expect(state.nextSeq).toBe(2);
  });
});

describe("a client write larger than a batch, after a crash", () => {
  // 1 MiB at 64 KiB batches: 16 pieces in 16 objects; a long idle time keeps the last one open, so at the crash the
  // backend holds 15 objects that end inside the write and the journal holds all of it. A checkpoint is due every 4
  // objects: none may be taken inside the write.
  async function crashInsideWrite(seed: number): Promise<{ world: World; old: Uint8Array; next: Uint8Array }> {
    const world = await makeWorld(seed, { volumeBytes: 4 * MIB });
    const old = new Uint8Array(MIB).fill(0x55);
    const next = new Uint8Array(MIB).fill(0xaa);
    let volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    await volume.write(0, old, false);
    await volume.close();
    volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    await volume.write(0, next, true);
    await Bun.sleep(20); // the 15 sealed objects' puts complete
    expect(volume.stats().objectsEndingInsideWrite).toBe(15);
    expect(volume.stats().checkpoints).toBe(0);
    // Their records are released; with the tail persisted, only the tail's objects bridge the journal to the log.
    await (volume as unknown as { journal: { persistTail(): Promise<void> } }).journal.persistTail();
    crashWorld(world, volume);
    return { world, old, next };
  }

  test("with the cache: the journal finishes the write (tail kept, replayed), nothing acknowledged is lost", async () => {
    const { world, next } = await crashInsideWrite(31);
    const report = await fsckVolume({ store: world.store, prefix: PREFIX, cache: { device: world.device, pool: world.pool } });
    expect([report.problems, report.cache?.journalCase]).toEqual([[], "@B"]);
    expect(report.notes.some((note) => note.includes("end inside a client write: part of the log"))).toBe(true);
    const volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@B");
    expect(world.logs.some((line) => line.includes("end inside a client write: kept"))).toBe(true);
    expect(await volume.read(0, MIB)).toEqual(next);
    // The kept tail is part of the log from now on: the new log start must not skip it, across a crash and a clean
    // close (a start planned before the tail was decided skipped its seqs, and the next open deleted them).
    crashWorld(world, volume);
    let again = await openVolume(world, { clock: immediateClock });
    expect(await again.read(0, MIB)).toEqual(next);
    await again.close();
    again = await openVolume(world, { clock: immediateClock });
    expect(await again.read(0, MIB)).toEqual(next);
    await again.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
  });

  test("the takeover after a crash inside a write takes its checkpoint only once the replay has finished the write", async () => {
    // The reopen takes the lease over (the crashed holder never released it), so its log start skips a margin and
    // it wants a checkpoint right there: before the replay, that would hold 15 of the write's 16 pieces. Then the
    // reopened volume dies before the replayed piece is put, and the cache is lost.
    const { world, old, next } = await crashInsideWrite(35);
    let volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    expect(volume.recovery.skippedRange).not.toBeNull();
    expect(await volume.read(0, MIB)).toEqual(next);
    await Bun.sleep(20);
    crashWorld(world, volume);
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 7000);
    volume = await openVolume(world, { clock: immediateClock });
    const image = Buffer.from(await volume.read(0, MIB));
    expect(image.equals(old) || image.equals(next)).toBe(true);
    await volume.close();
  });

  test("the takeover checkpoint deferred by a kept tail comes at the first seal after the replay", async () => {
    const { world, next } = await crashInsideWrite(36);
    // (The interval is far above the seqs the takeover skips, so only the deferred request can bring a checkpoint.)
    const volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 5, checkpointIntervalObjects: 1_000_000 });
    expect(volume.recovery.skippedRange).not.toBeNull();
    await Bun.sleep(50); // the idle timer seals the replayed piece's batch: a boundary
    expect(volume.stats().checkpoints).toBe(1);
    expect(await volume.read(0, MIB)).toEqual(next);
    await volume.close();
  });

  test("fsck --repair without the cache leaves the tail in the log: the cache still finishes the write", async () => {
    const { world, next } = await crashInsideWrite(34);
    // Something beyond a gap, so that the repair truncates the log (it plans the new log start as an open does).
    const seqs = (await world.store.list(`${PREFIX}.`)).map((name) => parseObjectName(PREFIX, name)).filter((seq) => seq !== null);
    const beyond = Math.max(...seqs) + 2;
    await world.store.put(objectName(PREFIX, beyond), dataObject(world.volUuid, beyond, 0, 8, 7, false));
    const repaired = await fsckRepair(world);
    expect(repaired.problems).toEqual([]);
    expect(await world.store.stat(objectName(PREFIX, beyond))).toBeNull(); // the repair truncated the log
    const volume = await openVolume(world, { clock: immediateClock });
    expect(volume.recovery.journalCase).toBe("@B");
    expect(await volume.read(0, MIB)).toEqual(next);
    await volume.close();
  });

  test("without the cache: the write is wholly absent, its objects are deleted, and fsck is clean after the open", async () => {
    const { world, old } = await crashInsideWrite(32);
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 5000);
    // fsck, with or without this cache, finds nothing damaged; with it, it says what the next open will drop.
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
    const report = await fsckVolume({ store: world.store, prefix: PREFIX, cache: { device: world.device, pool: world.pool } });
    expect(report.problems).toEqual([]);
    expect(report.notes.some((note) => note.includes("the next open with this cache deletes them"))).toBe(true);
    const volume = await openVolume(world, { clock: immediateClock });
    expect(world.logs.some((line) => line.includes("whose rest no journal holds"))).toBe(true);
    expect(await volume.read(0, MIB)).toEqual(old);
    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).problems).toEqual([]);
  });

  test("replayed records count as inside a write until the replay ends: losing the cache after a replay tears nothing", async () => {
    // Journal records do not say where writes end. A crash while every put hangs leaves the whole write in the
    // journal only; the restart replays its 16 records into 16 objects and puts 15 of them; then the cache is lost.
    const world = await makeWorld(33, { volumeBytes: 4 * MIB });
    const old = new Uint8Array(MIB).fill(0x55);
    let volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    await volume.write(0, old, false);
    await volume.close();
    const healthy = world.store;
    const faulty = new FaultyStore(healthy, { seed: 33 });
    faulty.hang("putIfAbsent"); // log objects are created, never overwritten
    world.store = faulty;
    volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    await volume.write(0, new Uint8Array(MIB).fill(0xaa), true);
    crashWorld(world, volume);
    world.store = healthy;
    volume = await openVolume(world, { clock: immediateClock, batchIdleMs: 60_000 });
    expect(volume.recovery.journalRecordsReplayed).toBe(16);
    await Bun.sleep(20);
    expect(volume.stats().puts).toBeGreaterThanOrEqual(15);
    expect(volume.stats().objectsEndingInsideWrite).toBe(15);
    crashWorld(world, volume);
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 9000);
    volume = await openVolume(world, { clock: immediateClock });
    expect(await volume.read(0, MIB)).toEqual(old);
    await volume.close();
  });
});
