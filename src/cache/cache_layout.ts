// Splits a cache device into its regions (docs/format.md, "Cache device layout"): page 0 the cache superblock,
// then the write journal, then the read cache. Pure: mkcache and tests call it.

import { BATCH_BYTES_DEFAULT, PAGE_BYTES } from "../constants.ts";
import { InvalidArgumentError } from "../errors.ts";
import { formatSize } from "../util/size.ts";

/**
 * The journal must hold at least two batches' worth of records with room for record headers: one batch being put
 * while the next fills. Four batches leaves room for a header page per 4 KiB write in the worst case.
 */
export const JOURNAL_BYTES_MIN = 4 * BATCH_BYTES_DEFAULT;
export const WRITE_FRACTION_DEFAULT = 0.5;

export interface CacheLayout {
  sizeBytes: number;
  journalStartBytes: number;
  journalBytes: number;
  readCacheStartBytes: number;
  readCacheBytes: number;
}

export function computeCacheLayout(sizeBytes: number, writeFraction = WRITE_FRACTION_DEFAULT): CacheLayout {
  if (!(writeFraction > 0 && writeFraction <= 1)) {
    throw new InvalidArgumentError(`Invalid write fraction ${writeFraction}: expected a number in (0, 1]`);
  }
  const usable = Math.floor(sizeBytes / PAGE_BYTES) * PAGE_BYTES - PAGE_BYTES;
  if (usable < JOURNAL_BYTES_MIN) {
    throw new InvalidArgumentError(
      `Cache of ${formatSize(sizeBytes)} is too small: the journal alone needs ${formatSize(JOURNAL_BYTES_MIN)} (two batches and headers) plus a 4 KiB superblock`,
    );
  }
  let journalBytes = Math.floor((usable * writeFraction) / PAGE_BYTES) * PAGE_BYTES;
  journalBytes = Math.min(usable, Math.max(journalBytes, JOURNAL_BYTES_MIN));
  return {
    sizeBytes,
    journalStartBytes: PAGE_BYTES,
    journalBytes,
    readCacheStartBytes: PAGE_BYTES + journalBytes,
    readCacheBytes: usable - journalBytes,
  };
}
