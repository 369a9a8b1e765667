// Puts sealed objects to the backend with a bounded number in flight, and reports them durable strictly in seq
// order: the backend is a log, and the volume may only rely on (release journal space for, checkpoint over) a
// prefix of it. Out-of-order completions wait for their predecessors.
//
// A put is never abandoned: the store below retries transient errors; an error it gives up on is logged and the put
// is tried again after a pause, because skipping a seq would leave a gap that ends the log at recovery. Meanwhile
// writes keep going into the journal until it is full, then wait (docs/architecture.md, "Back-pressure").
// Except one kind: a ConflictError is final. Every put is putIfAbsent (names are never written twice, see
// "Ownership and fencing"); a conflict means this process lost the volume (FencedError), or the name is taken: by an
// earlier call of ours that landed after all (its reply lost: the object holds exactly our bytes, so the put is done)
// or by another writer's object. Then nothing more may be put, and onFatal stops the volume.
// After puts failed, the first that lands says so once: "backend reachable again after T s, N retries" (T from the
// first failure of the outage).

import { assert, ConflictError } from "../errors.ts";
import { FencedError } from "./lease.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName } from "../format/object_name.ts";
import type { Clock } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";

const PERMANENT_ERROR_RETRY_DELAY_MS = 5000;

export class ObjectWriter {
  private inFlight = 0;
  private slotWaiters: Array<() => void> = [];
  private readonly completed = new Set<number>();
  private idleWaiters: Array<() => void> = [];
  private closed = false;
  /** Every seq <= durableSeq is in the backend. */
  durableSeq: number;
  puts = 0;
  putBytes = 0;
  /** Puts are failing: since when (clock ms) and how many were retried; null while they land. */
  private outage: { sinceMs: number; retries: number } | null = null;

  constructor(
    private readonly store: ObjectStore,
    private readonly prefix: string,
    private readonly inFlightMax: number,
    private readonly clock: Clock,
    /** The volume's log; the reachable-again line carries fields (json logs). */
    private readonly log: LogFn,
    private readonly onDurable: (seq: number) => void,
    durableSeq: number,
    /** A put failed for good (ConflictError): the writer has stopped. */
    private readonly onFatal: (error: unknown) => void = () => {},
  ) {
    this.durableSeq = durableSeq;
  }

  /** Resolves when a put slot is free. The caller then calls start() in the same tick. */
  async waitForSlot(): Promise<void> {
    while (this.inFlight >= this.inFlightMax) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  get hasSlot(): boolean {
    return this.inFlight < this.inFlightMax;
  }

  /** Starts the put of object seq; its durability is reported through onDurable. */
  start(seq: number, bytes: Uint8Array): void {
    assert(this.inFlight < this.inFlightMax, "put slot available");
    assert(seq > this.durableSeq && !this.completed.has(seq), `object ${seq} put twice`);
    this.inFlight += 1;
    void this.putUntilDone(seq, bytes);
  }

  private async putUntilDone(seq: number, bytes: Uint8Array): Promise<void> {
    const name = objectName(this.prefix, seq);
    for (;;) {
      try {
        await this.store.putIfAbsent(name, bytes, false); // log objects are never compared-and-swapped
        break;
      } catch (error) {
        if (this.closed) return;
        // The name is taken: by our own earlier call that landed after all (its reply lost), or by someone else.
        if (error instanceof FencedError || (error instanceof ConflictError && !(await this.holdsExactly(name, bytes)))) {
          this.closed = true;
          this.onFatal(error);
          return;
        }
        if (error instanceof ConflictError) break;
        this.outage ??= { sinceMs: this.clock.nowMs(), retries: 0 };
        this.outage.retries += 1;
        this.log(`error: put of ${name} failed, retrying in ${PERMANENT_ERROR_RETRY_DELAY_MS} ms: ${String(error)}`);
        await this.clock.sleep(PERMANENT_ERROR_RETRY_DELAY_MS);
      }
    }
    if (this.outage !== null) {
      const { sinceMs, retries } = this.outage;
      this.outage = null;
      const seconds = Number(((this.clock.nowMs() - sinceMs) / 1000).toFixed(1));
      this.log(`warning: backend reachable again after ${seconds.toFixed(1)} s, ${retries} ${retries === 1 ? "retry" : "retries"} (object puts land again)`, {
        outageSeconds: seconds,
        retries,
      });
    }
    this.puts += 1;
    this.putBytes += bytes.byteLength;
    this.inFlight -= 1;
    this.completed.add(seq);
    while (this.completed.has(this.durableSeq + 1)) {
      this.durableSeq += 1;
      this.completed.delete(this.durableSeq);
      this.onDurable(this.durableSeq);
    }
    const waiter = this.slotWaiters.shift();
    if (waiter) waiter();
    if (this.inFlight === 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of idle) wake();
    }
  }

  /** True if `name` holds exactly `bytes` (an earlier attempt of ours landed); false if not, or if it cannot be read. */
  private async holdsExactly(name: string, bytes: Uint8Array): Promise<boolean> {
    try {
      const stored = await this.store.get(name);
      return stored.byteLength === bytes.byteLength && Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch {
      return false;
    }
  }

  /** Resolves when no put is in flight. */
  async waitIdle(): Promise<void> {
    if (this.inFlight === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  get putsInFlight(): number {
    return this.inFlight;
  }

  /** Stops retrying (the process is going down without a clean shutdown). */
  abandon(): void {
    this.closed = true;
  }
}
