// RetryingStore wraps an ObjectStore (object_store.ts) with the backend retry policy: it retries errors marked
// transient, bounds each attempt with a timeout, and bounds requests in flight. Retries live in a wrapper, not in
// each store, so every backend gets the same policy and tests can drive it (cf. ZeroFS retrying_object_store.rs).
//
// Policy:
// - Only IOError with transient === true is retried (network trouble, timeouts, throttling). NotFound, Corruption,
//   InvalidArgument, Conflict and permanent IOErrors (EACCES, bad credentials, no such bucket) go to the caller.
// - An attempt that has not settled after requestTimeoutMs counts as a transient failure (logged).
// - Delay before retry k (k = 0, 1, ...): "full jitter" over [delayMsMin, min(delayMsMax, delayMsMin * 2^(k+1))],
//   so clients that failed together do not retry together.
// - retriesMax: "forever" is for the volume's put path, which has acknowledged the data and cannot drop it.
// - inflightMax attempts run at once (Semaphore, FIFO); a caller backing off or waiting for its turn holds no slot.
// - close() stops further retries (calls in backoff, or waiting as below, fail with their last error), waits for
//   calls in flight, then closes the inner store (which waits for its own operations).
//
// Nothing late can land (issue 12): the rule for operations that change a name (put, delete, putIfAbsent,
// putIfVersion) is that an attempt at a name starts only once every earlier attempt at that name, of any call
// through this store, has settled in the inner store. A timed-out attempt is not abandoned: its call waits for it to
// end (logging that it waits) and takes its outcome (it landed: done; it failed: retry as usual). So no retry and no
// later call's write to the name can be overtaken by an earlier attempt still travelling, and a later plain put or
// delete of a name always lands after the earlier one. The wait is bounded by the inner store's own bound on an
// operation: RadosStore's librados op timeout, S3Store's request timeout (it aborts its fetch); a FileStore's are
// local system calls. Reads are not ordered: a late read changes nothing in the store. But a read into a buffer the
// caller lent (get's `into`) writes the caller's memory, so its timed-out attempt is waited for the same way, even
// when no retry is left or the store is closing: once the call ends, nothing writes that buffer.
//
// What a store cannot promise and this rule therefore cannot either: that a request the inner store gave up on
// (librados ETIMEDOUT, an aborted HTTP request) does not still reach the server later. Writes that could then do harm
// are made harmless by construction (docs/architecture.md, ownership and fencing): names that are written more than
// once (the lease, the superblock) only ever change with putIfVersion, which a late attempt fails once anyone else
// wrote; every other name is created once with putIfAbsent and never reused.
//
// Outages are told once each way: every retry is logged as it is scheduled, and the first attempt that reaches the
// store after transient failures (it succeeds, or fails for a reason that is not transient) logs "reachable again
// after T s, N retries", T from the first failure of the outage.
//
// Conditional operations are retried safely: once an attempt of putIfAbsent or putIfVersion failed in a way that may
// have applied it (any transient error: a lost reply, a timeout), a later ConflictError may be that attempt's own
// doing. The call then reads the object back: exactly our bytes -> our write landed, the call succeeds with the
// object's current version; other bytes (or none) -> ConflictError. (Competing writers write different bytes:
// object_store.ts.)

import {
  BACKEND_REQUEST_TIMEOUT_MS,
  BACKEND_REQUESTS_INFLIGHT_MAX,
  BACKEND_RETRIES_MAX,
  BACKEND_RETRY_DELAY_MS_MAX,
  BACKEND_RETRY_DELAY_MS_MIN,
} from "../constants.ts";
import { assert, ConflictError, IOError } from "../errors.ts";
import type { ObjectStore, ObjectVersion } from "./object_store.ts";
import { WrappingStore, type StoreOp } from "./wrapping_store.ts";
import { Semaphore } from "./semaphore.ts";
import { systemClock, type Clock, type TimerHandle } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";

