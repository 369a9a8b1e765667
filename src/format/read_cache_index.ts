// The read cache's persisted index: the first pages of a read-cache region (in a volume's cache device, or the whole
// of a shared read-cache device), one page per INDEX_ENTRIES_PER_PAGE data slots, each entry naming what its slot
// holds. Spec: docs/format.md, "Read cache index page".
//
// Page: magic "LSVR", version 2, CRC-32C of the page (field zeroed), page number, cache UUID (the formatting of the
// device the page belongs to), then entries. Entry (32 bytes, slot = page * INDEX_ENTRIES_PER_PAGE + position): the
// uuid of the volume whose log holds the object, the object's seq (u32), the offset of the 4 KiB in the object's data
// area in sectors (u32), the CRC-32C of the slot's 4 KiB (u32), state (u32: 0 empty, every field zero; 1 full).
// A page that fails any check holds no entries: the cache starts with those slots empty (dropped, never wrong).
// Version 1 pages (entries keyed by volume block) are refused like any other damage.

import { PAGE_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { checkCrc32c, checkMagicAndVersion, corrupt, crc32cWithZeroedFields, getUuid, isU32, isUuid, layout, setUuid, viewOf } from "./_codec.ts";

/** "LSVR" as bytes 4c 53 56 52, read as a little-endian u32. */
export const READ_CACHE_INDEX_MAGIC = 0x5256534c;
export const READ_CACHE_INDEX_VERSION = 2;

const HEADER = layout([
  ["magic", 4],
  ["version", 4],
  ["crc32c", 4], // CRC-32C of all 4096 bytes with this field 0
  ["page", 4], // u32 page number inside the index
  ["cacheUuid", 16],
]);
const ENTRY = layout([
  ["logUuid", 16],
  ["seq", 4],
  ["offsetSectors", 4],
  ["dataCrc", 4],
  ["state", 4],
]);
const ENTRY_EMPTY = 0;
const ENTRY_FULL = 1;
export const INDEX_ENTRY_BYTES = ENTRY.BYTES;
export const INDEX_ENTRIES_PER_PAGE = Math.floor((PAGE_BYTES - HEADER.BYTES) / ENTRY.BYTES);
assert(HEADER.BYTES === 32 && ENTRY.BYTES === 32 && INDEX_ENTRIES_PER_PAGE === 127, "read cache index layout");

/** Where a cached 4 KiB lives in the backend: object `seq` of the log of volume `logUuid`, `offsetSectors` into its data area. */
export interface IndexEntry {
  logUuid: string;
  seq: number;
  offsetSectors: number;
  dataCrc: number;
}

/** Entries are null for empty slots; at most INDEX_ENTRIES_PER_PAGE of them. */
export function encodeIndexPage(page: number, cacheUuid: string, entries: ReadonlyArray<IndexEntry | null>): Uint8Array {
  assert(isU32(page) && isUuid(cacheUuid) && entries.length <= INDEX_ENTRIES_PER_PAGE, "index page arguments");
  const bytes = new Uint8Array(PAGE_BYTES);
  const view = viewOf(bytes);
  view.setUint32(HEADER.magic, READ_CACHE_INDEX_MAGIC, true);
  view.setUint32(HEADER.version, READ_CACHE_INDEX_VERSION, true);
  view.setUint32(HEADER.page, page, true);
  setUuid(bytes, HEADER.cacheUuid, cacheUuid);
  entries.forEach((entry, position) => {
    if (entry === null) return;
    assert(isUuid(entry.logUuid) && isU32(entry.seq) && isU32(entry.offsetSectors) && isU32(entry.dataCrc), "index entry fields");
    const at = HEADER.BYTES + position * ENTRY.BYTES;
    setUuid(bytes, at + ENTRY.logUuid, entry.logUuid);
    view.setUint32(at + ENTRY.seq, entry.seq, true);
    view.setUint32(at + ENTRY.offsetSectors, entry.offsetSectors, true);
    view.setUint32(at + ENTRY.dataCrc, entry.dataCrc, true);
    view.setUint32(at + ENTRY.state, ENTRY_FULL, true);
  });
  view.setUint32(HEADER.crc32c, crc32cWithZeroedFields(bytes, [HEADER.crc32c]), true);
  return bytes;
}

/** The version field of a page whose magic is an index page's (null: not an index page at all). For the open's log line. */
export function indexPageVersion(bytes: Uint8Array): number | null {
  const view = viewOf(bytes);
  return view.getUint32(HEADER.magic, true) === READ_CACHE_INDEX_MAGIC ? view.getUint32(HEADER.version, true) : null;
}

/** The page's entries (null: empty slot); CorruptionError if the page is not an index page of this cache's. */
export function decodeIndexPage(bytes: Uint8Array, page: number, cacheUuid: string): Array<IndexEntry | null> {
  const context = `read cache index page ${page}`;
  if (bytes.byteLength !== PAGE_BYTES) throw corrupt(context, `length ${bytes.byteLength}, expected ${PAGE_BYTES}`);
  const view = viewOf(bytes);
  checkMagicAndVersion(view, context, { magicAt: HEADER.magic, magic: READ_CACHE_INDEX_MAGIC, versionAt: HEADER.version, version: READ_CACHE_INDEX_VERSION });
  checkCrc32c(bytes, HEADER.crc32c, context);
  if (view.getUint32(HEADER.page, true) !== page) throw corrupt(context, `holds page ${view.getUint32(HEADER.page, true)}`);
  const owner = getUuid(bytes, HEADER.cacheUuid, context, "cache_uuid");
  if (owner !== cacheUuid) throw corrupt(context, `belongs to cache ${owner}, not ${cacheUuid}`);
  const entries: Array<IndexEntry | null> = [];
  for (let position = 0; position < INDEX_ENTRIES_PER_PAGE; position++) entries.push(decodeEntry(bytes, view, HEADER.BYTES + position * ENTRY.BYTES, context, position));
  if (!bytes.subarray(HEADER.BYTES + INDEX_ENTRIES_PER_PAGE * ENTRY.BYTES).every((byte) => byte === 0)) throw corrupt(context, "trailing bytes are not zero");
  return entries;
}

function decodeEntry(bytes: Uint8Array, view: DataView, at: number, context: string, position: number): IndexEntry | null {
  const state = view.getUint32(at + ENTRY.state, true);
  if (state === ENTRY_EMPTY) {
    if (!bytes.subarray(at, at + ENTRY.BYTES).every((byte) => byte === 0)) throw corrupt(context, `empty entry ${position} is not zero`);
    return null;
  }
  if (state !== ENTRY_FULL) throw corrupt(context, `entry ${position} has state ${state}`);
  return {
    logUuid: getUuid(bytes, at + ENTRY.logUuid, context, `entry ${position} log_uuid`),
    seq: view.getUint32(at + ENTRY.seq, true),
    offsetSectors: view.getUint32(at + ENTRY.offsetSectors, true),
    dataCrc: view.getUint32(at + ENTRY.dataCrc, true),
  };
}

/** Index pages and data slots for a region of `pages` pages: the smallest index that names every slot. */
export function indexSplit(pages: number): { indexPages: number; slots: number } {
  const indexPages = Math.ceil(pages / (INDEX_ENTRIES_PER_PAGE + 1));
  return { indexPages, slots: Math.max(0, pages - indexPages) };
}
