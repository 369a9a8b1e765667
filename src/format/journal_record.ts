// Journal records on the cache device: one 4 KiB header page, then dataPages*4096 data bytes. Written by the
// write path, read back only by replay after a crash. Spec: docs/format.md, "Journal records".
//
// Header page:
//   0   magic "LSVJ"       4    version (u16)  6  type (u16)   8  header_crc32c   12  data_crc32c
//   16  seq (u64)          24   vol_uuid (16)  40 cache_uuid (16)  56 data_pages (u32)  60 extent_count (u32)
//   64  generation (u32)   68   reserved, zero (u32)
//   72  extents: {u64 lba, u32 sectors, u32 flags (bit 0: zero)} * extent_count, then zeros to 4096
// Two checksums, so the header can be trusted before the data is read (replay uses it to learn how far to read):
// header_crc32c covers the 4096-byte header page with that field 0; data_crc32c covers dataPages*4096 bytes.
// Data of the non-zero extents lies back to back (sectors*512 each) from the first data page, zero-padded to a page.
// A Pad record (no extents, data CRC unchecked) says "skip dataPages pages": the rest of the journal region is unused.

import { JOURNAL_RECORD_DATA_BYTES_MAX, JOURNAL_RECORD_EXTENTS_MAX, PAGE_BYTES, SECTOR_BYTES, VOLUME_SECTORS_MAX } from "../constants.ts";
import { assert } from "../errors.ts";
import { checkCrc32c, checkMagicAndVersion, corrupt, getU64, getUuid, isSafeU64, isU32, isUuid, layout, roundUp, setU64, setUuid, viewOf } from "./_codec.ts";
import { crc32c } from "./crc32c.ts";

export const JOURNAL_HEADER_BYTES = 4096;
/** "LSVJ" as bytes 4c 53 56 4a, read as a little-endian u32. */
export const JOURNAL_MAGIC = 0x4a56534c;
export const JOURNAL_VERSION = 1;
export const JournalRecordType = { Data: 1, Pad: 2 } as const;

const RECORD = layout([
  ["magic", 4], // JOURNAL_MAGIC
  ["version", 2], // JOURNAL_VERSION
  ["type", 2], // JournalRecordType
  ["headerCrc32c", 4], // CRC-32C of the header page with this field 0
  ["dataCrc32c", 4], // CRC-32C of the data pages (Data records); 0 in Pad records
  ["seq", 8], // u64 journal seq: consecutive records have consecutive seqs
  ["volUuid", 16],
  ["cacheUuid", 16], // the cache that wrote it: a record left over from an earlier mkcache is not replayed
  ["dataPages", 4], // u32 pages after the header page (Pad: pages to skip)
  ["extentCount", 4], // u32 <= JOURNAL_RECORD_EXTENTS_MAX; 0 in Pad records
  // The cache superblock generation of the run that wrote the record. Never decreases along the chain of seqs, so
  // replay can tell a stale record of a crashed run (whose seq was reused after a torn tail) from the next one.
  ["generation", 4],
  ["reserved", 4], // zero; keeps extents 8-byte aligned
]);
const EXTENT = layout([
  ["lba", 8], // u64 sectors
  ["sectors", 4], // u32 >= 1
  ["flags", 4], // bit 0: zero (TRIM / WRITE_ZEROES, no data bytes); other bits 0
]);
export const JOURNAL_RECORD_FIXED_BYTES = 72;
export const JOURNAL_EXTENT_BYTES = 16;
assert(RECORD.BYTES === JOURNAL_RECORD_FIXED_BYTES && EXTENT.BYTES === JOURNAL_EXTENT_BYTES, "journal layout sizes");
// As many extents as fit the header page, and the constant the write path sizes its records with agrees.
assert(
  Math.floor((JOURNAL_HEADER_BYTES - JOURNAL_RECORD_FIXED_BYTES) / JOURNAL_EXTENT_BYTES) === JOURNAL_RECORD_EXTENTS_MAX,
  "JOURNAL_RECORD_EXTENTS_MAX extents fill the header page",
);
assert(JOURNAL_HEADER_BYTES === PAGE_BYTES && JOURNAL_RECORD_DATA_BYTES_MAX % PAGE_BYTES === 0, "journal is page granular");
const EXTENT_FLAG_ZERO = 1;
/** Data records carry at most this many data pages. */
export const JOURNAL_RECORD_DATA_PAGES_MAX = JOURNAL_RECORD_DATA_BYTES_MAX / PAGE_BYTES;

