// Tests for src/volume/checkpoint.ts's buildCheckpoint: the checkpoint holds every extent of the map with its offset
// moved past its object's header, and the DATA objects below its seq, whether the objects' seqs are close together
// (a dense table) or far apart (looked up one by one); a map naming an object outside the checkpoint is refused.

import { describe, expect, test } from "bun:test";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, unpackCheckpointMapEntry } from "../../src/format/checkpoint_object.ts";
import { ExtentMap } from "../../src/map/extent_map.ts";
import { buildCheckpoint } from "../../src/volume/checkpoint.ts";
import { ObjectKind, ObjectTable } from "../../src/volume/object_table.ts";

const VOL_UUID = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const CACHE_UUID = "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3";

type Entry = [lba: number, sectors: number, obj: number, offsetSectors: number];

/** A map over `seqs` (DATA objects, header sectors 1 + seq % 5) written by seeded 4 KiB writes, some trimmed. */
function volumeOver(seqs: number[], writes: number): { map: ExtentMap; objects: ObjectTable } {
  const map = new ExtentMap({ chunkExtentsMax: 16 });
  const objects = new ObjectTable();
  for (const seq of seqs) objects.add(seq, { kind: ObjectKind.Data, hdrSectors: 1 + (seq % 5), dataSectors: 8 * writes, liveSectors: 8 * writes });
  for (let i = 0; i < writes; i += 1) map.update(((i * 7919) % 3001) * 8 + 2 ** 33, 8, seqs[i % seqs.length]!, 8 * i, objects.displaced);
  map.trim(2 ** 33 + 800, 400, objects.displaced);
  return { map, objects };
}

function build(map: ExtentMap, objects: ObjectTable, seq: number, sameMapAs: Uint8Array | null = null): Uint8Array {
  const input = { volUuid: VOL_UUID, seq, map, objects, checkpoints: [3], cacheUuid: CACHE_UUID, cacheSeqFirst: 0, cacheSeqLast: 77 };
  return buildCheckpoint(input, sameMapAs);
}

function entriesOf(bytes: Uint8Array): Entry[] {
  const { mapEntries } = decodeCheckpoint(bytes);
  const view = new DataView(mapEntries.buffer, mapEntries.byteOffset, mapEntries.byteLength);
  return Array.from({ length: mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES }, (_, index) => {
    const { lba, sectors, obj, offsetSectors } = unpackCheckpointMapEntry(view, index);
    return [lba, sectors, obj, offsetSectors] as Entry;
  });
}

/** What the checkpoint must hold: every extent, its offset counted from its object's start (header included). */
function expectedEntries(map: ExtentMap, objects: ObjectTable): Entry[] {
  const out: Entry[] = [];
  map.forEach((lba, sectors, obj, offset) => out.push([lba, sectors, obj, offset + objects.get(obj)!.hdrSectors]));
  return out;
}

describe("buildCheckpoint", () => {
  test("objects close together: every extent, offsets past each object's header; DATA objects below the seq", () => {
    const seqs = [4, 5, 6, 9, 10, 11, 12];
    const { map, objects } = volumeOver(seqs, 3000);
    objects.add(7, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    objects.add(13, { kind: ObjectKind.Data, hdrSectors: 0, dataSectors: 0, liveSectors: 0 }); // the open batch
    expect(map.extentCount).toBeGreaterThan(1000);
    const decoded = decodeCheckpoint(build(map, objects, 13));
    expect(entriesOf(build(map, objects, 13))).toEqual(expectedEntries(map, objects));
    expect(decoded.objects.map((each) => [each.seq, each.hdrSectors])).toEqual(seqs.map((seq) => [seq, 1 + (seq % 5)]));
    expect([decoded.seq, decoded.cacheSeqLast, decoded.checkpoints]).toEqual([13, 77, [3]]);
  });

  test("objects far apart (an old object still live): looked up one by one, same entries", () => {
    const seqs = [2, 5_000_000, 5_000_001];
    const { map, objects } = volumeOver(seqs, 600);
    expect(entriesOf(build(map, objects, 5_000_002))).toEqual(expectedEntries(map, objects));
  });

  test("back to back from the same map: the later ones copy the first's map entries", () => {
    const { map, objects } = volumeOver([4, 5, 6], 2000);
    const first = build(map, objects, 7);
    objects.add(7, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    const second = build(map, objects, 8, first);
    objects.add(8, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    expect(build(map, objects, 9, second)).toEqual(build(map, objects, 9));
    expect(entriesOf(second)).toEqual(expectedEntries(map, objects));
    expect(decodeCheckpoint(second).seq).toBe(8);
    map.update(0, 8, 6, 0, objects.displaced); // one more extent: no longer the same map
    expect(() => build(map, objects, 9, second)).toThrow(/same map/);
  });

  test("built in lent memory that held other bytes: the same object as in fresh memory, at the memory's start", () => {
    const { map, objects } = volumeOver([4, 5, 6], 600);
    const fresh = build(map, objects, 10);
    const lent = new Uint8Array(fresh.byteLength + 8192).fill(0xa5);
    const input = { volUuid: VOL_UUID, seq: 10, map, objects, checkpoints: [3], cacheUuid: CACHE_UUID, cacheSeqFirst: 0, cacheSeqLast: 77 };
    const built = buildCheckpoint(input, null, (bytes) => {
      expect(bytes).toBe(fresh.byteLength);
      return lent;
    });
    expect(built.buffer).toBe(lent.buffer);
    expect(built.byteOffset).toBe(0);
    expect(built).toEqual(fresh);
  });

  test("an empty map", () => {
    const { map, objects } = volumeOver([4], 0);
    expect(entriesOf(build(map, objects, 5))).toEqual([]);
  });

  test("a map naming an object not in the table, or at or above the checkpoint's seq, is refused", () => {
    for (const seqs of [[4, 5, 6], [2, 5_000_000]]) {
      const { map, objects } = volumeOver(seqs, 50);
      const newest = seqs.at(-1)!;
      expect(() => build(map, objects, newest)).toThrow(/outside the checkpoint/); // newest is not below the seq
      objects.delete(seqs[0]!);
      expect(() => build(map, objects, newest + 1)).toThrow(/outside the checkpoint/);
    }
  });
});
