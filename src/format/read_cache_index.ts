// The read cache's persisted index: the first pages of the cache device's read-cache region, one page per
// INDEX_ENTRIES_PER_PAGE data slots, each entry naming what its slot holds. Spec: docs/format.md, "Read cache index page".
//
// Page: magic "LSVR", version, CRC-32C of the page (field zeroed), page number, volume UUID, then entries.
// Entry (24 bytes, slot = page * INDEX_ENTRIES_PER_PAGE + position): block + 1 (u64; 0: empty slot), object seq
// (u32), offset of the block in the object's data area in sectors (u32), CRC-32C of the slot's 4 KiB (u32), zero (u32).
// A page that fails any check holds no entries: the cache starts with those slots empty (dropped, never wrong).

import { PAGE_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { corrupt, crc32cWithZeroedFields, getU64, getUuid, isSafeU64, isU32, isUuid, layout, setU64, setUuid, viewOf } from "./_codec.ts";

/** "LSVR" as bytes 4c 53 56 52, read as a little-endian u32. */
export const READ_CACHE_INDEX_MAGIC = 0x5256534c;
export const READ_CACHE_INDEX_VERSION = 1;

const HEADER = layout([
  ["magic", 4],
  ["version", 4],
  ["crc32c", 4], // CRC-32C of all 4096 bytes with this field 0
  ["page", 4], // u32 page number inside the index
  ["volUuid", 16],
]);
const ENTRY = layout([
  ["blockPlusOne", 8],
  ["seq", 4],
  ["offsetSectors", 4],
  ["dataCrc", 4],
  ["reserved", 4],
]);
export const INDEX_ENTRY_BYTES = ENTRY.BYTES;
export const INDEX_ENTRIES_PER_PAGE = Math.floor((PAGE_BYTES - HEADER.BYTES) / ENTRY.BYTES);
assert(HEADER.BYTES === 32 && ENTRY.BYTES === 24 && INDEX_ENTRIES_PER_PAGE === 169, "read cache index layout");

export interface IndexEntry {
  /** Volume block (LBA / 8) the slot holds. */
  block: number;
  seq: number;
  offsetSectors: number;
  dataCrc: number;
}

/** Entries are null for empty slots; at most INDEX_ENTRIES_PER_PAGE of them. */
export function encodeIndexPage(page: number, volUuid: string, entries: ReadonlyArray<IndexEntry | null>): Uint8Array {
  assert(isU32(page) && isUuid(volUuid) && entries.length <= INDEX_ENTRIES_PER_PAGE, "index page arguments");
  const bytes = new Uint8Array(PAGE_BYTES);
  const view = viewOf(bytes);
  view.setUint32(HEADER.magic, READ_CACHE_INDEX_MAGIC, true);
  view.setUint32(HEADER.version, READ_CACHE_INDEX_VERSION, true);
  view.setUint32(HEADER.page, page, true);
  setUuid(bytes, HEADER.volUuid, volUuid);
  entries.forEach((entry, position) => {
    if (entry === null) return;
    assert(isSafeU64(entry.block + 1) && isU32(entry.seq) && isU32(entry.offsetSectors) && isU32(entry.dataCrc), "index entry fields");
    const at = HEADER.BYTES + position * ENTRY.BYTES;
    setU64(view, at + ENTRY.blockPlusOne, entry.block + 1);
    view.setUint32(at + ENTRY.seq, entry.seq, true);
    view.setUint32(at + ENTRY.offsetSectors, entry.offsetSectors, true);
    view.setUint32(at + ENTRY.dataCrc, entry.dataCrc, true);
  });
  view.setUint32(HEADER.crc32c, crc32cWithZeroedFields(bytes, [HEADER.crc32c]), true);
  return bytes;
}

/** The page's entries (null: empty slot); CorruptionError if the page is not an index page of this volume's. */
export function decodeIndexPage(bytes: Uint8Array, page: number, volUuid: string): Array<IndexEntry | null> {
  const context = `read cache index page ${page}`;
  if (bytes.byteLength !== PAGE_BYTES) throw corrupt(context, `length ${bytes.byteLength}, expected ${PAGE_BYTES}`);
  const view = viewOf(bytes);
  const magic = view.getUint32(HEADER.magic, true);
  if (magic !== READ_CACHE_INDEX_MAGIC) throw corrupt(context, `bad magic 0x${magic.toString(16)}`);
  const version = view.getUint32(HEADER.version, true);
  if (version !== READ_CACHE_INDEX_VERSION) throw corrupt(context, `unsupported version ${version}`);
  const stored = view.getUint32(HEADER.crc32c, true);
  const computed = crc32cWithZeroedFields(bytes, [HEADER.crc32c]);
  if (stored !== computed) throw corrupt(context, `bad CRC32C (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  if (view.getUint32(HEADER.page, true) !== page) throw corrupt(context, `holds page ${view.getUint32(HEADER.page, true)}`);
  const owner = getUuid(bytes, HEADER.volUuid, context, "vol_uuid");
  if (owner !== volUuid) throw corrupt(context, `belongs to volume ${owner}, not ${volUuid}`);
  const entries: Array<IndexEntry | null> = [];
  for (let position = 0; position < INDEX_ENTRIES_PER_PAGE; position++) {
    const at = HEADER.BYTES + position * ENTRY.BYTES;
    const blockPlusOne = getU64(view, at + ENTRY.blockPlusOne, context, "block");
    if (view.getUint32(at + ENTRY.reserved, true) !== 0) throw corrupt(context, `entry ${position} reserved field is not zero`);
    if (blockPlusOne === 0) {
      entries.push(null);
      continue;
    }
    entries.push({
      block: blockPlusOne - 1,
      seq: view.getUint32(at + ENTRY.seq, true),
      offsetSectors: view.getUint32(at + ENTRY.offsetSectors, true),
      dataCrc: view.getUint32(at + ENTRY.dataCrc, true),
    });
  }
  return entries;
}

/** Index pages and data slots for a region of `pages` pages: the smallest index that names every slot. */
export function indexSplit(pages: number): { indexPages: number; slots: number } {
  const indexPages = Math.ceil(pages / (INDEX_ENTRIES_PER_PAGE + 1));
  return { indexPages, slots: Math.max(0, pages - indexPages) };
}
