// One simulated world of random I/O against the real volume code, on virtual time (volume_world.ts, sim_clock.ts):
// writes, trims, zeroes, flushes and reads with up to INFLIGHT_MAX in flight, seeded store latency and transient
// faults under the retrying store, crashes between steps and at crash points inside recovery and garbage collection,
// clean reopens. After every step the volume's invariants are checked (world_invariants.ts); reads, and the whole
// volume after every crash or reopen, are compared with the model (acknowledged data survives a crash; sectors
// of writes in flight may hold old or new data). Every operation, its result and the virtual time it completed at go
// into a digest: the same seed must give the same digest (sim_determinism_test.ts).

import { createHash, type Hash } from "node:crypto";
import { SECTOR_BYTES } from "../../src/constants.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { WorldStopped } from "./sim_clock.ts";
import { checkVolumeInvariants } from "./world_invariants.ts";
import { SnapshotTracker } from "./snapshot_tracker.ts";
import { makeCloneWorld, makeWorld, openVolume, PREFIX, reopenAfterCrash, runWorld, SIM_GC, stopWorld, VIRTUAL_WORLD, VolumeModel, type World } from "./volume_world.ts";

export interface SimOptions {
  /** Crashes between steps and at crash points (recovery, garbage collection). */
  crashes: boolean;
  journalBytes?: number;
  steps?: number;
  /** Snapshot creates and deletes among the steps, every snapshot checked against the model (snapshot_tracker.ts). */
  snapshots?: boolean;
  /**
   * The volume simulated is a clone (makeCloneWorld) of a base filled with random data first: it starts as the base's
   * content, and at the end every object of the base must be exactly as it was (the clone's GC, crashes and
   * recoveries never change a base).
   */
  clone?: boolean;
  /** With clone: the clone is made of a clone of the base (each filled in turn), and neither base may change. */
  cloneOfClone?: boolean;
}

export interface SimResult {
  /** sha256 over every operation, its result and when it completed. */
  digest: string;
  /** The digest's lines (when asked for), to show where two runs part. */
  lines: string[] | null;
  virtualMs: number;
  crashes: Map<string, number>;
  gc: { cleaned: number; deleted: number };
  /** Read-cache blocks the reopens kept from the persisted index (read_cache.ts): reads of them were checked too. */
  readCacheKept: number;
  snapshots: { created: number; deleted: number; checks: number } | null;
}

const STEPS_DEFAULT = 400;
const INFLIGHT_MAX = 24;
const READ_CHUNK_BYTES = 1024 * 1024;

/** The command that replays a seed of a test file (printed with every failure). */
export function replayCommand(seed: number, file: string, name?: string): string {
  const pattern = name?.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replaceAll("'", "'\\''");
  return `LSVD_SEED=${seed} bun test ${file}${pattern ? ` -t '${pattern}'` : ""}`;
}

async function readAll(volume: Volume, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += READ_CHUNK_BYTES) out.set(await volume.read(offset, READ_CHUNK_BYTES), offset);
  return out;
}

function hashOf(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex").slice(0, 16);
}

class Simulation {
  readonly model: VolumeModel;
  readonly hash: Hash = createHash("sha256");
  readonly lines: string[] | null;
  volume!: Volume;
  /** Sectors with a write in flight in this incarnation, with their count. */
  readonly inFlightSectors = new Map<number, number>();
  inFlight = new Set<Promise<void>>();
  generation = 0;
  failure: unknown = null;
  readonly gc = { cleaned: 0, deleted: 0 };
  readonly snapshots: SnapshotTracker | null;

  constructor(
    readonly world: World,
    keepLines: boolean,
    snapshots: boolean,
  ) {
    this.model = new VolumeModel(world.volumeBytes);
    this.lines = keepLines ? [] : null;
    this.snapshots = snapshots ? new SnapshotTracker(world) : null;
  }

  note(line: string): void {
    const stamped = `${this.world.clock!.nowMs()} ${line}`;
    this.hash.update(stamped + "\n");
    this.lines?.push(stamped);
  }

  context(): string {
    return this.world.logs.slice(-12).join("\n");
  }

