// Fuzzing backend objects (superblock, DATA, CKPT): seeded mutations of real objects written by a real volume must be
// rejected with an LsvdError (or decode to something that encodes back the same) by the decoders and `lsvd parse`'s
// describeObject; fsck and recovery (Volume.open on a memory world) must report or refuse, never fail with a foreign
// error or hang. A plain mutation (CRCs not recomputed) must always be a problem fsck reports.
// LSVD_SEED=<n> changes the seed; LSVD_FUZZ_SCALE=<k> multiplies the iteration counts.

import { beforeAll, describe, expect, test } from "bun:test";
import { SECTOR_BYTES } from "../../src/constants.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { describeObject } from "../../src/cli/commands/parse.ts";
import { decodeCheckpoint, encodeCheckpoint } from "../../src/format/checkpoint_object.ts";
import { decodeDataObjectHeader, verifyDataArea } from "../../src/format/data_object.ts";
import { decodeCommonHeader, ObjectType } from "../../src/format/object_header.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock } from "../../src/format/superblock_object.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { Volume } from "../../src/volume/volume.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng, seedFromEnv } from "../sim/prng.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";
import { foreignError, mutate, resealObject } from "./_mutate.ts";

const SCALE = Number(process.env.LSVD_FUZZ_SCALE ?? 1);
const DECODE_MUTATIONS = 3000 * SCALE;
const RECOVERY_MUTATIONS = 250 * SCALE;
const VOLUME_BYTES = 1024 * 1024;
const CACHE_BYTES = 4 * 1024 * 1024;
const JOURNAL_BYTES = 2 * 1024 * 1024;
/** Field-level damage lands in the fixed fields and the first table entries. */
const HOT_BYTES = 512;

interface Sample {
  name: string;
  seq: number;
  type: number;
  bytes: Uint8Array;
}

let world: World;
let samples: Sample[] = [];
const seed = seedFromEnv(42);

/** Decodes an object the way its readers do; throws whatever they throw. */
function decodeAny(bytes: Uint8Array): void {
  const common = decodeCommonHeader(bytes);
  if (common.type === ObjectType.Super) {
    const superblock = decodeSuperblock(bytes);
    // A stable round trip: whatever decodes encodes back to something that decodes the same.
    expect(decodeSuperblock(encodeSuperblock(superblock))).toEqual(superblock);
  } else if (common.type === ObjectType.Checkpoint) {
    const checkpoint = decodeCheckpoint(bytes);
    const again = decodeCheckpoint(encodeCheckpoint(checkpoint));
    expect({ ...again, mapEntries: [...again.mapEntries] }).toEqual({ ...checkpoint, mapEntries: [...checkpoint.mapEntries] });
  } else {
    const header = decodeDataObjectHeader(bytes.subarray(0, Math.min(bytes.byteLength, common.hdrSectors * SECTOR_BYTES)));
    verifyDataArea(header, bytes.subarray(header.hdrSectors * SECTOR_BYTES, (header.hdrSectors + header.dataSectors) * SECTOR_BYTES));
  }
}

beforeAll(async () => {
  // A volume with several DATA objects (writes, trims, zeroes), checkpoints, and a clean close; then a few writes left
  // in the journal by a crash, so recovery has both a log and a journal to read.
  world = await makeWorld(seed, { volumeBytes: VOLUME_BYTES, cacheBytes: CACHE_BYTES, journalBytes: JOURNAL_BYTES });
  const prng = world.prng;
  let volume = await openVolume(world, { clock: immediateClock, batchBytes: 64 * 1024, checkpointIntervalObjects: 3 });
  for (let index = 0; index < 60; index++) {
    const sectors = 8 * (1 + prng.int(8));
    const offset = SECTOR_BYTES * 8 * prng.int((VOLUME_BYTES / SECTOR_BYTES - sectors) / 8);
    const roll = prng.int(10);
    if (roll < 7) {
      const data = new Uint8Array(sectors * SECTOR_BYTES);
      prng.fill(data);
      await volume.write(offset, data, false);
    } else if (roll < 9) {
      await volume.trim(offset, sectors * SECTOR_BYTES, false);
    } else {
      await volume.writeZeroes(offset, sectors * SECTOR_BYTES, false);
    }
  }
  await volume.close();
  volume = await openVolume(world, { clock: immediateClock, batchBytes: 1024 * 1024, batchIdleMs: 60_000 });
  for (let index = 0; index < 5; index++) await volume.write(index * 4096, new Uint8Array(4096).fill(index + 1), false);
  await volume.flush();
  volume.abandon();
  world.fence?.fence();
  const store = world.store as MemoryStore;
  samples = [];
  // Backend objects only: the lease (`vol.lease`) is not one (its codec has its own corruption tests).
  for (const name of [PREFIX, ...(await store.list(`${PREFIX}.`)).filter((name) => parseObjectName(PREFIX, name) !== null)]) {
    const bytes = await store.get(name);
    samples.push({ name, seq: name === PREFIX ? 0 : parseObjectName(PREFIX, name)!, type: decodeCommonHeader(bytes).type, bytes });
  }
  expect(samples.some((sample) => sample.type === ObjectType.Data)).toBe(true);
  expect(samples.some((sample) => sample.type === ObjectType.Checkpoint)).toBe(true);
});

