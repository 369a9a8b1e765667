// What the log means: the three recovery decision tables as data, a pure function per table, and how a DATA object
// changes the map. Volume.open (through backend.ts and journal.ts) and fsck both decide with these, so there is one
// definition. docs/architecture.md ("Recovery") shows the tables, generated from these rows (scripts/recovery_tables.ts;
// test/volume/recovery_tables_test.ts checks that the doc holds exactly them).

import { NIL as NIL_UUID } from "uuid";
import { assert } from "../../errors.ts";
import type { CacheSuperblock } from "../../format/cache_superblock.ts";
import type { DataObjectHeader } from "../../format/data_object.ts";
import type { DisplacedCallback, ExtentMap } from "../../map/extent_map.ts";
import { DecisionTable } from "./decision_table.ts";

// ---- Which checkpoint recovery starts from -------------------------------------------------------------------------

/** Per checkpoint the superblock lists, newest first, until a row says stop (none taken: roll forward from seq 1). */
export type CheckpointAction = "take-and-stop" | "take-and-check-older" | "keep-newer-and-check-older" | "try-older" | "refuse";

export const CHECKPOINT_CASES = new DecisionTable<"loads" | "listChecksummed" | "newerTaken", CheckpointAction>(
  "checkpoint",
  [
    { name: "loads", means: "the listed checkpoint exists, decodes (CRCs) and names its own seq and the volume" },
    { name: "listChecksummed", means: "a CRC covers the superblock's checkpoint list (not so when lsvd-rbd rewrote it, or for a plain v1 one with crc 0)" },
    { name: "newerTaken", means: "a newer listed checkpoint was already taken" },
  ],
  [
    { label: "@K1", when: { loads: "yes", listChecksummed: "yes", newerTaken: "never" }, decision: "take-and-stop", says: "start from it" },
    { label: "@K2", when: { loads: "yes", listChecksummed: "no", newerTaken: "no" }, decision: "take-and-check-older", says: "start from it; still check that every older listed one loads" },
    { label: "@K3", when: { loads: "yes", listChecksummed: "no", newerTaken: "yes" }, decision: "keep-newer-and-check-older", says: "keep the newer one; check the next older" },
    { label: "@K4", when: { loads: "no", listChecksummed: "yes", newerTaken: "never" }, decision: "try-older", says: "treat it as absent: try the next older one" },
    {
      label: "@K5",
      when: { loads: "no", listChecksummed: "no", newerTaken: "any" },
      decision: "refuse",
      says: "refuse to open: a list no CRC covers may be damaged, so do not guess where the log starts (`fsck --repair` drops the entry); fsck reports it and reads on as @K4",
    },
  ],
);

export function decideCheckpoint(input: { loads: boolean; listChecksummed: boolean; newerTaken: boolean }): CheckpointAction {
  return CHECKPOINT_CASES.decide(input).decision;
}

/**
 * Walks the listed checkpoints newest first with `loads` and the table above: the seq to start from (0: none) and
 * the first listed seq that made the table refuse (null: none). Pure but for `loads`. fsck passes its own checks and
 * reads on after a refusal (as @K4), to report on the rest of the volume.
 */
export async function chooseCheckpointSeq(
  listed: readonly number[],
  listChecksummed: boolean,
  loads: (seq: number) => Promise<boolean>,
  options: { readOnAfterRefusal?: boolean } = {},
): Promise<{ seq: number; refusedAt: number | null }> {
  let taken = 0;
  let refusedAt: number | null = null;
  for (const seq of [...listed].reverse()) {
    const action = decideCheckpoint({ loads: await loads(seq), listChecksummed, newerTaken: taken !== 0 });
    if (action === "refuse") {
      refusedAt ??= seq;
      if (!options.readOnAfterRefusal) break;
    }
    if (action === "take-and-stop") return { seq, refusedAt };
    if (action === "take-and-check-older") taken = seq;
  }
  return { seq: taken, refusedAt };
}

