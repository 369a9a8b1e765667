// Ownership pieces apart from the lease (src/volume/ownership.ts, superblock_store.ts): where a new ownership starts
// its log (planLogStart), the epoch compare-and-swap at takeover (with a stale holder's write landing in between),
// superblock rewrites that fence on a foreign write but not on our own lost reply, and recovery over skipped ranges.

import { describe, expect, test } from "bun:test";
import { v4 as uuidv4 } from "uuid";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { STALE_SEQ_MARGIN } from "../../src/constants.ts";
import { NoSpaceError } from "../../src/errors.ts";
import { encodeDataObjectHeader } from "../../src/format/data_object.ts";
import { objectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock, newSuperblock, skippedRangeOf, type SuperblockObject } from "../../src/format/superblock_object.ts";
import { fsckRepair, makeWorld } from "../sim/volume_world.ts";
import { FencedError } from "../../src/volume/lease.ts";
import { LocalFence, planLogStart, takeOwnership } from "../../src/volume/ownership.ts";
import { recoverBackend } from "../../src/volume/recovery/backend.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { SuperblockStore } from "../../src/volume/superblock_store.ts";
import { VirtualLeaseClock } from "../sim/virtual_lease_clock.ts";
import { rejection } from "../_support/rejection.ts";

const PREFIX = "vol";
const VOL = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const IDENTITY = { host: "a", bootId: "3f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", pid: 1, processStartTicks: 1 };

function superblock(overrides: Partial<SuperblockObject> = {}): SuperblockObject {
  return { ...newSuperblock(VOL, 2048), ...overrides };
}

describe("planLogStart", () => {
  test("after a clean release the log continues right after its end; otherwise above every name plus the margin", () => {
    expect(planLogStart(11, 10, superblock({ nextSeq: 11 }), true)).toEqual({ nextSeq: 11, skipped: [], added: null });
    expect(planLogStart(11, 10, superblock({ nextSeq: 11 }), false)).toEqual({
      nextSeq: 11 + STALE_SEQ_MARGIN,
      skipped: [{ first: 11, last: 10 + STALE_SEQ_MARGIN }],
      added: { first: 11, last: 10 + STALE_SEQ_MARGIN },
    });
  });

  test("objects beyond a gap, and a next_seq beyond the log, are never reused", () => {
    // The log ends at 5 (seq 5 missing); 6..9 exist beyond it.
    expect(planLogStart(5, 9, superblock({ nextSeq: 7 }), true)).toMatchObject({ nextSeq: 10, added: { first: 5, last: 9 } });
    // The superblock says seqs up to 19 were handed out (a lost checkpoint), though nothing beyond 4 exists.
    expect(planLogStart(5, 4, superblock({ nextSeq: 20 }), true)).toMatchObject({ nextSeq: 20, added: { first: 5, last: 19 } });
  });

  test("ranges are kept (below the oldest checkpoint too); a range the log ended right after grows; at most 64", () => {
    const sb = superblock({ checkpoints: [50, 60], nextSeq: 100, skipped: [{ first: 10, last: 20 }, { first: 55, last: 58 }, { first: 70, last: 99 }] });
    // The log ends at 100, right after the range 70..99: one range 70..(new start - 1).
    expect(planLogStart(100, 99, sb, false)).toEqual({
      nextSeq: 100 + STALE_SEQ_MARGIN,
      skipped: [{ first: 10, last: 20 }, { first: 55, last: 58 }, { first: 70, last: 99 + STALE_SEQ_MARGIN }],
      added: { first: 70, last: 99 + STALE_SEQ_MARGIN },
    });
    const many = superblock({ nextSeq: 1000, skipped: Array.from({ length: 64 }, (_, i) => ({ first: 10 * i + 1, last: 10 * i + 5 })) });
    const plan = planLogStart(1000, 999, many, false);
    expect(plan.skipped.length).toBe(64);
    expect(plan.skipped[0]).toEqual({ first: 11, last: 15 });
    expect(plan.skipped.at(-1)).toEqual({ first: 1000, last: 999 + STALE_SEQ_MARGIN });
  });

  test("a log end inside a later range swallows it (the new range covers everything above the log end)", () => {
    const sb = superblock({ checkpoints: [3], nextSeq: 1300, skipped: [{ first: 100, last: 1199 }] });
    expect(planLogStart(50, 1299, sb, true)).toEqual({ nextSeq: 1300, skipped: [{ first: 50, last: 1299 }], added: { first: 50, last: 1299 } });
  });

  test("seqs are uint32: none left is an error, not a wrap-around", () => {
    expect(() => planLogStart(0xffffffff - 5, 0xffffffff - 6, superblock({ nextSeq: 0 }), false)).toThrow(NoSpaceError);
  });
});