async function cloneStore(): Promise<MemoryStore> {
  const store = new MemoryStore();
  for (const sample of samples) await store.put(sample.name, sample.bytes);
  return store;
}

describe("fuzz: backend objects", () => {
  test("the untouched volume is clean for fsck and opens", async () => {
    const store = await cloneStore();
    const report = await fsckVolume({ store, prefix: PREFIX });
    expect(report.problems).toEqual([]);
    expect(report.exitCode).toBe(0);
    const device = new MemoryCacheDevice(CACHE_BYTES, new Prng(seed), world.device.data.slice());
    const volume = await Volume.open({ store, prefix: PREFIX, cache: device, pool: new MemoryPool(), clock: immediateClock });
    expect(volume.recovery.journalRecordsReplayed).toBe(5);
    volume.abandon();
  });

  test(`decoders and parse: ${DECODE_MUTATIONS} mutations rejected cleanly or decoded stably`, async () => {
    const prng = new Prng(seed + 1);
    let rejected = 0;
    for (let index = 0; index < DECODE_MUTATIONS; index++) {
      const sample = samples[prng.int(samples.length)]!;
      const mutation = mutate(sample.bytes, prng, HOT_BYTES, resealObject);
      const context = `seed ${seed} mutation ${index} of ${sample.name}: ${mutation.description}`;
      let decoded = true;
      const decodeProblem = await foreignError(() => {
        try {
          decodeAny(mutation.bytes);
        } catch (error) {
          decoded = false;
          throw error;
        }
      });
      if (decodeProblem) throw new Error(`${context}\n${decodeProblem}`);
      if (!decoded) rejected += 1;
      // A plain mutation (no CRC recomputed) of a checksummed object must never decode. Bytes appended to a DATA
      // object are outside every CRC and ignored by its readers (reads are ranged), so they may.
      const appendedToData = sample.type === ObjectType.Data && mutation.description.includes("appended");
      if (!mutation.resealed && decoded && !appendedToData) throw new Error(`${context}: decoded although its CRCs no longer match`);
      const parseProblem = await foreignError(() => describeObject(sample.name, mutation.bytes, 8));
      if (parseProblem) throw new Error(`${context} (parse)\n${parseProblem}`);
    }
    expect(rejected).toBeGreaterThan(DECODE_MUTATIONS / 2);
  }, 60_000);

  test(`fsck and recovery: ${RECOVERY_MUTATIONS} mutated volumes reported or refused cleanly`, async () => {
    const prng = new Prng(seed + 2);
    let opened = 0;
    let refused = 0;
    for (let index = 0; index < RECOVERY_MUTATIONS; index++) {
      const store = await cloneStore();
      const sample = samples[prng.int(samples.length)]!;
      const mutation = mutate(sample.bytes, prng, HOT_BYTES, resealObject);
      let context = `seed ${seed} mutation ${index} of ${sample.name}: ${mutation.description}`;
      // Sometimes the object is lost instead (losing the newest object is not even a problem: the log is shorter).
      const deleted = prng.chance(0.1);
      if (deleted) context = `seed ${seed} mutation ${index}: ${sample.name} deleted`;
      if (deleted) await store.delete(sample.name);
      else await store.put(sample.name, mutation.bytes);

      let exitCode = -1;
      const fsckProblem = await foreignError(async () => {
        exitCode = (await fsckVolume({ store, prefix: PREFIX })).exitCode;
      });
      if (fsckProblem) throw new Error(`${context} (fsck)\n${fsckProblem}`);
      // Every byte of an object is under a CRC: damage fsck cannot see would be damage recovery cannot see either.
      const appendedToData = sample.type === ObjectType.Data && mutation.description.includes("appended");
      if (!deleted && !mutation.resealed && !appendedToData && exitCode !== 4) throw new Error(`${context}: fsck exit ${exitCode}, expected 4`);

      const device = new MemoryCacheDevice(CACHE_BYTES, new Prng(seed + index), world.device.data.slice());
      let volume: Volume | null = null;
      const openProblem = await foreignError(async () => {
        volume = await Volume.open({ store, prefix: PREFIX, cache: device, pool: new MemoryPool(), clock: immediateClock, batchBytes: 64 * 1024 });
      });
      if (openProblem) throw new Error(`${context} (open)\n${openProblem}`);
      if (!volume) {
        // fsck and recovery read the same rules: a volume fsck calls clean must open.
        if (exitCode === 0) throw new Error(`${context}: fsck says clean but Volume.open refuses it`);
        refused += 1;
        continue;
      }
      opened += 1;
      const open: Volume = volume;
      const readProblem = await foreignError(async () => {
        const bytes = Math.min(open.sizeBytes, VOLUME_BYTES);
        for (let offset = 0; offset < bytes; offset += 256 * 1024) await open.read(offset, Math.min(256 * 1024, bytes - offset));
      });
      if (readProblem) throw new Error(`${context} (read)\n${readProblem}`);
      const closeProblem = await foreignError(() => open.close());
      if (closeProblem) throw new Error(`${context} (close)\n${closeProblem}`);
    }
    expect(opened).toBeGreaterThan(0);
    expect(refused + opened).toBe(RECOVERY_MUTATIONS);
  }, 120_000);
});
