// A volume the reference implementation (lsvd-rbd) opened, wrote to and closed opens in lsvd with its data
// (docs/format.md, "Superblock object"). The reference's steps are done here byte by byte from the documented v1
// layout, as its write_checkpoint does them: a plain v1 DATA object (v1 crc set, no extension), a plain v1 CKPT
// object (crc 0) covering it, then the superblock rewritten in place (ckpts_offset 76, its list of 3 at 76, the v1
// crc left as it was), then the oldest checkpoint deleted. lsvd must open that with every byte, and then refuse a
// list that names a checkpoint that is not there (the list has no checksum), until fsck --repair drops it.

import { describe, expect, test } from "bun:test";
import { CorruptionError } from "../../src/errors.ts";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, packCheckpointMapEntry, unpackCheckpointMapEntry } from "../../src/format/checkpoint_object.ts";
import { objectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, decodeSuperblockChecked } from "../../src/format/superblock_object.ts";
import { ExtentMap } from "../../src/map/extent_map.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { ByteBuilder, crcWithZeroed, setU32, zlibCrc } from "../format/_helpers.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { formatCache, fsckRepair, immediateClock, makeWorld, openVolume, PREFIX, VolumeModel, type World, writeRandomBlocks } from "../sim/volume_world.ts";

const BLOCK = 4096;
const OPTIONS = { clock: immediateClock, checkpointIntervalObjects: 3 };

/** A DATA object as the reference writes it: 1-sector header (common header, data sub-header, one data_map entry). */
function referenceDataObject(volUuid: string, seq: number, lba: number, data: Uint8Array): Uint8Array {
  const sectors = data.byteLength / 512;
  const header = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(volUuid).u32(2).u32(seq).u32(1).u32(sectors).u32(0) // crc below
    .u64(0) // cache_seq
    .u32(0).u32(0) // objs_cleaned
    .u32(68).u32(8) // data_map: right after the sub-header
    .u64(BigInt(lba) | (BigInt(sectors) << 36n))
    .padTo(512)
    .build();
  setU32(header, 40, crcWithZeroed(header, [40], zlibCrc));
  const object = new Uint8Array(512 + data.byteLength);
  object.set(header);
  object.set(data, 512);
  return object;
}

/** A CKPT object as the reference writes it: sub-header, objs, map, crc 0, all in the header. */
function referenceCheckpoint(volUuid: string, seq: number, objects: Array<[number, number, number, number]>, map: Uint8Array): Uint8Array {
  const objsOffset = 44 + 40;
  const mapOffset = objsOffset + 16 * objects.length;
  const sectors = Math.ceil((mapOffset + 4 + map.byteLength) / 512);
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(volUuid).u32(3).u32(seq).u32(sectors).u32(0).u32(0)
    .u64(0) // cache_seq
    .u32(0).u32(0) // ckpts
    .u32(objsOffset).u32(16 * objects.length)
    .u32(0).u32(0) // deletes
    .u32(mapOffset).u32(map.byteLength);
  for (const [objSeq, hdr, dataSectors, live] of objects) b.u32(objSeq).u32(hdr).u32(dataSectors).u32(live);
  return b.raw(map).padTo(sectors * 512).build();
}

/** The reference's superblock update: in place, list at 76, v1 crc untouched. */
function referenceSuperblockRewrite(bytes: Uint8Array, checkpoints: number[]): Uint8Array {
  const out = bytes.slice();
  setU32(out, 52, 76);
  setU32(out, 56, 4 * checkpoints.length);
  checkpoints.forEach((seq, i) => setU32(out, 76 + 4 * i, seq));
  return out;
}

/**
 * lsvd-rbd opens the volume (recovers from the newest checkpoint c), writes `data` at `lba` (object c+1), and closes:
 * checkpoint c+2, superblock [.., c, c+2], the oldest checkpoint deleted. Returns the new checkpoint's seq.
 */
async function referenceOpenWriteClose(world: World, lba: number, data: Uint8Array): Promise<number> {
  const listed = decodeSuperblock(await world.store.get(PREFIX)).checkpoints;
  const newest = listed[listed.length - 1]!;
  const base = decodeCheckpoint(await world.store.get(objectName(PREFIX, newest)));
  const dataSeq = newest + 1;
  const checkpointSeq = newest + 2;
  await world.store.put(objectName(PREFIX, dataSeq), referenceDataObject(world.volUuid, dataSeq, lba, data));
  // Its map: the checkpoint's, then the write (offsets count from the object's start, header included).
  const map = new ExtentMap();
  const view = new DataView(base.mapEntries.buffer, base.mapEntries.byteOffset, base.mapEntries.byteLength);
  for (let index = 0; index < base.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES; index++) {
    const entry = unpackCheckpointMapEntry(view, index);
    map.update(entry.lba, entry.sectors, entry.obj, entry.offsetSectors);
  }
  map.update(lba, data.byteLength / 512, dataSeq, 1);
  const entries = new Uint8Array(map.extentCount * CKPT_MAP_ENTRY_BYTES);
  let index = 0;
  map.forEach((entryLba, sectors, obj, offset) => packCheckpointMapEntry(new DataView(entries.buffer), index++, entryLba, sectors, obj, offset));
  const objects: Array<[number, number, number, number]> = base.objects.map((info) => [info.seq, info.hdrSectors, info.dataSectors, info.liveSectors]);
  objects.push([dataSeq, 1, data.byteLength / 512, data.byteLength / 512]);
  await world.store.put(objectName(PREFIX, checkpointSeq), referenceCheckpoint(world.volUuid, checkpointSeq, objects, entries));
  const next = [...listed, checkpointSeq].slice(-3);
  await world.store.put(PREFIX, referenceSuperblockRewrite(await world.store.get(PREFIX), next));
  for (const old of listed.filter((seq) => !next.includes(seq))) await world.store.delete(objectName(PREFIX, old));
  return checkpointSeq;
}

