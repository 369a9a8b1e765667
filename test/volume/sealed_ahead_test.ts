// Back-pressure from the backend (docs/architecture.md, "Back-pressure and bounds"): the write path never has more
// than its limit of objects sealed and not yet durable (counting the open batch, plus the checkpoint a seal may
// queue); new writes wait while it is reached, and resume when puts complete. Puts of log objects are held at a gate
// the test opens; the journal has room for many more objects than the limit, so only the bound stops the writes.

import { describe, expect, test } from "bun:test";
import { PUTS_INFLIGHT_MAX } from "../../src/constants.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { WrappingStore, type StoreOp } from "../../src/backend/wrapping_store.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, VolumeModel } from "../sim/volume_world.ts";

const AHEAD_MAX = 8;
const WRITE_BYTES = 64 * 1024; // one 64 KiB batch each (the sim's --batch-size)
const WRITES = 64; // 4 MiB: the 16 MiB journal takes them all without the bound

/** Holds puts of log objects (numbered names) while closed; the rest passes. Calls `onPut` as each put arrives. */
class GatedStore extends WrappingStore {
  private open = true;
  private held: Array<() => void> = [];
  private heldWaiter: (() => void) | null = null;
  onPut: () => void = () => {};

  constructor(inner: ObjectStore) {
    super(inner);
  }

  protected override async call<T>(op: StoreOp, name: string, forward: () => Promise<T>): Promise<T> {
    if (op === "putIfAbsent" && parseObjectName(PREFIX, name) !== null) {
      this.onPut();
      if (!this.open) {
        await new Promise<void>((resolve) => {
          this.held.push(resolve);
          this.heldWaiter?.();
        });
      }
    }
    return forward();
  }

  shut(): void {
    this.open = false;
  }

  release(): void {
    this.open = true;
    for (const wake of this.held.splice(0)) wake();
  }

  /** Lets the oldest held put through (a backend that completes one put at a time); false if none is held. */
  releaseOne(): boolean {
    const wake = this.held.shift();
    wake?.();
    return wake !== undefined;
  }

  /** Resolves once `count` puts are held at the gate. */
  async heldAtLeast(count: number): Promise<void> {
    while (this.held.length < count) await new Promise<void>((resolve) => (this.heldWaiter = resolve));
    this.heldWaiter = null;
  }

  override async close(): Promise<void> {}
}

