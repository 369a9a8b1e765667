// A counting semaphore with a FIFO wait queue: bounds requests in flight to a backend (RetryingStore, RadosStore).
// FIFO so that a steady stream of small reads cannot starve a waiting put. The wait queue is itself bounded.

import { BACKEND_REQUEST_WAITERS_MAX } from "../constants.ts";
import { assert } from "../errors.ts";

export class Semaphore {
  private available: number;
  // Waiters in arrival order; `head` avoids O(n) shifts. Compacted when drained past half.
  private waiters: Array<() => void> = [];
  private head = 0;

  constructor(
    readonly permits: number,
    readonly waitersMax: number = BACKEND_REQUEST_WAITERS_MAX,
  ) {
    assert(Number.isSafeInteger(permits) && permits >= 1, `semaphore permits must be >= 1, not ${permits}`);
    assert(Number.isSafeInteger(waitersMax) && waitersMax >= 0, "semaphore waitersMax");
    this.available = permits;
  }

  /** Permits currently held. */
  get inUse(): number {
    return this.permits - this.available;
  }

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.waiters.length - this.head;
  }

  acquire(): Promise<void> {
    if (this.available > 0 && this.waiting === 0) {
      this.available -= 1;
      return Promise.resolve();
    }
    // Every caller bounds its own requests; a queue this long means one of those bounds is missing.
    assert(this.waiting < this.waitersMax, `more than ${this.waitersMax} callers waiting for a semaphore`);
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    assert(this.inUse > 0, "semaphore released more often than acquired");
    if (this.waiting > 0) {
      // Hand the permit straight to the oldest waiter: `available` stays the same.
      const next = this.waiters[this.head]!;
      this.head += 1;
      if (this.head * 2 >= this.waiters.length) {
        this.waiters = this.waiters.slice(this.head);
        this.head = 0;
      }
      next();
    } else {
      this.available += 1;
    }
  }

  /** Runs `task` holding one permit; the permit is returned however `task` ends. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }
}
