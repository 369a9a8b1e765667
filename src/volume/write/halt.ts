// The write path's one failure: the first error any of its parts (record former, object pipeline, checkpoint
// scheduler) cannot recover from stops all of them. From then on nothing is acknowledged, queued or put, and every
// wait for durability or for the queue to drain ends with that error instead of hanging.
//
// Invariants (checkInvariants):
//   1. The state only moves running -> failed, once; the error a caller sees is the first one.
//   2. In the failed state the signal is rejected (with that error), so a race against it ends every wait.

import { assert } from "../../errors.ts";

export type HaltState = { kind: "running" } | { kind: "failed"; error: unknown };

export class Halt {
  private current: HaltState = { kind: "running" };
  private readonly signal = Promise.withResolvers<never>();
  private readonly listeners: Array<(error: unknown) => void> = [];

  constructor(private readonly log: (line: string) => void) {
    this.signal.promise.catch(() => undefined); // observed by whoever races it; never an unhandled rejection
  }

  get state(): HaltState {
    return this.current;
  }

  /** The first failure, or null while running. */
  get error(): unknown {
    return this.current.kind === "failed" ? this.current.error : null;
  }

  get failed(): boolean {
    return this.current.kind === "failed";
  }

  /** Called once, with the error, when the write path fails. */
  onFail(listener: (error: unknown) => void): void {
    this.listeners.push(listener);
  }

  fail(error: unknown): void {
    if (this.current.kind === "failed") return;
    this.current = { kind: "failed", error };
    this.signal.reject(error);
    this.log(`error: write path stopped: ${String(error)}`);
    for (const listener of this.listeners) listener(error);
  }

  throwIfFailed(): void {
    if (this.current.kind === "failed") throw this.current.error;
  }

  /** Waits for `promise`, or rejects with the failure if the write path fails first. */
  async race<T>(promise: Promise<T>): Promise<T> {
    this.throwIfFailed();
    return await Promise.race([promise, this.signal.promise]);
  }

  checkInvariants(): void {
    if (this.current.kind === "failed") assert(this.current.error !== undefined, "halt invariant: a failure carries its error");
  }
}
