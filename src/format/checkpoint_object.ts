// Checkpoint objects (`<prefix>.%08x`, type CKPT): the whole extent map and object table at one point of the log,
// so a volume opens by reading the newest checkpoint and rolling forward through later data objects.
// Spec: docs/format.md, "Checkpoint object".
//
// Placement (our choice, as the reference does): everything lives in the header area and data_sectors = 0, so one
// pair of header CRCs covers the whole object and v1 readers find every part through its offset. The map is copied
// in with one memcpy and checksummed once per CRC: 10M map entries (160 MB) encode and decode in linear time.
// Layout we write:
//   0   common header (44)      84  extension block (44)      128  ckpts (4 each), objs (16 each),
//   44  ckpt sub-header (40)                                        deletes (8 each), map (16 each), zeros to a page
// Plain v1 checkpoints (no extension) decode too: cacheUuid = nil, cacheSeqLast = 0, and any data area is unchecked.

import { PAGE_BYTES, SECTOR_BYTES, OBJECT_HEADER_BYTES_MAX, VOLUME_SECTORS_MAX } from "../constants.ts";
import { assert } from "../errors.ts";
import {
  NIL_UUID,
  checkSpan,
  corrupt,
  getU64,
  getUuid,
  isSafeU64,
  isU32,
  isUuid,
  LBA_HIGH_BITS,
  LBA_HIGH_MASK,
  LBA_HIGH_MULTIPLIER,
  layout,
  packExtent,
  roundUp,
  setU64,
  setUuid,
  unpackExtent,
  viewOf,
} from "./_codec.ts";
import {
  EXT_PREAMBLE_FIELDS,
  dataCrcMismatch,
  encodeExtensionPreamble,
  hasExtension,
  sealObjectHeader,
  verifyObjectHeader,
  CRC_ABSENT,
  type ExtensionPlace,
  type VariablePart,
} from "./_object_ext.ts";
import { crc32c } from "./crc32c.ts";
import { COMMON_HEADER, COMMON_HEADER_BYTES, ObjectType, decodeCommonHeader, describeObject, encodeCommonHeader } from "./object_header.ts";

/** ckpt_mapentry: u64 packed extent (lba low 36 bits, sectors high 28 bits), u32 obj seq, u32 offset in sectors. */
const MAP_ENTRY = layout([["extent", 8], ["obj", 4], ["offsetSectors", 4]]);
export const CKPT_MAP_ENTRY_BYTES = 16;
assert(MAP_ENTRY.BYTES === CKPT_MAP_ENTRY_BYTES, "ckpt_mapentry is 16 bytes");
// Plain constants for the per-entry paths (measured: property reads of the layout object there cost ~5x).
const MAP_ENTRY_EXTENT = MAP_ENTRY.extent;
const MAP_ENTRY_OBJ = MAP_ENTRY.obj;
const MAP_ENTRY_OFFSET_SECTORS = MAP_ENTRY.offsetSectors;
const VOLUME_SECTORS_LIMIT = VOLUME_SECTORS_MAX;

/**
 * ckpt_mapentry read as four u32 words (its index in a Uint32Array over the packed entries, times 4, plus these):
 * lba bits 0..31; lba bits 32..35 | sectors << 4; obj; offsetSectors. Valid only where words are little-endian
 * (CKPT_MAP_ENTRY_WORDS_NATIVE); the extent map keeps its extents in exactly these words (ExtentMap.copyExtentWords),
 * so a checkpoint copies them in bulk and adds each object's header sectors to the offsets.
 */
export const CKPT_MAP_ENTRY_WORD = { lbaLow: 0, lbaHighAndSectors: 1, obj: 2, offsetSectors: 3 } as const;
export const CKPT_MAP_ENTRY_WORDS = 4;
/** True where a Uint32Array's words are little-endian (x86, arm64): packed map entries can be written as words. */
export const CKPT_MAP_ENTRY_WORDS_NATIVE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
assert(
  MAP_ENTRY_EXTENT === 4 * CKPT_MAP_ENTRY_WORD.lbaLow &&
    MAP_ENTRY_OBJ === 4 * CKPT_MAP_ENTRY_WORD.obj &&
    MAP_ENTRY_OFFSET_SECTORS === 4 * CKPT_MAP_ENTRY_WORD.offsetSectors &&
    CKPT_MAP_ENTRY_WORDS * 4 === CKPT_MAP_ENTRY_BYTES &&
    LBA_HIGH_BITS === 4,
  "ckpt_mapentry as words: lba low, lba high | sectors << 4, obj, offsetSectors",
);

