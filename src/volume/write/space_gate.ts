// Space back-pressure (docs/architecture.md, "Space back-pressure"): client writes wait here, before they are queued,
// while the backend holds more than its high-water mark of space the collector can free; the rule is the table in
// volume/gc_pace.ts (spaceGateAction). The collector is the source of what the backend holds (SpaceSource) and says
// when it made progress (recheck). Only client writes and trims pass the gate, in one order (a trim must not overtake
// a write queued before it); garbage collection's copies, the journal replay and checkpoints never do, so nothing
// that frees space waits for space.
//
// Invariants (checkInvariants):
//   1. Waiters leave in the order they came (FIFO), so writes in flight together keep their order into the log.
//   2. Every waiter holds a timer of at most waitMsMax: no write waits longer, whatever the collector does.
//   3. Once closed, the gate holds no waiter and admits every write at once.

import { assert } from "../../errors.ts";
import type { Clock, TimerHandle } from "../../util/clock.ts";
import { spaceGateDecide } from "../gc_pace.ts";
import type { WriteStats } from "./stats.ts";

/** What the collector tells the gate: computed on demand, cheaply (GarbageCollector.spaceState); read at once. */
export interface SpaceSource {
  spaceState(): { readonly overHighWater: boolean; readonly reclaimable: boolean };
}

interface Waiter {
  sinceMs: number;
  /** Queues the write: called synchronously on release, waiters in order, so no later write can slip in between. */
  go: () => void;
  timer: TimerHandle | null;
}

export class SpaceGate {
  private source: SpaceSource | null = null;
  private readonly waiters: Waiter[] = [];
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private readonly waitMsMax: number,
    private readonly stats: WriteStats,
  ) {
    assert(waitMsMax >= 0, "a space wait is bounded");
  }

  /** The collector that measures the backend (null: none, every write goes at once). */
  attach(source: SpaceSource | null): void {
    this.source = source;
    if (source === null) this.recheck();
  }

  /** Whether a write that comes now goes at once (nothing waits, and the rule says proceed); else it must wait(). */
  admitsNow(): boolean {
    return this.waiters.length === 0 && this.action(false) === "proceed";
  }

  /**
   * A write that admitsNow() turned away: `go` is called once it may go (never later than waitMsMax from now),
   * synchronously and in arrival order with the other waiting writes.
   */
  wait(go: () => void): void {
    this.stats.spaceWaits += 1;
    const waiter: Waiter = { sinceMs: this.clock.nowMs(), go, timer: null };
    this.waiters.push(waiter);
    waiter.timer = this.clock.setTimer(this.waitMsMax, () => this.timedOut(waiter));
    // A write that came behind waiting ones, when the gate has opened meanwhile, leaves with them, in order.
    if (this.action(false) === "proceed") this.releaseUpTo(this.waiters.length);
  }

  /** The collector made progress (a round settled its accounts, a delete): waiting writes go if the rule lets them. */
  recheck(): void {
    if (this.waiters.length > 0 && this.action(false) === "proceed") this.releaseUpTo(this.waiters.length);
  }

  /** The write path fails or closes: every waiting write goes now, and later ones do not wait. */
  close(): void {
    this.closed = true;
    this.releaseUpTo(this.waiters.length);
  }

  /** Asked for every client write: no allocation (the source returns the same object each time). */
  private action(waitedOut: boolean): "proceed" | "wait" {
    if (this.source === null) return spaceGateDecide(this.closed, waitedOut, false, false);
    const state = this.source.spaceState();
    return spaceGateDecide(this.closed, waitedOut, state.overHighWater, state.reclaimable);
  }

  /** A waiter's bound ran out: it goes, with every one that came before it (FIFO). */
  private timedOut(waiter: Waiter): void {
    waiter.timer = null;
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return;
    assert(this.action(true) === "proceed", "a write that waited its bound goes");
    this.stats.spaceWaitsTimedOut += 1;
    this.releaseUpTo(index + 1);
  }

  private releaseUpTo(count: number): void {
    const nowMs = this.clock.nowMs();
    for (const waiter of this.waiters.splice(0, count)) {
      waiter.timer?.cancel();
      waiter.timer = null;
      this.stats.spaceWaitMs += Math.max(0, nowMs - waiter.sinceMs);
      waiter.go();
    }
  }

  /** Writes waiting now. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Checks invariants 1-3 from the top of this file. */
  checkInvariants(): void {
    for (let index = 1; index < this.waiters.length; index++) {
      assert(this.waiters[index - 1]!.sinceMs <= this.waiters[index]!.sinceMs, "space gate invariant: waiters in arrival order");
    }
    for (const waiter of this.waiters) assert(waiter.timer !== null, "space gate invariant: every waiter has its bound armed");
    assert(!this.closed || this.waiters.length === 0, "space gate invariant: a closed gate holds no waiter");
  }
}
