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
import { planClone } from "../../src/volume/clone_create.ts";
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
});