export interface RetryingStoreOptions {
  /** Retries after the first attempt; "forever" never gives up on a transient error. */
  retriesMax?: number | "forever";
  delayMsMin?: number;
  delayMsMax?: number;
  /** Per-attempt timeout; 0 disables it. */
  requestTimeoutMs?: number;
  inflightMax?: number;
  /** Time for backoff sleeps and attempt timeouts (default: real time); simulations pass their virtual clock. */
  clock?: Clock;
  /** Injectable for tests: waits ms milliseconds (default: the clock's sleep). */
  sleep?: (ms: number) => Promise<void>;
  /** Injectable for tests: uniform in [0, 1). */
  random?: () => number;
  /** Called before each retry with a message naming the operation, the error and the delay; and once an outage ends. */
  log?: LogFn;
}

export function isTransient(error: unknown): boolean {
  return error instanceof IOError && error.transient;
}

/** Operations that change a name: their attempts at one name run one after another (see the header). */
const CHANGING_OPS: ReadonlySet<StoreOp> = new Set<StoreOp>(["put", "delete", "putIfAbsent", "putIfVersion"]);

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** An attempt that did not answer in time; `outcome` settles when the inner store's operation does. */
class AttemptTimeoutError<T> extends IOError {
  constructor(
    message: string,
    readonly outcome: Promise<Outcome<T>>,
  ) {
    super(message, true);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

export class RetryingStore extends WrappingStore {
  private readonly retriesMax: number;
  private readonly delayMsMin: number;
  private readonly delayMsMax: number;
  private readonly requestTimeoutMs: number;
  private readonly slots: Semaphore;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly clock: Clock;
  private readonly log: LogFn;
  private closing = false;
  // Resolves when close() starts: wakes every caller in backoff.
  private wakeClosing: () => void = () => undefined;
  private readonly closingSignal = new Promise<void>((resolve) => (this.wakeClosing = resolve));
  private inflightCalls = 0;
  private idleWaiters: Array<() => void> = [];
  /** Per name with a changing attempt running or waiting: settles when the last of them has settled. */
  private readonly nameTails = new Map<string, Promise<void>>();
  /** Retries performed so far (tests, stats). */
  retries = 0;
  /** Attempts that did not answer within requestTimeoutMs (tests, stats). */
  timeouts = 0;
  /** The current outage: since when (the clock's ms) and how many retries it took so far; null while reachable. */
  private outage: { sinceMs: number; retries: number } | null = null;

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
    this.clock = options.clock ?? systemClock;
    this.sleep = options.sleep ?? ((ms) => this.clock.sleep(ms));
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

  protected override async call<T>(op: StoreOp, name: string, attempt: () => Promise<T>, data?: Uint8Array, lent?: Uint8Array): Promise<T> {
    assert(!this.closing, `${this.description} used after close`);
    const changing = CHANGING_OPS.has(op);
    this.inflightCalls += 1;
    // An earlier attempt of this call failed in a way that may have applied it.
    let mayHaveLanded = false;
    try {
      for (let retry = 0; ; retry++) {
        let error: unknown;
        try {
          const value = await this.attemptOnce(op, name, attempt);
          this.reached();
          return value;
        } catch (caught) {
          error = caught;
          if (!isTransient(caught)) this.reached();
        }
        const retryable = (failure: unknown) => isTransient(failure) && retry < this.retriesMax && !this.closing;
        if (error instanceof AttemptTimeoutError && lent !== undefined) {
          // Into the caller's memory: never left running (see the header), whatever comes next.
          this.log(`${op} ${name}: ${error.message}; waiting for that attempt to end (it reads into the caller's buffer)`);
          const outcome = (await error.outcome) as Outcome<T>;
          if (outcome.ok) return outcome.value;
          error = outcome.error;
        } else if (error instanceof AttemptTimeoutError && changing && retryable(error)) {
          // Not abandoned: wait for it and take its outcome (see the header).
          this.log(`${op} ${name}: ${error.message}; waiting for that attempt to end before trying again`);
          const outcome = await Promise.race([error.outcome as Promise<Outcome<T>>, this.closingSignal.then(() => undefined)]);
          if (outcome === undefined) throw error; // closing
          if (outcome.ok) return outcome.value;
          error = outcome.error;
        }
        if (error instanceof ConflictError && mayHaveLanded && (op === "putIfAbsent" || op === "putIfVersion")) {
          assert(data !== undefined, `${op} passes its bytes`);
          return (await this.readBackAfterConflict(op, name, data, error)) as T;
        }
        if (changing && isTransient(error)) mayHaveLanded = true;
        if (!retryable(error)) throw error;
        const delayMs = this.delayMs(retry);
        this.retries += 1;
        this.outage ??= { sinceMs: this.clock.nowMs(), retries: 0 };
        this.outage.retries += 1;
        const limit = this.retriesMax === Number.POSITIVE_INFINITY ? "(retrying forever)" : `of ${this.retriesMax}`;
        this.log(`${op} ${name}: ${(error as Error).message}; retry ${retry + 1} ${limit} in ${Math.round(delayMs)} ms`);
        await Promise.race([this.sleep(delayMs), this.closingSignal]);
        if (this.closing) throw error;
      }
    } finally {
      this.inflightCalls -= 1;
      if (this.inflightCalls === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  /** An attempt reached the store: ends the outage, if any, with a line saying how long it lasted. */
  private reached(): void {
    if (this.outage === null) return;
    const seconds = (this.clock.nowMs() - this.outage.sinceMs) / 1000;
    const retries = this.outage.retries;
    this.outage = null;
    this.log(`reachable again after ${seconds.toFixed(1)} s, ${retries} ${retries === 1 ? "retry" : "retries"}`, { outageSeconds: Number(seconds.toFixed(1)), retries });
  }

  /**
   * A retried conditional write met ConflictError: an earlier attempt of the same call may be what it conflicts
   * with. Exactly our bytes in the object -> that attempt landed; anything else -> the conflict stands.
   */
  private async readBackAfterConflict(op: StoreOp, name: string, data: Uint8Array, conflict: ConflictError): Promise<ObjectVersion> {
    if (this.closing) throw conflict;
    const current = await this.getVersioned(name);
    if (current === null || !sameBytes(current.data, data)) throw conflict;
    this.log(`${op} ${name}: ${conflict.message}; the object holds exactly our bytes: an earlier attempt landed`);
    return current.version;
  }

  /**
   * One attempt in the inner store. A changing attempt first waits for its turn at the name (the name's tail), then
   * for a slot. Bounded by requestTimeoutMs: past it, AttemptTimeoutError carries the attempt's future outcome.
   */
  private async attemptOnce<T>(op: StoreOp, name: string, attempt: () => Promise<T>): Promise<T> {
    let ended: () => void = () => undefined;
    if (CHANGING_OPS.has(op)) {
      const previous = this.nameTails.get(name);
      const mine = new Promise<void>((resolve) => (ended = resolve));
      // The next attempt at this name waits for the earlier ones and for this one.
      const tail = previous === undefined ? mine : previous.then(() => mine);
      this.nameTails.set(name, tail);
      void tail.then(() => {
        if (this.nameTails.get(name) === tail) this.nameTails.delete(name);
      });
      // Only when attempts at one name overlap (rare): every race leaves a reaction on closingSignal until close.
      if (previous !== undefined) {
        const turn = await Promise.race([previous.then(() => true), this.closingSignal.then(() => false)]);
        if (!turn) {
          ended(); // the tail still waits for `previous`
          throw new IOError(`Cannot ${op} object ${name} in ${this.description}: the store is closing`, true);
        }
      }
    }
    let running: Promise<T>;
    await this.slots.acquire();
    let timer: TimerHandle | undefined;
    try {
      running = attempt();
    } catch (error) {
      this.slots.release();
      ended();
      throw error;
    }
    const outcome: Promise<Outcome<T>> = running.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    void outcome.then(ended);
    try {
      if (this.requestTimeoutMs === 0) return await running;
      const timeout = new Promise<never>((_, reject) => {
        timer = this.clock.setTimer(this.requestTimeoutMs, () => {
          this.timeouts += 1;
          reject(
            new AttemptTimeoutError(`Cannot ${op} object ${name} in ${this.description}: no answer in ${this.requestTimeoutMs} ms`, outcome),
          );
        });
      });
      return await Promise.race([running, timeout]);
    } finally {
      timer?.cancel();
      this.slots.release();
    }
  }
}