describe("taking the volume: the epoch goes into the superblock", () => {
  test("the superblock records the new epoch; a stale holder's superblock rewrite then fails and fences it", async () => {
    const store = new MemoryStore();
    await store.put(PREFIX, encodeSuperblock(superblock()));
    const clock = new VirtualLeaseClock();
    const first = await takeOwnership({ store, prefix: PREFIX, command: "serve", clock, identity: IDENTITY, processRuns: () => false });
    expect(decodeSuperblock(await store.get(PREFIX)).ownerEpoch).toBe(1);
    first.lease.abandon();
    // The first holder is gone (kill -9); a successor takes over at once.
    const second = await takeOwnership({ store, prefix: PREFIX, command: "serve", clock, identity: { ...IDENTITY, pid: 2 }, processRuns: () => false });
    expect(second.owner.epoch).toBe(2);
    expect(second.owner.previousClean).toBe(false);
    expect(decodeSuperblock(await store.get(PREFIX)).ownerEpoch).toBe(2);
    // Had the first one only been paused, its next superblock write finds a version it did not write.
    const stale = await rejection(first.owner.superblocks!.write({ ...first.owner.superblocks!.superblock, checkpoints: [9] }));
    expect(stale).toBeInstanceOf(FencedError);
    expect(first.lease.fencedReason).toContain("changed by another writer");
    expect(decodeSuperblock(await store.get(PREFIX))).toMatchObject({ ownerEpoch: 2, checkpoints: [] });
    second.lease.abandon();
  });

  test("a stale holder's superblock write that lands between the new owner's read and its compare-and-swap is retried over", async () => {
    const memory = new MemoryStore();
    await memory.put(PREFIX, encodeSuperblock(superblock({ ownerEpoch: 4, checkpoints: [3] })));
    // The first superblock CAS the new owner sends finds the stale holder's late checkpoint superblock landed first.
    const faulty = new FaultyStore(memory);
    let landed = false;
    const store = new (class extends RetryingStore {
      override async putIfVersion(name: string, data: Uint8Array, expected: string): Promise<string> {
        if (name === PREFIX && !landed) {
          landed = true;
          await memory.put(PREFIX, encodeSuperblock(superblock({ ownerEpoch: 4, checkpoints: [3, 7] })));
        }
        return super.putIfVersion(name, data, expected);
      }
    })(faulty);
    const clock = new VirtualLeaseClock();
    const taken = await takeOwnership({ store, prefix: PREFIX, command: "serve", clock, identity: IDENTITY, processRuns: () => false });
    expect(landed).toBe(true);
    expect(taken.owner.epoch).toBe(5);
    // The late write's content is kept (read again), with the new epoch on top.
    expect(decodeSuperblock(await memory.get(PREFIX))).toMatchObject({ ownerEpoch: 5, checkpoints: [3, 7] });
    expect(taken.owner.superblocks!.superblock.checkpoints).toEqual([3, 7]);
    taken.lease.abandon();
  });

  test("a superblock rewrite whose reply was lost is adopted, not mistaken for a foreign write", async () => {
    const memory = new MemoryStore();
    await memory.put(PREFIX, encodeSuperblock(superblock()));
    const faulty = new FaultyStore(memory);
    const fence = new LocalFence();
    const superblocks = await SuperblockStore.read(faulty, PREFIX, fence);
    // The write lands, its reply is lost, and no retry is made (a store that gives up): outcome unknown.
    faulty.failNextAfterApply("putIfVersion", 1);
    await rejection(superblocks.write(superblock({ checkpoints: [4], nextSeq: 5 })));
    await superblocks.write(superblock({ checkpoints: [4, 8], nextSeq: 9 }));
    expect(fence.fencedReason).toBeNull();
    expect(decodeSuperblock(await memory.get(PREFIX)).checkpoints).toEqual([4, 8]);
    // A write by someone else is not adopted.
    await memory.put(PREFIX, encodeSuperblock(superblock({ checkpoints: [4, 8, 12], nextSeq: 13 })));
    expect(await rejection(superblocks.write(superblock({ checkpoints: [4, 8, 16], nextSeq: 17 })))).toBeInstanceOf(FencedError);
    expect(fence.fencedReason).not.toBeNull();
  });
});

