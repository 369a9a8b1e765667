// Page 0 of a shared read-cache device (`lsvd mkcache --read-cache-only`): a device that holds only a read-cache
// region, shared by every volume one process serves. Spec: docs/format.md, "Shared read-cache device".
//
// Its own magic ("LSVS"), so a volume's cache and a shared read-cache device are never taken for each other. Written
// once by mkcache and never rewritten. Invariants checked by decode (asserted by encode): sizes multiples of
// PAGE_BYTES, the region inside [PAGE_BYTES, sizeBytes) and at least two pages (an index page and a slot), reserved
// and trailing bytes zero.

import { PAGE_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { checkCrc32c, checkMagicAndVersion, corrupt, crc32cWithZeroedFields, getU64, getUuid, isSafeU64, isUuid, layout, setU64, setUuid, viewOf } from "./_codec.ts";

/** "LSVS" as bytes 4c 53 56 53, read as a little-endian u32. */
export const READ_CACHE_DEVICE_MAGIC = 0x5356534c;
export const READ_CACHE_DEVICE_VERSION = 1;

const FIELDS = layout([
  ["magic", 4],
  ["version", 4],
  ["crc32c", 4], // CRC-32C of all 4096 bytes with this field 0
  ["reserved", 4],
  ["cacheUuid", 16], // random per mkcache: the index pages carry it
  ["sizeBytes", 8],
  ["readCacheStartBytes", 8],
  ["readCacheBytes", 8],
]);
assert(FIELDS.BYTES === 56, "read-cache device superblock fields are 56 bytes");

export interface ReadCacheDeviceSuperblock {
  cacheUuid: string;
  sizeBytes: number;
  readCacheStartBytes: number;
  readCacheBytes: number;
}

/** The layout of a device of `sizeBytes`: everything after page 0, whole pages. */
export function readCacheDeviceLayout(cacheUuid: string, sizeBytes: number): ReadCacheDeviceSuperblock {
  const usable = Math.floor(sizeBytes / PAGE_BYTES) * PAGE_BYTES;
  return { cacheUuid, sizeBytes: usable, readCacheStartBytes: PAGE_BYTES, readCacheBytes: usable - PAGE_BYTES };
}

function layoutProblem(s: ReadCacheDeviceSuperblock): string | null {
  for (const [name, value] of [["size_bytes", s.sizeBytes], ["read_cache_start_bytes", s.readCacheStartBytes], ["read_cache_bytes", s.readCacheBytes]] as const) {
    if (!isSafeU64(value) || value % PAGE_BYTES !== 0) return `${name} ${value} is not a multiple of ${PAGE_BYTES}`;
  }
  if (s.readCacheBytes < 2 * PAGE_BYTES) return `read cache region of ${s.readCacheBytes} bytes holds no slot`;
  if (s.readCacheStartBytes < PAGE_BYTES || s.readCacheStartBytes + s.readCacheBytes > s.sizeBytes) {
    return `read cache region [${s.readCacheStartBytes}, ${s.readCacheStartBytes + s.readCacheBytes}) lies outside [${PAGE_BYTES}, ${s.sizeBytes})`;
  }
  return null;
}

export function encodeReadCacheDeviceSuperblock(s: ReadCacheDeviceSuperblock): Uint8Array {
  assert(isUuid(s.cacheUuid), "cacheUuid is a UUID");
  const problem = layoutProblem(s);
  assert(problem === null, `read-cache device superblock: ${problem}`);
  const page = new Uint8Array(PAGE_BYTES);
  const view = viewOf(page);
  view.setUint32(FIELDS.magic, READ_CACHE_DEVICE_MAGIC, true);
  view.setUint32(FIELDS.version, READ_CACHE_DEVICE_VERSION, true);
  setUuid(page, FIELDS.cacheUuid, s.cacheUuid);
  setU64(view, FIELDS.sizeBytes, s.sizeBytes);
  setU64(view, FIELDS.readCacheStartBytes, s.readCacheStartBytes);
  setU64(view, FIELDS.readCacheBytes, s.readCacheBytes);
  view.setUint32(FIELDS.crc32c, crc32cWithZeroedFields(page, [FIELDS.crc32c]), true);
  return page;
}

/** Is page 0 a shared read-cache device's (by its magic)? For clear refusals where a volume's cache was expected. */
export function isReadCacheDevicePage(page: Uint8Array): boolean {
  return page.byteLength >= 4 && viewOf(page).getUint32(FIELDS.magic, true) === READ_CACHE_DEVICE_MAGIC;
}

export function decodeReadCacheDeviceSuperblock(page: Uint8Array): ReadCacheDeviceSuperblock {
  const context = "read-cache device superblock";
  if (page.byteLength !== PAGE_BYTES) throw corrupt(context, `length ${page.byteLength}, expected ${PAGE_BYTES}`);
  const view = viewOf(page);
  checkMagicAndVersion(view, context, { magicAt: FIELDS.magic, magic: READ_CACHE_DEVICE_MAGIC, versionAt: FIELDS.version, version: READ_CACHE_DEVICE_VERSION });
  checkCrc32c(page, FIELDS.crc32c, context);
  if (view.getUint32(FIELDS.reserved, true) !== 0) throw corrupt(context, "reserved field is not zero");
  for (let i = FIELDS.BYTES; i < PAGE_BYTES; i++) if (page[i] !== 0) throw corrupt(context, `byte ${i} after the fields is not zero`);
  const s: ReadCacheDeviceSuperblock = {
    cacheUuid: getUuid(page, FIELDS.cacheUuid, context, "cache_uuid"),
    sizeBytes: getU64(view, FIELDS.sizeBytes, context, "size_bytes"),
    readCacheStartBytes: getU64(view, FIELDS.readCacheStartBytes, context, "read_cache_start_bytes"),
    readCacheBytes: getU64(view, FIELDS.readCacheBytes, context, "read_cache_bytes"),
  };
  const problem = layoutProblem(s);
  if (problem !== null) throw corrupt(context, problem);
  return s;
}
