// Store latency on the simulated world's clock: each call waits a seeded number of virtual ms before it reaches the
// store below, so calls complete out of order (puts overtake each other, a read overtakes a put) and, now and then,
// one is slow enough for the retrying store's attempt timeout. Every delay is drawn from the world's PRNG.

import { WrappingStore, type StoreOp } from "../../src/backend/wrapping_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import type { Clock } from "../../src/util/clock.ts";
import type { Prng } from "./prng.ts";

export interface Latency {
  /** Each call waits 0..maxMs ms. */
  maxMs: number;
  /** Chance that a call waits slowMs instead. */
  slowChance: number;
  slowMs: number;
}

export class LatencyStore extends WrappingStore {
  constructor(
    inner: ObjectStore,
    private readonly clock: Clock,
    private readonly prng: Prng,
    private readonly latency: Latency,
  ) {
    super(inner);
  }

  protected override async call<T>(_op: StoreOp, _name: string, forward: () => Promise<T>): Promise<T> {
    const { maxMs, slowChance, slowMs } = this.latency;
    await this.clock.sleep(this.prng.chance(slowChance) ? slowMs : this.prng.int(maxMs + 1));
    return forward();
  }

  override async close(): Promise<void> {}
}
