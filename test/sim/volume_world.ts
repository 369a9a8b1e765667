// A simulated world for the real volume code: MemoryStore backend, MemoryCacheDevice cache, seeded PRNG.
// Helpers to create a volume + cache, open, crash and reopen it, and a model of what the volume must contain.

import { v4 as uuidv4 } from "uuid";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { computeCacheLayout } from "../../src/cache/cache_layout.ts";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { encodeCacheSuperblock } from "../../src/format/cache_superblock.ts";
import { Volume, type VolumeOptions } from "../../src/volume/volume.ts";
import type { Clock } from "../../src/volume/clock.ts";
import { FencedStore } from "./fenced_store.ts";
import { GuardedStore } from "../../src/backend/guarded_store.ts";
import type { Lease } from "../../src/volume/lease.ts";
import { createVolume, takeOwnership } from "../../src/volume/ownership.ts";
import { fsckVolume, type FsckReport } from "../../src/volume/fsck.ts";
import { MemoryCacheDevice, MemoryPool } from "./memory_cache_device.ts";
import { Prng } from "./prng.ts";

export const PREFIX = "vol";

export interface World {
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
}

/** The simulated host: every incarnation runs here, and a previous one is never running any more. */
const SIM_HOST = { host: "sim", bootId: "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b" };

export async function makeWorld(
  seed: number,
  options: { volumeBytes?: number; cacheBytes?: number; journalBytes?: number; store?: ObjectStore } = {},
): Promise<World> {
  const prng = new Prng(seed);
  const store = options.store ?? new MemoryStore();
  const volUuid = uuidv4();
  const volumeBytes = options.volumeBytes ?? 16 * 1024 * 1024;
  // As `lsvd mkdisk` does: the superblock under the lease, which is then released.
  await createVolume({
    store,
    prefix: PREFIX,
    volUuid,
    volSectors: volumeBytes / SECTOR_BYTES,
    replace: false,
    lease: { command: "mkdisk", identity: { ...SIM_HOST, pid: 0, processStartTicks: 1 }, processRuns: () => false },
  });
  const cacheBytes = options.cacheBytes ?? 40 * 1024 * 1024;
  const device = new MemoryCacheDevice(cacheBytes, prng);
  formatCache(device, volUuid, 1000 + prng.int(1_000_000), options.journalBytes);
  return { prng, store, device, pool: new MemoryPool(), volUuid, volumeBytes, logs: [], fence: null, lease: null, incarnation: 0, volume: null };
}

/** Formats the cache; a journalBytes smaller than mkcache allows makes wrap-around and back-pressure frequent. */
export function formatCache(device: MemoryCacheDevice, volUuid: string, startSeq: number, journalBytes?: number): string {
  const layout = journalBytes
    ? { sizeBytes: device.sizeBytes, journalStartBytes: 4096, journalBytes, readCacheStartBytes: 4096 + journalBytes, readCacheBytes: device.sizeBytes - 4096 - journalBytes }
    : computeCacheLayout(device.sizeBytes, 1);
  const cacheUuid = uuidv4();
  device.data.set(
    encodeCacheSuperblock({
      cacheUuid,
      volUuid,
      ...layout,
      startSeq,
      replayOffsetBytes: layout.journalStartBytes,
      replaySeq: startSeq,
      generation: 1,
    }),
    0,
  );
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
    prefix: PREFIX,
    command: "serve",
    identity: { ...SIM_HOST, pid: world.incarnation, processStartTicks: 1 },
    processRuns: () => false,
    log: (line) => world.logs.push(line),
  });
  world.lease = lease;
  const store = new GuardedStore(world.fence, () => lease.check());
  world.volume = await Volume.open({
    owner,
    store,
    prefix: PREFIX,
    cache: world.device,
    pool: world.pool,
    batchBytes: 64 * 1024,
    batchIdleMs: 5,
    checkpointIntervalObjects: 4,
    readCache: true,
    // Off unless a test asks (SIM_GC): fixtures that build a journal or a set of objects need them to stay put.
    gc: false,
    log: (line) => world.logs.push(line),
    ...overrides,
  });
  return world.volume;
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
    { store: world.store, prefix: PREFIX, command: "fsck --repair", identity: { ...SIM_HOST, pid: world.incarnation, processStartTicks: 1 }, processRuns: () => false },
    store,
  );
  lease = taken.lease;
  const report = await fsckVolume({ store, prefix: PREFIX, repair: true, owner: taken.owner });
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
  world.lease?.abandon();
  world.lease = null;
  world.fence?.fence();
  world.device = world.device.crash(options);
}
