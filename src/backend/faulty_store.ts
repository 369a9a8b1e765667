// FaultyStore wraps an ObjectStore (object_store.ts) and injects faults by a deterministic policy, so tests can show
// that the volume survives a misbehaving backend (cf. nbdkit filters/error, ZeroFS fault_store.rs). Every random
// choice comes from a seeded PRNG: one seed, one run.
//
// Faults, checked in this order for each call:
// 1. outage on: the call fails with a transient IOError (the backend is unreachable).
// 1b. holdNext(op, n): the next n calls wait until releaseHeld(), then go to the inner store and nowhere else (a
//    request that travels for a long time and lands late: RetryingStore's timeout fires first, a test does
//    something with the name meanwhile, then lets the late request land and sees what it does), or, released with
//    `fail`, end in a transient error without reaching it (a request lost on the way). Later calls pass.
// 2. hang(op): the call waits until release(), then proceeds (a stuck request; RetryingStore's timeout fires first).
// 3. failNext(op, n): the next n calls fail without touching the inner store.
// 4. failNextAfterApply(op, n): the next n calls reach the inner store and succeed there, then fail anyway (the
//    reply was lost: the caller cannot tell whether its put landed).
// 5. failWithProbability(op, p): each call fails with probability p (before reaching the inner store).
// Injected errors are IOError, transient unless asked otherwise, with a message saying they were injected.

import { assert, IOError } from "../errors.ts";
import type { ObjectStore } from "./object_store.ts";
import { STORE_OPS, WrappingStore, type StoreOp } from "./wrapping_store.ts";

export { STORE_OPS, type StoreOp };

export type OpSelector = StoreOp | "any";

interface CountedFault {
  op: OpSelector;
  remaining: number;
  transient: boolean;
  afterApply: boolean;
}

