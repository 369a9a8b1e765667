// The two ways the NBD server moves bytes, for tests that check every protocol rule on both: Bun's sockets
// ("socket") and the server's own sockets whose accepts, receives and sends are io_uring ops ("uring", lsvd serve
// --nbd-io uring). A test file calls nbdIoRing() once at its top level, loops its describes over NBD_IO_KINDS and
// spreads ring.options(kind) into every startNbdServer/listenNbd. The ring is opened on first use (a file's socket
// half opens none) and closed in the file's afterAll; expectIdle() after a test's servers closed asserts that no op
// is left in flight on it, which is where a leaked accept, receive or send shows.

import { afterAll, expect } from "bun:test";
import { NBD_URING_SOCKET_SLOTS, URING_QUEUE_DEPTH } from "../../src/constants.ts";
import { Uring } from "../../ffi/uring.ts";

export const NBD_IO_KINDS = ["socket", "uring"] as const;
export type NbdIoKind = (typeof NBD_IO_KINDS)[number];

/** One test file's ring, shared by its uring servers one after the other (as lsvd serve shares one per process). */
export class NbdIoRing {
  private ring: Uring | null = null;

  /** What a server of this kind is started with: nothing for "socket", the file's ring for "uring". */
  options(kind: NbdIoKind): { ring?: Uring } {
    if (kind === "socket") return {};
    this.ring ??= Uring.open(URING_QUEUE_DEPTH, 0, NBD_URING_SOCKET_SLOTS);
    return { ring: this.ring };
  }

  /** Call once every server started on the ring is closed: nothing of theirs may be left on it. */
  expectIdle(): void {
    if (this.ring === null) return;
    expect({ socketOpsInFlight: this.ring.socketInflight, opsInFlight: this.ring.inflight }).toEqual({ socketOpsInFlight: 0, opsInFlight: 0 });
  }

  /** Asserts the ring idle, then closes it (close() waits for every op: a leaked one would hang here instead). */
  async close(): Promise<void> {
    const ring = this.ring;
    if (ring === null) return;
    this.ring = null;
    try {
      expect(ring.inflight).toBe(0);
    } finally {
      if (ring.inflight === 0) await ring.close();
    }
  }
}

/** A ring for this test file, closed (and checked idle) after its last test. Call at the file's top level. */
export function nbdIoRing(): NbdIoRing {
  const ring = new NbdIoRing();
  afterAll(() => ring.close());
  return ring;
}