export interface JournalExtent {
  lba: number;
  sectors: number;
  /** TRIM / WRITE_ZEROES: the range reads as zeroes; no data bytes. */
  zero: boolean;
}

export interface JournalRecordHeader {
  type: number;
  seq: number;
  volUuid: string;
  cacheUuid: string;
  /** Cache superblock generation of the run that wrote it. */
  generation: number;
  dataPages: number;
  dataCrc32c: number;
  extents: JournalExtent[];
}

/** Data pages a Data record with these extents needs. */
export function journalDataPages(extents: readonly JournalExtent[]): number {
  let bytes = 0;
  for (const extent of extents) if (!extent.zero) bytes += extent.sectors * SECTOR_BYTES;
  return roundUp(bytes, PAGE_BYTES) / PAGE_BYTES;
}

/** Why the record fields are inconsistent, or null: shared by encode (assert) and decode (CorruptionError). */
function recordProblem(h: Omit<JournalRecordHeader, "dataCrc32c">): string | null {
  if (!isSafeU64(h.seq)) return `seq ${h.seq} is not a safe u64`;
  if (!isU32(h.dataPages)) return `data_pages ${h.dataPages} is not a u32`;
  if (!isU32(h.generation)) return `generation ${h.generation} is not a u32`;
  if (h.extents.length > JOURNAL_RECORD_EXTENTS_MAX) return `${h.extents.length} extents exceed ${JOURNAL_RECORD_EXTENTS_MAX}`;
  if (h.type === JournalRecordType.Pad) return h.extents.length === 0 ? null : "a pad record has extents";
  if (h.type !== JournalRecordType.Data) return `unknown record type ${h.type}`;
  if (h.extents.length === 0) return "a data record has no extents";
  for (let index = 0; index < h.extents.length; index++) {
    const extent = h.extents[index]!;
    if (!isU32(extent.sectors) || extent.sectors === 0) return `extent ${index} length ${extent.sectors} out of range`;
    if (!Number.isSafeInteger(extent.lba) || extent.lba < 0 || extent.lba + extent.sectors > VOLUME_SECTORS_MAX) {
      return `extent ${index} [${extent.lba}, +${extent.sectors}) lies outside the largest volume`;
    }
  }
  if (h.dataPages > JOURNAL_RECORD_DATA_PAGES_MAX) return `data_pages ${h.dataPages} exceeds ${JOURNAL_RECORD_DATA_PAGES_MAX}`;
  const needed = journalDataPages(h.extents);
  if (needed !== h.dataPages) return `extents need ${needed} data pages, data_pages is ${h.dataPages}`;
  return null;
}

/**
 * Fills `into` (one 4096-byte page) with the header of a record whose data pages are `data` (buffers back to back,
 * dataPages*4096 bytes in total; ignored for Pad records). `knownDataCrc32c`, when the caller has it (the batch
 * checksummed the same bytes: volume/batch.ts), is used instead of reading the data again.
 */
export function encodeJournalHeader(
  into: Uint8Array,
  h: Omit<JournalRecordHeader, "dataCrc32c">,
  data: Uint8Array[],
  knownDataCrc32c: number | null = null,
): void {
  assert(into.byteLength === JOURNAL_HEADER_BYTES, "journal header buffer is one page");
  assert(isUuid(h.volUuid) && isUuid(h.cacheUuid), "volUuid and cacheUuid are UUIDs");
  const problem = recordProblem(h);
  if (problem !== null) assert(false, `journal record ${h.seq}: ${problem}`);
  let dataCrc32c = 0;
  if (h.type === JournalRecordType.Data) {
    let bytes = 0;
    for (const buffer of data) {
      if (knownDataCrc32c === null) dataCrc32c = crc32c(buffer, dataCrc32c);
      bytes += buffer.byteLength;
    }
    if (knownDataCrc32c !== null) dataCrc32c = knownDataCrc32c;
    if (bytes !== h.dataPages * PAGE_BYTES) assert(false, `data buffers hold ${bytes} bytes = dataPages*${PAGE_BYTES}`);
  }
  into.fill(0);
  const view = viewOf(into);
  view.setUint32(RECORD.magic, JOURNAL_MAGIC, true);
  view.setUint16(RECORD.version, JOURNAL_VERSION, true);
  view.setUint16(RECORD.type, h.type, true);
  view.setUint32(RECORD.dataCrc32c, dataCrc32c, true);
  setU64(view, RECORD.seq, h.seq);
  setUuid(into, RECORD.volUuid, h.volUuid);
  setUuid(into, RECORD.cacheUuid, h.cacheUuid);
  view.setUint32(RECORD.dataPages, h.dataPages, true);
  view.setUint32(RECORD.extentCount, h.extents.length, true);
  view.setUint32(RECORD.generation, h.generation, true);
  for (let i = 0; i < h.extents.length; i++) {
    const extent = h.extents[i]!;
    const offset = JOURNAL_RECORD_FIXED_BYTES + JOURNAL_EXTENT_BYTES * i;
    setU64(view, offset + EXTENT.lba, extent.lba);
    view.setUint32(offset + EXTENT.sectors, extent.sectors, true);
    view.setUint32(offset + EXTENT.flags, extent.zero ? EXTENT_FLAG_ZERO : 0, true);
  }
  view.setUint32(RECORD.headerCrc32c, crc32c(into), true);
}