// ---- The roll-forward: each object seq after the checkpoint ------------------------------------------------------

/** skip-range: go on after the skipped range; end: the log ends before this seq; count: in the log, nothing to apply. */
export type LogObjectAction = "skip-range" | "end" | "count" | "apply" | "hold";

export const LOG_OBJECT_CASES = new DecisionTable<"skipped" | "present" | "valid" | "checkpoint" | "writeContinues", LogObjectAction>(
  "log object",
  [
    { name: "skipped", means: "the seq lies in a skipped range of the superblock (seqs no owner writes)" },
    { name: "present", means: "an object has that name" },
    { name: "valid", means: "it decodes: header CRC, data CRC, seq and volume UUID match its name" },
    { name: "checkpoint", means: "it is a CKPT object (else DATA)" },
    { name: "writeContinues", means: "its WRITE_CONTINUES flag is set: it ends inside a client write" },
  ],
  [
    { label: "@L1", when: { skipped: "yes", present: "any", valid: "any", checkpoint: "any", writeContinues: "any" }, decision: "skip-range", says: "not part of the log, whatever is there: continue after the range" },
    { label: "@L2", when: { skipped: "no", present: "no", valid: "never", checkpoint: "never", writeContinues: "never" }, decision: "end", says: "gap: the log ends before it" },
    { label: "@L3", when: { skipped: "no", present: "yes", valid: "no", checkpoint: "any", writeContinues: "any" }, decision: "end", says: "treated as missing (never trusted): the log ends before it" },
    { label: "@L4", when: { skipped: "no", present: "yes", valid: "yes", checkpoint: "yes", writeContinues: "never" }, decision: "count", says: "present (its content is what was rolled forward); applies the held objects before it" },
    {
      label: "@L5",
      when: { skipped: "no", present: "yes", valid: "yes", checkpoint: "no", writeContinues: "no" },
      decision: "apply",
      says: "apply the held objects before it, then its trims and extents in recorded order",
    },
    {
      label: "@L6",
      when: { skipped: "no", present: "yes", valid: "yes", checkpoint: "no", writeContinues: "yes" },
      decision: "hold",
      says: "hold it: it ends inside a client write whose rest is in later objects (or only in the journal)",
    },
  ],
);

export function decideLogObject(input: { skipped: boolean; present: boolean; valid: boolean; checkpoint: boolean; writeContinues: boolean }): LogObjectAction {
  return LOG_OBJECT_CASES.decide(input).decision;
}

// ---- The journal: does it continue the backend's log? ---------------------------------------------------------------

/** replayAfter: "L" replays records with seq > L, "T-1" every record from the tail, null discards the journal. */
export interface JournalDecision {
  refuse: boolean;
  replayAfter: "L" | "T-1" | null;
}

