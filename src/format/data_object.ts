// Data objects (`<prefix>.%08x`, type DATA): a batch of writes. Header area = common header, data sub-header,
// our extension block, then objs_cleaned, data_map and trims; data area = the extents' bytes back to back in
// data_map order. Spec: docs/format.md, "Data object".
//
// Layout we write (hdr_sectors a multiple of 8, so the data area starts page aligned):
//   0   common header (44)      68  extension block (56)      124  objs_cleaned (8 each), data_map (8 each),
//   44  data sub-header (24)                                        trims (16 each), zeros up to hdr_sectors*512
// Objects written before the extension had `flags` carry a 52-byte block (parts from 120); they decode with
// writeContinues false, so recovery treats them as it always did (docs/format.md, "Data object").
// Invariants of a decoded header: every extent has 1 .. EXTENT_SECTORS_MAX sectors and ends at or below
// VOLUME_SECTORS_MAX; with the extension, the extents sum to data_sectors exactly (plain v1: at most), trims are in
// before_index order with before_index <= extents.length, cacheSeq <= cacheSeqLast, and flags has no unknown bit.

import { PAGE_BYTES, SECTOR_BYTES, VOLUME_SECTORS_MAX } from "../constants.ts";
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
  layout,
  packExtent,
  roundUp,
  setU64,
  setUuid,
  unpackExtent,
  viewOf,
} from "./_codec.ts";
import {
  CRC_ABSENT,
  EXT_PREAMBLE_FIELDS,
  dataCrcMismatch,
  encodeExtensionPreamble,
  extensionPlaceOf,
  hasExtension,
  sealObjectHeader,
  verifyObjectHeader,
  type ExtensionPlace,
} from "./_object_ext.ts";
import { crc32c } from "./crc32c.ts";
import { COMMON_HEADER_BYTES, ObjectType, decodeCommonHeader, describeObject, encodeCommonHeader } from "./object_header.ts";

/** One entry of a DATA object's data_map: its data lies in the data area right after the previous entry's. */
export interface DataExtent {
  lba: number;
  sectors: number;
}

export interface DataObjectHeader {
  volUuid: string;
  seq: number;
  hdrSectors: number;
  dataSectors: number;
  /** v1 field: journal seq of the oldest write in this object. */
  cacheSeq: number;
  /** Extension: journal seq of the newest record included (0 on plain v1 objects). */
  cacheSeqLast: number;
  /** Extension: the cache that wrote it, or the nil UUID (also on plain v1 objects). */
  cacheUuid: string;
  objsCleaned: { seq: number; wasDeleted: boolean }[];
  /** v1 data_map: the data lies back to back in this order. */
  extents: DataExtent[];
  /** Extension: apply this trim before extents[beforeIndex] (beforeIndex === extents.length: after all). */
  trims: { lba: number; sectors: number; beforeIndex: number }[];
  /**
   * Extension flag WRITE_CONTINUES: a client write this object holds a piece of goes on in the next object, so the
   * object does not end on a write boundary and the log must not end after it once the cache is lost (volume/recovery/rules.ts, @L6).
   * false on plain v1 objects and on objects whose extension predates the flag.
   */
  writeContinues: boolean;
  /** CRC32C of the data area, or DATA_CRC_ABSENT on a plain v1 object (then verifyDataArea checks only its length). */
  dataCrc32c: number;
}

/** dataCrc32c of a plain v1 data object, which carries no data checksum. */
export const DATA_CRC_ABSENT = CRC_ABSENT;

const DATA_SUB = layout(
  [
    ["cacheSeq", 8], // u64
    ["cleanedOffset", 4], // objs_cleaned {u32 seq, u32 was_deleted in {0,1}}; len % 8 == 0
    ["cleanedLen", 4],
    ["mapOffset", 4], // data_map u64 (lba: low 36 bits, sectors: high 28 bits); len % 8 == 0
    ["mapLen", 4],
  ],
  COMMON_HEADER_BYTES,
);
export const DATA_SUBHEADER_BYTES = 24;
assert(DATA_SUB.BYTES === DATA_SUBHEADER_BYTES, "the v1 data sub-header is 24 bytes");

