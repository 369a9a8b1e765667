// Buffers reused from one use to the next: the ones garbage collection reads its victims into, and the ones
// checkpoints are built in (write/checkpoint_scheduler.ts). Fresh memory costs a page fault per 4 KiB page (the kernel
// zeroes each one first): a fresh 8 MiB buffer per victim cost the store's threads that and counted as JavaScriptCore
// allocation, which brings its full collections sooner (bench/RESULTS.md, "Victim buffers reused"); a fresh 4 MiB
// checkpoint held the event loop ~15 ms in page faults on a PVM guest (bench/RESULTS.md, stop 14).
//
// A buffer is lent from take() until give(): the collector gives a victim's back only once every copy it queued from
// it has settled (the write path holds views of it until the copy's journal write completes), the checkpoint
// scheduler a checkpoint's once the object is durable. Idle buffers are bounded in bytes; clear() frees them (GC, once
// its rounds have found no victim for GC_READ_BUFFERS_IDLE_MS: an idle volume keeps no read buffers).

import { assert } from "../errors.ts";
import { debugChecks } from "../util/debug_checks.ts";

/** Buffers are sized in these steps, so uses of nearly the same size share them. */
export const REUSED_BUFFER_GRAIN_BYTES = 1024 * 1024;
/** What a buffer is filled with when given back under debug checks: a copy read after that shows it. */
export const REUSED_BUFFER_POISON = 0xa5;

export class ReusedBuffers {
  private readonly idle: Uint8Array[] = [];
  private readonly lent = new Set<Uint8Array>();

  /** idleBytesMax: idle buffers beyond this are dropped when given back. */
  constructor(private readonly idleBytesMax: number) {
    assert(Number.isSafeInteger(idleBytesMax) && idleBytesMax >= 0, "idle bound is a byte count");
  }

  get idleBytes(): number {
    let bytes = 0;
    for (const buffer of this.idle) bytes += buffer.byteLength;
    return bytes;
  }

  get lentCount(): number {
    return this.lent.size;
  }

  /** A buffer of at least `bytes`: the smallest idle one large enough, else a new one of whole grains. */
  take(bytes: number): Uint8Array {
    assert(Number.isSafeInteger(bytes) && bytes > 0, "a buffer taken has bytes");
    const index = this.smallestIdleOf(bytes);
    const buffer = index >= 0 ? this.idle.splice(index, 1)[0]! : new Uint8Array(Math.ceil(bytes / REUSED_BUFFER_GRAIN_BYTES) * REUSED_BUFFER_GRAIN_BYTES);
    this.lent.add(buffer);
    return buffer;
  }

  /**
   * Gives back a buffer take() lent: nothing may read or write it after this. Beyond the bound, the smallest idle
   * buffers go first (maybe this one; one larger than the bound goes at once): a large buffer serves any use a small
   * one does, so keeping small ones in its place would make every larger use take fresh memory.
   */
  give(buffer: Uint8Array): void {
    assert(this.lent.delete(buffer), "a buffer given back was lent");
    if (debugChecks) buffer.fill(REUSED_BUFFER_POISON);
    if (buffer.byteLength > this.idleBytesMax) return; // it would leave nothing else
    this.idle.push(buffer);
    let idleBytes = this.idleBytes;
    while (idleBytes > this.idleBytesMax) idleBytes -= this.idle.splice(this.smallestIdleOf(0), 1)[0]!.byteLength;
  }

  /** Index of the smallest idle buffer of at least `bytes`, or -1 when none is that large. */
  private smallestIdleOf(bytes: number): number {
    let index = -1;
    for (let at = 0; at < this.idle.length; at++) {
      const size = this.idle[at]!.byteLength;
      if (size >= bytes && (index < 0 || size < this.idle[index]!.byteLength)) index = at;
    }
    return index;
  }

  /** Frees the idle buffers (lent ones are given back as usual). */
  clear(): void {
    this.idle.length = 0;
  }
}