  run<T>(promise: Promise<T>): Promise<T> {
    return runWorld(this.world, promise);
  }

  track(offset: number, length: number, delta: number): void {
    for (let lba = offset / SECTOR_BYTES; lba < (offset + length) / SECTOR_BYTES; lba++) {
      const count = (this.inFlightSectors.get(lba) ?? 0) + delta;
      if (count === 0) this.inFlightSectors.delete(lba);
      else this.inFlightSectors.set(lba, count);
    }
  }

  tallyGc(): void {
    const gc = this.volume.stats().gc;
    if (!gc) return;
    this.gc.cleaned += gc.objectsCleaned;
    this.gc.deleted += gc.objectsDeleted;
  }

  /** One random step: a write, trim or zero sent (not awaited), a flush, a read, a crash or a clean reopen. */
  async step(index: number, crashes: boolean): Promise<void> {
    const { prng } = this.world;
    while (this.inFlight.size >= INFLIGHT_MAX) await this.run(Promise.race(this.inFlight));
    if (this.snapshots !== null && prng.chance(0.04)) {
      await this.snapshots.step(this.volume, this.model, this.inFlightSectors.keys(), (promise) => this.run(promise), (line) => this.note(`#${index} ${line}`));
      return;
    }
    const roll = prng.int(100);
    const sectors = prng.chance(0.7) ? 8 * (1 + prng.int(4)) : 1 + prng.int(200);
    const offset = prng.int(this.world.volumeBytes / SECTOR_BYTES - sectors) * SECTOR_BYTES;
    const length = sectors * SECTOR_BYTES;
    if (roll < 85) this.send(index, roll < 70 ? "write" : prng.chance(0.5) ? "trim" : "zero", offset, length);
    else if (roll < 90) {
      await this.run(this.volume.flush());
      this.note(`#${index} flush done`);
    } else if (roll < 97) await this.read(index, offset, length);
    else if (crashes) {
      this.note(`#${index} crash`);
      await this.recover(true);
    } else await this.cleanReopen(index);
    // Think time: the world runs on for a while before the next request.
    await this.run(this.world.clock!.sleep(prng.int(3)));
  }

  send(index: number, kind: "write" | "trim" | "zero", offset: number, length: number): void {
    const { prng } = this.world;
    const data = kind === "write" ? new Uint8Array(length) : null;
    if (data) prng.fill(data);
    this.model.apply(offset, data, length);
    this.track(offset, length, +1);
    const fua = prng.chance(0.05);
    const generation = this.generation;
    const request = kind === "write" ? this.volume.write(offset, data!, fua) : kind === "trim" ? this.volume.trim(offset, length, fua) : this.volume.writeZeroes(offset, length, fua);
    const done: Promise<void> = request.then(
      () => {
        this.inFlight.delete(done);
        if (generation !== this.generation) return;
        this.track(offset, length, -1);
        this.note(`#${index} ${kind} ${offset}+${length}${fua ? " fua" : ""} acked`);
      },
      (error: unknown) => {
        this.inFlight.delete(done);
        // A request of a process that died (the world stopped, recover() not yet begun) fails with it: not a failure.
        if (generation === this.generation && this.world.stopped === null) this.failure ??= new Error(`#${index} ${kind} ${offset}+${length} failed: ${String(error)}`);
      },
    );
    this.inFlight.add(done);
    this.note(`#${index} ${kind} ${offset}+${length} sent`);
  }

  /**
   * A read may see a write that is in flight at any moment while it runs, or not see it: the sectors of writes in
   * flight when it starts are as uncertain as those still in flight when it ends.
   */
  async read(index: number, offset: number, length: number): Promise<void> {
    const atStart = [...this.inFlightSectors.keys()];
    const actual = await this.run(this.volume.read(offset, length));
    this.note(`#${index} read ${offset}+${length} = ${hashOf(actual)}`);
    const saved = new Set(this.model.uncertain);
    for (const sector of atStart) this.model.uncertain.add(sector);
    for (const sector of this.inFlightSectors.keys()) this.model.uncertain.add(sector);
    const problem = this.model.diff(offset, actual);
    this.model.uncertain.clear();
    for (const sector of saved) this.model.uncertain.add(sector);
    if (problem) throw new Error(`read mismatch: ${problem}`);
  }

