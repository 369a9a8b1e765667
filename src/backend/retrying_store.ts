// RetryingStore wraps an ObjectStore (object_store.ts) with the backend retry policy: it retries errors marked
// transient, bounds each attempt with a timeout, and bounds requests in flight. Retries live in a wrapper, not in
// each store, so every backend gets the same policy and tests can drive it (cf. ZeroFS retrying_object_store.rs).
//
// Policy:
// - Only IOError with transient === true is retried (network trouble, timeouts, throttling). NotFound, Corruption,
//   InvalidArgument and permanent IOErrors (EACCES, bad credentials, no such bucket) go straight to the caller.
// - An attempt that has not settled after requestTimeoutMs counts as a transient failure. Its promise is abandoned
//   (the inner store bounds its own work: RadosStore's op timeout, fetch's socket); an abandoned put may still land
//   later, which is harmless because a retry writes the same bytes under the same name.
// - Delay before retry k (k = 0, 1, ...): "full jitter" over [delayMsMin, min(delayMsMax, delayMsMin * 2^(k+1))],
//   so clients that failed together do not retry together.
// - retriesMax: "forever" is for the volume's put path, which has acknowledged the data and cannot drop it.
// - inflightMax attempts run at once (Semaphore, FIFO); a caller backing off holds no slot.
// - close() stops further retries (calls in backoff fail with their last error), waits for attempts in flight,
//   then closes the inner store.

import {
  BACKEND_REQUEST_TIMEOUT_MS,
  BACKEND_REQUESTS_INFLIGHT_MAX,
  BACKEND_RETRIES_MAX,
  BACKEND_RETRY_DELAY_MS_MAX,
  BACKEND_RETRY_DELAY_MS_MIN,
} from "../constants.ts";
import { assert, IOError } from "../errors.ts";
import type { ObjectStore } from "./object_store.ts";
import { WrappingStore, type StoreOp } from "./wrapping_store.ts";
import { Semaphore } from "./semaphore.ts";

export interface RetryingStoreOptions {
  /** Retries after the first attempt; "forever" never gives up on a transient error. */
  retriesMax?: number | "forever";
  delayMsMin?: number;
  delayMsMax?: number;
  /** Per-attempt timeout; 0 disables it. */
  requestTimeoutMs?: number;
  inflightMax?: number;
  /** Injectable for tests: waits ms milliseconds. */
  sleep?: (ms: number) => Promise<void>;
  /** Injectable for tests: uniform in [0, 1). */
  random?: () => number;
  /** Called before each retry with a message naming the operation, the error and the delay. */
  log?: (message: string) => void;
}

export function isTransient(error: unknown): boolean {
  return error instanceof IOError && error.transient;
}

const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class RetryingStore extends WrappingStore {
  private readonly retriesMax: number;
  private readonly delayMsMin: number;
  private readonly delayMsMax: number;
  private readonly requestTimeoutMs: number;
  private readonly slots: Semaphore;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly log: (message: string) => void;
  private closing = false;
  // Resolves when close() starts: wakes every caller in backoff.
  private wakeClosing: () => void = () => undefined;
  private readonly closingSignal = new Promise<void>((resolve) => (this.wakeClosing = resolve));
  private inflightCalls = 0;
  private idleWaiters: Array<() => void> = [];
  /** Retries performed so far (tests, stats). */
  retries = 0;

  constructor(inner: ObjectStore, options: RetryingStoreOptions = {}) {
    super(inner);
    const retriesMax = options.retriesMax ?? BACKEND_RETRIES_MAX;
    this.retriesMax = retriesMax === "forever" ? Number.POSITIVE_INFINITY : retriesMax;
    assert(retriesMax === "forever" || (Number.isSafeInteger(retriesMax) && retriesMax >= 0), "retriesMax");
    this.delayMsMin = options.delayMsMin ?? BACKEND_RETRY_DELAY_MS_MIN;
    this.delayMsMax = options.delayMsMax ?? BACKEND_RETRY_DELAY_MS_MAX;
    assert(this.delayMsMin >= 0 && this.delayMsMin <= this.delayMsMax, "retry delay range");
    this.requestTimeoutMs = options.requestTimeoutMs ?? BACKEND_REQUEST_TIMEOUT_MS;
    assert(this.requestTimeoutMs >= 0, "requestTimeoutMs");
    this.slots = new Semaphore(options.inflightMax ?? BACKEND_REQUESTS_INFLIGHT_MAX);
    this.sleep = options.sleep ?? realSleep;
    this.random = options.random ?? Math.random;
    this.log = options.log ?? (() => undefined);
  }

  /** Attempts running in the inner store right now (tests). */
  get inflight(): number {
    return this.slots.inUse;
  }

  override async close(): Promise<void> {
    this.closing = true;
    this.wakeClosing();
    while (this.inflightCalls > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    await this.inner.close();
  }

  /** Backoff before retry number `retry` (0-based), in ms. */
  delayMs(retry: number): number {
    const ceiling = Math.min(this.delayMsMax, this.delayMsMin * 2 ** Math.min(retry + 1, 52));
    return this.delayMsMin + this.random() * (ceiling - this.delayMsMin);
  }

  protected override async call<T>(op: StoreOp, name: string, attempt: () => Promise<T>): Promise<T> {
    assert(!this.closing, `${this.description} used after close`);
    this.inflightCalls += 1;
    try {
      for (let retry = 0; ; retry++) {
        try {
          return await this.attemptOnce(op, name, attempt);
        } catch (error) {
          if (!isTransient(error) || retry >= this.retriesMax || this.closing) throw error;
          const delayMs = this.delayMs(retry);
          this.retries += 1;
          const limit = this.retriesMax === Number.POSITIVE_INFINITY ? "(retrying forever)" : `of ${this.retriesMax}`;
          this.log(`${op} ${name}: ${(error as Error).message}; retry ${retry + 1} ${limit} in ${Math.round(delayMs)} ms`);
          await Promise.race([this.sleep(delayMs), this.closingSignal]);
          if (this.closing) throw error;
        }
      }
    } finally {
      this.inflightCalls -= 1;
      if (this.inflightCalls === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  private async attemptOnce<T>(op: string, name: string, attempt: () => Promise<T>): Promise<T> {
    await this.slots.acquire();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const running = attempt();
      if (this.requestTimeoutMs === 0) return await running;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new IOError(`Cannot ${op} object ${name} in ${this.description}: no answer in ${this.requestTimeoutMs} ms`, true));
        }, this.requestTimeoutMs);
      });
      // The abandoned attempt may still fail later: observe it so it is not an unhandled rejection.
      running.catch(() => undefined);
      return await Promise.race([running, timeout]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      this.slots.release();
    }
  }
}