export interface CheckpointMapEntry {
  lba: number;
  sectors: number;
  /** Seq of the data object holding the extent. */
  obj: number;
  /** Sectors from the start of that object, header included (v1): the first data sector is at hdr_sectors. */
  offsetSectors: number;
}

export function packCheckpointMapEntry(
  view: DataView,
  index: number,
  lba: number,
  sectors: number,
  obj: number,
  offsetSectors: number,
): void {
  if (!(isU32(obj) && obj > 0)) assert(false, `map entry object seq ${obj} is a positive uint32`);
  if (!(isU32(offsetSectors) && offsetSectors > 0)) assert(false, `map entry offset ${offsetSectors} is a positive uint32 (after the header)`);
  const offset = index * CKPT_MAP_ENTRY_BYTES;
  packExtent(view, offset + MAP_ENTRY_EXTENT, lba, sectors);
  view.setUint32(offset + MAP_ENTRY_OBJ, obj, true);
  view.setUint32(offset + MAP_ENTRY_OFFSET_SECTORS, offsetSectors, true);
}

export function unpackCheckpointMapEntry(view: DataView, index: number): CheckpointMapEntry {
  const offset = index * CKPT_MAP_ENTRY_BYTES;
  const { lba, sectors } = unpackExtent(view, offset + MAP_ENTRY.extent);
  return {
    lba,
    sectors,
    obj: view.getUint32(offset + MAP_ENTRY.obj, true),
    offsetSectors: view.getUint32(offset + MAP_ENTRY.offsetSectors, true),
  };
}

export interface CheckpointObject {
  volUuid: string;
  seq: number;
  /** v1: cache_seq of the last data object covered. */
  cacheSeq: number;
  /** Earlier checkpoint seqs, oldest first. */
  checkpoints: number[];
  objects: { seq: number; hdrSectors: number; dataSectors: number; liveSectors: number }[];
  /** Objects to delete once no reader can need them. v1 `time`: the write frontier (an object seq) when cleaned. */
  deferredDeletes: { seq: number; time: number }[];
  /** Packed ckpt_mapentry array (CKPT_MAP_ENTRY_BYTES each). Decoded: a view into the decoded bytes, not a copy. */
  mapEntries: Uint8Array;
  /** Extension: the cache whose journal this checkpoint covers, or nil. */
  cacheUuid: string;
  /** Extension: journal seq of the newest record covered (0 on plain v1 checkpoints). */
  cacheSeqLast: number;
}

const CKPT_SUB = layout(
  [
    ["cacheSeq", 8], // u64
    ["ckptsOffset", 4], // u32 seqs; len % 4 == 0
    ["ckptsLen", 4],
    ["objsOffset", 4], // ckpt_obj {u32 seq, hdr_sectors, data_sectors, live_sectors}; len % 16 == 0
    ["objsLen", 4],
    ["deletesOffset", 4], // deferred_delete {u32 seq, u32 time}; len % 8 == 0
    ["deletesLen", 4],
    ["mapOffset", 4], // ckpt_mapentry; len % 16 == 0
    ["mapLen", 4],
  ],
  COMMON_HEADER_BYTES,
);
export const CKPT_SUBHEADER_BYTES = 40;
assert(CKPT_SUB.BYTES === CKPT_SUBHEADER_BYTES, "the v1 ckpt sub-header is 40 bytes");

const CKPT_EXT = layout(
  [...EXT_PREAMBLE_FIELDS, ["cacheSeqLast", 8], ["cacheUuid", 16]],
  COMMON_HEADER_BYTES + CKPT_SUBHEADER_BYTES,
);
export const CKPT_EXTENSION_BYTES = 44;
assert(CKPT_EXT.BYTES === CKPT_EXTENSION_BYTES, "the checkpoint extension block is 44 bytes");
const EXT_PLACE: ExtensionPlace = { offset: CKPT_EXT.extMagic, bytes: CKPT_EXTENSION_BYTES };
const CKPT_FIXED_BYTES = EXT_PLACE.offset + EXT_PLACE.bytes;
assert(CKPT_FIXED_BYTES === 128, "checkpoint fixed part is 128 bytes");

