// Fuzzing the cache: journal record headers and data, and the cache superblock. Mutated pages must decode or be
// rejected with an LsvdError; a journal with a damaged record must still open (the walk stops at the damage, it is
// never fatal), replay every record before the damage, and agree with fsck on how many records it replays.
// Damage to the cache superblock may refuse the open, with an LsvdError. LSVD_SEED / LSVD_FUZZ_SCALE as elsewhere.

import { beforeAll, describe, expect, test } from "bun:test";
import { PAGE_BYTES } from "../../src/constants.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { JournalWalker } from "../../src/cache/journal_replay.ts";
import { decodeCacheSuperblock, encodeCacheSuperblock } from "../../src/format/cache_superblock.ts";
import { decodeJournalHeader, JOURNAL_HEADER_BYTES, JournalRecordType, verifyJournalData } from "../../src/format/journal_record.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { Volume } from "../../src/volume/volume.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng, seedFromEnv } from "../sim/prng.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";
import { foreignError, mutate, resealPage } from "./_mutate.ts";

const SCALE = Number(process.env.LSVD_FUZZ_SCALE ?? 1);
const DECODE_MUTATIONS = 3000 * SCALE;
const RECOVERY_MUTATIONS = 150 * SCALE;
const VOLUME_BYTES = 1024 * 1024;
const CACHE_BYTES = 4 * 1024 * 1024;
const JOURNAL_BYTES = 2 * 1024 * 1024;
/** Both pages carry a CRC32C of the page at byte 8 (docs/format.md). */
const PAGE_CRC_OFFSET = 8;

interface RecordAt {
  seq: number;
  type: number;
  offsetBytes: number;
  bytes: number;
}

const seed = seedFromEnv(4242);
let world: World;
let cacheBytes: Uint8Array;
let objects: Array<[string, Uint8Array]> = [];
let records: RecordAt[] = [];

function cacheDevice(data: Uint8Array, index: number): MemoryCacheDevice {
  return new MemoryCacheDevice(CACHE_BYTES, new Prng(seed + index), data);
}

async function cloneStore(): Promise<MemoryStore> {
  const store = new MemoryStore();
  for (const [name, bytes] of objects) await store.put(name, bytes);
  return store;
}

beforeAll(async () => {
  // Some objects in the backend, then records that stay in the journal (big batch, long idle), then a crash. No
  // garbage collection: its forced checkpoints would seal the open batch and put records the fixture keeps.
  world = await makeWorld(seed, { volumeBytes: VOLUME_BYTES, cacheBytes: CACHE_BYTES, journalBytes: JOURNAL_BYTES });
  const prng = world.prng;
  let volume = await openVolume(world, { clock: immediateClock, batchBytes: 64 * 1024, gc: false });
  for (let index = 0; index < 20; index++) {
    const data = new Uint8Array(8192);
    prng.fill(data);
    await volume.write(8192 * prng.int(VOLUME_BYTES / 8192), data, false);
  }
  await volume.close();
  volume = await openVolume(world, { clock: immediateClock, batchBytes: 1024 * 1024, batchIdleMs: 600_000, gc: false });
  for (let index = 0; index < 40; index++) {
    const sectors = 8 * (1 + prng.int(6));
    const offset = 4096 * prng.int((VOLUME_BYTES - sectors * 512) / 4096);
    if (prng.chance(0.2)) {
      await volume.trim(offset, sectors * 512, false);
    } else {
      const data = new Uint8Array(sectors * 512);
      prng.fill(data);
      await volume.write(offset, data, false);
    }
  }
  await volume.flush();
  volume.abandon();
  world.fence?.fence();
  cacheBytes = world.device.data.slice();
  const store = world.store as MemoryStore;
  objects = [];
  for (const name of [PREFIX, ...(await store.list(`${PREFIX}.`))]) objects.push([name, await store.get(name)]);
  const device = cacheDevice(cacheBytes.slice(), 0);
  const superblock = decodeCacheSuperblock(cacheBytes.subarray(0, PAGE_BYTES));
  const walker = new JournalWalker(device, new MemoryPool(), superblock);
  records = [];
  for (;;) {
    const record = await walker.next();
    if (!record) break;
    records.push({ seq: record.header.seq, type: record.header.type, offsetBytes: superblock.journalStartBytes + (record.position % superblock.journalBytes), bytes: record.bytes });
  }
  expect(records.filter((record) => record.type === JournalRecordType.Data).length).toBeGreaterThanOrEqual(10);
});

