// A LeaseClock on virtual time: wall and monotonic clocks move only when a test says so. advance() runs the timers
// that come due, in order, letting the (memory-store) work they start finish; stop() moves time without running
// anything, as a process stopped with SIGSTOP sees it: when it runs again, every timer is overdue and its monotonic
// clock has moved on. It is also the volume's Clock (nowMs is the monotonic time), and run() drives a whole simulated
// world (sim_clock.ts): every timer of the volume, its collector, the retrying store, the store latency and the cache
// device fires on this clock, in (time, order) order, so one seed replays the same run.

import type { LeaseClock } from "../../src/volume/lease.ts";
import type { Clock, TimerHandle } from "../../src/util/clock.ts";

interface Timer {
  atMs: number;
  order: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets promise chains started by a timer (memory-store calls are a few microtask hops) run to the end. */
export async function settleMicrotasks(): Promise<void> {
  for (let turn = 0; turn < 5; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class VirtualLeaseClock implements LeaseClock, Clock {
  private wall: number;
  private mono = 10_000;
  protected timers: Timer[] = [];
  private order = 0;

  constructor(wallMs = 1_767_225_600_000) {
    this.wall = wallMs;
  }

  wallMs(): number {
    return this.wall;
  }

  monotonicMs(): number {
    return this.mono;
  }

  nowMs(): number {
    return this.mono;
  }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer: Timer = { atMs: this.mono + Math.max(0, delayMs), order: this.order++, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(delayMs, resolve));
  }

  /** Time passes with the process running: due timers fire in order, each followed by the work it started. */
  async advance(ms: number): Promise<void> {
    const endMs = this.mono + ms;
    for (;;) {
      await settleMicrotasks();
      this.timers = this.timers.filter((timer) => !timer.cancelled);
      const due = this.timers.filter((timer) => timer.atMs <= endMs).sort((a, b) => a.atMs - b.atMs || a.order - b.order)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((timer) => timer !== due);
      this.moveTo(Math.max(this.mono, due.atMs));
      due.fn();
    }
    this.moveTo(endMs);
    await settleMicrotasks();
  }

  /** Time passes with the process stopped: nothing runs; overdue timers fire at the next advance(). */
  stop(ms: number): void {
    this.moveTo(this.mono + ms);
  }

  /** Moves only the wall clock (another host's clock, or an NTP step). */
  stepWall(ms: number): void {
    this.wall += ms;
  }

  protected moveTo(monoMs: number): void {
    this.wall += monoMs - this.mono;
    this.mono = monoMs;
  }
}