const CKPT_OBJ = layout([["seq", 4], ["hdrSectors", 4], ["dataSectors", 4], ["liveSectors", 4]]);
const DELETE = layout([["seq", 4], ["time", 4]]);
assert(CKPT_OBJ.BYTES === 16 && DELETE.BYTES === 8, "ckpt_obj is 16 bytes, deferred_delete 8");

function checkCheckpoint(c: CheckpointObject): void {
  assert(isUuid(c.volUuid) && isUuid(c.cacheUuid), "volUuid and cacheUuid are UUIDs");
  assert(isU32(c.seq) && c.seq > 0, `checkpoint seq ${c.seq} is a positive uint32`);
  assert(isSafeU64(c.cacheSeq) && isSafeU64(c.cacheSeqLast), "cacheSeq and cacheSeqLast are safe u64");
  for (const seq of c.checkpoints) if (!(isU32(seq) && seq > 0)) assert(false, `checkpoint seq ${seq} is a positive uint32`);
  for (const o of c.objects) {
    if (!(isU32(o.seq) && o.seq > 0)) assert(false, `object seq ${o.seq} is a positive uint32`);
    assert(isU32(o.hdrSectors) && isU32(o.dataSectors) && isU32(o.liveSectors), "object sizes are uint32");
  }
  for (const d of c.deferredDeletes) assert(isU32(d.seq) && d.seq > 0 && isU32(d.time), "deferred delete fields");
  assert(c.mapEntries.byteLength % CKPT_MAP_ENTRY_BYTES === 0, "mapEntries is whole ckpt_mapentry records");
}

/** The whole checkpoint object (data_sectors = 0). */
export function encodeCheckpoint(c: CheckpointObject): Uint8Array {
  return encodeCheckpointFilling(c, c.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES, (area) => area.set(c.mapEntries));
}

/**
 * encodeCheckpoint with the map entries written in place: `fillMap` gets the object's map area (mapEntryCount
 * entries, zeroed) and must fill it with packed entries before the header is sealed. Saves a copy of the map (a
 * checkpoint of a large map is built while writes wait: volume/checkpoint.ts). What fillMap writes is not checked
 * here (decodeCheckpoint checks every entry). `allocate` lends the memory the object is built in (at least the bytes
 * asked for; its contents are overwritten): the returned view starts at its first byte.
 */
