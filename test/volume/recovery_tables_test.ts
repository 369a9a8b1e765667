// The recovery decision tables (src/volume/recovery/rules.ts), exhaustively: every combination of each table's
// parameters matches exactly one row (or is impossible: a row asserts a parameter the combination contradicts), and
// the row's decision is the one the rules below expect. The expectations are written out independently, as the rules
// read in docs/architecture.md ("Recovery"), so removing or changing any row fails here. Then the pure functions
// around the tables, and the doc: it must hold exactly the tables the rows render.

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { NIL as NIL_UUID } from "uuid";
import type { CacheSuperblock } from "../../src/format/cache_superblock.ts";
import type { DataObjectHeader } from "../../src/format/data_object.ts";
import { ExtentMap } from "../../src/map/extent_map.ts";
import { ImpossibleCase, type DecisionTable } from "../../src/volume/recovery/decision_table.ts";
import { DOC_TABLES_PATH, renderRecoveryTables } from "../../src/volume/recovery/doc_tables.ts";
import {
  applyDataObject,
  CHECKPOINT_CASES,
  chooseCheckpointSeq,
  decideJournalCase,
  JOURNAL_CASES,
  LOG_OBJECT_CASES,
  type CheckpointAction,
  type JournalDecision,
  type LogObjectAction,
} from "../../src/volume/recovery/rules.ts";

/** "impossible", or the label and decision expected for `input`. */
type Expected<D> = "impossible" | { label: string; decision: D };

/**
 * Every input of `table`: exactly one row matches with the expected label and decision, or the input is impossible
 * and deciding it throws. Every row is reached by some input (no dead row). Returns how many inputs were checked.
 */
function checkExhaustively<P extends string, D>(table: DecisionTable<P, D>, expected: (input: Record<P, boolean>) => Expected<D>): number {
  const reached = new Set<string>();
  let count = 0;
  for (const input of table.inputs()) {
    count += 1;
    const want = expected(input);
    const where = `${table.name} ${JSON.stringify(input)}`;
    if (want === "impossible") {
      expect(() => table.decide(input), where).toThrow(ImpossibleCase);
      continue;
    }
    const row = table.decide(input);
    expect({ where, label: row.label, decision: row.decision }).toEqual({ where, label: want.label, decision: want.decision });
    reached.add(row.label);
  }
  expect([...reached].sort()).toEqual(table.rows.map((row) => row.label).sort());
  return count;
}

describe("every input matches exactly one row, with the expected decision", () => {
  test("checkpoint: which listed checkpoint recovery starts from (8 inputs)", () => {
    const expected = (input: { loads: boolean; listChecksummed: boolean; newerTaken: boolean }): Expected<CheckpointAction> => {
      // With a checksummed list the first checkpoint that loads ends the search: nothing is taken before it.
      if (input.listChecksummed && input.newerTaken) return "impossible";
      if (!input.loads) return input.listChecksummed ? { label: "@K4", decision: "try-older" } : { label: "@K5", decision: "refuse" };
      if (input.listChecksummed) return { label: "@K1", decision: "take-and-stop" };
      return input.newerTaken ? { label: "@K3", decision: "keep-newer-and-check-older" } : { label: "@K2", decision: "take-and-check-older" };
    };
    expect(checkExhaustively(CHECKPOINT_CASES, expected)).toBe(8);
  });

  test("log object: each seq the roll-forward reaches (32 inputs)", () => {
    type Input = { skipped: boolean; present: boolean; valid: boolean; checkpoint: boolean; writeContinues: boolean };
    const expected = (input: Input): Expected<LogObjectAction> => {
      if (input.skipped) return { label: "@L1", decision: "skip-range" }; // whatever is there: not read at all
      // Only a present, valid object has a type and a flag; only a DATA object has the flag.
      if (!input.present && (input.valid || input.checkpoint || input.writeContinues)) return "impossible";
      if (!input.present) return { label: "@L2", decision: "end" };
      if (!input.valid) return { label: "@L3", decision: "end" };
      if (input.checkpoint) return input.writeContinues ? "impossible" : { label: "@L4", decision: "count" };
      return input.writeContinues ? { label: "@L6", decision: "hold" } : { label: "@L5", decision: "apply" };
    };
    expect(checkExhaustively(LOG_OBJECT_CASES, expected)).toBe(32);
  });

  test("journal: does this cache's journal continue the backend's log (32 inputs)", () => {
    type Input = { cacheOfVolume: boolean; writerIsThisCache: boolean; noWriterYet: boolean; tailWithinLog: boolean; tailAtStart: boolean };
    const discard: JournalDecision = { refuse: false, replayAfter: null };
    const expected = (input: Input): Expected<JournalDecision> => {
      if (!input.cacheOfVolume) return { label: "@A", decision: { refuse: true, replayAfter: null } };
      if (input.writerIsThisCache && input.noWriterYet) return "impossible"; // this cache's UUID is never nil
      if (input.writerIsThisCache) return input.tailWithinLog ? { label: "@B", decision: { refuse: false, replayAfter: "L" } } : { label: "@C", decision: discard };
      if (input.noWriterYet) return input.tailAtStart ? { label: "@D", decision: { refuse: false, replayAfter: "T-1" } } : { label: "@E", decision: discard };
      return { label: "@F", decision: discard };
    };
    expect(checkExhaustively(JOURNAL_CASES, expected)).toBe(32);
  });
});

const THIS_CACHE = "11111111-1111-4111-8111-111111111111";
const OTHER_CACHE = "22222222-2222-4222-8222-222222222222";
const VOLUME = "33333333-3333-4333-8333-333333333333";

