// The space gate (src/volume/write/space_gate.ts) on a clock the test moves by hand: client writes wait only while
// the collector says the backend is over its mark with something it can free, leave in arrival order when it makes
// progress, and never wait past their bound, whatever the collector does.

import { describe, expect, test } from "bun:test";
import type { Clock, TimerHandle } from "../../src/util/clock.ts";
import { SpaceGate, type SpaceSource } from "../../src/volume/write/space_gate.ts";
import { newWriteStats } from "../../src/volume/write/stats.ts";

const BOUND_MS = 200;

/** Time moves only when the test says so; due timers fire in the order they were set. */
class ManualClock implements Clock {
  private now = 0;
  private timers: Array<{ atMs: number; fn: () => void; cancelled: boolean }> = [];
  nowMs(): number {
    return this.now;
  }
  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer = { atMs: this.now + delayMs, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }
  sleep(): Promise<void> {
    throw new Error("the gate never sleeps");
  }
  advance(ms: number): void {
    this.now += ms;
    const due = this.timers.filter((timer) => timer.atMs <= this.now && !timer.cancelled);
    this.timers = this.timers.filter((timer) => !due.includes(timer));
    for (const timer of due) timer.fn();
  }
}

class FakeCollector implements SpaceSource {
  overHighWater = false;
  reclaimable = false;
  spaceState() {
    return { overHighWater: this.overHighWater, reclaimable: this.reclaimable };
  }
}

function setup(over: boolean, reclaimable: boolean) {
  const clock = new ManualClock();
  const stats = newWriteStats();
  const gate = new SpaceGate(clock, BOUND_MS, stats);
  const collector = new FakeCollector();
  collector.overHighWater = over;
  collector.reclaimable = reclaimable;
  gate.attach(collector);
  return { clock, stats, gate, collector };
}

/** As RecordFormer.write does: null when the write goes at once, else a promise of when it goes. */
function admit(gate: SpaceGate): Promise<void> | null {
  if (gate.admitsNow()) return null;
  return new Promise<void>((resolve) => gate.wait(resolve));
}

/** Admits `count` writes; returns the order in which they leave the gate (filled as they do). */
function admitMany(gate: SpaceGate, count: number): { left: number[]; all: Promise<void> } {
  const left: number[] = [];
  const waits: Array<Promise<void>> = [];
  for (let index = 0; index < count; index++) {
    const admitted = admit(gate);
    waits.push(admitted === null ? (left.push(index), Promise.resolve()) : admitted.then(() => void left.push(index)));
  }
  return { left, all: Promise.all(waits).then(() => undefined) };
}

describe("space gate", () => {
  test("within the mark, or over it with nothing the collector can free (snapshot-pinned garbage), writes go at once", () => {
    for (const [over, reclaimable] of [[false, false], [false, true], [true, false]] as const) {
      const { gate, stats } = setup(over, reclaimable);
      expect(admit(gate)).toBeNull();
      expect(stats.spaceWaits).toBe(0);
      gate.checkInvariants();
    }
  });

  test("over the mark with garbage to free: writes wait, and leave in arrival order on the collector's progress", async () => {
    const { gate, collector, stats, clock } = setup(true, true);
    const { left, all } = admitMany(gate, 3);
    await Bun.sleep(0);
    expect(gate.waiting).toBe(3);
    expect(left).toEqual([]);
    gate.recheck(); // progress, but still over: nobody goes
    clock.advance(BOUND_MS - 1);
    await Bun.sleep(0);
    expect(gate.waiting).toBe(3);
    gate.checkInvariants();
    collector.overHighWater = false;
    gate.recheck();
    await all;
    expect(left).toEqual([0, 1, 2]);
    expect(gate.waiting).toBe(0);
    expect(stats.spaceWaits).toBe(3);
    expect(stats.spaceWaitsTimedOut).toBe(0);
    expect(stats.spaceWaitMs).toBe(3 * (BOUND_MS - 1));
  });

  test("a collector that never frees anything holds no write past its bound, and a late write queues behind earlier ones", async () => {
    const { gate, stats, clock } = setup(true, true);
    const first = admitMany(gate, 2);
    clock.advance(BOUND_MS / 2);
    const second = admit(gate);
    expect(second).not.toBeNull();
    clock.advance(BOUND_MS / 2); // the first two reach their bound
    await first.all;
    expect(first.left).toEqual([0, 1]);
    expect(gate.waiting).toBe(1);
    clock.advance(BOUND_MS / 2); // the third reaches its own
    await second;
    expect(gate.waiting).toBe(0);
    expect(stats.spaceWaitsTimedOut).toBe(3);
    gate.checkInvariants();
  });

  test("a write that comes while others wait but the gate has opened leaves with them, behind them", async () => {
    const { gate, collector } = setup(true, true);
    const order: string[] = [];
    void admit(gate)!.then(() => order.push("first"));
    collector.overHighWater = false; // freed, but nobody rechecked yet
    const late = admit(gate);
    expect(late).not.toBeNull();
    void late!.then(() => order.push("late"));
    await Bun.sleep(0);
    expect(order).toEqual(["first", "late"]);
    expect(gate.waiting).toBe(0);
  });

  test("closing (failure or clean close) lets every waiting write go, and later ones do not wait; detaching opens it too", async () => {
    const { gate } = setup(true, true);
    const { all } = admitMany(gate, 4);
    gate.close();
    await all;
    expect(admit(gate)).toBeNull();
    gate.checkInvariants();
    const other = setup(true, true);
    const waiting = admitMany(other.gate, 2);
    other.gate.attach(null); // the collector stopped
    await waiting.all;
    expect(admit(other.gate)).toBeNull();
  });
});