  /**
   * The process died (at a step, or at a crash point: the world is stopped already). Writes in flight may or may
   * not survive. Recovers, again after every crash inside recovery or the check, then checks the whole volume.
   */
  async recover(explicit: boolean): Promise<void> {
    for (let first = true; ; first = false) {
      this.generation += 1;
      for (const sector of this.inFlightSectors.keys()) this.model.uncertain.add(sector);
      this.inFlightSectors.clear();
      this.inFlight = new Set();
      this.tallyGc();
      this.volume.abandon();
      if (this.world.stopped === null) stopWorld(this.world, explicit && first ? "step" : "check");
      this.note(`stopped at ${this.world.stopped}`);
      try {
        this.volume = await reopenAfterCrash(this.world, SIM_GC);
        this.note(`recovered: journal case ${this.volume.recovery.journalCase}, ${this.volume.recovery.journalRecordsReplayed} replayed`);
        checkVolumeInvariants(this.volume);
        const all = await this.run(readAll(this.volume, this.world.volumeBytes));
        this.note(`recovered volume = ${hashOf(all)}`);
        const problem = this.model.diff(0, all);
        if (problem) throw new Error(`after crash: ${problem}`);
        // Adopt whatever the uncertain sectors hold now; they are certain from here on.
        for (const sector of this.model.uncertain) this.model.bytes.set(all.subarray(sector * SECTOR_BYTES, (sector + 1) * SECTOR_BYTES), sector * SECTOR_BYTES);
        this.model.uncertain.clear();
        if (this.snapshots !== null) {
          await this.run(this.snapshots.settle());
          await this.snapshots.checkAll((promise) => this.run(promise));
        }
        return;
      } catch (error) {
        if (!(error instanceof WorldStopped)) throw error;
      }
    }
  }

  async cleanReopen(index: number): Promise<void> {
    await this.run(Promise.all(this.inFlight));
    this.tallyGc();
    await this.run(this.volume.close());
    this.volume = await this.run(openVolume(this.world, SIM_GC));
    const all = await this.run(readAll(this.volume, this.world.volumeBytes));
    this.note(`#${index} clean reopen: volume = ${hashOf(all)}`);
    const problem = this.model.diff(0, all);
    if (problem) throw new Error(`after clean reopen: ${problem}`);
  }

  /** Every step, each followed by the invariant checks; a crash point that fires anywhere leads to recover(). */
  async steps(count: number, crashes: boolean): Promise<void> {
    for (let index = 0; index < count; index++) {
      try {
        await this.step(index, crashes);
      } catch (error) {
        if (!(error instanceof WorldStopped)) throw error;
        await this.recover(false);
      }
      if (this.failure) throw this.failure;
      checkVolumeInvariants(this.volume);
    }
  }

  /** The end: everything acknowledged reads back, and a clean close leaves nothing to replay. */
  async finish(): Promise<void> {
    this.world.virtual!.crashPointChance = 0;
    await this.run(Promise.all(this.inFlight));
    if (this.failure) throw this.failure;
    const all = await this.run(readAll(this.volume, this.world.volumeBytes));
    this.note(`end: volume = ${hashOf(all)}`);
    const problem = this.model.diff(0, all);
    if (problem) throw new Error(`at end: ${problem}`);
    await this.snapshots?.checkAll((promise) => this.run(promise));
    this.tallyGc();
    await this.run(this.volume.close());
    this.volume = await this.run(openVolume(this.world, SIM_GC));
    if (this.volume.recovery.journalRecordsReplayed !== 0) throw new Error(`a clean close left ${this.volume.recovery.journalRecordsReplayed} journal records to replay`);
    const final = this.model.diff(0, await this.run(readAll(this.volume, this.world.volumeBytes)));
    if (final) throw new Error(`after final reopen: ${final}`);
    await this.run(this.volume.close());
  }
}

/**
 * Random writes into the (not yet opened) volume of `world`, whose content is `initial` (null: zeroes), closed
 * cleanly; checks that it read `initial` first, and returns its content. No crashes.
 */
