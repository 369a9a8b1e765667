// MeteredStore wraps an ObjectStore and reports every operation it forwards to a StoreMeter: which op, how long it
// took, whether it failed, how many bytes it moved. Placed under the RetryingStore, so each attempt is counted and a
// retried put shows as its attempts (the retries themselves are the RetryingStore's count). The meter decides what
// to keep (lsvd serve: Prometheus counters and histograms, and whether the backend is reachable).

import type { ObjectStore } from "./object_store.ts";
import { WrappingStore, type StoreOp } from "./wrapping_store.ts";

export interface StoreMeter {
  /** One operation ended: `error` null on success. Called on the completion path: keep it cheap. */
  done(op: StoreOp, seconds: number, error: unknown, bytesRead: number, bytesWritten: number): void;
}

function bytesOf(value: unknown): number {
  if (value instanceof Uint8Array) return value.byteLength;
  if (typeof value === "object" && value !== null && (value as { data?: unknown }).data instanceof Uint8Array) {
    return ((value as { data: Uint8Array }).data).byteLength;
  }
  return 0;
}

export class MeteredStore extends WrappingStore {
  constructor(
    inner: ObjectStore,
    private readonly meter: StoreMeter,
  ) {
    super(inner);
  }

  protected override async call<T>(op: StoreOp, _name: string, forward: () => Promise<T>, data?: Uint8Array): Promise<T> {
    const started = performance.now();
    let value: T;
    try {
      value = await forward();
    } catch (error) {
      this.meter.done(op, (performance.now() - started) / 1000, error, 0, 0);
      throw error;
    }
    this.meter.done(op, (performance.now() - started) / 1000, null, bytesOf(value), data?.byteLength ?? 0);
    return value;
  }

  override close(): Promise<void> {
    return this.inner.close();
  }
}
