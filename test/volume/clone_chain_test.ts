// A clone's chain of bases (src/volume/clone_chain.ts) and its creation plan (src/volume/clone_create.ts), on a memory
// store: names resolve level by level, writes into a base are refused, a missing or foreign base is a clear error,
// and the planned clone has the reference's field values.

import { describe, expect, test } from "bun:test";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError } from "../../src/errors.ts";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, packCheckpointMapEntry } from "../../src/format/checkpoint_object.ts";
import { NIL_UUID } from "../../src/format/_codec.ts";
import { encodeSuperblock, newSuperblock, type SuperblockObject } from "../../src/format/superblock_object.ts";
import { ChainStore, basePrefixOf, loadCloneChain } from "../../src/volume/clone_chain.ts";
import { createClone, planClone } from "../../src/volume/clone_create.ts";
import { recoverBackend } from "../../src/volume/recovery/backend.ts";
import { WrappingStore, type StoreOp } from "../../src/backend/wrapping_store.ts";
import { decodeSuperblock } from "../../src/format/superblock_object.ts";
import { encodeCheckpoint } from "../../src/format/checkpoint_object.ts";
import { rejection } from "../_support/rejection.ts";

const BASE = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const C1 = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";
const C2 = "1b2c3d4e-5f60-4b7c-8d8e-9fa0b1c2d3e4";

function cloneSuperblock(volUuid: string, baseUuid: string, lastSeq: number, baseName: string): SuperblockObject {
  return { ...newSuperblock(volUuid, 2048), checkpoints: [lastSeq + 1], clone: { baseUuid, lastSeq, baseName }, nextSeq: lastSeq + 2 };
}

async function chainOfThree(): Promise<{ store: MemoryStore; top: SuperblockObject }> {
  const store = new MemoryStore();
  await store.put("base", encodeSuperblock({ ...newSuperblock(BASE, 2048), checkpoints: [10], nextSeq: 11 }));
  await store.put("c1", encodeSuperblock(cloneSuperblock(C1, BASE, 10, "/var/lsvd/base"))); // as the reference tool names it
  const top = cloneSuperblock(C2, C1, 20, "c1");
  await store.put("c2", encodeSuperblock(top));
  for (const [prefix, seq] of [["base", 5], ["c1", 15], ["c2", 25]] as const) await store.put(`${prefix}.${seq.toString(16).padStart(8, "0")}`, new Uint8Array([seq]));
  return { store, top };
}

describe("clone chain", () => {
  test("names resolve to the level that holds the seq; only the clone's own names are writable", async () => {
    const { store, top } = await chainOfThree();
    const chain = await loadCloneChain(store, "c2", top);
    expect(chain.levels.map((level) => [level.prefix, level.baseLastSeq])).toEqual([["c2", 20], ["c1", 10], ["base", 0]]);
    expect(chain.floor).toBe(20);
    expect(chain.resolve("c2.00000005")).toBe("base.00000005");
    expect(chain.resolve("c2.0000000a")).toBe("base.0000000a");
    expect(chain.resolve("c2.0000000b")).toBe("c1.0000000b");
    expect(chain.resolve("c2.00000014")).toBe("c1.00000014");
    expect(chain.resolve("c2.00000015")).toBe("c2.00000015");
    expect(chain.resolve("c2")).toBe("c2");
    expect(chain.resolve("c2.lease")).toBe("c2.lease");

    const view = chain.wrap(store) as ChainStore;
    expect([...(await view.get("c2.00000005"))]).toEqual([5]);
    expect([...(await view.getRange("c2.0000000f", 0, 1))]).toEqual([15]);
    expect([...(await view.get("c2.00000019"))]).toEqual([25]);
    for (const attempt of [view.put("c2.00000005", new Uint8Array(1)), view.delete("c2.0000000f"), view.putIfAbsent("c2.00000014", new Uint8Array(1))]) {
      expect(await rejection(attempt)).toBeInstanceOf(InvalidArgumentError);
    }
    expect(view.refused).toBe(3);
    expect([...(await store.get("base.00000005"))]).toEqual([5]); // untouched
    expect(await store.stat("c1.00000014")).toBeNull();
    await view.putIfAbsent("c2.00000015", new Uint8Array([21]));
    await view.delete("c2.00000019");
    expect(await store.stat("c2.00000019")).toBeNull();
  });

  test("a missing or foreign base, or a base answering seqs it cannot hold, is refused with the level named", async () => {
    const { store, top } = await chainOfThree();
    await store.put("c1", encodeSuperblock(cloneSuperblock(C1, C2, 10, "base"))); // names the wrong base uuid
    expect((await rejection(loadCloneChain(store, "c2", top))).message).toMatch(/c1 is a clone of base .*is volume 6f1c2b3a.*not 1b2c3d4e/);
    await store.put("c1", encodeSuperblock(cloneSuperblock(C1, BASE, 25, "base"))); // its own base answers up to 25 >= 20
    expect(await rejection(loadCloneChain(store, "c2", top))).toBeInstanceOf(CorruptionError);
    await store.delete("c1");
    const missing = await rejection(loadCloneChain(store, "c2", top));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.message).toContain("c2 is a clone of c1");
    expect(basePrefixOf("pool/base")).toBe("base");
    expect(basePrefixOf("base")).toBe("base");
  });

  test("planClone: the reference's field values, the base map copied, only the base objects it names", () => {
    const mapEntries = new Uint8Array(2 * CKPT_MAP_ENTRY_BYTES);
    const view = new DataView(mapEntries.buffer);
    packCheckpointMapEntry(view, 0, 0, 8, 3, 8);
    packCheckpointMapEntry(view, 1, 100, 8, 7, 16);
    const base = { ...newSuperblock(BASE, 4096), checkpoints: [9], snapshots: [{ seq: 9, name: "s" }], nextSeq: 10 };
    const objects = [3, 5, 7].map((seq) => ({ seq, hdrSectors: 8, dataSectors: 16, liveSectors: 8 }));
    const baseCheckpoint = { volUuid: BASE, seq: 9, cacheSeq: 0, checkpoints: [], objects, deferredDeletes: [], mapEntries, cacheUuid: NIL_UUID, cacheSeqLast: 0 };
    const plan = planClone({ base, basePrefix: "base", baseCheckpoint, cloneUuid: C1 });
    expect(plan.superblock).toEqual({ ...newSuperblock(C1, 4096), checkpoints: [10], clone: { baseUuid: BASE, lastSeq: 9, baseName: "base" }, nextSeq: 11 });
    const checkpoint = decodeCheckpoint(plan.checkpoint);
    expect([checkpoint.volUuid, checkpoint.seq]).toEqual([C1, 10]);
    expect(Buffer.from(checkpoint.mapEntries).equals(Buffer.from(mapEntries))).toBe(true);
    expect(checkpoint.objects.map((entry) => entry.seq)).toEqual([3, 7]);
  });

  test("a crash at every write of lsvd clone leaves no clone or a whole one; a retry then makes it, registered once", async () => {
    const writesOfOneRun = (await cloneWithCrashAt(null)).writes;
    expect(writesOfOneRun).toBeGreaterThanOrEqual(6); // clone lease, base lease and superblock, CKPT, superblock, releases
    for (let crashAt = 1; crashAt <= writesOfOneRun; crashAt++) {
      const { store, failed } = await cloneWithCrashAt(crashAt);
      const committed = (await store.stat("c")) !== null;
      if (failed) {
        expect(committed).toBe(false); // the superblock is the commit point, and nothing follows it but releases
        await createClone(cloneOptions(store, CLONE_RETRY));
      }
      const cloneUuid = committed && !failed ? C1 : CLONE_RETRY;
      const state = await recoverBackend(store, "c", { verifyData: false });
      expect([state.superblock.volUuid, state.checkpointSeq, state.nextSeq, state.map.extentCount]).toEqual([cloneUuid, 3, 4, 1]);
      expect(decodeSuperblock(await store.get("base")).cloneRefs).toEqual([{ snapSeq: 2, cloneUuid, name: "c" }]);
    }
  });
});