describe("fuzz: journal records and the cache superblock", () => {
  test(`decoders: ${DECODE_MUTATIONS} mutated header pages and data rejected cleanly or decoded stably`, async () => {
    const prng = new Prng(seed + 1);
    const superblockPage = cacheBytes.slice(0, PAGE_BYTES);
    let rejected = 0;
    for (let index = 0; index < DECODE_MUTATIONS; index++) {
      const record = records[prng.int(records.length)]!;
      const onSuperblock = prng.chance(0.2);
      const page = onSuperblock ? superblockPage : cacheBytes.slice(record.offsetBytes, record.offsetBytes + JOURNAL_HEADER_BYTES);
      const mutation = mutate(page, prng, onSuperblock ? 128 : 72 + 16 * 8, (bytes) => bytes.byteLength === PAGE_BYTES && resealPage(bytes, PAGE_CRC_OFFSET));
      const context = `seed ${seed} mutation ${index} of ${onSuperblock ? "the cache superblock" : `record ${record.seq}'s header`}: ${mutation.description}`;
      let decoded = false;
      const problem = await foreignError(() => {
        if (onSuperblock) {
          const superblock = decodeCacheSuperblock(mutation.bytes);
          expect(decodeCacheSuperblock(encodeCacheSuperblock(superblock))).toEqual(superblock);
        } else {
          const header = decodeJournalHeader(mutation.bytes);
          decoded = true;
          // The header's data CRC against the record's real data, and against damaged data.
          const data = cacheBytes.slice(record.offsetBytes + JOURNAL_HEADER_BYTES, record.offsetBytes + record.bytes);
          if (prng.chance(0.5)) data[prng.int(Math.max(1, data.byteLength))]! ^= 0x10;
          verifyJournalData(header, data);
        }
        decoded = true;
      });
      if (problem) throw new Error(`${context}\n${problem}`);
      if (!decoded) rejected += 1;
      if (!mutation.resealed && decoded && onSuperblock) throw new Error(`${context}: decoded although its CRC no longer matches`);
    }
    expect(rejected).toBeGreaterThan(DECODE_MUTATIONS / 3);
  }, 60_000);

  test(`recovery: ${RECOVERY_MUTATIONS} damaged journals open, replay up to the damage, and agree with fsck`, async () => {
    const prng = new Prng(seed + 2);
    for (let index = 0; index < RECOVERY_MUTATIONS; index++) {
      const data = cacheBytes.slice();
      const onSuperblock = prng.chance(0.1);
      const targetIndex = prng.int(records.length);
      const target = records[targetIndex]!;
      const start = onSuperblock ? 0 : target.offsetBytes;
      const length = onSuperblock ? PAGE_BYTES : target.bytes;
      const region = data.slice(start, start + length);
      const mutation = mutate(region, prng, onSuperblock ? 128 : 200, (bytes) => bytes.byteLength >= PAGE_BYTES && resealPage(bytes, PAGE_CRC_OFFSET));
      // Written back in place: shorter is a cut write (the rest zero), longer runs into the next record's bytes.
      const placed = new Uint8Array(length);
      placed.set(mutation.bytes.subarray(0, length));
      data.set(placed, start);
      const context = `seed ${seed} mutation ${index} of ${onSuperblock ? "the cache superblock" : `record ${target.seq} (${targetIndex + 1} of ${records.length})`}: ${mutation.description}`;

      const store = await cloneStore();
      let pendingReplay = -1;
      const fsckProblem = await foreignError(async () => {
        const report = await fsckVolume({ store, prefix: PREFIX, cache: { device: cacheDevice(data.slice(), index), pool: new MemoryPool() } });
        pendingReplay = report.cache?.pendingReplay ?? -1;
      });
      if (fsckProblem) throw new Error(`${context} (fsck)\n${fsckProblem}`);

      let volume: Volume | null = null;
      const openProblem = await foreignError(async () => {
        volume = await Volume.open({ store, prefix: PREFIX, cache: cacheDevice(data, index), pool: new MemoryPool(), clock: immediateClock, batchBytes: 1024 * 1024 });
      });
      if (openProblem) throw new Error(`${context} (open)\n${openProblem}`);
      if (!volume) {
        if (!onSuperblock) throw new Error(`${context}: a damaged journal record made the open fail`);
        continue;
      }
      const open: Volume = volume;
      const dataRecordsBefore = records.slice(0, onSuperblock ? 0 : targetIndex).filter((record) => record.type === JournalRecordType.Data).length;
      if (open.recovery.journalRecordsReplayed < dataRecordsBefore) {
        throw new Error(`${context}: replayed ${open.recovery.journalRecordsReplayed} records, but ${dataRecordsBefore} undamaged ones precede the damage (${open.recovery.journalStop})`);
      }
      // Damage under the record's CRCs (not recomputed) stops the walk exactly there; every record in this journal is
      // newer than the backend's log, so the count is exact.
      const changed = placed.some((byte, at) => byte !== region[at]);
      if (!onSuperblock && changed && !mutation.resealed && open.recovery.journalRecordsReplayed !== dataRecordsBefore) {
        throw new Error(`${context}: replayed ${open.recovery.journalRecordsReplayed} records, expected exactly ${dataRecordsBefore} (${open.recovery.journalStop})`);
      }
      if (open.recovery.journalRecordsReplayed !== pendingReplay) {
        throw new Error(`${context}: fsck said ${pendingReplay} records pending replay, recovery replayed ${open.recovery.journalRecordsReplayed}`);
      }
      const readProblem = await foreignError(async () => {
        for (let offset = 0; offset < VOLUME_BYTES; offset += 256 * 1024) await open.read(offset, 256 * 1024);
      });
      if (readProblem) throw new Error(`${context} (read)\n${readProblem}`);
      const closeProblem = await foreignError(() => open.close());
      if (closeProblem) throw new Error(`${context} (close)\n${closeProblem}`);
    }
  }, 120_000);
});