export function encodeCheckpointFilling(
  c: Omit<CheckpointObject, "mapEntries">,
  mapEntryCount: number,
  fillMap: (area: Uint8Array) => void,
  allocate: (bytes: number) => Uint8Array = (bytes) => new Uint8Array(bytes),
): Uint8Array {
  assert(Number.isSafeInteger(mapEntryCount) && mapEntryCount >= 0, `map entry count ${mapEntryCount}`);
  checkCheckpoint({ ...c, mapEntries: new Uint8Array(0) });
  const mapBytes = mapEntryCount * CKPT_MAP_ENTRY_BYTES;
  const ckptsOffset = CKPT_FIXED_BYTES;
  const objsOffset = ckptsOffset + 4 * c.checkpoints.length;
  const deletesOffset = objsOffset + CKPT_OBJ.BYTES * c.objects.length;
  const mapOffset = deletesOffset + DELETE.BYTES * c.deferredDeletes.length;
  const hdrBytes = roundUp(mapOffset + mapBytes, PAGE_BYTES);
  assert(hdrBytes <= OBJECT_HEADER_BYTES_MAX, `checkpoint of ${hdrBytes} bytes fits OBJECT_HEADER_BYTES_MAX`);

  const memory = allocate(hdrBytes);
  assert(memory.byteLength >= hdrBytes, `checkpoint memory holds ${hdrBytes} bytes`);
  const header = memory.subarray(0, hdrBytes).fill(0);
  const view = viewOf(header);
  encodeCommonHeader(header, {
    volUuid: c.volUuid,
    type: ObjectType.Checkpoint,
    seq: c.seq,
    hdrSectors: hdrBytes / SECTOR_BYTES,
    dataSectors: 0,
  });
  setU64(view, CKPT_SUB.cacheSeq, c.cacheSeq);
  view.setUint32(CKPT_SUB.ckptsOffset, ckptsOffset, true);
  view.setUint32(CKPT_SUB.ckptsLen, objsOffset - ckptsOffset, true);
  view.setUint32(CKPT_SUB.objsOffset, objsOffset, true);
  view.setUint32(CKPT_SUB.objsLen, deletesOffset - objsOffset, true);
  view.setUint32(CKPT_SUB.deletesOffset, deletesOffset, true);
  view.setUint32(CKPT_SUB.deletesLen, mapOffset - deletesOffset, true);
  view.setUint32(CKPT_SUB.mapOffset, mapOffset, true);
  view.setUint32(CKPT_SUB.mapLen, mapBytes, true);
  encodeExtensionPreamble(header, EXT_PLACE);
  setU64(view, CKPT_EXT.cacheSeqLast, c.cacheSeqLast);
  setUuid(header, CKPT_EXT.cacheUuid, c.cacheUuid);

  c.checkpoints.forEach((seq, i) => view.setUint32(ckptsOffset + 4 * i, seq, true));
  c.objects.forEach((o, i) => {
    const offset = objsOffset + CKPT_OBJ.BYTES * i;
    view.setUint32(offset + CKPT_OBJ.seq, o.seq, true);
    view.setUint32(offset + CKPT_OBJ.hdrSectors, o.hdrSectors, true);
    view.setUint32(offset + CKPT_OBJ.dataSectors, o.dataSectors, true);
    view.setUint32(offset + CKPT_OBJ.liveSectors, o.liveSectors, true);
  });
  c.deferredDeletes.forEach((d, i) => {
    view.setUint32(deletesOffset + DELETE.BYTES * i + DELETE.seq, d.seq, true);
    view.setUint32(deletesOffset + DELETE.BYTES * i + DELETE.time, d.time, true);
  });
  const mapArea = header.subarray(mapOffset, mapOffset + mapBytes);
  fillMap(mapArea);
  sealObjectHeader(header, EXT_PLACE, crc32c(new Uint8Array(0)));
  return header;
}

/**
 * The packed map entries of a checkpoint this process just encoded, as a view: a checkpoint taken right after it
 * from the same map copies them instead of building them again. Nothing is checked: bytes read back go through
 * decodeCheckpoint.
 */
export function encodedCheckpointMap(bytes: Uint8Array): Uint8Array {
  const { offset, length } = partAt(viewOf(bytes), CKPT_SUB.mapOffset, CKPT_SUB.mapLen);
  assert(offset >= CKPT_FIXED_BYTES && offset + length <= bytes.byteLength, "the map lies inside the checkpoint");
  return bytes.subarray(offset, offset + length);
}

/** `bytes` is the whole checkpoint object: exactly (hdr_sectors + data_sectors)*512 bytes. */
export function decodeCheckpoint(bytes: Uint8Array): CheckpointObject {
  const common = decodeCommonHeader(bytes);
  const context = describeObject(common.type, common.seq);
  if (common.type !== ObjectType.Checkpoint) throw corrupt(context, "not a checkpoint object");
  const hdrBytes = common.hdrSectors * SECTOR_BYTES;
  const objectBytes = hdrBytes + common.dataSectors * SECTOR_BYTES;
  if (bytes.byteLength !== objectBytes) throw corrupt(context, `length ${bytes.byteLength}, expected ${objectBytes}`);
  if (hdrBytes < COMMON_HEADER_BYTES + CKPT_SUBHEADER_BYTES) throw corrupt(context, "header area too short");
  const header = bytes.subarray(0, hdrBytes);
  const view = viewOf(bytes);

  const ckptsPart = partAt(view, CKPT_SUB.ckptsOffset, CKPT_SUB.ckptsLen);
  const objsPart = partAt(view, CKPT_SUB.objsOffset, CKPT_SUB.objsLen);
  const deletesPart = partAt(view, CKPT_SUB.deletesOffset, CKPT_SUB.deletesLen);
  const mapPart = partAt(view, CKPT_SUB.mapOffset, CKPT_SUB.mapLen);
  const extended = hasExtension(header, EXT_PLACE, [ckptsPart, objsPart, deletesPart, mapPart]);
  const dataCrc32c = verifyObjectHeader(header, extended ? EXT_PLACE : null, context);
  if (dataCrc32c !== CRC_ABSENT) {
    const computed = crc32c(bytes.subarray(hdrBytes));
    if (computed !== dataCrc32c) throw dataCrcMismatch(context, dataCrc32c, computed);
  }

  // v1 offsets count from the start of the object, so a part may lie in the data area of a reference checkpoint.
  const lowest = extended ? CKPT_FIXED_BYTES : COMMON_HEADER_BYTES + CKPT_SUBHEADER_BYTES;
  checkPartSpans({ ckptsPart, objsPart, deletesPart, mapPart }, lowest, objectBytes, context);
  const checkpoints = decodeCkptSeqs(view, ckptsPart, context);
  const objects = decodeObjectEntries(view, objsPart, context);
  const deferredDeletes = decodeDeferredDeletes(view, deletesPart, context);
  const mapEntries = bytes.subarray(mapPart.offset, mapPart.offset + mapPart.length);
  checkMapEntries(mapEntries, context);

  const cacheSeq = getU64(view, CKPT_SUB.cacheSeq, context, "cache_seq");
  const cacheSeqLast = extended ? getU64(view, CKPT_EXT.cacheSeqLast, context, "cache_seq_last") : 0;
  const cacheUuid = extended ? getUuid(bytes, CKPT_EXT.cacheUuid, context, "cache_uuid") : NIL_UUID;
  const result: CheckpointObject = {
    volUuid: common.volUuid,
    seq: common.seq,
    cacheSeq,
    checkpoints,
    objects,
    deferredDeletes,
    mapEntries,
    cacheUuid,
    cacheSeqLast,
  };
  checkCheckpoint(result); // pair assertion: whatever decodes would encode again
  return result;
}