const DATA_EXT = layout(
  [
    ...EXT_PREAMBLE_FIELDS,
    ["cacheSeqLast", 8], // u64, >= cache_seq
    ["cacheUuid", 16],
    ["trimsOffset", 4], // trims {u64 lba, u32 sectors, u32 before_index}; len % 16 == 0
    ["trimsLen", 4],
    ["flags", 4], // DATA_FLAG_*; absent from blocks of DATA_EXTENSION_BYTES_LEGACY (read as 0)
  ],
  COMMON_HEADER_BYTES + DATA_SUBHEADER_BYTES,
);
export const DATA_EXTENSION_BYTES = 56;
/** The block as written before `flags` existed: every field up to trims_len; still decoded. */
export const DATA_EXTENSION_BYTES_LEGACY = 52;
assert(DATA_EXT.BYTES === DATA_EXTENSION_BYTES, "the data extension block is 56 bytes");
assert(DATA_EXT.flags - DATA_EXT.extMagic === DATA_EXTENSION_BYTES_LEGACY, "flags is the one field the legacy block lacks");
/** flags bit 0: a client write this object holds a piece of continues in the next object (writeContinues). */
export const DATA_FLAG_WRITE_CONTINUES = 1;
const DATA_FLAGS_KNOWN = DATA_FLAG_WRITE_CONTINUES;
const EXT_PLACE: ExtensionPlace = { offset: DATA_EXT.extMagic, bytes: DATA_EXTENSION_BYTES };
const EXT_PLACE_LEGACY: ExtensionPlace = { offset: DATA_EXT.extMagic, bytes: DATA_EXTENSION_BYTES_LEGACY };
const DATA_FIXED_BYTES = EXT_PLACE.offset + EXT_PLACE.bytes;
assert(DATA_FIXED_BYTES === 124, "data object fixed part is 124 bytes");

const CLEANED = layout([["seq", 4], ["wasDeleted", 4]]);
const DATA_MAP_ENTRY_BYTES = 8;
const TRIM = layout([["lba", 8], ["sectors", 4], ["beforeIndex", 4]]);
assert(CLEANED.BYTES === 8 && TRIM.BYTES === 16, "objs_cleaned entries are 8 bytes, trims 16");

/** Header area bytes of a data object with these counts (a multiple of PAGE_BYTES). */
export function dataObjectHeaderBytes(extentCount: number, trimCount: number, cleanedCount: number): number {
  assert(Number.isSafeInteger(extentCount) && extentCount >= 0, "extentCount");
  assert(Number.isSafeInteger(trimCount) && trimCount >= 0, "trimCount");
  assert(Number.isSafeInteger(cleanedCount) && cleanedCount >= 0, "cleanedCount");
  const used = DATA_FIXED_BYTES + CLEANED.BYTES * cleanedCount + DATA_MAP_ENTRY_BYTES * extentCount + TRIM.BYTES * trimCount;
  return roundUp(used, PAGE_BYTES);
}

type DataObjectInput = Omit<DataObjectHeader, "hdrSectors" | "dataSectors" | "dataCrc32c">;

