// The simulated world's scheduler: virtual time that moves only when nothing else can run. run(promise) drains the
// microtask queue (one macrotask turn: the sim uses no real timers or I/O, so every chain runs to its next wait), then
// fires the earliest timer, jumping virtual time to it (ties in the order they were set), and so on until the promise
// settles. Nothing reads the wall clock or Math.random, so the interleaving of every component is a function of the
// seed: the same seed gives the same run, operation for operation (sim_determinism_test.ts checks it).

import { VirtualLeaseClock } from "./virtual_lease_clock.ts";

/** The world stopped (a simulated crash): run() throws this so the driver can recover the world. */
export class WorldStopped extends Error {
  constructor(readonly point: string) {
    super(`the world stopped at ${point}`);
  }
}

export interface RunOptions {
  /** Checked after each drain: a reason the world stopped (a crash point fired), or null. */
  stopped?: () => string | null;
  /** Virtual ms the promise may take before the run counts as hung (default 10 minutes). */
  limitMs?: number;
}

const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve));

export class SimClock extends VirtualLeaseClock {
  /** Timers fired so far (a measure of simulated work). */
  fired = 0;

  /** Runs the world until `promise` settles; throws WorldStopped if the world stops first, or an Error on a hang. */
  async run<T>(promise: Promise<T>, options: RunOptions = {}): Promise<T> {
    let settled = false;
    promise.then(
      () => (settled = true),
      () => (settled = true),
    );
    const deadline = this.nowMs() + (options.limitMs ?? 600_000);
    for (;;) {
      await macrotask();
      const point = options.stopped?.() ?? null;
      if (point !== null) {
        promise.catch(() => {}); // the dead incarnation's call: its outcome no longer matters
        throw new WorldStopped(point);
      }
      if (settled) return promise;
      const next = this.nextTimer();
      if (next === undefined) throw new Error(`simulation deadlock: nothing left to run at ${this.nowMs()} ms and the awaited call has not settled`);
      if (next.atMs > deadline) throw new Error(`simulation hang: the awaited call has not settled after ${options.limitMs ?? 600_000} virtual ms`);
      this.timers.splice(this.timers.indexOf(next), 1);
      this.moveTo(Math.max(this.nowMs(), next.atMs));
      this.fired += 1;
      next.fn();
    }
  }

  private nextTimer() {
    this.timers = this.timers.filter((timer) => !timer.cancelled);
    let best = this.timers[0];
    for (const timer of this.timers) if (timer.atMs < best!.atMs || (timer.atMs === best!.atMs && timer.order < best!.order)) best = timer;
    return best;
  }
}
