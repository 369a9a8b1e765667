// A simulated world for the real volume code: MemoryStore backend, MemoryCacheDevice cache, seeded PRNG.
// Helpers to create a volume + cache, open, crash and reopen it, and a model of what the volume must contain.
//
// A world made with `virtual` runs on virtual time (sim_clock.ts): the volume, its collector, its lease, the retrying
// store, the store's latency and the cache device all set their timers on world.clock, every random choice (data,
// latency, faults, crash points, uuids) comes from world.prng, and the test drives it with world.run(promise). Such a
// world is a function of its seed. Older fixtures without `virtual` still run on real time (immediateClock).

import { v4 as uuidv4 } from "uuid";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { LatencyStore, type Latency } from "./latency_store.ts";
import { SimClock, WorldStopped } from "./sim_clock.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { computeCacheLayout } from "../../src/cache/cache_layout.ts";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { encodeCacheSuperblock, newCacheSuperblock } from "../../src/format/cache_superblock.ts";
import { Volume, type VolumeOptions } from "../../src/volume/volume.ts";
import type { Clock } from "../../src/util/clock.ts";
import { FencedStore } from "./fenced_store.ts";
import { GuardedStore } from "../../src/backend/guarded_store.ts";
import type { Lease } from "../../src/volume/lease.ts";
import { createVolume, takeOwnership } from "../../src/volume/ownership.ts";
import { fsckVolume, type FsckReport } from "../../src/volume/fsck.ts";
import { MemoryCacheDevice, MemoryPool } from "./memory_cache_device.ts";
import { Prng } from "./prng.ts";
import { assert } from "../../src/errors.ts";
import { decodeSuperblock, encodeSuperblock } from "../../src/format/superblock_object.ts";
import { createClone } from "../../src/volume/clone_create.ts";

export const PREFIX = "vol";

export interface World {
  /** The volume's prefix in the store: PREFIX, or a clone's (makeCloneWorld). */
  prefix: string;
  prng: Prng;
  store: ObjectStore;
  device: MemoryCacheDevice;
  pool: MemoryPool;
  volUuid: string;
  volumeBytes: number;
  logs: string[];
  /** The store view of the current incarnation; crash() fences it. */
  fence: FencedStore | null;
  /** The lease of the current incarnation (each incarnation is a process of its own, pid = its number). */
  lease: Lease | null;
  incarnation: number;
  volume: Volume | null;
  /** Virtual time (worlds made with `virtual`), else null: real time. */
  clock: SimClock | null;
  virtual: VirtualWorld | null;
  /** The crash point the world stopped at (null: running); the driver recovers it (reopenAfterCrash). */
  stopped: string | null;
  /** Crash points that stopped the world so far, by name. */
  crashes: Map<string, number>;
  /** Crashes inside recovery since the last open that finished (RECOVERY_CRASHES_MAX: then it runs to the end). */
  recoveryCrashesInARow: number;
}

/**
 * Recovery crashes in a row before one recovery is let finish: a point per replayed record would otherwise stop
 * nearly every recovery of a long journal (progress is only kept once replayed objects are put), for ever.
 */
const RECOVERY_CRASHES_MAX = 2;

/** What a virtual-time world simulates besides the volume: store latency, transient faults, crash points. */
export interface VirtualWorld {
  latency: Latency;
  /** Chance that a backend call of the volume fails transiently (the retrying store retries it). */
  transientFaultChance: number;
  /** Chance that a crash point in recovery or garbage collection stops the world. */
  crashPointChance: number;
  /** The retrying store's per-attempt timeout, in virtual ms. */
  requestTimeoutMs: number;
}

export const VIRTUAL_WORLD: VirtualWorld = {
  latency: { maxMs: 3, slowChance: 0.002, slowMs: 80 },
  transientFaultChance: 0.01,
  crashPointChance: 0.02,
  requestTimeoutMs: 50,
};

/** The simulated host: every incarnation runs here, and a previous one is never running any more. */
const SIM_HOST = { host: "sim", bootId: "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b" };

