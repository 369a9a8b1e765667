// The cache device's page 0: which volume and cache this is, where the journal and read cache regions lie, and
// where journal replay starts. Spec: docs/format.md, "Cache device".
//
// Rewritten in place with one 4 KiB write. Page-write atomicity is not assumed: a torn page fails its CRC32C and
// the caller decides how to recover; `generation` counts rewrites.
// Invariants checked by decode (and asserted by encode, so a bad superblock is never written):
// - every offset and length is a multiple of PAGE_BYTES, sizeBytes included;
// - both regions lie inside [PAGE_BYTES, sizeBytes) (page 0 is this superblock) and do not overlap;
// - the journal is at least one page; the read cache may be empty;
// - replayOffsetBytes lies inside the journal region, and replaySeq >= startSeq;
// - bytes after the last field are zero (room for later versions).

import { PAGE_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { checkCrc32c, checkMagicAndVersion, corrupt, crc32cWithZeroedFields, getU64, getUuid, isSafeU64, isUuid, layout, setU64, setUuid, viewOf } from "./_codec.ts";

export const CACHE_SUPERBLOCK_BYTES = 4096;
/** "LSVC" as bytes 4c 53 56 43, read as a little-endian u32. */
export const CACHE_MAGIC = 0x4356534c;
export const CACHE_VERSION = 1;

const CACHE = layout([
  ["magic", 4], // CACHE_MAGIC
  ["version", 4], // CACHE_VERSION
  ["crc32c", 4], // CRC-32C of all 4096 bytes with this field 0
  ["reserved", 4], // 0
  ["cacheUuid", 16], // this cache; journal records carry it too
  ["volUuid", 16], // the volume it caches
  ["sizeBytes", 8], // u64 device size used
  ["journalStartBytes", 8], // u64
  ["journalBytes", 8], // u64
  ["readCacheStartBytes", 8], // u64
  ["readCacheBytes", 8], // u64
  ["startSeq", 8], // u64 first journal seq, random per mkcache
  ["replayOffsetBytes", 8], // u64 absolute device offset of the oldest record that may still be needed
  ["replaySeq", 8], // u64 its seq
  ["generation", 8], // u64 bumped on each rewrite
]);
export const CACHE_SUPERBLOCK_USED_BYTES = 120;
assert(CACHE.BYTES === CACHE_SUPERBLOCK_USED_BYTES, "cache superblock fields are 120 bytes");
assert(CACHE.BYTES <= CACHE_SUPERBLOCK_BYTES && CACHE_SUPERBLOCK_BYTES === PAGE_BYTES, "the cache superblock is page 0");

export interface CacheSuperblock {
  cacheUuid: string;
  volUuid: string;
  sizeBytes: number;
  journalStartBytes: number;
  journalBytes: number;
  readCacheStartBytes: number;
  readCacheBytes: number;
  /** Random first journal seq chosen by mkcache. */
  startSeq: number;
  /** Journal position (absolute device offset) of the oldest record that may still be needed. */
  replayOffsetBytes: number;
  /** Its seq. */
  replaySeq: number;
  /** Bumped each rewrite. */
  generation: number;
}

/** The regions of a cache device, as a superblock records them. */
export type CacheRegions = Pick<CacheSuperblock, "sizeBytes" | "journalStartBytes" | "journalBytes" | "readCacheStartBytes" | "readCacheBytes">;

/** A freshly formatted cache's superblock: generation 1, its journal empty and starting at `startSeq`. */
export function newCacheSuperblock(ids: { cacheUuid: string; volUuid: string }, regions: CacheRegions, startSeq: number): CacheSuperblock {
  return { ...ids, ...regions, startSeq, replayOffsetBytes: regions.journalStartBytes, replaySeq: startSeq, generation: 1 };
}

/** Why `s` is not a consistent layout, or null. Shared by encode (assert) and decode (CorruptionError). */
function layoutProblem(s: CacheSuperblock): string | null {
  const sizes: [string, number][] = [
    ["sizeBytes", s.sizeBytes],
    ["journalStartBytes", s.journalStartBytes],
    ["journalBytes", s.journalBytes],
    ["readCacheStartBytes", s.readCacheStartBytes],
    ["readCacheBytes", s.readCacheBytes],
    ["replayOffsetBytes", s.replayOffsetBytes],
  ];
  for (const [name, value] of sizes) {
    if (!isSafeU64(value) || value % PAGE_BYTES !== 0) return `${name} ${value} is not a multiple of ${PAGE_BYTES}`;
  }
  if (!isSafeU64(s.startSeq) || !isSafeU64(s.replaySeq) || !isSafeU64(s.generation)) return "a u64 field is out of range";
  const journalEnd = s.journalStartBytes + s.journalBytes;
  const readCacheEnd = s.readCacheStartBytes + s.readCacheBytes;
  if (s.journalBytes === 0) return "the journal region is empty";
  if (s.journalStartBytes < PAGE_BYTES || journalEnd > s.sizeBytes) {
    return `journal region [${s.journalStartBytes}, ${journalEnd}) lies outside [${PAGE_BYTES}, ${s.sizeBytes})`;
  }
  if (s.readCacheBytes > 0) {
    if (s.readCacheStartBytes < PAGE_BYTES || readCacheEnd > s.sizeBytes) {
      return `read cache region [${s.readCacheStartBytes}, ${readCacheEnd}) lies outside [${PAGE_BYTES}, ${s.sizeBytes})`;
    }
    if (s.readCacheStartBytes < journalEnd && s.journalStartBytes < readCacheEnd) return "journal and read cache regions overlap";
  }
  if (s.replayOffsetBytes < s.journalStartBytes || s.replayOffsetBytes >= journalEnd) {
    return `replay offset ${s.replayOffsetBytes} lies outside the journal region`;
  }
  if (s.replaySeq < s.startSeq) return `replay seq ${s.replaySeq} precedes start seq ${s.startSeq}`;
  return null;
}

export function encodeCacheSuperblock(s: CacheSuperblock): Uint8Array {
  assert(isUuid(s.cacheUuid) && isUuid(s.volUuid), "cacheUuid and volUuid are UUIDs");
  const problem = layoutProblem(s);
  assert(problem === null, `cache superblock: ${problem}`);
  const page = new Uint8Array(CACHE_SUPERBLOCK_BYTES);
  const view = viewOf(page);
  view.setUint32(CACHE.magic, CACHE_MAGIC, true);
  view.setUint32(CACHE.version, CACHE_VERSION, true);
  setUuid(page, CACHE.cacheUuid, s.cacheUuid);
  setUuid(page, CACHE.volUuid, s.volUuid);
  setU64(view, CACHE.sizeBytes, s.sizeBytes);
  setU64(view, CACHE.journalStartBytes, s.journalStartBytes);
  setU64(view, CACHE.journalBytes, s.journalBytes);
  setU64(view, CACHE.readCacheStartBytes, s.readCacheStartBytes);
  setU64(view, CACHE.readCacheBytes, s.readCacheBytes);
  setU64(view, CACHE.startSeq, s.startSeq);
  setU64(view, CACHE.replayOffsetBytes, s.replayOffsetBytes);
  setU64(view, CACHE.replaySeq, s.replaySeq);
  setU64(view, CACHE.generation, s.generation);
  view.setUint32(CACHE.crc32c, crc32cWithZeroedFields(page, [CACHE.crc32c]), true);
  return page;
}

export function decodeCacheSuperblock(page: Uint8Array): CacheSuperblock {
  const context = "cache superblock";
  if (page.byteLength !== CACHE_SUPERBLOCK_BYTES) {
    throw corrupt(context, `length ${page.byteLength}, expected ${CACHE_SUPERBLOCK_BYTES}`);
  }
  const view = viewOf(page);
  checkMagicAndVersion(view, context, { magicAt: CACHE.magic, magic: CACHE_MAGIC, versionAt: CACHE.version, version: CACHE_VERSION });
  checkCrc32c(page, CACHE.crc32c, context);
  if (view.getUint32(CACHE.reserved, true) !== 0) throw corrupt(context, "reserved field is not zero");
  for (let i = CACHE.BYTES; i < CACHE_SUPERBLOCK_BYTES; i++) {
    if (page[i] !== 0) throw corrupt(context, `byte ${i} after the fields is not zero`);
  }
  const s: CacheSuperblock = {
    cacheUuid: getUuid(page, CACHE.cacheUuid, context, "cache_uuid"),
    volUuid: getUuid(page, CACHE.volUuid, context, "vol_uuid"),
    sizeBytes: getU64(view, CACHE.sizeBytes, context, "size_bytes"),
    journalStartBytes: getU64(view, CACHE.journalStartBytes, context, "journal_start_bytes"),
    journalBytes: getU64(view, CACHE.journalBytes, context, "journal_bytes"),
    readCacheStartBytes: getU64(view, CACHE.readCacheStartBytes, context, "read_cache_start_bytes"),
    readCacheBytes: getU64(view, CACHE.readCacheBytes, context, "read_cache_bytes"),
    startSeq: getU64(view, CACHE.startSeq, context, "start_seq"),
    replayOffsetBytes: getU64(view, CACHE.replayOffsetBytes, context, "replay_offset_bytes"),
    replaySeq: getU64(view, CACHE.replaySeq, context, "replay_seq"),
    generation: getU64(view, CACHE.generation, context, "generation"),
  };
  const problem = layoutProblem(s);
  if (problem !== null) throw corrupt(context, problem);
  return s;
}

/** Is `page` a volume cache's page 0 (by its magic)? For clear refusals where a shared read-cache device was expected. */
export function isCacheSuperblockPage(page: Uint8Array): boolean {
  return page.byteLength >= 4 && viewOf(page).getUint32(CACHE.magic, true) === CACHE_MAGIC;
}