const CLONE_RETRY = "2c3d4e5f-6071-4c8d-9e9f-a0b1c2d3e4f5";

function cloneOptions(store: MemoryStore | CrashingStore, cloneUuid: string) {
  const identity = { host: "h", pid: 4242, processStartTicks: 1, bootId: "3c4d5e6f-7081-4d9e-8fa0-b1c2d3e4f506" };
  return { store, basePrefix: "base", snapshot: "s", clonePrefix: "c", cloneUuid, lease: { command: "clone", identity, processRuns: () => false } };
}

/** Every write (put, delete, conditional put) after the first `crashAt - 1` fails: the process died there. */
class CrashingStore extends WrappingStore {
  writes = 0;
  constructor(inner: MemoryStore, private readonly crashAt: number | null) {
    super(inner);
  }
  protected override async call<T>(op: StoreOp, _name: string, forward: () => Promise<T>): Promise<T> {
    if (op === "put" || op === "delete" || op === "putIfAbsent" || op === "putIfVersion") {
      this.writes += 1;
      if (this.crashAt !== null && this.writes >= this.crashAt) throw new Error(`crashed at write ${this.crashAt}`);
    }
    return forward();
  }
  async close(): Promise<void> {}
}

/** A base (snapshot "s" = checkpoint 2 mapping 16 sectors of object 1), cloned to "c" with a crash at write crashAt. */
async function cloneWithCrashAt(crashAt: number | null): Promise<{ store: MemoryStore; failed: boolean; writes: number }> {
  const store = new MemoryStore();
  const mapEntries = new Uint8Array(CKPT_MAP_ENTRY_BYTES);
  packCheckpointMapEntry(new DataView(mapEntries.buffer), 0, 0, 16, 1, 8);
  const objects = [{ seq: 1, hdrSectors: 8, dataSectors: 16, liveSectors: 16 }];
  await store.put("base.00000002", encodeCheckpoint({ volUuid: BASE, seq: 2, cacheSeq: 0, checkpoints: [], objects, deferredDeletes: [], mapEntries, cacheUuid: NIL_UUID, cacheSeqLast: 0 }));
  await store.put("base", encodeSuperblock({ ...newSuperblock(BASE, 2048), checkpoints: [2], snapshots: [{ seq: 2, name: "s" }], nextSeq: 3 }));
  const crashing = new CrashingStore(store, crashAt);
  let failed = false;
  try {
    await createClone(cloneOptions(crashing as unknown as MemoryStore, C1));
  } catch {
    failed = true;
  }
  return { store, failed, writes: crashing.writes };
}