/** mulberry32: a tiny 32-bit PRNG; good enough to pick faults, and identical everywhere for one seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultyStore extends WrappingStore {
  private readonly random: () => number;
  private outage = false;
  private counted: CountedFault[] = [];
  private probability = new Map<OpSelector, { p: number; transient: boolean }>();
  private hanging = new Set<OpSelector>();
  private hungCalls: Array<() => void> = [];
  private holds: Array<{ op: OpSelector; remaining: number }> = [];
  private heldCalls: Array<{ release: (fail: boolean) => void; settled: Promise<void> }> = [];
  /** Calls seen per op, and faults injected (tests assert on these). */
  readonly calls: Record<StoreOp, number> = {
    put: 0,
    get: 0,
    getRange: 0,
    delete: 0,
    list: 0,
    stat: 0,
    getVersioned: 0,
    putIfAbsent: 0,
    putIfVersion: 0,
  };
  injected = 0;

  constructor(inner: ObjectStore, options: { seed?: number } = {}) {
    super(inner);
    this.random = seededRandom(options.seed ?? 1);
  }

  /** While on, every call fails with a transient IOError. */
  setOutage(on: boolean): void {
    this.outage = on;
  }

  /** The next `count` calls of `op` fail before reaching the inner store. */
  failNext(op: OpSelector, count = 1, options: { transient?: boolean } = {}): void {
    assert(Number.isSafeInteger(count) && count >= 0, "failNext count");
    this.counted.push({ op, remaining: count, transient: options.transient ?? true, afterApply: false });
  }

  /** The next `count` calls of `op` take effect in the inner store, then report a (transient) failure. */
  failNextAfterApply(op: OpSelector, count = 1): void {
    assert(Number.isSafeInteger(count) && count >= 0, "failNextAfterApply count");
    this.counted.push({ op, remaining: count, transient: true, afterApply: true });
  }

  /** Each call of `op` fails with probability p (0 turns it off). */
  failWithProbability(op: OpSelector, p: number, options: { transient?: boolean } = {}): void {
    assert(p >= 0 && p <= 1, "probability in [0, 1]");
    if (p === 0) this.probability.delete(op);
    else this.probability.set(op, { p, transient: options.transient ?? true });
  }

  /** The next `count` calls of `op` wait until releaseHeld(), then reach the inner store (see the header). */
  holdNext(op: OpSelector, count = 1): void {
    assert(Number.isSafeInteger(count) && count >= 0, "holdNext count");
    this.holds.push({ op, remaining: count });
  }

  /** Calls held by holdNext right now. */
  get heldCount(): number {
    return this.heldCalls.length;
  }

  /**
   * Lets every held call go on to the inner store (or, with `fail`, fail with a transient IOError without reaching
   * it: the request was lost); resolves once each has settled.
   */
  async releaseHeld(options: { fail?: boolean } = {}): Promise<void> {
    const held = this.heldCalls.splice(0);
    for (const call of held) call.release(options.fail === true);
    await Promise.all(held.map((call) => call.settled));
  }

  /** Calls of `op` from now on wait until release(). */
  hang(op: OpSelector): void {
    this.hanging.add(op);
  }

  /** Stops hanging and lets every waiting call proceed to the inner store. */
  release(): void {
    this.hanging.clear();
    for (const wake of this.hungCalls.splice(0)) wake();
  }

  /** Calls waiting in hang() right now. */
  get hungCount(): number {
    return this.hungCalls.length;
  }

  /** Drops every fault: no outage, nothing counted, no probabilities; hung calls are released. */
  heal(): void {
    this.outage = false;
    this.counted = [];
    this.probability.clear();
    this.holds = [];
    this.release();
    void this.releaseHeld();
  }

  override async close(): Promise<void> {
    this.release();
    await this.releaseHeld();
    await this.inner.close();
  }

  protected override async call<T>(op: StoreOp, name: string, run: () => Promise<T>): Promise<T> {
    this.calls[op] += 1;
    if (this.outage) throw this.injectedError(op, name, "backend outage", true);
    if (this.takeHold(op)) return this.held(op, name, run);
    if (this.hanging.has(op) || this.hanging.has("any")) {
      await new Promise<void>((resolve) => this.hungCalls.push(resolve));
    }
    const fault = this.takeCounted(op);
    if (fault !== undefined && !fault.afterApply) throw this.injectedError(op, name, "failure", fault.transient);
    if (fault === undefined) {
      const chance = this.probability.get(op) ?? this.probability.get("any");
      // Draw only when a probability is set, so adding unrelated faults does not shift the random sequence.
      if (chance !== undefined && this.random() < chance.p) {
        throw this.injectedError(op, name, "random failure", chance.transient);
      }
    }
    const result = await run();
    if (fault !== undefined) throw this.injectedError(op, name, "lost reply after success", true);
    return result;
  }

  private takeHold(op: StoreOp): boolean {
    const hold = this.holds.find((h) => h.remaining > 0 && (h.op === op || h.op === "any"));
    if (hold === undefined) return false;
    hold.remaining -= 1;
    if (hold.remaining === 0) this.holds = this.holds.filter((h) => h !== hold);
    return true;
  }

  /** Waits for releaseHeld(), then runs the call in the inner store (or fails it). */
  private async held<T>(op: StoreOp, name: string, run: () => Promise<T>): Promise<T> {
    let release: (fail: boolean) => void = () => undefined;
    const gate = new Promise<boolean>((resolve) => (release = resolve));
    let settle: () => void = () => undefined;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    this.heldCalls.push({ release, settled });
    const fail = await gate;
    try {
      if (fail) throw this.injectedError(op, name, "loss of a held request", true);
      return await run();
    } finally {
      settle();
    }
  }

  private takeCounted(op: StoreOp): CountedFault | undefined {
    for (const fault of this.counted) {
      if (fault.remaining > 0 && (fault.op === op || fault.op === "any")) {
        fault.remaining -= 1;
        if (fault.remaining === 0) this.counted = this.counted.filter((f) => f !== fault);
        return fault;
      }
    }
    return undefined;
  }

  private injectedError(op: StoreOp, name: string, what: string, transient: boolean): IOError {
    this.injected += 1;
    return new IOError(`Cannot ${op} object ${name} in ${this.description}: injected ${what}`, transient);
  }
}