async function expectModel(volume: Awaited<ReturnType<typeof openVolume>>, world: World, model: VolumeModel): Promise<void> {
  expect(model.diff(0, await volume.read(0, world.volumeBytes))).toBeNull();
}

/** A new cache: the reference wrote with its own, so the one lsvd had is out of date. */
function newCache(world: World): void {
  world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
  formatCache(world.device, world.volUuid, 7_000_000 + world.prng.int(1000));
}

async function volumeTheReferenceUsed(seed: number): Promise<{ world: World; model: VolumeModel; referenceCheckpoint: number }> {
  const world = await makeWorld(seed, { volumeBytes: 1024 * 1024 });
  const model = new VolumeModel(world.volumeBytes);
  const volume = await openVolume(world, OPTIONS);
  await writeRandomBlocks(volume, world, model, 200);
  await volume.close();
  const data = new Uint8Array(2 * BLOCK).fill(0x5a);
  model.apply(3 * BLOCK, data, data.byteLength);
  const referenceCheckpoint = await referenceOpenWriteClose(world, (3 * BLOCK) / 512, data);
  newCache(world);
  return { world, model, referenceCheckpoint };
}

describe("a volume lsvd-rbd opened and closed", () => {
  test("opens in lsvd with its data (the reference's write too); fsck is clean with a note; lsvd's next checkpoint checksums the list again", async () => {
    const { world, model, referenceCheckpoint } = await volumeTheReferenceUsed(501);
    const decoded = decodeSuperblockChecked(await world.store.get(PREFIX));
    expect(decoded.rewrittenByReference).toBe(true);
    expect(decoded.superblock.checkpoints[2]).toBe(referenceCheckpoint);
    const report = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(report.problems).toEqual([]);
    expect(report.exitCode).toBe(0);
    expect(report.recoveryCheckpointSeq).toBe(referenceCheckpoint);
    expect(report.notes.join("\n")).toContain("lsvd-rbd rewrote its checkpoint list in place");

    let volume = await openVolume(world, OPTIONS);
    await expectModel(volume, world, model);
    await writeRandomBlocks(volume, world, model, 50);
    await volume.close();
    expect(decodeSuperblockChecked(await world.store.get(PREFIX))).toMatchObject({ checkpointsChecksummed: true, rewrittenByReference: false });
    volume = await openVolume(world, OPTIONS);
    await expectModel(volume, world, model);
    await volume.close();
    expect((await fsckVolume({ store: world.store, prefix: PREFIX })).exitCode).toBe(0);
  }, 30_000);

  test("a list without a checksum that names a missing checkpoint is refused, not guessed around; fsck --repair drops it", async () => {
    const { world, model, referenceCheckpoint } = await volumeTheReferenceUsed(502);
    const listed = decodeSuperblock(await world.store.get(PREFIX)).checkpoints;
    // A damaged entry (an older checkpoint's seq, which the reference deleted): with a CRC this would be caught.
    const damaged = [listed[0]! - 1, ...listed.slice(1)];
    await world.store.put(PREFIX, referenceSuperblockRewrite(await world.store.get(PREFIX), damaged));
    let error: unknown = null;
    try {
      await openVolume(world, OPTIONS);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(CorruptionError);
    expect((error as Error).message).toContain("no checksum (rewritten by lsvd-rbd)");
    expect((error as Error).message).toContain(objectName(PREFIX, damaged[0]!));

    const found = await fsckVolume({ store: world.store, prefix: PREFIX });
    expect(found.exitCode).toBe(4);
    const repaired = await fsckRepair(world);
    expect(repaired.exitCode).toBe(1);
    expect(decodeSuperblock(await world.store.get(PREFIX)).checkpoints).toEqual(listed.slice(1));
    const volume = await openVolume(world, OPTIONS);
    expect(volume.recovery.checkpointSeq).toBe(referenceCheckpoint);
    await expectModel(volume, world, model);
    await volume.close();
  }, 30_000);
});
