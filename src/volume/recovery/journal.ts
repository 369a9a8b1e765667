// The journal half of recovery: after the backend half (backend.ts) found the log's writer cache W and the newest
// journal seq L it holds, the journal table (rules.ts, JOURNAL_CASES; docs/architecture.md, "Recovery") says whether
// this cache's journal continues that log. Then the walk (cache/journal_replay.ts) finds the records, the journal
// restarts where the table says, and the records after L are replayed through the write path with their own seqs.
//
// "Hand over" = put an empty DATA object naming this cache as writer with L' = the journal's next seq - 1, before
// serving, so that the next recovery finds case @B. Discarding = tail and head at the same place with a new
// generation, so no old record can be mistaken for a new one.

import { PAGE_BYTES } from "../../constants.ts";
import { assert, CorruptionError, InvalidArgumentError } from "../../errors.ts";
import type { AlignedPool, CacheDevice } from "../../cache/cache_device.ts";
import { Journal, type JournalStart } from "../../cache/journal.ts";
import { JournalWalker } from "../../cache/journal_replay.ts";
import { decodeCacheSuperblock, type CacheSuperblock } from "../../format/cache_superblock.ts";
import { isReadCacheDevicePage } from "../../format/read_cache_superblock.ts";
import { JOURNAL_HEADER_BYTES, JournalRecordType, type JournalExtent } from "../../format/journal_record.ts";
import type { CrashPoint } from "../../util/clock.ts";
import { dropUnfinishedTail, keepUnfinishedTail, type BackendState } from "./backend.ts";
import { decideJournalCase, type JournalCase } from "./rules.ts";

export async function readCacheSuperblock(cache: CacheDevice, pool: AlignedPool): Promise<CacheSuperblock> {
  const page = pool.acquire(PAGE_BYTES);
  try {
    await cache.read(0, page);
    try {
      return decodeCacheSuperblock(page);
    } catch (error) {
      if (error instanceof CorruptionError && isReadCacheDevicePage(page)) {
        throw new CorruptionError(`Cache ${cache.path} is a shared read-cache device (lsvd mkcache --read-cache-only), not a volume's cache: give it with --read-cache-device`);
      }
      if (error instanceof CorruptionError) throw new CorruptionError(`Cache ${cache.path} has no valid lsvd superblock (run 'lsvd mkcache'): ${error.message}`);
      throw error;
    }
  } finally {
    pool.release(page);
  }
}

/** Case @A of the journal table: a cache of another volume is refused before anything else is decided. */
export function refuseForeignCache(cache: CacheDevice, superblock: CacheSuperblock, volUuid: string): void {
  if (!decideJournalCase(volUuid, superblock.cacheUuid, 0, superblock).refuse) return;
  throw new InvalidArgumentError(
    `Cache ${cache.path} belongs to volume ${superblock.volUuid}, not ${volUuid}: refusing to use it (format it for this volume with 'lsvd mkcache --force --volume ...')`,
  );
}

/**
 * Backend objects after the log's last write boundary (backend.ts, "unfinished tail") stay in the log only when this
 * cache's journal continues the log after the newest of them (a replaying case of the journal table, in practice @B):
 * it holds the rest of their write. Otherwise the log ends before them (they are skipped by the new log start).
 * Returns whether the log now ends inside a write (the tail was kept).
 */
export function settleUnfinishedTail(prefix: string, state: BackendState, superblock: CacheSuperblock): boolean {
  const tail = state.unfinished;
  if (!tail) return false;
  const decided = decideJournalCase(state.superblock.volUuid, tail.writerCacheUuid, tail.writerCacheSeqLast, superblock);
  assert(!decided.refuse, "a foreign cache is refused before the tail is settled");
  const kept = decided.replayAfter !== null;
  if (kept) keepUnfinishedTail(prefix, state);
  else dropUnfinishedTail(prefix, state);
  return kept;
}

/** What the journal half decided before the journal restarts: the case, where the journal restarts, what to replay. */
export interface JournalPlan {
  journalCase: JournalCase;
  /** Records with seq above this are replayed (null: the journal is discarded). */
  replayAfter: number | null;
  /** Where the journal restarts (the Journal's start). */
  start: JournalStart;
  /** A handover object must be put before serving. */
  needHandover: boolean;
  /** Why the walk stopped, for the log and the recovery report ("not walked" when the journal is discarded). */
  walkStopReason: string | null;
  journalStop: string;
}