function checkInput(h: DataObjectInput, dataBytes: number): void {
  assert(isUuid(h.volUuid) && isUuid(h.cacheUuid), "volUuid and cacheUuid are UUIDs");
  assert(isU32(h.seq) && h.seq > 0, `data object seq ${h.seq} is a positive uint32`);
  assert(isSafeU64(h.cacheSeq) && isSafeU64(h.cacheSeqLast), "cacheSeq and cacheSeqLast are safe u64");
  assert(h.cacheSeq <= h.cacheSeqLast, "cacheSeq (oldest write) <= cacheSeqLast (newest record)");
  for (const cleaned of h.objsCleaned) assert(isU32(cleaned.seq) && cleaned.seq > 0, "cleaned seq is a positive uint32");
  let sectors = 0;
  for (const extent of h.extents) {
    if (!(extent.lba + extent.sectors <= VOLUME_SECTORS_MAX)) assert(false, `extent ${extent.lba}+${extent.sectors} inside the volume limit`);
    sectors += extent.sectors; // each extent's own range is asserted by packExtent
  }
  assert(sectors * SECTOR_BYTES === dataBytes, `extents sum to ${sectors} sectors = the data area (${dataBytes} bytes)`);
  let previous = 0;
  for (const trim of h.trims) {
    assert(Number.isSafeInteger(trim.lba) && trim.lba >= 0, "trim lba");
    assert(isU32(trim.sectors) && trim.sectors > 0 && trim.lba + trim.sectors <= VOLUME_SECTORS_MAX, "trim length");
    assert(Number.isInteger(trim.beforeIndex) && trim.beforeIndex >= previous, "trims in beforeIndex order");
    assert(trim.beforeIndex <= h.extents.length, "trim beforeIndex <= extents.length");
    previous = trim.beforeIndex;
  }
}

/**
 * The header area (hdr_sectors*512 bytes) of a data object whose data area is `dataArea`. `dataCrc` is crc32c of
 * the data area, for a caller that has it already (a batch checksums its data record by record, so that sealing
 * 8 MiB does not stall the event loop on one long checksum); by default it is computed here.
 */
export function encodeDataObjectHeader(h: DataObjectInput, dataArea: Uint8Array, dataCrc = crc32c(dataArea)): Uint8Array {
  assert(dataArea.byteLength % SECTOR_BYTES === 0, "the data area is whole sectors");
  checkInput(h, dataArea.byteLength);
  const hdrBytes = dataObjectHeaderBytes(h.extents.length, h.trims.length, h.objsCleaned.length);
  const cleanedOffset = DATA_FIXED_BYTES;
  const mapOffset = cleanedOffset + CLEANED.BYTES * h.objsCleaned.length;
  const trimsOffset = mapOffset + DATA_MAP_ENTRY_BYTES * h.extents.length;

  const header = new Uint8Array(hdrBytes);
  const view = viewOf(header);
  encodeCommonHeader(header, {
    volUuid: h.volUuid,
    type: ObjectType.Data,
    seq: h.seq,
    hdrSectors: hdrBytes / SECTOR_BYTES,
    dataSectors: dataArea.byteLength / SECTOR_BYTES,
  });
  setU64(view, DATA_SUB.cacheSeq, h.cacheSeq);
  view.setUint32(DATA_SUB.cleanedOffset, cleanedOffset, true);
  view.setUint32(DATA_SUB.cleanedLen, CLEANED.BYTES * h.objsCleaned.length, true);
  view.setUint32(DATA_SUB.mapOffset, mapOffset, true);
  view.setUint32(DATA_SUB.mapLen, DATA_MAP_ENTRY_BYTES * h.extents.length, true);
  encodeExtensionPreamble(header, EXT_PLACE);
  setU64(view, DATA_EXT.cacheSeqLast, h.cacheSeqLast);
  setUuid(header, DATA_EXT.cacheUuid, h.cacheUuid);
  view.setUint32(DATA_EXT.trimsOffset, trimsOffset, true);
  view.setUint32(DATA_EXT.trimsLen, TRIM.BYTES * h.trims.length, true);
  view.setUint32(DATA_EXT.flags, h.writeContinues ? DATA_FLAG_WRITE_CONTINUES : 0, true);

  h.objsCleaned.forEach((cleaned, i) => {
    view.setUint32(cleanedOffset + CLEANED.BYTES * i + CLEANED.seq, cleaned.seq, true);
    view.setUint32(cleanedOffset + CLEANED.BYTES * i + CLEANED.wasDeleted, cleaned.wasDeleted ? 1 : 0, true);
  });
  h.extents.forEach((extent, i) => packExtent(view, mapOffset + DATA_MAP_ENTRY_BYTES * i, extent.lba, extent.sectors));
  h.trims.forEach((trim, i) => {
    const offset = trimsOffset + TRIM.BYTES * i;
    setU64(view, offset + TRIM.lba, trim.lba);
    view.setUint32(offset + TRIM.sectors, trim.sectors, true);
    view.setUint32(offset + TRIM.beforeIndex, trim.beforeIndex, true);
  });
  sealObjectHeader(header, EXT_PLACE, dataCrc);
  return header;
}

