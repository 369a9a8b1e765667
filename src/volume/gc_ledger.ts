// The garbage collector's accounts (docs/architecture.md, "Garbage collection"): what a round needs to know of the
// object table (the live data, the garbage, the bytes the space gate measures, the candidates least live first),
// kept up to date as the table changes instead of scanned whole every round. A round settles only what changed since
// the previous one: objects that became durable, and objects the table noted (ObjectTable.takeChanged: displaced or
// added; takeRemoved: deleted). So a round with nothing to clean costs O(changes), and choosing k victims O(k log n).
//
// Each counted object's share of the totals is remembered, so settling it again subtracts what it gave and adds what
// it gives now. Counted: every DATA object with seq <= countedUpTo (durable: the write path's durableSeq when last
// settled). Objects above it are open or being put: only their live sectors count, summed afresh when asked (a few,
// bounded by the pipeline), since the record former adds to them without telling the table. A durable object's live
// sectors only go down, through displacements, which the table notes. What the collector may free depends on
// snapshot pins: when they change (SnapshotPins.version), everything is counted again.
//
// What an object gives, by its state (first matching row; "freeable": not a clone's base object, not pinned):
//   not a DATA object, or gone         nothing
//   not freeable                       live sectors
//   no data sectors, or retired        live sectors, space (header and data bytes)
//   no live sector left                space; retired now in a round, else due for the next round's settle
//   live share below the threshold     live, space, garbage (dead bytes), and it is a candidate
//   otherwise                          live, space, garbage
//
// debugChecks: after every settle, the totals and the candidates equal a full scan of the table (checkAgainstScan).

import { SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { debugChecks } from "../util/debug_checks.ts";
import { CandidateHeap, type Candidate } from "./gc_candidates.ts";
import { ObjectKind, type ObjectInfo, type ObjectTable } from "./object_table.ts";

export interface GcLedgerOptions {
  objects: ObjectTable;
  /** Objects whose live share is below this are candidates (0: none is). */
  threshold: number;
  /** Not a clone's base object and not pinned by a snapshot: the collector may clean, retire and delete it. */
  freeable(seq: number): boolean;
  isRetired(seq: number): boolean;
  retire(seq: number): void;
  /** Changes whenever snapshot pins change (then freeable() may answer differently for any object). */
  pinsVersion(): number;
}

/** What one counted object gives to the totals. */
interface Share {
  liveSectors: number;
  spaceBytes: number;
  garbageBytes: number;
  /** Its entry in the candidate heap (null: not a candidate). */
  candidate: Candidate | null;
  /** The table's entry for it (the same object while the table holds it: deletes are noted apart, and forgotten). */
  info: ObjectInfo;
}

export class GcLedger {
  private readonly counted = new Map<number, Share>();
  private readonly candidates = new CandidateHeap();
  /** Objects counted with no live sector while retiring was not allowed: the next settle that may retire takes them. */
  private readonly retireDue = new Set<number>();
  private countedLiveSectors = 0;
  private candidateDeadBytes = 0;
  private pinsVersionCounted = -1;
  /** Objects with seq up to this are counted. */
  countedUpTo = 0;
  /** Header and data bytes of the counted objects the collector may free, retired ones included (space gate). */
  spaceBytes = 0;
  /** Dead bytes in the counted objects the collector may free and has not retired. */
  garbageBytes = 0;

  constructor(private readonly options: GcLedgerOptions) {}

  /** Counts the whole table, and notes its changes from now on. */
  start(durableSeq: number, retire: boolean): void {
    this.options.objects.noteChanges(true);
    this.countAll(durableSeq, retire);
  }

  stop(): void {
    this.options.objects.noteChanges(false);
  }

  /**
   * Brings the accounts up to date with the table: what changed, and what became durable up to durableSeq; retires
   * the freeable objects with no live sector left when `retire` (rounds do; between rounds the space gate does not).
   */
  settle(durableSeq: number, retire: boolean): void {
    for (const seq of this.options.objects.takeRemoved()) this.forget(seq);
    const changed = this.options.objects.takeChanged();
    if (this.options.pinsVersion() !== this.pinsVersionCounted) {
      this.countAll(durableSeq, retire);
      return;
    }
    if (changed.size * 2 > this.counted.size) this.countAgainInOrder(retire);
    else for (const seq of changed) if (seq <= this.countedUpTo) this.count(seq, retire);
    this.countDurable(durableSeq, retire);
    if (retire) for (const seq of this.retireDue) this.count(seq, true);
    if (debugChecks) this.checkAgainstScan(durableSeq, retire);
  }

  /** Counts objects that became durable up to durableSeq (cheap when none did: the space gate asks per write). */
  countDurable(durableSeq: number, retire: boolean): void {
    for (let seq = this.countedUpTo + 1; seq <= durableSeq; seq++) this.count(seq, retire);
    this.countedUpTo = Math.max(this.countedUpTo, durableSeq);
  }

  /** Takes back what a deleted object gave (the collector deleted it; a settle does it for other deletes). */
  forget(seq: number): void {
    const old = this.counted.get(seq);
    if (old === undefined) return;
    this.takeBack(old);
    if (old.candidate !== null) this.candidates.remove(seq);
    this.counted.delete(seq);
    if (this.retireDue.size > 0) this.retireDue.delete(seq);
  }

  /** Live bytes of every DATA object: the counted ones and those above countedUpTo, below sequenceNext. */
  liveBytes(sequenceNext: number): number {
    let liveSectors = this.countedLiveSectors;
    for (let seq = this.countedUpTo + 1; seq < sequenceNext; seq++) {
      const info = this.options.objects.get(seq);
      if (info !== undefined && info.kind === ObjectKind.Data) liveSectors += info.liveSectors;
    }
    return liveSectors * SECTOR_BYTES;
  }

  /** Dead bytes in the candidates, less those of candidates `skipped` (a victim that failed, left alone a while). */
  reclaimableBytes(skipped: Iterable<number>): number {
    let bytes = this.candidateDeadBytes;
    for (const seq of skipped) bytes -= this.candidates.get(seq)?.deadBytes ?? 0;
    return bytes;
  }

  /**
   * Candidates least live first, not `skipped`, as long as `take` accepts them (it returns false to stop at the one
   * it is shown). Returns copies of those taken. O(k log n) for k looked at.
   */
  leastLive(skipped: (seq: number) => boolean, take: (candidate: Candidate) => boolean): Candidate[] {
    const popped: Candidate[] = [];
    const taken: Candidate[] = [];
    for (let candidate = this.candidates.pop(); candidate !== undefined; candidate = this.candidates.pop()) {
      popped.push(candidate);
      if (skipped(candidate.seq)) continue;
      if (!take(candidate)) break;
      taken.push({ ...candidate });
    }
    for (const candidate of popped) this.candidates.set(candidate);
    return taken;
  }

  /**
   * Counts every counted object again, in the order they were counted (most of them changed: walking the shares in
   * memory order costs less than looking each changed one up). A DATA object is never added at or below countedUpTo,
   * so the changed ones are all among them.
   */
  private countAgainInOrder(retire: boolean): void {
    for (const [seq, share] of this.counted) {
      this.takeBack(share);
      this.give(seq, share.info, share, retire);
    }
  }

  private countAll(durableSeq: number, retire: boolean): void {
    this.counted.clear();
    this.retireDue.clear();
    for (const candidate of [...this.candidates.values()]) this.candidates.remove(candidate.seq);
    this.countedLiveSectors = 0;
    this.candidateDeadBytes = 0;
    this.spaceBytes = 0;
    this.garbageBytes = 0;
    this.pinsVersionCounted = this.options.pinsVersion();
    this.countedUpTo = Math.max(this.countedUpTo, durableSeq);
    this.options.objects.forEach((seq) => {
      if (seq <= this.countedUpTo) this.count(seq, retire);
    });
    if (debugChecks) this.checkAgainstScan(durableSeq, retire);
  }

  /** Takes back what the object gave, and adds what it gives now (the table at the top of this file). */
  private count(seq: number, retire: boolean): void {
    const old = this.counted.get(seq);
    if (this.retireDue.size > 0) this.retireDue.delete(seq);
    if (old !== undefined) {
      this.takeBack(old);
      this.give(seq, old.info, old, retire);
      return;
    }
    const info = this.options.objects.get(seq);
    if (info === undefined || info.kind !== ObjectKind.Data) return;
    const share: Share = { liveSectors: 0, spaceBytes: 0, garbageBytes: 0, candidate: null, info };
    this.counted.set(seq, share);
    this.give(seq, info, share, retire);
  }

  private takeBack(old: Share): void {
    this.countedLiveSectors -= old.liveSectors;
    this.spaceBytes -= old.spaceBytes;
    this.garbageBytes -= old.garbageBytes;
    if (old.candidate !== null) this.candidateDeadBytes -= old.candidate.deadBytes;
  }

  /** Fills in what a counted DATA object gives now, adds it to the totals, and lists, moves or drops its candidate. */
  private give(seq: number, info: ObjectInfo, share: Share, retire: boolean): void {
    const { threshold, freeable, isRetired } = this.options;
    share.liveSectors = info.liveSectors;
    share.spaceBytes = 0;
    share.garbageBytes = 0;
    this.countedLiveSectors += share.liveSectors;
    let liveShare = Infinity; // not a candidate, whatever the threshold
    if (freeable(seq)) {
      share.spaceBytes = (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
      if (info.dataSectors > 0 && !isRetired(seq)) {
        if (info.liveSectors === 0) {
          if (retire) this.options.retire(seq);
          else this.retireDue.add(seq);
        } else {
          share.garbageBytes = (info.dataSectors - info.liveSectors) * SECTOR_BYTES;
          liveShare = info.liveSectors / info.dataSectors;
        }
      }
    }
    this.spaceBytes += share.spaceBytes;
    this.garbageBytes += share.garbageBytes;
    const candidate = share.candidate;
    if (liveShare >= threshold) {
      if (candidate !== null) this.candidates.remove(seq);
      share.candidate = null;
      return;
    }
    if (candidate === null) {
      share.candidate = { seq, share: liveShare, deadBytes: share.garbageBytes, objectBytes: share.spaceBytes };
    } else {
      candidate.share = liveShare;
      candidate.deadBytes = share.garbageBytes;
      candidate.objectBytes = share.spaceBytes;
    }
    this.candidates.set(share.candidate!);
    this.candidateDeadBytes += share.garbageBytes;
  }

  /** Debug checks: the accounts equal what a full scan of the table finds (the rows at the top of this file). */
  private checkAgainstScan(durableSeq: number, retire: boolean): void {
    const { objects, threshold, freeable, isRetired } = this.options;
    let liveSectors = 0;
    let spaceBytes = 0;
    let garbageBytes = 0;
    let candidates = 0;
    let candidateDeadBytes = 0;
    objects.forEach((seq, info) => {
      if (info.kind !== ObjectKind.Data || seq > this.countedUpTo) return;
      liveSectors += info.liveSectors;
      if (!freeable(seq)) return;
      spaceBytes += (info.hdrSectors + info.dataSectors) * SECTOR_BYTES;
      if (info.dataSectors === 0 || isRetired(seq)) return;
      assert(info.liveSectors > 0 || !retire, `gc ledger: object ${seq} has no live sector and is not retired`);
      if (info.liveSectors === 0) return;
      const deadBytes = (info.dataSectors - info.liveSectors) * SECTOR_BYTES;
      garbageBytes += deadBytes;
      if (info.liveSectors / info.dataSectors >= threshold) return;
      candidates += 1;
      candidateDeadBytes += deadBytes;
      assert(this.candidates.get(seq)?.deadBytes === deadBytes, `gc ledger: candidate ${seq} is listed with its dead bytes`);
    });
    assert(this.countedUpTo >= durableSeq, "gc ledger: every durable object is counted");
    assert(liveSectors === this.countedLiveSectors, `gc ledger: live sectors ${this.countedLiveSectors}, a scan finds ${liveSectors}`);
    assert(spaceBytes === this.spaceBytes, `gc ledger: space ${this.spaceBytes} bytes, a scan finds ${spaceBytes}`);
    assert(garbageBytes === this.garbageBytes, `gc ledger: garbage ${this.garbageBytes} bytes, a scan finds ${garbageBytes}`);
    assert(candidates === this.candidates.size && candidateDeadBytes === this.candidateDeadBytes, "gc ledger: the candidates are those a scan finds");
    this.candidates.checkInvariants();
  }
}