/**
 * The journal table for the (settled) backend state, then the walk: where the journal restarts. The walk does not
 * apply anything (records are re-read by replayJournal), so that memory stays bounded by one record.
 */
export async function planJournal(cache: CacheDevice, pool: AlignedPool, superblock: CacheSuperblock, state: BackendState): Promise<JournalPlan> {
  assert(state.unfinished === null, "the unfinished tail is settled before the journal is planned");
  const { journalCase, replayAfter, refuse } = decideJournalCase(state.superblock.volUuid, state.writerCacheUuid, state.writerCacheSeqLast, superblock);
  assert(!refuse, "a foreign cache is refused before the journal is planned");
  const L = state.writerCacheSeqLast;
  const T = superblock.replaySeq;
  const walker = new JournalWalker(cache, pool, superblock);
  let found = 0;
  if (replayAfter !== null) while (await walker.next()) found += 1;
  const head = walker.head;
  const walkStopReason = walker.stopReason;
  const journalStop = walkStopReason ? `${walkStopReason}${walker.stopDetail ? `: ${walker.stopDetail}` : ""}` : "not walked";
  walker.close();
  assert(head.seq >= T && head.seq - T === walker.records.length, "the walk found consecutive records from the tail");

  // Where the journal continues. Discarding cases restart at the old tail with its seq; records there are
  // overwritten or, being of an older generation, never read again.
  if (replayAfter === null) {
    const position = Journal.positionOf(superblock, superblock.replayOffsetBytes);
    const seq = Math.max(T, L + 1);
    const start = { tail: { position, seq }, head: { position, seq }, records: [] };
    return { journalCase, replayAfter, start, needHandover: true, walkStopReason, journalStop };
  }
  if (head.seq <= L + 1) {
    // Everything the journal holds is already in the backend: continue after L with an empty journal.
    const seq = Math.max(head.seq, L + 1);
    const start = { tail: { position: head.position, seq }, head: { position: head.position, seq }, records: [] };
    const needHandover = state.writerCacheUuid !== superblock.cacheUuid && (found > 0 || seq !== superblock.startSeq);
    return { journalCase, replayAfter, start, needHandover, walkStopReason, journalStop };
  }
  const start = { tail: walker.tail, head, records: walker.records };
  return { journalCase, replayAfter, start, needHandover: false, walkStopReason, journalStop };
}

/** Where replayed records go: the write path, which batches them with their own seqs as live writes. */
export interface ReplayTarget {
  replayRecord(seq: number, extents: JournalExtent[], data: Uint8Array, dataOffset: number): Promise<void>;
}

/**
 * Replays the planned records with seq > replayAfter, in seq order, then releases the records the backend holds.
 * Returns how many were replayed.
 */
export async function replayJournal(
  cache: CacheDevice,
  pool: AlignedPool,
  superblock: CacheSuperblock,
  plan: JournalPlan,
  journal: Journal,
  target: ReplayTarget,
  crashPoint?: CrashPoint,
  onRecord?: (walked: number, total: number) => void,
): Promise<number> {
  const { replayAfter, start } = plan;
  if (start.records.length === 0 || replayAfter === null) return 0;
  /** Records after replayAfter, pads included (progress: walked of total). */
  const total = start.records.filter((record) => record.seq > replayAfter).length;
  let walked = 0;
  let replayed = 0;
  let previous: number | null = null;
  const replayer = new JournalWalker(cache, pool, superblock);
  try {
    for (;;) {
      const record = await replayer.next();
      if (!record || record.header.seq >= start.head.seq) break;
      const seq = record.header.seq;
      assert(previous === null || seq === previous + 1, `journal records replay in seq order (${seq} after ${previous})`);
      previous = seq;
      if (seq > replayAfter) onRecord?.(++walked, total);
      if (record.header.type !== JournalRecordType.Data || seq <= replayAfter) continue;
      await target.replayRecord(seq, record.header.extents, record.data, journal.physicalOffset(record.position) + JOURNAL_HEADER_BYTES);
      replayed += 1;
      await crashPoint?.("recovery.replayed-record");
    }
  } finally {
    replayer.close();
  }
  assert(previous === null || previous === start.head.seq - 1, "the replay reached the head the walk found");
  journal.release(replayAfter);
  return replayed;
}