/**
 * Decodes and verifies the header of a data object. `headerArea` holds at least hdr_sectors*512 bytes (the header
 * area, or the whole object); only the header area is read.
 */
export function decodeDataObjectHeader(headerArea: Uint8Array): DataObjectHeader {
  const common = decodeCommonHeader(headerArea);
  const context = describeObject(common.type, common.seq);
  if (common.type !== ObjectType.Data) throw corrupt(context, "not a data object");
  const hdrBytes = common.hdrSectors * SECTOR_BYTES;
  if (headerArea.byteLength < hdrBytes) throw corrupt(context, `header truncated: ${headerArea.byteLength} of ${hdrBytes} bytes`);
  if (hdrBytes < COMMON_HEADER_BYTES + DATA_SUBHEADER_BYTES) throw corrupt(context, "header area too short");
  const header = headerArea.subarray(0, hdrBytes);
  const view = viewOf(header);

  const cleanedPart = { offset: view.getUint32(DATA_SUB.cleanedOffset, true), length: view.getUint32(DATA_SUB.cleanedLen, true) };
  const mapPart = { offset: view.getUint32(DATA_SUB.mapOffset, true), length: view.getUint32(DATA_SUB.mapLen, true) };
  const place = extensionPlaceOf(header, [EXT_PLACE_LEGACY, EXT_PLACE]);
  const extended = hasExtension(header, place, [cleanedPart, mapPart]);
  const dataCrc32c = verifyObjectHeader(header, extended ? place : null, context);
  const trimsPart = extended
    ? { offset: view.getUint32(DATA_EXT.trimsOffset, true), length: view.getUint32(DATA_EXT.trimsLen, true) }
    : { offset: 0, length: 0 };

  const lowest = extended ? place.offset + place.bytes : COMMON_HEADER_BYTES + DATA_SUBHEADER_BYTES;
  checkSpan(cleanedPart.offset, cleanedPart.length, lowest, hdrBytes, context, "objs_cleaned");
  checkSpan(mapPart.offset, mapPart.length, lowest, hdrBytes, context, "data_map");
  checkSpan(trimsPart.offset, trimsPart.length, lowest, hdrBytes, context, "trims");
  if (cleanedPart.length % CLEANED.BYTES !== 0) throw corrupt(context, `objs_cleaned_len ${cleanedPart.length} is not a multiple of 8`);
  if (mapPart.length % DATA_MAP_ENTRY_BYTES !== 0) throw corrupt(context, `data_map_len ${mapPart.length} is not a multiple of 8`);
  if (trimsPart.length % TRIM.BYTES !== 0) throw corrupt(context, `trims_len ${trimsPart.length} is not a multiple of 16`);

  const objsCleaned = decodeCleaned(view, cleanedPart, context);
  const extents = decodeExtents(view, mapPart, context);
  const sectorsTotal = extents.reduce((sum, extent) => sum + extent.sectors, 0);
  if (extended ? sectorsTotal !== common.dataSectors : sectorsTotal > common.dataSectors) {
    throw corrupt(context, `extents hold ${sectorsTotal} sectors, data_sectors is ${common.dataSectors}`);
  }
  const trims = decodeTrims(view, trimsPart, extents.length, context);

  const cacheSeq = getU64(view, DATA_SUB.cacheSeq, context, "cache_seq");
  const cacheSeqLast = extended ? getU64(view, DATA_EXT.cacheSeqLast, context, "cache_seq_last") : 0;
  if (extended && cacheSeqLast < cacheSeq) throw corrupt(context, `cache_seq_last ${cacheSeqLast} < cache_seq ${cacheSeq}`);
  const cacheUuid = extended ? getUuid(header, DATA_EXT.cacheUuid, context, "cache_uuid") : NIL_UUID;
  const flags = extended && place.bytes > DATA_EXTENSION_BYTES_LEGACY ? view.getUint32(DATA_EXT.flags, true) : 0;
  if ((flags & ~DATA_FLAGS_KNOWN) !== 0) throw corrupt(context, `unknown flags 0x${flags.toString(16)}`);
  return {
    volUuid: common.volUuid,
    seq: common.seq,
    hdrSectors: common.hdrSectors,
    dataSectors: common.dataSectors,
    cacheSeq,
    cacheSeqLast,
    cacheUuid,
    objsCleaned,
    extents,
    trims,
    writeContinues: (flags & DATA_FLAG_WRITE_CONTINUES) !== 0,
    dataCrc32c,
  };
}