export const JOURNAL_CASES = new DecisionTable<"cacheOfVolume" | "writerIsThisCache" | "noWriterYet" | "tailWithinLog" | "tailAtStart", JournalDecision>(
  "journal",
  [
    { name: "cacheOfVolume", means: "the cache superblock names this volume" },
    { name: "writerIsThisCache", means: "W, the cache that wrote the newest DATA object of the log (or of the checkpoint), is this cache" },
    { name: "noWriterYet", means: "W is nil: no cache has written to the log yet" },
    { name: "tailWithinLog", means: "T <= L+1: the journal's tail seq T is at most one past L, the newest journal seq the log holds" },
    { name: "tailAtStart", means: "T == S: the journal's tail is still at the cache's random start seq S" },
  ],
  [
    { label: "@A", when: { cacheOfVolume: "no", writerIsThisCache: "any", noWriterYet: "any", tailWithinLog: "any", tailAtStart: "any" }, decision: { refuse: true, replayAfter: null }, says: "refuse to open" },
    { label: "@B", when: { cacheOfVolume: "yes", writerIsThisCache: "yes", noWriterYet: "never", tailWithinLog: "yes", tailAtStart: "any" }, decision: { refuse: false, replayAfter: "L" }, says: "replay every valid record with seq > L" },
    {
      label: "@C",
      when: { cacheOfVolume: "yes", writerIsThisCache: "yes", noWriterYet: "never", tailWithinLog: "no", tailAtStart: "any" },
      decision: { refuse: false, replayAfter: null },
      says: "the backend lost objects whose records the journal released: discard the journal, hand over",
    },
    { label: "@D", when: { cacheOfVolume: "yes", writerIsThisCache: "no", noWriterYet: "yes", tailWithinLog: "any", tailAtStart: "yes" }, decision: { refuse: false, replayAfter: "T-1" }, says: "replay every record (nothing reached the backend)" },
    { label: "@E", when: { cacheOfVolume: "yes", writerIsThisCache: "no", noWriterYet: "yes", tailWithinLog: "any", tailAtStart: "no" }, decision: { refuse: false, replayAfter: null }, says: "as @C" },
    {
      label: "@F",
      when: { cacheOfVolume: "yes", writerIsThisCache: "no", noWriterYet: "no", tailWithinLog: "any", tailAtStart: "any" },
      decision: { refuse: false, replayAfter: null },
      says: "the backend went on without this cache: its records are stale; discard, hand over",
    },
  ],
);

export type JournalCase = "@A" | "@B" | "@C" | "@D" | "@E" | "@F";

/**
 * The journal table for a log whose writer is cache `writerCacheUuid` holding journal seqs up to `writerCacheSeqLast`
 * (L), and this cache's superblock: the case, and after which seq records are replayed (null: the journal does not
 * continue the backend's log and is discarded), and whether the volume refuses to open with this cache (@A).
 */
export function decideJournalCase(
  volUuid: string,
  writerCacheUuid: string,
  writerCacheSeqLast: number,
  superblock: CacheSuperblock,
): { journalCase: JournalCase; replayAfter: number | null; refuse: boolean } {
  const L = writerCacheSeqLast;
  const T = superblock.replaySeq;
  const row = JOURNAL_CASES.decide({
    cacheOfVolume: superblock.volUuid === volUuid,
    writerIsThisCache: writerCacheUuid === superblock.cacheUuid,
    noWriterYet: writerCacheUuid === NIL_UUID,
    tailWithinLog: T <= L + 1,
    tailAtStart: T === superblock.startSeq,
  });
  const replayAfter = row.decision.replayAfter === "L" ? L : row.decision.replayAfter === "T-1" ? T - 1 : null;
  return { journalCase: row.label as JournalCase, replayAfter, refuse: row.decision.refuse };
}

// ---- What a DATA object does to the map ------------------------------------------------------------------------------

/**
 * Applies a DATA object to `map` exactly as its writes happened: each trim before the extent it preceded
 * (`beforeIndex`), extents at consecutive offsets of the data area, trims after the last extent at the end.
 */
export function applyDataObject(header: DataObjectHeader, map: ExtentMap, displaced?: DisplacedCallback): void {
  const trims = header.trims;
  let trimIndex = 0;
  let offset = 0;
  for (let index = 0; index < header.extents.length; index++) {
    for (; trimIndex < trims.length && trims[trimIndex]!.beforeIndex <= index; trimIndex++) {
      map.trim(trims[trimIndex]!.lba, trims[trimIndex]!.sectors, displaced);
    }
    const extent = header.extents[index]!;
    map.update(extent.lba, extent.sectors, header.seq, offset, displaced);
    offset += extent.sectors;
  }
  for (; trimIndex < trims.length; trimIndex++) map.trim(trims[trimIndex]!.lba, trims[trimIndex]!.sectors, displaced);
  assert(offset <= header.dataSectors, `object ${header.seq}: its extents lie inside its data area (${offset} of ${header.dataSectors} sectors)`);
}
