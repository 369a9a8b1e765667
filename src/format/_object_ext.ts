// Folder-private: the lsvd extension block of backend objects and the two header CRCs.
// Spec: docs/format.md, "Extension block" and "Checksums".
//
// The v1 layout locates every variable part through an offset/length pair, so the bytes between the end of a
// type's sub-header and its first variable part are ignored by v1 readers. Our objects put an extension block
// there: a 20-byte preamble (magic "LSVX", version, block length, header CRC32C, data CRC32C) and then fields
// specific to the object type. Our decoders treat the block as present only if it fits before every non-empty v1
// part and starts with the magic; otherwise the object is a plain v1 object (reference-written), whose extension
// fields take defaults and whose data area has no checksum. A type's block may grow by fields appended at its end
// (ext_bytes says which length was written); decoders accept every length the type ever had, older ones with the
// appended fields at their defaults (extensionPlaceOf).
//
// CRCs (encode order: header_crc32c first, then the v1 crc, which therefore covers header_crc32c as written):
// - v1 `crc` (common header offset 40): IEEE CRC-32 of the hdr_sectors*512 header bytes with `crc` read as 0.
//   Checked whenever the extension is present, and on plain v1 objects unless 0 ("not set" in v1).
// - ext `header_crc32c`: CRC-32C of the same bytes with both `crc` and `header_crc32c` read as 0.
// - ext `data_crc32c`: CRC-32C of the data_sectors*512 data bytes (0 for an empty data area).

import { CorruptionError, assert } from "../errors.ts";
import { corrupt, crc32cWithZeroedFields, layout, viewOf } from "./_codec.ts";
import { crc32 } from "./crc32.ts";
import { crc32c } from "./crc32c.ts";
import { COMMON_HEADER } from "./object_header.ts";

/** "LSVX" as bytes 4c 53 56 58, read as a little-endian u32. */
export const EXT_MAGIC = 0x5856534c;
export const EXT_VERSION = 1;
/** Placeholder for the data CRC of a plain v1 object, which has none: not a uint32, so it never matches. */
export const CRC_ABSENT = -1;

/** The preamble every extension block starts with; per-type fields follow it. */
export const EXT_PREAMBLE_FIELDS = [
  ["extMagic", 4], // EXT_MAGIC; its presence is what marks an lsvd-written object
  ["extVersion", 4], // EXT_VERSION; verifyObjectHeader
  ["extBytes", 4], // length of the whole block for this type and version; verifyObjectHeader
  ["headerCrc32c", 4], // see above; verifyObjectHeader
  ["dataCrc32c", 4], // see above; the per-type decoder / verifyDataArea
] as const;
const PREAMBLE = layout(EXT_PREAMBLE_FIELDS);
assert(PREAMBLE.BYTES === 20, "extension preamble is 20 bytes");

export interface VariablePart {
  offset: number;
  length: number;
}

/** Where the extension block of one object type sits and how long it is. */
export interface ExtensionPlace {
  offset: number;
  bytes: number;
}

/** True if the header carries our extension block at `place` (see the file comment). */
export function hasExtension(header: Uint8Array, place: ExtensionPlace, v1Parts: readonly VariablePart[]): boolean {
  const end = place.offset + place.bytes;
  if (end > header.byteLength) return false;
  for (const part of v1Parts) {
    if (part.length > 0 && part.offset < end) return false;
  }
  return viewOf(header).getUint32(place.offset + PREAMBLE.extMagic, true) === EXT_MAGIC;
}

/**
 * For a type whose block grew (a field appended: DATA's `flags`), the place of the block this header declares:
 * the one of `places` (same offset, oldest first) whose length the stored ext_bytes names, else the newest. The
 * presence test and verifyObjectHeader then run on that place, so an older block is found where it ends, and a
 * length that is neither is reported by verifyObjectHeader ("extension block length ...").
 */
export function extensionPlaceOf(header: Uint8Array, places: readonly ExtensionPlace[]): ExtensionPlace {
  assert(places.length > 0 && places.every((place) => place.offset === places[0]!.offset), "places of one block");
  const newest = places[places.length - 1]!;
  const lengthAt = newest.offset + PREAMBLE.extBytes;
  if (lengthAt + 4 > header.byteLength) return newest;
  const declared = viewOf(header).getUint32(lengthAt, true);
  return places.find((place) => place.bytes === declared) ?? newest;
}

/** Writes the preamble except the CRCs (see sealObjectHeader). */
export function encodeExtensionPreamble(header: Uint8Array, place: ExtensionPlace): void {
  const view = viewOf(header);
  view.setUint32(place.offset + PREAMBLE.extMagic, EXT_MAGIC, true);
  view.setUint32(place.offset + PREAMBLE.extVersion, EXT_VERSION, true);
  view.setUint32(place.offset + PREAMBLE.extBytes, place.bytes, true);
}

/** Fills data_crc32c, header_crc32c and the v1 crc, in that order; `header` is exactly the header area. */
export function sealObjectHeader(header: Uint8Array, place: ExtensionPlace, dataCrc32c: number): void {
  const view = viewOf(header);
  assert(header.byteLength === view.getUint32(COMMON_HEADER.hdrSectors, true) * 512, "sealing the whole header area");
  view.setUint32(place.offset + PREAMBLE.dataCrc32c, dataCrc32c, true);
  view.setUint32(place.offset + PREAMBLE.headerCrc32c, 0, true);
  view.setUint32(COMMON_HEADER.crc, 0, true);
  view.setUint32(place.offset + PREAMBLE.headerCrc32c, crc32c(header), true);
  view.setUint32(COMMON_HEADER.crc, crc32(header), true);
}

function v1Crc(header: Uint8Array): number {
  const zero = new Uint8Array(4);
  let crc = crc32(header.subarray(0, COMMON_HEADER.crc));
  crc = crc32(zero, crc);
  return crc32(header.subarray(COMMON_HEADER.crc + 4), crc);
}

/**
 * Checks the header CRCs of `header` (exactly the header area) and, with an extension, its preamble.
 * Returns the stored data CRC32C, or CRC_ABSENT for a plain v1 object.
 */
export function verifyObjectHeader(header: Uint8Array, place: ExtensionPlace | null, context: string): number {
  const view = viewOf(header);
  const storedV1 = view.getUint32(COMMON_HEADER.crc, true);
  if (place !== null || storedV1 !== 0) {
    const computed = v1Crc(header);
    if (computed !== storedV1) {
      throw corrupt(context, `bad v1 header CRC-32 (stored 0x${storedV1.toString(16)}, computed 0x${computed.toString(16)})`);
    }
  }
  if (place === null) return CRC_ABSENT;
  const version = view.getUint32(place.offset + PREAMBLE.extVersion, true);
  if (version !== EXT_VERSION) throw corrupt(context, `unsupported extension version ${version}`);
  const extBytes = view.getUint32(place.offset + PREAMBLE.extBytes, true);
  if (extBytes !== place.bytes) throw corrupt(context, `extension block length ${extBytes}, expected ${place.bytes}`);
  const stored = view.getUint32(place.offset + PREAMBLE.headerCrc32c, true);
  const computed = crc32cWithZeroedFields(header, [COMMON_HEADER.crc, place.offset + PREAMBLE.headerCrc32c]);
  if (computed !== stored) {
    throw corrupt(context, `bad header CRC32C (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  }
  return view.getUint32(place.offset + PREAMBLE.dataCrc32c, true);
}

export function dataCrcMismatch(context: string, stored: number, computed: number): CorruptionError {
  return corrupt(context, `bad data CRC32C (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
}