describe("objects sealed ahead of the backend", () => {
  test("never exceed the limit; writes wait while it is reached and resume when puts complete", async () => {
    const world = await makeWorld(7, { volumeBytes: 8 * 1024 * 1024, journalBytes: 16 * 1024 * 1024 });
    const gated = new GatedStore(world.store);
    world.store = gated;
    const volume: Volume = await openVolume(world, { clock: immediateClock, sealedObjectsAheadMax: AHEAD_MAX, batchIdleMs: 1 });
    let aheadMax = 0;
    const sample = () => (aheadMax = Math.max(aheadMax, volume.backendBacklog().objects));
    gated.onPut = sample;
    const model = new VolumeModel(world.volumeBytes);

    gated.shut();
    let acked = 0;
    const writes: Array<Promise<void>> = [];
    for (let index = 0; index < WRITES; index++) {
      const data = new Uint8Array(WRITE_BYTES);
      world.prng.fill(data);
      const offset = (index * WRITE_BYTES) % world.volumeBytes;
      model.apply(offset, data, WRITE_BYTES);
      writes.push(
        volume.write(offset, data, false).then(() => {
          acked += 1;
          sample();
        }),
      );
    }
    // Every put slot is taken by a held put; then give the write path time to run as far ahead as it would.
    await gated.heldAtLeast(PUTS_INFLIGHT_MAX);
    for (let turn = 0; turn < 50; turn++) await immediateClock.sleep(2);
    sample();
    // Each write fills one object: at most AHEAD_MAX are journaled (and acknowledged) while no put completes.
    expect(acked).toBeLessThanOrEqual(AHEAD_MAX);
    expect(acked).toBeGreaterThan(0);
    expect(aheadMax).toBeLessThanOrEqual(AHEAD_MAX + 1);
    expect(volume.stats().aheadWaits).toBe(0); // counted when a wait ends

    gated.release();
    await Promise.all(writes);
    expect(acked).toBe(WRITES);
    // The pump waited at the bound (at least the wait the gate held it in), and never for the roomy journal.
    const stats = volume.stats();
    expect(stats.aheadWaits).toBeGreaterThan(0);
    expect(stats.aheadWaitMs).toBeGreaterThan(0);
    expect(stats.journalSpaceWaits).toBe(0);
    expect(aheadMax).toBeLessThanOrEqual(AHEAD_MAX + 1);
    for (let offset = 0; offset < world.volumeBytes; offset += WRITE_BYTES) {
      expect(model.diff(offset, await volume.read(offset, WRITE_BYTES))).toBeNull();
    }
    await volume.close();
  });

  test("under load the backend cannot keep up with, only the burst's journal-only batches are read back", async () => {
    const world = await makeWorld(8, { volumeBytes: 8 * 1024 * 1024, journalBytes: 16 * 1024 * 1024 });
    const gated = new GatedStore(world.store);
    world.store = gated;
    const volume: Volume = await openVolume(world, { clock: immediateClock, sealedObjectsAheadMax: AHEAD_MAX, batchIdleMs: 1 });
    const model = new VolumeModel(world.volumeBytes);
    let acked = 0;
    const writeAll = (count: number, first: number): Array<Promise<void>> =>
      Array.from({ length: count }, (_, index) => {
        const data = new Uint8Array(WRITE_BYTES);
        world.prng.fill(data);
        const offset = ((first + index) * WRITE_BYTES) % world.volumeBytes;
        model.apply(offset, data, WRITE_BYTES);
        return volume.write(offset, data, false).then(() => void (acked += 1));
      });
    const settle = async (turns: number) => {
      for (let turn = 0; turn < turns; turn++) await immediateClock.sleep(2);
    };

    // A burst the backend does not take: batch buffers (PUTS_INFLIGHT_MAX + 1), then journal-only ones up to the bound.
    gated.shut();
    const writes = writeAll(WRITES, 0);
    await gated.heldAtLeast(PUTS_INFLIGHT_MAX);
    await settle(50);
    const burstJournalOnlyMax = AHEAD_MAX + 1 - (PUTS_INFLIGHT_MAX + 1);
    // Then the backend completes one put at a time while writes keep coming: sustained overload.
    for (let step = 0; step < 10_000 && acked < WRITES; step++) {
      gated.releaseOne();
      await settle(5);
    }
    expect(acked).toBe(WRITES);
    gated.release();
    await Promise.all(writes);
    for (let step = 0; step < 1000 && volume.backendBacklog().objects > 0; step++) await settle(1);
    expect(volume.backendBacklog().objects).toBe(0);
    // Without the allowance being spent at the bound, every object after the burst would have been read back.
    const readBack = volume.stats().objectsReadBack;
    expect(readBack).toBeGreaterThan(0);
    expect(readBack).toBeLessThanOrEqual(burstJournalOnlyMax);

    // The backend caught up, so the allowance is back: the next burst is absorbed by journal-only batches again.
    gated.shut();
    const second = writeAll(WRITES / 4, WRITES);
    await gated.heldAtLeast(PUTS_INFLIGHT_MAX);
    await settle(50);
    gated.release();
    await Promise.all(second);
    for (let step = 0; step < 1000 && volume.backendBacklog().objects > 0; step++) await settle(1);
    expect(volume.stats().objectsReadBack).toBeGreaterThan(readBack);
    for (let offset = 0; offset < world.volumeBytes; offset += WRITE_BYTES) {
      expect(model.diff(offset, await volume.read(offset, WRITE_BYTES))).toBeNull();
    }
    await volume.close();
  });
});
