// The memory batches may use: a fixed number of buffers (one filling while the others are put), allocated on first
// use and reused. Waiters are served first come, first served. Buffers come from the cache device's pool when its
// bound has room (then journal records are written from them without a copy), else from the JS heap (large
// --batch-size); pool buffers are freed with the pool when the cache device closes.
//
// Invariants (checkInvariants):
//   1. free buffers <= allocated <= countMax; every free buffer is bufferBytes long.
//   2. Nobody waits while a buffer is free (release hands it to the oldest waiter first).

import { assert } from "../../errors.ts";
import type { AlignedPool } from "../../cache/cache_device.ts";

export class BatchBuffers {
  private readonly free: Uint8Array[] = [];
  private allocated = 0;
  private readonly waiters: Array<(buffer: Uint8Array) => void> = [];
  private readonly deviceMemory = new WeakSet<Uint8Array>();

  constructor(
    private readonly bufferBytes: number,
    private readonly countMax: number,
    private readonly pool: AlignedPool,
  ) {}

  tryAcquire(): Uint8Array | null {
    const buffer = this.free.pop();
    if (buffer) return buffer;
    if (this.allocated < this.countMax) {
      this.allocated += 1;
      const pooled = this.pool.acquireExact(this.bufferBytes);
      if (pooled === null) return new Uint8Array(this.bufferBytes);
      // acquireExact rounds up to a page; a --batch-size that is not whole pages leaves a tail unused.
      const buffer = pooled.subarray(0, this.bufferBytes);
      this.deviceMemory.add(buffer);
      return buffer;
    }
    return null;
  }

  /** A buffer is free, or one more may be allocated: tryAcquire would not return null. */
  get hasFree(): boolean {
    return this.free.length > 0 || this.allocated < this.countMax;
  }

  isDeviceMemory(buffer: Uint8Array): boolean {
    return this.deviceMemory.has(buffer);
  }

  acquire(): Promise<Uint8Array> {
    const buffer = this.tryAcquire();
    if (buffer) return Promise.resolve(buffer);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(buffer: Uint8Array): void {
    // A pool buffer comes back empty (detached) when the cache device closed first: nothing is left to recycle.
    if (buffer.byteLength === 0 && this.deviceMemory.has(buffer)) return;
    assert(buffer.byteLength === this.bufferBytes, "a batch buffer");
    const waiter = this.waiters.shift();
    if (waiter) waiter(buffer);
    else this.free.push(buffer);
  }

  checkInvariants(): void {
    const check = (condition: boolean, message: string): void => assert(condition, `batch buffers invariant: ${message}`);
    check(this.free.length <= this.allocated && this.allocated <= this.countMax, "free <= allocated <= countMax");
    check(this.free.every((buffer) => buffer.byteLength === this.bufferBytes), "free buffers are whole");
    check(this.free.length === 0 || this.waiters.length === 0, "nobody waits while a buffer is free");
  }
}