async function fillBase(world: World, initial: Uint8Array | null): Promise<Uint8Array> {
  const chance = world.virtual!.crashPointChance;
  world.virtual!.crashPointChance = 0;
  const model = new VolumeModel(world.volumeBytes);
  if (initial) model.bytes.set(initial);
  const volume = await runWorld(world, openVolume(world, { gc: false }));
  const problem = model.diff(0, await runWorld(world, readAll(volume, world.volumeBytes)));
  if (problem) throw new Error(`${world.prefix} does not read as its base did: ${problem}`);
  for (let index = 0; index < 32; index++) {
    const length = 8 * (1 + world.prng.int(32)) * SECTOR_BYTES;
    const offset = world.prng.int((world.volumeBytes - length) / SECTOR_BYTES) * SECTOR_BYTES;
    const data = new Uint8Array(length);
    world.prng.fill(data);
    model.apply(offset, data, length);
    await runWorld(world, volume.write(offset, data, false));
  }
  await runWorld(world, volume.close());
  world.virtual!.crashPointChance = chance;
  return model.bytes;
}

/** Every object of the volume at `prefix` (superblock, seq names, lease) and a digest of its bytes. */
async function objectsOf(store: World["store"], prefix: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const name of await store.list(prefix)) {
    if (name === prefix || name.startsWith(`${prefix}.`)) found.set(name, hashOf(await store.get(name)));
  }
  return found;
}

/** Runs one seed; a failure's message carries the seed, the replay command (`replay`) and the last log lines. */
export async function simulate(seed: number, options: SimOptions, replay: string, keepLines = false): Promise<SimResult> {
  const virtual = { ...VIRTUAL_WORLD, crashPointChance: options.crashes ? VIRTUAL_WORLD.crashPointChance : 0 };
  let world = await makeWorld(seed, { volumeBytes: 4 * 1024 * 1024, journalBytes: options.journalBytes, virtual });
  let base: { initial: Uint8Array; objects: Map<string, string>; prefixes: string[] } | null = null;
  if (options.clone) {
    const prefixes = [PREFIX];
    let initial = await fillBase(world, null);
    if (options.cloneOfClone) {
      world = await makeCloneWorld(world, "middle");
      prefixes.push(world.prefix);
      initial = await fillBase(world, initial);
    }
    world = await makeCloneWorld(world, "clone");
    const objects = new Map<string, string>();
    for (const prefix of prefixes) for (const [name, digest] of await objectsOf(world.store, prefix)) objects.set(name, digest);
    base = { initial, objects, prefixes };
  }
  const sim = new Simulation(world, keepLines, options.snapshots ?? false);
  if (base) sim.model.bytes.set(base.initial);
  try {
    sim.volume = await reopenAfterCrash(world, SIM_GC); // a crash point may stop even the first open
    await sim.steps(options.steps ?? STEPS_DEFAULT, options.crashes);
    await sim.finish();
    if (base) {
      const after = new Map<string, string>();
      for (const prefix of base.prefixes) for (const [name, digest] of await objectsOf(world.store, prefix)) after.set(name, digest);
      const changed = [...new Set([...base.objects.keys(), ...after.keys()])].filter((name) => base.objects.get(name) !== after.get(name));
      if (changed.length > 0) throw new Error(`the clone changed its base: ${changed.join(", ")}`);
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`seed ${seed} at ${world.clock!.nowMs()} virtual ms: ${message}\nreplay: ${replay}\n${sim.context()}`, { cause: error });
  }
  const snapshots = sim.snapshots === null ? null : { created: sim.snapshots.created, deleted: sim.snapshots.deleted, checks: sim.snapshots.checks };
  let readCacheKept = 0;
  for (const line of world.logs) readCacheKept += Number(/read cache: (\d+) blocks kept/.exec(line)?.[1] ?? 0);
  return { digest: sim.hash.digest("hex"), lines: sim.lines, virtualMs: world.clock!.nowMs(), crashes: world.crashes, gc: sim.gc, readCacheKept, snapshots };
}
