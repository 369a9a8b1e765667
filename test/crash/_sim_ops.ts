// What the crash simulations (power_loss_sim_test.ts, cache_loss_sim_test.ts) share: a virtual-time world (test/sim),
// ops sent to the real volume with the harness's stamped blocks and history (never two overlapping; only
// acknowledgements before a crash count), the crash itself, and the read of the whole volume after recovery. Crash
// points inside recovery and garbage collection may stop the world at any run (WorldStopped): a round then ends in
// that crash (a process crash), and a crash while recovering or reading back is recovered from again.

import { JOURNAL_RECORD_DATA_BYTES_MAX } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { replayCommand } from "../sim/volume_sim.ts";
import { WorldStopped } from "../sim/sim_clock.ts";
import { crashWorld, makeWorld, reopenAfterCrash, runWorld, SIM_GC, VIRTUAL_WORLD, type World } from "../sim/volume_world.ts";
import { BLOCK_BYTES, History, decodeBlock, stampBlock, type OpKind } from "./_harness.ts";

const BATCH_BYTES = 64 * 1024; // openVolume's default in test/sim

/** A virtual-time world (latency, transient faults, crash points) and its history. */
export async function makeSimWorld(seed: number, volumeBytes: number, journalBytes?: number): Promise<{ world: World; history: History; volume: Volume }> {
  const world = await makeWorld(seed, { volumeBytes, journalBytes, virtual: { ...VIRTUAL_WORLD } });
  const history = new History(volumeBytes / BLOCK_BYTES, Math.min(BATCH_BYTES, JOURNAL_RECORD_DATA_BYTES_MAX) / BLOCK_BYTES);
  const volume = await reopenAfterCrash(world, SIM_GC); // a crash point may stop even the first open
  return { world, history, volume };
}

/** Ops in flight against one incarnation of the volume, with the blocks they cover. */
export class SimOps {
  readonly busy: Uint8Array;
  readonly inFlight = new Set<Promise<void>>();

  constructor(
    readonly world: World,
    readonly volume: Volume,
    readonly history: History,
  ) {
    this.busy = new Uint8Array(history.blocks);
  }

  /** Waits (the world running) until fewer than `max` ops are in flight. */
  async waitBelow(max: number): Promise<void> {
    while (this.inFlight.size >= max) await runWorld(this.world, Promise.race(this.inFlight));
  }

  /** Lets the world run for `ms` virtual ms. */
  async pause(ms: number): Promise<void> {
    await runWorld(this.world, this.world.clock!.sleep(ms));
  }

  /** Sends one op over blocks [block, block+count) unless one in flight covers any of them; returns whether it did. */
  send(kind: OpKind, block: number, count: number, fua: boolean): boolean {
    for (let b = block; b < block + count; b++) if (this.busy[b] !== 0) return false;
    const op = this.history.add(kind, block, count);
    this.busy.fill(1, block, block + count);
    let request: Promise<void>;
    if (kind === "write") {
      const data = new Uint8Array(count * BLOCK_BYTES);
      for (let b = 0; b < count; b++) stampBlock(data.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES), op.id, block + b);
      request = this.volume.write(block * BLOCK_BYTES, data, fua);
    } else if (kind === "trim") {
      request = this.volume.trim(block * BLOCK_BYTES, count * BLOCK_BYTES, false);
    } else {
      request = this.volume.writeZeroes(block * BLOCK_BYTES, count * BLOCK_BYTES, false);
    }
    // After the crash the dead incarnation's promises may reject; only acknowledgements before it count.
    this.track(
      request.then(
        () => {
          op.acked = true;
        },
        () => {},
      ),
      () => this.busy.fill(0, block, block + count),
    );
    return true;
  }

  /** Sends a flush; once it completes, every op acknowledged before it was sent is covered by it. */
  flush(): void {
    const bound = this.history.ackedPrefix();
    const history = this.history;
    this.track(
      this.volume.flush().then(
        () => {
          history.flushedBound = Math.max(history.flushedBound, bound);
        },
        () => {},
      ),
    );
  }

  private track(promise: Promise<void>, after?: () => void): void {
    this.inFlight.add(promise);
    void promise.finally(() => {
      after?.();
      this.inFlight.delete(promise);
    });
  }
}

/** Closes the volume at the end of a sim, with crash points off. */
export async function closeAtEnd(world: World, volume: Volume): Promise<void> {
  world.virtual!.crashPointChance = 0;
  await runWorld(world, volume.close());
}

/** Reads every block of the volume (the world running) and decodes it. */
export async function readState(world: World, volume: Volume, blocks: number): Promise<Array<number | string>> {
  const bytes = await runWorld(world, volume.read(0, blocks * BLOCK_BYTES));
  return Array.from({ length: blocks }, (_, block) => decodeBlock(bytes.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES), block));
}

/**
 * Runs a round's work; a crash point that stops the world ends it early. Then the process dies, if a crash point
 * did not kill it already (a crash point is a process crash even in a power-loss test: a weaker loss).
 */
export async function roundThenCrash(world: World, volume: Volume, work: () => Promise<void>, options: { powerLoss?: boolean } = {}): Promise<void> {
  try {
    await work();
  } catch (error) {
    if (!(error instanceof WorldStopped)) throw error;
  }
  if (world.stopped === null) crashWorld(world, volume, options);
  else volume.abandon();
}

/** Reopens the crashed world and reads it whole, again after every crash inside recovery or during the read. */
export async function recoverAndRead(world: World, blocks: number): Promise<{ volume: Volume; observed: Array<number | string> }> {
  for (;;) {
    const volume = await reopenAfterCrash(world, SIM_GC);
    try {
      return { volume, observed: await readState(world, volume, blocks) };
    } catch (error) {
      if (!(error instanceof WorldStopped)) throw error;
      volume.abandon();
    }
  }
}

/** The failure message of a crash sim: seed, round, what failed, the replay command and the last log lines. */
export function simFailure(seed: number, base: number, file: string, name: string, round: number, what: string, message: string, world: World): Error {
  return new Error(`seed ${seed} round ${round} (${what}): ${message}\nreplay: ${replayCommand(base, file, name)}\n${world.logs.slice(-12).join("\n")}`);
}
