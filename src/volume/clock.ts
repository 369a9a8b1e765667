// Time seam: the volume reads time and sets timers only through a Clock, so simulation tests can run on virtual time.

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  nowMs(): number;
  /** Calls fn once after delayMs unless cancelled. */
  setTimer(delayMs: number, fn: () => void): TimerHandle;
  sleep(delayMs: number): Promise<void>;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(delayMs, fn) {
    const timer = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(timer) };
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, delayMs)),
};