export async function makeWorld(
  seed: number,
  options: { volumeBytes?: number; cacheBytes?: number; journalBytes?: number; store?: ObjectStore; virtual?: VirtualWorld } = {},
): Promise<World> {
  const prng = new Prng(seed);
  const store = options.store ?? new MemoryStore();
  const clock = options.virtual ? new SimClock() : null;
  const volUuid = clock ? prngUuid(prng) : uuidv4();
  const volumeBytes = options.volumeBytes ?? 16 * 1024 * 1024;
  // As `lsvd mkdisk` does: the superblock under the lease, which is then released.
  await createVolume({
    store,
    prefix: PREFIX,
    volUuid,
    volSectors: volumeBytes / SECTOR_BYTES,
    replace: false,
    lease: { command: "mkdisk", identity: { ...SIM_HOST, pid: 0, processStartTicks: 1 }, processRuns: () => false, ...(clock ? { clock, newCookie: () => prngUuid(prng) } : {}) },
  });
  const cacheBytes = options.cacheBytes ?? 40 * 1024 * 1024;
  const device = new MemoryCacheDevice(cacheBytes, prng);
  if (clock) device.clock = clock;
  formatCache(device, volUuid, 1000 + prng.int(1_000_000), options.journalBytes, clock ? prng : undefined);
  return {
    prefix: PREFIX,
    prng,
    store,
    device,
    pool: new MemoryPool(),
    volUuid,
    volumeBytes,
    logs: [],
    fence: null,
    lease: null,
    incarnation: 0,
    volume: null,
    clock,
    virtual: options.virtual ?? null,
    stopped: null,
    crashes: new Map(),
    recoveryCrashesInARow: 0,
  };
}

/**
 * A clone of `base` (closed cleanly) at `prefix` in the same store, as `lsvd clone` makes it (clone_create.ts): the
 * base's newest checkpoint listed as snapshot "s" in its superblock first. The clone's world shares the base's store,
 * clock and PRNG, and has a cache device of its own; its crashes fence only its own view of the store.
 */
export async function makeCloneWorld(base: World, prefix: string): Promise<World> {
  const bytes = await base.store.get(base.prefix);
  const superblock = decodeSuperblock(bytes);
  const seq = superblock.checkpoints[superblock.checkpoints.length - 1]!;
  await base.store.put(base.prefix, encodeSuperblock({ ...superblock, snapshots: [...superblock.snapshots, { seq, name: "s" }] }));
  const volUuid = base.clock ? prngUuid(base.prng) : uuidv4();
  const identity = { ...SIM_HOST, pid: 0, processStartTicks: 1 };
  const lease = { command: "clone", identity, processRuns: () => false, ...(base.clock ? { clock: base.clock, newCookie: () => prngUuid(base.prng) } : {}) };
  const cloning = createClone({ store: base.store, basePrefix: base.prefix, snapshot: "s", clonePrefix: prefix, cloneUuid: volUuid, lease });
  await (base.clock ? runWorld(base, cloning) : cloning);
  const device = new MemoryCacheDevice(base.device.sizeBytes, base.prng);
  if (base.clock) device.clock = base.clock;
  formatCache(device, volUuid, 1000 + base.prng.int(1_000_000), undefined, base.clock ? base.prng : undefined);
  return {
    ...base,
    prefix,
    device,
    volUuid,
    logs: [],
    fence: null,
    lease: null,
    incarnation: 0,
    volume: null,
    virtual: base.virtual ? { ...base.virtual } : null,
    stopped: null,
    crashes: new Map(),
    recoveryCrashesInARow: 0,
  };
}