function cacheSuperblock(replaySeq: number, startSeq: number, volUuid = VOLUME): CacheSuperblock {
  return {
    cacheUuid: THIS_CACHE,
    volUuid,
    sizeBytes: 1 << 30,
    journalStartBytes: 4096,
    journalBytes: 1 << 28,
    readCacheStartBytes: 4096 + (1 << 28),
    readCacheBytes: 0,
    startSeq,
    replayOffsetBytes: 4096,
    replaySeq,
    generation: 1,
  };
}

describe("decideJournalCase: the journal table on real values (L, T, S)", () => {
  test("each case, and the seq after which records are replayed", () => {
    expect(decideJournalCase(VOLUME, THIS_CACHE, 100, cacheSuperblock(101, 7))).toEqual({ journalCase: "@B", replayAfter: 100, refuse: false });
    expect(decideJournalCase(VOLUME, THIS_CACHE, 100, cacheSuperblock(50, 7))).toEqual({ journalCase: "@B", replayAfter: 100, refuse: false });
    expect(decideJournalCase(VOLUME, THIS_CACHE, 100, cacheSuperblock(102, 7))).toEqual({ journalCase: "@C", replayAfter: null, refuse: false });
    expect(decideJournalCase(VOLUME, NIL_UUID, 0, cacheSuperblock(7, 7))).toEqual({ journalCase: "@D", replayAfter: 6, refuse: false });
    expect(decideJournalCase(VOLUME, NIL_UUID, 0, cacheSuperblock(9, 7))).toEqual({ journalCase: "@E", replayAfter: null, refuse: false });
    expect(decideJournalCase(VOLUME, OTHER_CACHE, 100, cacheSuperblock(101, 7))).toEqual({ journalCase: "@F", replayAfter: null, refuse: false });
    expect(decideJournalCase(VOLUME, THIS_CACHE, 100, cacheSuperblock(101, 7, OTHER_CACHE))).toEqual({ journalCase: "@A", replayAfter: null, refuse: true });
  });
});

describe("chooseCheckpointSeq: the checkpoint table over a listed sequence", () => {
  const loadsOnly = (good: number[]) => async (seq: number) => good.includes(seq);
  test("a checksummed list: the newest that loads, older ones not read", async () => {
    const read: number[] = [];
    const loads = async (seq: number) => (read.push(seq), seq !== 30);
    expect(await chooseCheckpointSeq([10, 20, 30], true, loads)).toEqual({ seq: 20, refusedAt: null });
    expect(read).toEqual([30, 20]);
    expect(await chooseCheckpointSeq([10, 20, 30], true, loadsOnly([]))).toEqual({ seq: 0, refusedAt: null });
    expect(await chooseCheckpointSeq([], true, loadsOnly([]))).toEqual({ seq: 0, refusedAt: null });
  });
  test("a list no CRC covers: every entry must load, else refuse; fsck reads on and gets the newest that loads", async () => {
    expect(await chooseCheckpointSeq([10, 20, 30], false, loadsOnly([10, 20, 30]))).toEqual({ seq: 30, refusedAt: null });
    expect(await chooseCheckpointSeq([10, 20, 30], false, loadsOnly([20, 30]))).toEqual({ seq: 30, refusedAt: 10 });
    expect(await chooseCheckpointSeq([10, 20, 30], false, loadsOnly([10, 20]))).toEqual({ seq: 0, refusedAt: 30 });
    expect(await chooseCheckpointSeq([10, 20, 30], false, loadsOnly([10, 20]), { readOnAfterRefusal: true })).toEqual({ seq: 20, refusedAt: 30 });
  });
});

describe("applyDataObject: what a DATA object does to the map", () => {
  function header(extents: DataObjectHeader["extents"], trims: DataObjectHeader["trims"]): DataObjectHeader {
    const dataSectors = extents.reduce((sum, extent) => sum + extent.sectors, 0);
    return { volUuid: VOLUME, seq: 9, hdrSectors: 8, dataSectors, cacheSeq: 1, cacheSeqLast: 1, cacheUuid: THIS_CACHE, objsCleaned: [], extents, trims, writeContinues: false, dataCrc32c: 0 };
  }
  function extents(map: ExtentMap): number[][] {
    const out: number[][] = [];
    map.forEach((lba, sectors, obj, offset) => out.push([lba, sectors, obj, offset]));
    return out;
  }
  test("a trim applies before the extent it precedes, not after it: trims before extent i", () => {
    const map = new ExtentMap();
    map.update(0, 64, 1, 0);
    // write 0+8, trim 0+16, write 8+8, trim 40+8 at the end
    applyDataObject(header([{ lba: 0, sectors: 8 }, { lba: 8, sectors: 8 }], [{ lba: 0, sectors: 16, beforeIndex: 1 }, { lba: 40, sectors: 8, beforeIndex: 2 }]), map);
    expect(extents(map)).toEqual([
      [8, 8, 9, 8],
      [16, 24, 1, 16],
      [48, 16, 1, 48],
    ]);
  });
  test("a trim before the first extent, and displaced sectors reported", () => {
    const map = new ExtentMap();
    map.update(0, 16, 1, 0);
    const displaced: number[][] = [];
    applyDataObject(header([{ lba: 0, sectors: 4 }], [{ lba: 0, sectors: 16, beforeIndex: 0 }]), map, (obj, sectors) => displaced.push([obj, sectors]));
    expect(extents(map)).toEqual([[0, 4, 9, 0]]);
    expect(displaced).toEqual([[1, 16]]);
  });
});

test(`${DOC_TABLES_PATH} holds exactly the tables the rows render (bun scripts/recovery_tables.ts rewrites them)`, () => {
  const doc = readFileSync(new URL(`../../${DOC_TABLES_PATH}`, import.meta.url), "utf8");
  expect(renderRecoveryTables(doc)).toBe(doc);
});
