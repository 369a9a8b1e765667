// The garbage collector's candidates for cleaning, least live first (docs/architecture.md, "Garbage collection"): a
// binary min-heap on (live share, seq) with an index by seq, so that an object whose live share changed moves in
// O(log n) and the k least live come out in O(k log n), without sorting every candidate every round.
//
// Invariants (checkInvariants):
//   1. Heap order: no candidate is less live than its parent (ties: the lower seq first).
//   2. The index names each candidate's position, and nothing else.

import { assert } from "../errors.ts";

export interface Candidate {
  seq: number;
  /** Live sectors over data sectors, below the collector's threshold. */
  share: number;
  deadBytes: number;
  /** Header and data: a victim is read whole. */
  objectBytes: number;
}

function lessLive(a: Candidate, b: Candidate): boolean {
  return a.share < b.share || (a.share === b.share && a.seq < b.seq);
}

export class CandidateHeap {
  private readonly items: Candidate[] = [];
  private readonly positions = new Map<number, number>();

  get size(): number {
    return this.items.length;
  }

  get(seq: number): Candidate | undefined {
    const position = this.positions.get(seq);
    return position === undefined ? undefined : this.items[position];
  }

  /** Adds the candidate, or moves the one with its seq to its new share. */
  set(candidate: Candidate): void {
    const position = this.positions.get(candidate.seq);
    if (position === undefined) {
      this.items.push(candidate);
      this.positions.set(candidate.seq, this.items.length - 1);
      this.siftUp(this.items.length - 1);
      return;
    }
    this.items[position] = candidate;
    this.siftDown(this.siftUp(position));
  }

  /** Removes the candidate with this seq; returns it (undefined: it was none). */
  remove(seq: number): Candidate | undefined {
    const position = this.positions.get(seq);
    if (position === undefined) return undefined;
    const removed = this.items[position]!;
    const last = this.items.pop()!;
    this.positions.delete(seq);
    if (position < this.items.length) {
      this.items[position] = last;
      this.positions.set(last.seq, position);
      this.siftDown(this.siftUp(position));
    }
    return removed;
  }

  /** Removes and returns the least live candidate (undefined: none). */
  pop(): Candidate | undefined {
    const first = this.items[0];
    if (first !== undefined) this.remove(first.seq);
    return first;
  }

  /** Every candidate, in no particular order. */
  values(): readonly Candidate[] {
    return this.items;
  }

  private siftUp(start: number): number {
    let position = start;
    const item = this.items[position]!;
    while (position > 0) {
      const parent = (position - 1) >> 1;
      if (!lessLive(item, this.items[parent]!)) break;
      this.place(position, this.items[parent]!);
      position = parent;
    }
    this.place(position, item);
    return position;
  }

  private siftDown(start: number): void {
    let position = start;
    const item = this.items[position]!;
    const count = this.items.length;
    for (;;) {
      const left = 2 * position + 1;
      if (left >= count) break;
      const right = left + 1;
      const child = right < count && lessLive(this.items[right]!, this.items[left]!) ? right : left;
      if (!lessLive(this.items[child]!, item)) break;
      this.place(position, this.items[child]!);
      position = child;
    }
    this.place(position, item);
  }

  private place(position: number, item: Candidate): void {
    this.items[position] = item;
    this.positions.set(item.seq, position);
  }

  /** Checks invariants 1-2 from the top of this file (O(n): tests and debug checks). */
  checkInvariants(): void {
    assert(this.positions.size === this.items.length, "candidate heap invariant: one index entry per candidate");
    this.items.forEach((item, position) => {
      assert(this.positions.get(item.seq) === position, `candidate heap invariant: the index names ${item.seq}'s position`);
      if (position > 0) assert(!lessLive(item, this.items[(position - 1) >> 1]!), "candidate heap invariant: heap order");
    });
  }
}