/** One variable part's place, read from the sub-header's offset and length fields. */
function partAt(view: DataView, offsetField: number, lengthField: number): VariablePart {
  return { offset: view.getUint32(offsetField, true), length: view.getUint32(lengthField, true) };
}

interface CheckpointParts {
  ckptsPart: VariablePart;
  objsPart: VariablePart;
  deletesPart: VariablePart;
  mapPart: VariablePart;
}

/** Each part lies inside the object past the fixed header and holds whole entries. */
function checkPartSpans(parts: CheckpointParts, lowest: number, objectBytes: number, context: string): void {
  const { ckptsPart, objsPart, deletesPart, mapPart } = parts;
  checkSpan(ckptsPart.offset, ckptsPart.length, lowest, objectBytes, context, "ckpts");
  checkSpan(objsPart.offset, objsPart.length, lowest, objectBytes, context, "objs");
  checkSpan(deletesPart.offset, deletesPart.length, lowest, objectBytes, context, "deletes");
  checkSpan(mapPart.offset, mapPart.length, lowest, objectBytes, context, "map");
  if (ckptsPart.length % 4 !== 0) throw corrupt(context, `ckpts_len ${ckptsPart.length} is not a multiple of 4`);
  if (objsPart.length % CKPT_OBJ.BYTES !== 0) throw corrupt(context, `objs_len ${objsPart.length} is not a multiple of 16`);
  if (deletesPart.length % DELETE.BYTES !== 0) throw corrupt(context, `deletes_len ${deletesPart.length} is not a multiple of 8`);
  if (mapPart.length % CKPT_MAP_ENTRY_BYTES !== 0) throw corrupt(context, `map_len ${mapPart.length} is not a multiple of 16`);
}

/** The ckpts part: u32 seqs of the checkpoints, none of them 0. */
function decodeCkptSeqs(view: DataView, ckptsPart: VariablePart, context: string): number[] {
  const checkpoints: number[] = [];
  for (let offset = ckptsPart.offset; offset < ckptsPart.offset + ckptsPart.length; offset += 4) {
    const seq = view.getUint32(offset, true);
    if (seq === 0) throw corrupt(context, "ckpts names seq 0");
    checkpoints.push(seq);
  }
  return checkpoints;
}

/** The objs part: one entry per live object (seq, header, data and live sectors). */
function decodeObjectEntries(view: DataView, objsPart: VariablePart, context: string): CheckpointObject["objects"] {
  const objects: CheckpointObject["objects"] = [];
  for (let offset = objsPart.offset; offset < objsPart.offset + objsPart.length; offset += CKPT_OBJ.BYTES) {
    const seq = view.getUint32(offset + CKPT_OBJ.seq, true);
    if (seq === 0) throw corrupt(context, "objs names seq 0");
    objects.push({
      seq,
      hdrSectors: view.getUint32(offset + CKPT_OBJ.hdrSectors, true),
      dataSectors: view.getUint32(offset + CKPT_OBJ.dataSectors, true),
      liveSectors: view.getUint32(offset + CKPT_OBJ.liveSectors, true),
    });
  }
  return objects;
}

