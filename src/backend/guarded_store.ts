// GuardedStore: a view of a store through which a volume owner writes. Before every operation that changes the
// backend (put, putIfAbsent, putIfVersion, delete) it calls the guard, which throws once this process may no longer
// change the volume (its lease was lost or ran out: volume/lease.ts, docs/architecture.md "Ownership and fencing").
// Reads pass. Placed *below* the RetryingStore, so every attempt is checked, retries included: a holder that was
// paused past its lease starts nothing once it runs again, and what may still land late is only what it had
// started before its deadline.
//
// close() does not close the store it wraps: the lease is written through the same store after the volume's
// view of it is closed, so whoever opened the store closes it.

import type { ObjectStore } from "./object_store.ts";
import { WrappingStore, type StoreOp } from "./wrapping_store.ts";

const CHANGES: ReadonlySet<StoreOp> = new Set<StoreOp>(["put", "putIfAbsent", "putIfVersion", "delete"]);

export class GuardedStore extends WrappingStore {
  /** Changes refused by the guard (tests). */
  refused = 0;

  constructor(
    inner: ObjectStore,
    private readonly guard: () => void,
  ) {
    super(inner);
  }

  protected override async call<T>(op: StoreOp, _name: string, forward: () => Promise<T>): Promise<T> {
    if (CHANGES.has(op)) {
      try {
        this.guard();
      } catch (error) {
        this.refused += 1;
        throw error;
      }
    }
    return forward();
  }

  override async close(): Promise<void> {}
}
