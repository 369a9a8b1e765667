// Outgoing bytes of one NBD connection: replies are appended as they complete and go out in one socket write
// per event-loop turn (a microtask flush), which is what makes 4 KiB round trips cheap: 32 completions cost one
// syscall, not 32. Bun's socket.write() is unbuffered: it may take only part of the bytes (the kernel buffer is
// full) and then calls `drain` later; the rest stays queued here, in order, and no byte is lost or reordered.
//
// Invariants:
// - Bytes leave in append order: `pending` (owned segments, oldest first) always goes before `staging`.
// - `queuedBytes` counts every byte appended and not yet accepted by the transport.
// - While `blocked` (a partial write happened, waiting for drain), nothing is written.
// - Appended payloads are never modified by this queue; large ones are queued by reference, not copied.
// - Once closed (the owner closed it, or a write failed), it holds nothing and takes nothing: appends are dropped and
//   `isEmpty` stays true. A failed write is reported through `onFailed`, once: the transport will not tell us (Bun
//   delivers no close event for a paused socket whose write failed), and a session waiting for its replies to drain
//   before it ends would otherwise wait for ever.

import { assert } from "../errors.ts";

/** The part of a Bun socket this layer uses; tests can pass their own. */
export interface Transport {
  /** Returns the bytes taken (maybe fewer than asked), or -1 when the socket is closed. */
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
  pause(): void;
  resume(): void;
  end(): void;
}

/** Replies are batched in a buffer this large; a fuller turn writes it out early and starts over. */
const STAGING_BYTES = 256 * 1024;
/** Payloads up to this size are copied into the batch (one syscall); larger ones are queued by reference. */
const COPY_PAYLOAD_BYTES_MAX = 64 * 1024;

export class OutputQueue {
  /** The batch being built; `stagingUsed` bytes of it are queued. */
  staging = new Uint8Array(STAGING_BYTES);
  stagingUsed = 0;
  /** Segments that must go out before `staging`; only non-empty after a partial write or a large payload. */
  private pending: Uint8Array[] = [];
  private blocked = false;
  private flushScheduled = false;
  private closed = false;
  queuedBytes = 0;
  private readonly flushBound = () => this.flush();
  /** Where socket writes are counted (the session's NbdStats; null: not counted, as during the handshake). */
  counters: { replyWrites: number } | null = null;

  /**
   * Called after a flush that took bytes off the queue and is not waiting for a drain: queued bytes went down, so a
   * session paused on the output limit may resume reading. Not only after a partial write: replies that push the
   * queue over the limit and then go out whole in the microtask flush bring no drain event, and a session paused with
   * nothing left in flight would wait for ever (found by the NBD stream fuzzer).
   */
  onDrained: () => void = () => {};
  /** Called once, when a write fails (the peer is gone): the queue is closed; the owner must close the socket. */
  onFailed: () => void = () => {};

  constructor(private readonly transport: Transport) {}

  /** Reserves `length` bytes at the end of the batch; the caller writes them at `this.staging[offset...]`. */
  reserve(length: number): number {
    assert(length <= STAGING_BYTES, "reserved header fits the batch");
    // Closed: the caller may still fill the bytes it asked for, but they are never counted or sent.
    if (this.closed) return 0;
    if (this.stagingUsed + length > this.staging.length) this.rotateStaging();
    const offset = this.stagingUsed;
    this.stagingUsed += length;
    this.queuedBytes += length;
    this.scheduleFlush();
    return offset;
  }

  /** Appends bytes by copy (small handshake replies). */
  appendCopy(bytes: Uint8Array): void {
    if (bytes.length > COPY_PAYLOAD_BYTES_MAX) return this.appendPayload(bytes.slice());
    const offset = this.reserve(bytes.length);
    this.staging.set(bytes, offset);
  }

  /** Appends a payload. The queue may keep a reference to it until sent: the caller must not modify it. */
  appendPayload(payload: Uint8Array): void {
    if (payload.length === 0 || this.closed) return;
    if (payload.length <= COPY_PAYLOAD_BYTES_MAX) {
      const offset = this.reserve(payload.length);
      this.staging.set(payload, offset);
      return;
    }
    this.rotateStaging();
    this.pending.push(payload);
    this.queuedBytes += payload.length;
    this.scheduleFlush();
  }

  /** Writes out everything now if the socket takes it (also called from the microtask); then tells the owner. */
  flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.blocked) return;
    const queuedBefore = this.queuedBytes;
    this.writeOut();
    if (!this.closed && !this.blocked && this.queuedBytes < queuedBefore) this.onDrained();
  }

  private writeOut(): void {
    while (this.pending.length > 0) {
      const segment = this.pending[0]!;
      if (this.counters !== null) this.counters.replyWrites++;
      const written = this.transport.write(segment);
      if (written < 0) return this.fail();
      this.queuedBytes -= written;
      if (written < segment.length) {
        this.pending[0] = segment.subarray(written);
        this.blocked = true;
        return;
      }
      this.pending.shift();
    }
    if (this.stagingUsed === 0) return;
    if (this.counters !== null) this.counters.replyWrites++;
    const written = this.transport.write(this.staging, 0, this.stagingUsed);
    if (written < 0) return this.fail();
    this.queuedBytes -= written;
    if (written === this.stagingUsed) {
      this.stagingUsed = 0; // The kernel has the bytes: the batch buffer is free again.
      return;
    }
    // The socket took part of the batch: the rest becomes an owned segment, and a fresh batch starts.
    this.pending.push(this.staging.subarray(written, this.stagingUsed));
    this.staging = new Uint8Array(STAGING_BYTES);
    this.stagingUsed = 0;
    this.blocked = true;
  }

  /** Socket `drain`: it can take more (flush() tells the owner if the rest went out). */
  onDrain(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.flush();
  }

  get isEmpty(): boolean {
    return this.queuedBytes === 0;
  }

  /** Drops whatever is queued (the connection is gone). */
  close(): void {
    this.closed = true;
    this.pending = [];
    this.stagingUsed = 0;
    this.queuedBytes = 0;
  }

  /** A write failed: drop everything and tell the owner (after the close, so it sees a closed, empty queue). */
  private fail(): void {
    this.close();
    this.onFailed();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushBound);
  }

  /** Makes room for a new batch: send the current one now if possible, else queue it by reference. */
  private rotateStaging(): void {
    if (this.stagingUsed === 0) return;
    if (!this.blocked && this.pending.length === 0) {
      this.flush();
      if (this.stagingUsed === 0) return;
    }
    if (this.stagingUsed > 0) {
      this.pending.push(this.staging.subarray(0, this.stagingUsed));
      this.staging = new Uint8Array(STAGING_BYTES);
      this.stagingUsed = 0;
    }
  }
}
