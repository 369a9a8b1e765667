// The LSVD v1 common header: the first 44 bytes of every backend object (superblock, data, checkpoint).
// Spec: docs/format.md, "Backend objects" (the reference implementation's v1 layout: "Where the v1 layout comes from").
//
// decodeCommonHeader checks only what a reader needs before fetching the rest of the header (magic, version, type,
// UUID, sane sizes). The CRCs cover the whole header area, so they are checked by the per-type decoders once the
// whole header is in hand.

import { OBJECT_DATA_BYTES_MAX, OBJECT_HEADER_BYTES_MAX, SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { checkMagicAndVersion, corrupt, getUuid, isU32, layout, setUuid, viewOf } from "./_codec.ts";

export const ObjectType = { Super: 1, Data: 2, Checkpoint: 3 } as const;
export type ObjectTypeValue = (typeof ObjectType)[keyof typeof ObjectType];

/** "LSVD" as bytes 4c 53 56 44, read as a little-endian u32. */
export const OBJECT_MAGIC = 0x4456534c;
export const OBJECT_VERSION = 1;

/** Field table of the common header, in on-disk order (all little-endian). */
export const COMMON_HEADER = layout([
  ["magic", 4], // OBJECT_MAGIC; decodeCommonHeader
  ["version", 4], // OBJECT_VERSION; decodeCommonHeader
  ["volUuid", 16], // raw 16 bytes; decodeCommonHeader (valid UUID), the caller (the volume's own)
  ["type", 4], // ObjectType; decodeCommonHeader, and each per-type decoder for its own type
  ["seq", 4], // 0 for the superblock, else the number in the object's name; the caller compares with the name
  ["hdrSectors", 4], // header area length; decodeCommonHeader (1 .. OBJECT_HEADER_BYTES_MAX/512)
  ["dataSectors", 4], // data area length; decodeCommonHeader (<= OBJECT_DATA_BYTES_MAX/512)
  ["crc", 4], // IEEE CRC-32 of hdr_sectors*512 header bytes with this field 0; per-type decoders
]);
export const COMMON_HEADER_BYTES = 44;
assert(COMMON_HEADER.BYTES === COMMON_HEADER_BYTES, "the v1 common header is 44 bytes");

export interface CommonHeader {
  volUuid: string;
  type: number;
  seq: number;
  hdrSectors: number;
  dataSectors: number;
}

const TYPE_NAMES: Record<number, string> = {
  [ObjectType.Super]: "superblock",
  [ObjectType.Data]: "data object",
  [ObjectType.Checkpoint]: "checkpoint object",
};

/** "data object 42": how messages name an object whose header has been decoded. */
export function describeObject(type: number, seq: number): string {
  return `${TYPE_NAMES[type] ?? `object of type ${type}`} ${seq}`;
}

export function decodeCommonHeader(bytes: Uint8Array): CommonHeader {
  const context = "object header";
  if (bytes.byteLength < COMMON_HEADER_BYTES) {
    throw corrupt(context, `truncated: ${bytes.byteLength} of ${COMMON_HEADER_BYTES} bytes`);
  }
  const view = viewOf(bytes);
  checkMagicAndVersion(view, context, { magicAt: COMMON_HEADER.magic, magic: OBJECT_MAGIC, versionAt: COMMON_HEADER.version, version: OBJECT_VERSION });
  const type = view.getUint32(COMMON_HEADER.type, true);
  if (!(type in TYPE_NAMES)) throw corrupt(context, `unknown object type ${type}`);
  const seq = view.getUint32(COMMON_HEADER.seq, true);
  const what = describeObject(type, seq);
  // The superblock is object 0 and nothing else is: a misdirected read of "obj" vs "obj.00000000" is caught here.
  if ((type === ObjectType.Super) !== (seq === 0)) throw corrupt(what, "only the superblock has seq 0");
  const hdrSectors = view.getUint32(COMMON_HEADER.hdrSectors, true);
  if (hdrSectors === 0 || hdrSectors > OBJECT_HEADER_BYTES_MAX / SECTOR_BYTES) {
    throw corrupt(what, `hdr_sectors ${hdrSectors} out of range`);
  }
  const dataSectors = view.getUint32(COMMON_HEADER.dataSectors, true);
  if (dataSectors > OBJECT_DATA_BYTES_MAX / SECTOR_BYTES) throw corrupt(what, `data_sectors ${dataSectors} out of range`);
  const volUuid = getUuid(bytes, COMMON_HEADER.volUuid, what, "vol_uuid");
  return { volUuid, type, seq, hdrSectors, dataSectors };
}

/** Header area bytes (hdr_sectors*512) of the object whose first >= 44 bytes are `first`. */
export function headerBytesOf(first: Uint8Array): number {
  return decodeCommonHeader(first).hdrSectors * SECTOR_BYTES;
}

/** Writes the common header fields except crc (left zero; see _object_ext.ts sealObjectHeader). */
export function encodeCommonHeader(header: Uint8Array, h: CommonHeader): void {
  assert(header.byteLength >= COMMON_HEADER_BYTES, "header buffer holds the common header");
  assert(h.type in TYPE_NAMES, `object type ${h.type} is known`);
  assert(isU32(h.seq) && (h.type === ObjectType.Super) === (h.seq === 0), `object seq ${h.seq} fits its type`);
  assert(isU32(h.hdrSectors) && h.hdrSectors > 0, "hdr_sectors is a positive uint32");
  assert(h.hdrSectors * SECTOR_BYTES <= OBJECT_HEADER_BYTES_MAX, "header area within OBJECT_HEADER_BYTES_MAX");
  assert(isU32(h.dataSectors) && h.dataSectors * SECTOR_BYTES <= OBJECT_DATA_BYTES_MAX, "data_sectors in range");
  const view = viewOf(header);
  view.setUint32(COMMON_HEADER.magic, OBJECT_MAGIC, true);
  view.setUint32(COMMON_HEADER.version, OBJECT_VERSION, true);
  setUuid(header, COMMON_HEADER.volUuid, h.volUuid);
  view.setUint32(COMMON_HEADER.type, h.type, true);
  view.setUint32(COMMON_HEADER.seq, h.seq, true);
  view.setUint32(COMMON_HEADER.hdrSectors, h.hdrSectors, true);
  view.setUint32(COMMON_HEADER.dataSectors, h.dataSectors, true);
  view.setUint32(COMMON_HEADER.crc, 0, true);
}