/** Decodes and verifies a header page. Any failure is CorruptionError; at the journal tail replay reads it as the end. */
export function decodeJournalHeader(page: Uint8Array): JournalRecordHeader {
  let context = "journal record header";
  if (page.byteLength !== JOURNAL_HEADER_BYTES) throw corrupt(context, `length ${page.byteLength}, expected ${JOURNAL_HEADER_BYTES}`);
  const view = viewOf(page);
  checkMagicAndVersion(view, context, { magicAt: RECORD.magic, magic: JOURNAL_MAGIC, versionAt: RECORD.version, version: JOURNAL_VERSION, versionBytes: 2 });
  checkCrc32c(page, RECORD.headerCrc32c, context, "header CRC32C");
  const seq = getU64(view, RECORD.seq, context, "seq");
  context = `journal record ${seq}`;
  const type = view.getUint16(RECORD.type, true);
  const dataPages = view.getUint32(RECORD.dataPages, true);
  const extentCount = view.getUint32(RECORD.extentCount, true);
  if (view.getUint32(RECORD.reserved, true) !== 0) throw corrupt(context, "reserved field is not zero");
  if (extentCount > JOURNAL_RECORD_EXTENTS_MAX) throw corrupt(context, `extent count ${extentCount} exceeds ${JOURNAL_RECORD_EXTENTS_MAX}`);
  const extents: JournalExtent[] = [];
  for (let i = 0; i < extentCount; i++) {
    const offset = JOURNAL_RECORD_FIXED_BYTES + JOURNAL_EXTENT_BYTES * i;
    const flags = view.getUint32(offset + EXTENT.flags, true);
    if ((flags & ~EXTENT_FLAG_ZERO) !== 0) throw corrupt(context, `extent ${i} has unknown flags 0x${flags.toString(16)}`);
    extents.push({
      lba: getU64(view, offset + EXTENT.lba, context, `extent ${i} lba`),
      sectors: view.getUint32(offset + EXTENT.sectors, true),
      zero: flags === EXTENT_FLAG_ZERO,
    });
  }
  for (let i = JOURNAL_RECORD_FIXED_BYTES + JOURNAL_EXTENT_BYTES * extentCount; i < JOURNAL_HEADER_BYTES; i++) {
    if (page[i] !== 0) throw corrupt(context, `byte ${i} after the extents is not zero`);
  }
  const h: JournalRecordHeader = {
    type,
    seq,
    volUuid: getUuid(page, RECORD.volUuid, context, "vol_uuid"),
    cacheUuid: getUuid(page, RECORD.cacheUuid, context, "cache_uuid"),
    generation: view.getUint32(RECORD.generation, true),
    dataPages,
    dataCrc32c: view.getUint32(RECORD.dataCrc32c, true),
    extents,
  };
  const problem = recordProblem(h);
  if (problem !== null) throw corrupt(context, problem);
  if (type === JournalRecordType.Pad && h.dataCrc32c !== 0) throw corrupt(context, "a pad record has a data CRC");
  return h;
}

/** Throws CorruptionError naming the record if `data` is not its data pages. Pad records have nothing to check. */
export function verifyJournalData(h: JournalRecordHeader, data: Uint8Array): void {
  if (h.type === JournalRecordType.Pad) return;
  const context = `journal record ${h.seq}`;
  if (data.byteLength !== h.dataPages * PAGE_BYTES) {
    throw corrupt(context, `data is ${data.byteLength} bytes, expected ${h.dataPages * PAGE_BYTES}`);
  }
  const computed = crc32c(data);
  if (computed !== h.dataCrc32c) {
    throw corrupt(context, `bad data CRC32C (stored 0x${h.dataCrc32c.toString(16)}, computed 0x${computed.toString(16)})`);
  }
}
