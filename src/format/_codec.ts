// Folder-private helpers shared by the codecs in src/format/: field tables, bounds-checked little-endian access,
// u64 <-> JS number, UUIDs, names, CRCs over a buffer with some fields treated as zero. Spec: docs/format.md.

import { parse as parseUuid, stringify as stringifyUuid, validate as validateUuid, NIL as NIL_UUID } from "uuid";
import { EXTENT_LEN_BITS, EXTENT_SECTORS_MAX, LBA_BITS, VOLUME_SECTORS_MAX } from "../constants.ts";
import { assert, CorruptionError } from "../errors.ts";
import { crc32c } from "./crc32c.ts";

export { NIL_UUID };

export const UUID_BYTES = 16;
export const U32_MAX = 0xffffffff;
/** Names stored with a uint8 length prefix (clone base names, snapshot names). */
export const SHORT_NAME_BYTES_MAX = 255;

/**
 * A packed field table: [name, size] in on-disk order. Offsets are derived, so a layout is written once and its
 * total size (the HEADER_BYTES each module asserts on import) cannot drift from its fields.
 */
export type FieldTable = readonly (readonly [string, number])[];
export type Layout<F extends FieldTable> = { readonly [K in F[number][0]]: number } & { readonly BYTES: number };

export function layout<const F extends FieldTable>(fields: F, base = 0): Layout<F> {
  const offsets: Record<string, number> = {};
  let offset = base;
  for (const [name, size] of fields) {
    assert(!(name in offsets), `layout: duplicate field ${name}`);
    assert(Number.isInteger(size) && size > 0, `layout: field ${name} has a positive size`);
    offsets[name] = offset;
    offset += size;
  }
  offsets["BYTES"] = offset - base;
  return offsets as Layout<F>;
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= U32_MAX;
}

