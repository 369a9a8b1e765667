// The garbage collector's accounts (src/volume/gc_ledger.ts) and its candidate heap (gc_candidates.ts): kept up to
// date from what changed, they equal a full scan of the object table after every settle, and a settle does not walk
// the table.

import { describe, expect, test } from "bun:test";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { CandidateHeap, type Candidate } from "../../src/volume/gc_candidates.ts";
import { GcLedger } from "../../src/volume/gc_ledger.ts";
import { ObjectKind, ObjectTable, type ObjectInfo } from "../../src/volume/object_table.ts";
import { Prng, seedFromEnv } from "../sim/prng.ts";

const THRESHOLD = 0.5;

/** An object table that counts the objects it is asked for. */
class CountingTable extends ObjectTable {
  gets = 0;
  override get(seq: number): ObjectInfo | undefined {
    this.gets += 1;
    return super.get(seq);
  }
}

interface World {
  table: CountingTable;
  ledger: GcLedger;
  retired: Set<number>;
  pinned: Set<number>;
  pins: { version: number };
}

function world(): World {
  const table = new CountingTable();
  const retired = new Set<number>();
  const pinned = new Set<number>();
  const pins = { version: 0 };
  const ledger = new GcLedger({
    objects: table,
    threshold: THRESHOLD,
    freeable: (seq) => !pinned.has(seq),
    isRetired: (seq) => retired.has(seq),
    retire: (seq) => retired.add(seq),
    pinsVersion: () => pins.version,
  });
  return { table, ledger, retired, pinned, pins };
}

function addData(table: ObjectTable, seq: number, dataSectors: number, liveSectors: number): void {
  table.add(seq, { kind: ObjectKind.Data, hdrSectors: 1, dataSectors, liveSectors });
}

/** What a full scan of the table finds, as the collector's scan did before it kept accounts (durable: <= durableSeq). */
function scan(w: World, durableSeq: number): { space: number; garbage: number; candidates: Candidate[]; dead: number[] } {
  const candidates: Candidate[] = [];
  const dead: number[] = [];
  let space = 0;
  let garbage = 0;
  w.table.forEach((seq, info) => {
    if (info.kind !== ObjectKind.Data || seq > durableSeq || w.pinned.has(seq)) return;
    space += (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
    if (info.dataSectors === 0 || w.retired.has(seq)) return;
    if (info.liveSectors === 0) return dead.push(seq);
    const deadBytes = (info.dataSectors - info.liveSectors) * SECTOR_BYTES;
    garbage += deadBytes;
    const share = info.liveSectors / info.dataSectors;
    if (share < THRESHOLD) candidates.push({ seq, share, deadBytes, objectBytes: (info.hdrSectors + info.dataSectors) * SECTOR_BYTES });
  });
  candidates.sort((a, b) => a.share - b.share || a.seq - b.seq);
  return { space, garbage, candidates, dead };
}

function liveBytes(table: ObjectTable): number {
  let live = 0;
  table.forEach((_seq, info) => {
    if (info.kind === ObjectKind.Data) live += info.liveSectors * SECTOR_BYTES;
  });
  return live;
}

describe("gc ledger", () => {
  test("a settle reads no object it has counted, changed or not; changed ones move in the candidates", () => {
    const w = world();
    for (let seq = 1; seq <= 1000; seq++) addData(w.table, seq, 100, 90);
    w.ledger.start(1000, false);
    w.ledger.settle(1000, true);
    w.table.gets = 0;
    w.ledger.settle(1000, true);
    expect(w.table.gets).toBe(0);
    for (const seq of [7, 300, 999]) w.table.displaced(seq, 60);
    w.ledger.settle(1000, true);
    expect(w.table.gets).toBe(0);
    expect(w.ledger.leastLive(() => false, () => true).map((candidate) => candidate.seq)).toEqual([7, 300, 999]);
  });

  test("random changes: after every settle the accounts equal a full scan, and candidates come least live first", () => {
    const seed = seedFromEnv(1);
    const prng = new Prng(seed);
    console.log(`gc_ledger_test seed ${seed}`);
    const w = world();
    let next = 1;
    let durableSeq = 0;
    for (; next <= 50; next++) addData(w.table, next, 1 + prng.int(64), 0);
    w.table.forEach((_seq, info) => (info.liveSectors = prng.int(info.dataSectors + 1)));
    durableSeq = 40;
    w.ledger.start(durableSeq, false);
    for (let step = 0; step < 400; step++) {
      const seqs: number[] = [];
      w.table.forEach((seq) => seqs.push(seq));
      const pick = seqs[prng.int(seqs.length)]!;
      const info = w.table.get(pick)!;
      const action = prng.int(10);
      if (action < 4 && info.liveSectors > 0) w.table.displaced(pick, 1 + prng.int(info.liveSectors));
      else if (action === 4) {
        // Many objects changed at once: the settle walks every counted object instead of looking each one up.
        for (const seq of seqs) if (prng.chance(0.7) && w.table.get(seq)!.liveSectors > 0) w.table.displaced(seq, 1);
      }
      else if (action === 5) addData(w.table, next++, prng.int(64), 0);
      else if (action === 6 && pick > durableSeq) info.liveSectors = Math.min(info.dataSectors, info.liveSectors + prng.int(8));
      else if (action === 7 && w.retired.has(pick)) {
        // The collector forgets what it deletes at once; other deletes are noted by the table for the next settle.
        if (prng.chance(0.5)) w.ledger.forget(pick);
        w.table.delete(pick);
        w.retired.delete(pick);
      } else if (action === 8) {
        if (w.pinned.has(pick)) w.pinned.delete(pick);
        else w.pinned.add(pick);
        w.pins.version += 1;
      } else durableSeq = Math.min(next - 1, durableSeq + prng.int(3));
      const retire = prng.chance(0.7);
      w.ledger.settle(durableSeq, retire);
      const expected = scan(w, durableSeq);
      if (retire) expect(expected.dead).toEqual([]);
      expect(w.ledger.spaceBytes).toBe(expected.space);
      expect(w.ledger.garbageBytes).toBe(expected.garbage);
      expect(w.ledger.liveBytes(next)).toBe(liveBytes(w.table));
      expect(w.ledger.reclaimableBytes([])).toBe(expected.candidates.reduce((sum, candidate) => sum + candidate.deadBytes, 0));
      const skipped = new Set(expected.candidates.filter(() => prng.chance(0.2)).map((candidate) => candidate.seq));
      const inOrder = w.ledger.leastLive((seq) => skipped.has(seq), () => true);
      expect(inOrder).toEqual(expected.candidates.filter((candidate) => !skipped.has(candidate.seq)));
    }
  });
});

describe("candidate heap", () => {
  test("pops least live first (ties: lower seq) through sets, moves and removes, against a sorted model", () => {
    const prng = new Prng(seedFromEnv(2));
    const heap = new CandidateHeap();
    const model = new Map<number, Candidate>();
    for (let step = 0; step < 3000; step++) {
      const seq = prng.int(200);
      const action = prng.int(4);
      if (action <= 1) {
        const candidate = { seq, share: prng.int(8) / 16, deadBytes: prng.int(100), objectBytes: 100 };
        heap.set(candidate);
        model.set(seq, candidate);
      } else if (action === 2) {
        expect(heap.remove(seq)).toBe(model.get(seq));
        model.delete(seq);
      } else {
        const least = [...model.values()].sort((a, b) => a.share - b.share || a.seq - b.seq)[0];
        expect(heap.pop()).toBe(least);
        if (least) model.delete(least.seq);
      }
      heap.checkInvariants();
      expect(heap.size).toBe(model.size);
    }
  });
});