/** The deletes part: objects waiting for deletion, each with the time it was deferred. */
function decodeDeferredDeletes(view: DataView, deletesPart: VariablePart, context: string): CheckpointObject["deferredDeletes"] {
  const deferredDeletes: CheckpointObject["deferredDeletes"] = [];
  for (let offset = deletesPart.offset; offset < deletesPart.offset + deletesPart.length; offset += DELETE.BYTES) {
    const seq = view.getUint32(offset + DELETE.seq, true);
    if (seq === 0) throw corrupt(context, "deletes names seq 0");
    deferredDeletes.push({ seq, time: view.getUint32(offset + DELETE.time, true) });
  }
  return deferredDeletes;
}

/** Every map entry names a non-empty extent inside the volume limit, a real object and a non-zero offset. */
function checkMapEntries(mapEntries: Uint8Array, context: string): void {
  const mapView = viewOf(mapEntries);
  const entryCount = mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES;
  for (let index = 0; index < entryCount; index++) {
    // unpackCheckpointMapEntry inlined (no object per entry): this loop runs once per extent of the volume.
    const offset = index * CKPT_MAP_ENTRY_BYTES;
    const high = mapView.getUint32(offset + MAP_ENTRY_EXTENT + 4, true);
    const sectors = high >>> LBA_HIGH_BITS;
    const lba = (high & LBA_HIGH_MASK) * LBA_HIGH_MULTIPLIER + mapView.getUint32(offset + MAP_ENTRY_EXTENT, true);
    const obj = mapView.getUint32(offset + MAP_ENTRY_OBJ, true);
    const offsetSectors = mapView.getUint32(offset + MAP_ENTRY_OFFSET_SECTORS, true);
    if (sectors === 0 || lba + sectors > VOLUME_SECTORS_LIMIT || obj === 0 || offsetSectors === 0) {
      throw corrupt(context, `map entry ${index} (lba ${lba}, ${sectors} sectors, obj ${obj}, offset ${offsetSectors}) is invalid`);
    }
  }
}

/**
 * A clone's first checkpoint as lsvd-rbd's clone tool writes it (docs/format.md, "Clones"): a plain v1 CKPT whose
 * common header was copied from the base checkpoint (so its v1 crc is the base's, stale), no object list, and an
 * object length that need not be whole sectors. Decoded with the v1 crc ignored and the object zero-padded to
 * hdr_sectors; null when it carries our extension (then only decodeCheckpoint, with both CRCs, may read it). Nothing
 * checksums what this returns: the caller must verify it (recovery: its map equals the base checkpoint's).
 */
export function decodeUncheckedV1Checkpoint(bytes: Uint8Array): CheckpointObject | null {
  const common = decodeCommonHeader(bytes);
  const objectBytes = (common.hdrSectors + common.dataSectors) * SECTOR_BYTES;
  const context = describeObject(common.type, common.seq);
  if (bytes.byteLength > objectBytes) throw corrupt(context, `length ${bytes.byteLength}, more than ${objectBytes}`);
  const copy = new Uint8Array(objectBytes);
  copy.set(bytes);
  const view = viewOf(copy);
  const part = (offsetField: number, lengthField: number) => ({ offset: view.getUint32(offsetField, true), length: view.getUint32(lengthField, true) });
  const parts = [
    part(CKPT_SUB.ckptsOffset, CKPT_SUB.ckptsLen),
    part(CKPT_SUB.objsOffset, CKPT_SUB.objsLen),
    part(CKPT_SUB.deletesOffset, CKPT_SUB.deletesLen),
    part(CKPT_SUB.mapOffset, CKPT_SUB.mapLen),
  ];
  if (hasExtension(copy.subarray(0, common.hdrSectors * SECTOR_BYTES), EXT_PLACE, parts)) return null;
  view.setUint32(COMMON_HEADER.crc, 0, true); // 0 = not set: decodeCheckpoint checks everything but the crc
  return decodeCheckpoint(copy);
}