export function isSafeU64(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** The one shape of decode errors: "Cannot decode data object 42: bad header CRC32C". */
export function corrupt(context: string, reason: string, cause?: unknown): CorruptionError {
  return new CorruptionError(`Cannot decode ${context}: ${reason}`, cause === undefined ? undefined : { cause });
}

/** u64 field as a JS number; values above 2^53-1 cannot be ours, so they are corruption. */
export function getU64(view: DataView, offset: number, context: string, field: string): number {
  const value = view.getBigUint64(offset, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(context, `${field} ${value} is not a safe integer`);
  return Number(value);
}

export function setU64(view: DataView, offset: number, value: number): void {
  if (!isSafeU64(value)) assert(false, `u64 field value ${value} is a non-negative safe integer`);
  // Two 32-bit halves: exact for safe integers, and avoids a BigInt allocation per field on the hot path.
  view.setUint32(offset, value % 0x1_0000_0000, true);
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

export function getUuid(bytes: Uint8Array, offset: number, context: string, field: string): string {
  assert(offset >= 0 && offset + UUID_BYTES <= bytes.byteLength, "uuid field inside the buffer");
  // uuid's stringify validates (RFC 9562 version and variant, or nil/max): 16 random bytes are corruption.
  try {
    return stringifyUuid(bytes, offset);
  } catch (error) {
    throw corrupt(context, `${field} is not a valid UUID`, error);
  }
}

/**
 * The last few UUIDs encoded, parsed once: every journal record carries the same two UUIDs, and parsing a UUID
 * string costs more than the rest of the header. Bounded: a tiny map cleared when full.
 */
const uuidBytesCache = new Map<string, Uint8Array>();
const UUID_CACHE_ENTRIES_MAX = 8;

export function setUuid(bytes: Uint8Array, offset: number, uuid: string): void {
  let parsed = uuidBytesCache.get(uuid);
  if (parsed === undefined) {
    assert(validateUuid(uuid), `"${uuid}" is a valid UUID`);
    parsed = parseUuid(uuid);
    if (uuidBytesCache.size >= UUID_CACHE_ENTRIES_MAX) uuidBytesCache.clear();
    uuidBytesCache.set(uuid, parsed);
  }
  bytes.set(parsed, offset);
}

export function isUuid(uuid: string): boolean {
  return uuidBytesCache.has(uuid) || validateUuid(uuid); // cached ones were validated when parsed
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

export function encodeUtf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

export function decodeUtf8(bytes: Uint8Array, context: string, field: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch (error) {
    throw corrupt(context, `${field} is not valid UTF-8`, error);
  }
}

/**
 * Checks that [offset, offset+length) lies inside [lowest, limit) before anything reads it. Both come from the
 * bytes under decode, so they may be anything: no arithmetic is trusted until this passes.
 */
export function checkSpan(
  offset: number,
  length: number,
  lowest: number,
  limit: number,
  context: string,
  field: string,
): void {
  if (length === 0) return;
  if (offset < lowest || offset > limit || length > limit - offset) {
    throw corrupt(context, `${field} [${offset}, +${length}) lies outside [${lowest}, ${limit})`);
  }
}

const ZERO_WORD = new Uint8Array(4);

/**
 * CRC-32C of bytes with the 4-byte fields at `zeroOffsets` (ascending, disjoint) read as zero, without copying:
 * a header's checksum is defined over the header with its own crc field zero.
 */
export function crc32cWithZeroedFields(bytes: Uint8Array, zeroOffsets: readonly number[]): number {
  let crc = 0;
  let position = 0;
  for (const offset of zeroOffsets) {
    assert(offset >= position && offset + 4 <= bytes.byteLength, "zeroed fields are ascending and inside");
    crc = crc32c(bytes.subarray(position, offset), crc);
    crc = crc32c(ZERO_WORD, crc);
    position = offset + 4;
  }
  return crc32c(bytes.subarray(position), crc);
}

/** Where a record keeps its magic and version (every on-disk record starts with them), and what they must be. */
export interface RecordIdentity {
  magicAt: number;
  magic: number;
  versionAt: number;
  version: number;
  /** The journal record header's version is a u16; every other record's a u32. */
  versionBytes?: 2 | 4;
}

/** The shared first checks of every decoder: the magic, then the version; CorruptionError naming `context` otherwise. */
export function checkMagicAndVersion(view: DataView, context: string, identity: RecordIdentity): void {
  const magic = view.getUint32(identity.magicAt, true);
  if (magic !== identity.magic) throw corrupt(context, `bad magic 0x${magic.toString(16)}`);
  const version = identity.versionBytes === 2 ? view.getUint16(identity.versionAt, true) : view.getUint32(identity.versionAt, true);
  if (version !== identity.version) throw corrupt(context, `unsupported version ${version}`);
}

/** The stored CRC-32C at `crcAt` against the bytes' own (that field read as zero); `label` names it in the error. */
export function checkCrc32c(bytes: Uint8Array, crcAt: number, context: string, label = "CRC32C"): void {
  const stored = viewOf(bytes).getUint32(crcAt, true);
  const computed = crc32cWithZeroedFields(bytes, [crcAt]);
  if (stored !== computed) throw corrupt(context, `bad ${label} (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
}

export const LBA_HIGH_MULTIPLIER = 2 ** 32;
/** data_map / ckpt_mapentry: the top LBA_BITS-32 bits of lba sit below the 28-bit length in the high word. */
export const LBA_HIGH_BITS = LBA_BITS - 32;
export const LBA_HIGH_MASK = (1 << LBA_HIGH_BITS) - 1;
assert(LBA_HIGH_BITS > 0 && LBA_BITS + EXTENT_LEN_BITS === 64, "a v1 extent packs into one u64, lba in the low word and more");
// Plain int32 copies for the per-entry paths: int arithmetic there (shifts, masks) is several times faster in JSC
// than the double arithmetic that computed constants like 2 ** (LBA_BITS - 32) lead to (measured: 10M entries
// 1.9 s -> 0.2 s).
const LBA_LIMIT = VOLUME_SECTORS_MAX;
const EXTENT_LENGTH_LIMIT = EXTENT_SECTORS_MAX;

/**
 * Writes one packed v1 extent (lba low 36 bits, sectors high 28 bits) as two u32 words, without BigInt.
 * Runs once per map entry (10M for a big checkpoint): assertion messages are built only on failure.
 */
export function packExtent(view: DataView, offset: number, lba: number, sectors: number): void {
  if (!(Number.isSafeInteger(lba) && lba >= 0 && lba < LBA_LIMIT)) assert(false, `extent lba ${lba} fits ${LBA_BITS} bits`);
  if (!(Number.isInteger(sectors) && sectors > 0 && sectors <= EXTENT_LENGTH_LIMIT)) {
    assert(false, `extent length ${sectors} fits ${EXTENT_LEN_BITS} bits`);
  }
  const low = lba >>> 0; // ToUint32 is lba mod 2^32 for any safe integer
  const high = (lba - low) / LBA_HIGH_MULTIPLIER; // exact: < 2^LBA_HIGH_BITS
  view.setUint32(offset, low, true);
  view.setUint32(offset + 4, ((sectors << LBA_HIGH_BITS) | high) >>> 0, true);
}

export function unpackExtent(view: DataView, offset: number): { lba: number; sectors: number } {
  const low = view.getUint32(offset, true);
  const high = view.getUint32(offset + 4, true);
  return { lba: (high & LBA_HIGH_MASK) * LBA_HIGH_MULTIPLIER + low, sectors: high >>> LBA_HIGH_BITS };
}