interface HeaderPart {
  offset: number;
  length: number;
}

function decodeCleaned(view: DataView, part: HeaderPart, context: string): DataObjectHeader["objsCleaned"] {
  const objsCleaned: DataObjectHeader["objsCleaned"] = [];
  for (let offset = part.offset; offset < part.offset + part.length; offset += CLEANED.BYTES) {
    const seq = view.getUint32(offset + CLEANED.seq, true);
    const wasDeleted = view.getUint32(offset + CLEANED.wasDeleted, true);
    if (seq === 0) throw corrupt(context, "objs_cleaned names seq 0");
    if (wasDeleted > 1) throw corrupt(context, `objs_cleaned was_deleted ${wasDeleted} is not 0 or 1`);
    objsCleaned.push({ seq, wasDeleted: wasDeleted === 1 });
  }
  return objsCleaned;
}

function decodeExtents(view: DataView, part: HeaderPart, context: string): DataObjectHeader["extents"] {
  const extents: DataObjectHeader["extents"] = [];
  for (let offset = part.offset; offset < part.offset + part.length; offset += DATA_MAP_ENTRY_BYTES) {
    const extent = unpackExtent(view, offset);
    if (extent.sectors === 0) throw corrupt(context, `data_map entry ${extents.length} has length 0`);
    if (extent.lba + extent.sectors > VOLUME_SECTORS_MAX) throw corrupt(context, `data_map entry ${extents.length} ends past the largest volume`);
    extents.push(extent);
  }
  return extents;
}

/** Trims in order of before_index, each inside the largest volume and pointing at most one past the extents. */
function decodeTrims(view: DataView, part: HeaderPart, extentCount: number, context: string): DataObjectHeader["trims"] {
  const trims: DataObjectHeader["trims"] = [];
  let previous = 0;
  for (let offset = part.offset; offset < part.offset + part.length; offset += TRIM.BYTES) {
    const lba = getU64(view, offset + TRIM.lba, context, "trim lba");
    const sectors = view.getUint32(offset + TRIM.sectors, true);
    const beforeIndex = view.getUint32(offset + TRIM.beforeIndex, true);
    if (sectors === 0 || lba > VOLUME_SECTORS_MAX || lba + sectors > VOLUME_SECTORS_MAX) {
      throw corrupt(context, `trim ${trims.length} [${lba}, +${sectors}) out of range`);
    }
    if (beforeIndex < previous || beforeIndex > extentCount) {
      throw corrupt(context, `trim ${trims.length} before_index ${beforeIndex} out of order or past the extents`);
    }
    previous = beforeIndex;
    trims.push({ lba, sectors, beforeIndex });
  }
  return trims;
}

/** Throws CorruptionError naming the object if `dataArea` is not this object's data area. */
export function verifyDataArea(h: DataObjectHeader, dataArea: Uint8Array): void {
  const context = describeObject(ObjectType.Data, h.seq);
  const expectedBytes = h.dataSectors * SECTOR_BYTES;
  if (dataArea.byteLength !== expectedBytes) {
    throw corrupt(context, `data area is ${dataArea.byteLength} bytes, expected ${expectedBytes}`);
  }
  if (h.dataCrc32c === DATA_CRC_ABSENT) return;
  const computed = crc32c(dataArea);
  if (computed !== h.dataCrc32c) throw dataCrcMismatch(context, h.dataCrc32c, computed);
}