/** A version 4 uuid drawn from the world's PRNG (uuidv4 would take the machine's randomness). */
export function prngUuid(prng: Prng): string {
  const bytes = new Uint8Array(16);
  prng.fill(bytes);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Buffer.from(bytes).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Runs a virtual-time world until `promise` settles (sim_clock.ts); throws WorldStopped when a crash point fires. */
export function runWorld<T>(world: World, promise: Promise<T>): Promise<T> {
  assert(world.clock !== null, "runWorld needs a world made with `virtual`");
  return world.clock.run(promise, { stopped: () => world.stopped });
}

/**
 * The crash-point hook given to the volume of a virtual world: with the world's chance, the process dies right there
 * (the store is fenced and the cache device crashes before anything else runs), and the work at that point never goes
 * on. The driver sees world.stopped, then recovers from what the backend and the cache hold (reopenAfterCrash).
 */
function crashPointOf(world: World): (point: string) => Promise<void> | void {
  const incarnation = world.incarnation;
  return (point) => {
    // A process that died makes no progress (its abandoned work must not stop its successor).
    if (world.incarnation !== incarnation || world.stopped !== null) return new Promise<void>(() => {});
    if (point.startsWith("recovery.") && world.recoveryCrashesInARow >= RECOVERY_CRASHES_MAX) return;
    if (!world.prng.chance(world.virtual!.crashPointChance)) return;
    world.crashes.set(point, (world.crashes.get(point) ?? 0) + 1);
    stopWorld(world, point);
    return new Promise<void>(() => {});
  };
}

/** Formats the cache; a journalBytes smaller than mkcache allows makes wrap-around and back-pressure frequent. */
export function formatCache(device: MemoryCacheDevice, volUuid: string, startSeq: number, journalBytes?: number, prng?: Prng): string {
  const layout = journalBytes
    ? { sizeBytes: device.sizeBytes, journalStartBytes: 4096, journalBytes, readCacheStartBytes: 4096 + journalBytes, readCacheBytes: device.sizeBytes - 4096 - journalBytes }
    : computeCacheLayout(device.sizeBytes, 1);
  const cacheUuid = prng ? prngUuid(prng) : uuidv4();
  device.data.set(encodeCacheSuperblock(newCacheSuperblock({ cacheUuid, volUuid }, layout, startSeq)), 0);
  device.data.fill(0, layout.journalStartBytes, layout.journalStartBytes + 4096);
  return cacheUuid;
}

/**
 * Opens the volume as a new process would: takes the lease (a previous incarnation that closed cleanly released it;
 * one that crashed is dead, so its lease is taken over at once), then opens through the lease-guarded store.
 */
export async function openVolume(world: World, overrides: Partial<VolumeOptions> = {}): Promise<Volume> {
  const previous = world.volume as unknown as { closed: boolean } | null;
  if (world.lease !== null && previous?.closed === true) await world.lease.release();
  world.lease?.abandon();
  world.fence = new FencedStore(world.store);
  world.incarnation += 1;
  const { lease, owner } = await takeOwnership({
    store: world.fence,
    prefix: world.prefix,
    command: "serve",
    identity: { ...SIM_HOST, pid: world.incarnation, processStartTicks: 1 },
    processRuns: () => false,
    log: (line) => world.logs.push(line),
    ...(world.clock ? { clock: world.clock, newCookie: () => prngUuid(world.prng) } : {}),
  });
  world.lease = lease;
  const store = world.virtual ? virtualStore(world, lease) : new GuardedStore(world.fence, () => lease.check());
  world.volume = await Volume.open({
    owner,
    store,
    prefix: world.prefix,
    cache: world.device,
    pool: world.pool,
    batchBytes: 64 * 1024,
    batchIdleMs: 5,
    checkpointIntervalObjects: 4,
    readCache: true,
    // Off unless a test asks (SIM_GC): fixtures that build a journal or a set of objects need them to stay put.
    gc: false,
    log: (line) => world.logs.push(line),
    ...(world.virtual ? { clock: world.clock!, crashPoint: crashPointOf(world) } : {}),
    ...overrides,
  });
  return world.volume;
}

/**
 * The volume's store in a virtual world, as `lsvd serve` stacks it (a retrying store over the lease-guarded store),
 * over seeded transient faults and latency above the crash fence: a call delayed past a crash never lands.
 */
function virtualStore(world: World, lease: Lease): ObjectStore {
  const virtual = world.virtual!;
  const delayed = new LatencyStore(world.fence!, world.clock!, world.prng, virtual.latency);
  const faulty = new FaultyStore(delayed, { seed: world.prng.nextU32() });
  if (virtual.transientFaultChance > 0) faulty.failWithProbability("any", virtual.transientFaultChance);
  return new RetryingStore(new GuardedStore(faulty, () => lease.check()), {
    clock: world.clock!,
    random: () => world.prng.nextU32() / 2 ** 32,
    requestTimeoutMs: virtual.requestTimeoutMs,
    delayMsMin: 1,
    delayMsMax: 20,
    log: (line) => world.logs.push(`backend: ${line}`),
  });
}

/**
 * Opens the volume of a virtual world after a crash, again after every crash inside recovery itself (each one stops
 * the world, which then recovers from what the backend and the cache hold). Returns the open volume.
 */
export async function reopenAfterCrash(world: World, overrides: Partial<VolumeOptions> = {}): Promise<Volume> {
  for (;;) {
    world.stopped = null;
    try {
      const volume = await runWorld(world, openVolume(world, overrides));
      world.recoveryCrashesInARow = 0;
      return volume;
    } catch (error) {
      if (!(error instanceof WorldStopped)) throw error;
      world.recoveryCrashesInARow += 1;
    }
  }
}

/**
 * `lsvd fsck --repair` as another process would run it: the volume's lease first (the previous incarnation released
 * it if it closed cleanly, else it is dead and its lease is taken over), repairs through the lease-guarded store,
 * then the lease released.
 */
export async function fsckRepair(world: World): Promise<FsckReport> {
  const previous = world.volume as unknown as { closed: boolean } | null;
  if (world.lease !== null && previous?.closed === true) await world.lease.release();
  world.lease?.abandon();
  world.lease = null;
  world.incarnation += 1;
  let lease: Lease | null = null;
  const store = new GuardedStore(world.store, () => lease!.check());
  const taken = await takeOwnership(
    {
      store: world.store,
      prefix: world.prefix,
      command: "fsck --repair",
      identity: { ...SIM_HOST, pid: world.incarnation, processStartTicks: 1 },
      processRuns: () => false,
      ...(world.clock ? { clock: world.clock, newCookie: () => prngUuid(world.prng) } : {}),
    },
    store,
  );
  lease = taken.lease;
  const report = await fsckVolume({ store, prefix: world.prefix, repair: true, owner: taken.owner });
  await lease.release();
  return report;
}

/** Garbage collection all the time: a round every 2 ms, a checkpoint forced for retired objects after 20 ms. */
export const SIM_GC = { gc: true, gcIntervalMs: 2, gcForceCheckpointMs: 20 } as const;

/** What each sector must read as: the bytes of the newest acknowledged write, or zero. */
export class VolumeModel {
  readonly bytes: Uint8Array;
  /** Sectors with a write or trim in flight: after a crash they may hold old or new data. */
  readonly uncertain = new Set<number>();

  constructor(readonly volumeBytes: number) {
    this.bytes = new Uint8Array(volumeBytes);
  }

  apply(offset: number, data: Uint8Array | null, length: number): void {
    if (data) this.bytes.set(data, offset);
    else this.bytes.fill(0, offset, offset + length);
  }

  /** Compares a read of [offset, offset+length) with the model, skipping uncertain sectors; returns a message or null. */
  diff(offset: number, actual: Uint8Array): string | null {
    for (let sector = 0; sector < actual.byteLength / SECTOR_BYTES; sector++) {
      const lba = offset / SECTOR_BYTES + sector;
      if (this.uncertain.has(lba)) continue;
      const start = sector * SECTOR_BYTES;
      for (let index = 0; index < SECTOR_BYTES; index++) {
        if (actual[start + index] !== this.bytes[offset + start + index]) {
          return `sector ${lba} differs at byte ${index}: read ${actual[start + index]}, expected ${this.bytes[offset + start + index]}`;
        }
      }
    }
    return null;
  }
}

const MODEL_BLOCK_BYTES = 4096;

/** Writes 4 KiB of the world's random bytes at `block` (no FUA) and applies it to the model. */
export async function writeBlock(volume: Volume, world: World, model: VolumeModel, block: number): Promise<void> {
  const data = new Uint8Array(MODEL_BLOCK_BYTES);
  world.prng.fill(data);
  model.apply(block * MODEL_BLOCK_BYTES, data, MODEL_BLOCK_BYTES);
  await volume.write(block * MODEL_BLOCK_BYTES, data, false);
}

/** `count` writeBlock()s, each at a block of the volume the world's PRNG picks. */
export async function writeRandomBlocks(volume: Volume, world: World, model: VolumeModel, count: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    await writeBlock(volume, world, model, world.prng.int(world.volumeBytes / MODEL_BLOCK_BYTES));
  }
}

export const immediateClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(delayMs, fn) {
    const timer = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(timer) };
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, Math.min(delayMs, 5))),
};

/** The process dies: the volume stops, its store calls fail, the cache keeps what the crash model lets it keep. */
export function crashWorld(world: World, volume: Volume, options: { powerLoss?: boolean } = {}): void {
  volume.abandon();
  stopWorld(world, "crash", options);
}

/** The process dies at `point`: its lease and store calls stop, the cache device crashes (power loss if asked). */
export function stopWorld(world: World, point: string, options: { powerLoss?: boolean } = {}): void {
  world.stopped = point;
  world.lease?.abandon();
  world.lease = null;
  world.fence?.fence();
  world.device = world.device.crash(options);
}