/** A DATA object writing `fill` to 8 sectors at lba (of volume `volUuid`); `continues`: its write goes on in the next. */
function dataObject(seq: number, lba: number, fill: number, volUuid = VOL, continues = false): Uint8Array {
  const data = new Uint8Array(4096).fill(fill);
  const header = encodeDataObjectHeader(
    { volUuid, seq, cacheSeq: seq, cacheSeqLast: seq, cacheUuid: uuidv4(), objsCleaned: [], extents: [{ lba, sectors: 8 }], trims: [], writeContinues: continues },
    data,
  );
  const object = new Uint8Array(header.byteLength + data.byteLength);
  object.set(header);
  object.set(data, header.byteLength);
  return object;
}

describe("fsck --repair and an unfinished tail", () => {
  test("the tail stays in the log (the journal that wrote it may finish it); only what lies beyond the gap is skipped", async () => {
    const world = await makeWorld(601, { volumeBytes: 1024 * 1024 });
    await world.store.put(objectName(PREFIX, 1), dataObject(1, 0, 1, world.volUuid));
    await world.store.put(objectName(PREFIX, 2), dataObject(2, 8, 2, world.volUuid, true)); // its write goes on in 3
    await world.store.put(objectName(PREFIX, 4), dataObject(4, 16, 4, world.volUuid)); // beyond the missing 3
    const report = await fsckRepair(world);
    expect([...report.repairs, ...report.cleanups].join(" ")).toContain("log truncated at seq 3");
    expect(await world.store.stat(objectName(PREFIX, 2))).not.toBeNull();
    expect(await world.store.stat(objectName(PREFIX, 4))).toBeNull();
    const skipped = decodeSuperblock(await world.store.get(PREFIX)).skipped;
    expect(skippedRangeOf(skipped, 2)).toBeNull();
    expect(skippedRangeOf(skipped, 4)).not.toBeNull();
  });
});

describe("recovery over skipped ranges", () => {
  test("objects in a skipped range are not part of the log, and the log goes on after the range", async () => {
    const store = new MemoryStore();
    await store.put(objectName(PREFIX, 1), dataObject(1, 0, 1));
    await store.put(objectName(PREFIX, 2), dataObject(2, 8, 2));
    // 3..10 skipped: a stale writer landed 3 and 5 late (they would overwrite lba 0 and 8).
    await store.put(objectName(PREFIX, 3), dataObject(3, 0, 0xee));
    await store.put(objectName(PREFIX, 5), dataObject(5, 8, 0xee));
    await store.put(objectName(PREFIX, 11), dataObject(11, 16, 11));
    await store.put(objectName(PREFIX, 12), dataObject(12, 24, 12));
    const sb = superblock({ nextSeq: 13, skipped: [{ first: 3, last: 10 }] });
    await store.put(PREFIX, encodeSuperblock(sb));
    const state = await recoverBackend(store, PREFIX, { verifyData: true });
    expect(state.nextSeq).toBe(13);
    expect(state.rolledForward).toBe(4);
    expect(state.skippedObjects.sort()).toEqual([3, 5]);
    expect(state.beyondGap).toEqual([]);
    const owners: number[] = [];
    state.map.lookup(0, 32, (_lba, _sectors, obj) => owners.push(obj));
    expect(owners).toEqual([1, 2, 11, 12]);
    // fsck reads the log the same way: across the range to 13, what lies in it a note, no problem.
    const report = await fsckVolume({ store, prefix: PREFIX });
    expect(report.logEndSeq).toBe(13);
    expect(report.skippedObjects).toBe(2);
    expect(report.problems).toEqual([]);
    expect(report.notes.join("\n")).toContain("2 object(s) in skipped seq ranges");
    expect(report.map.equal).toBe(true);
    // Without the range, the log would end at the stale object 3 (its data in the map) or at the hole at 4.
    const plain = await recoverBackend(store, PREFIX, { verifyData: true, superblock: { superblock: { ...sb, skipped: [] }, checkpointsChecksummed: true, rewrittenByReference: false } });
    expect(plain.nextSeq).toBe(4);
  });
});
