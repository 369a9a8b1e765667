// Time seam: the volume, its garbage collector and the retrying store read time and set timers only through a Clock,
// so simulation tests (test/sim/sim_clock.ts) run them on virtual time and a seed replays the same run.

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  nowMs(): number;
  /** Calls fn once after delayMs unless cancelled. */
  setTimer(delayMs: number, fn: () => void): TimerHandle;
  sleep(delayMs: number): Promise<void>;
}

/**
 * A named point where a simulation may stop the world (a crash inside recovery or garbage collection: the process dies
 * there). Production passes none. The hook may return a promise that never settles: the work stops at that point.
 */
export type CrashPoint = (point: string) => Promise<void> | void;

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(delayMs, fn) {
    const timer = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(timer) };
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, delayMs)),
};
