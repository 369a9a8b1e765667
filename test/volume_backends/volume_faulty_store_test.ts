// A volume on a real RADOS pool and S3 bucket whose requests sometimes fail: FaultyStore wraps the real store (random
// transient failures on every kind of request, replies lost after a put landed, one permanent put failure) under
// the RetryingStore the server uses. The volume must keep going and lose nothing: every byte reads back while it
// runs, after a clean restart (recovery and reads through the same faults) and from a fault-free store.
// Plus an outage on a volume with small batches: the journal, not the batch buffers, bounds what is absorbed.
//
// The cluster is the shared default one from test/ceph/up.sh (memstore), started here if needed; FAIL if it cannot.

import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { openUringDevice } from "../../ffi/uring_device.ts";
import { Volume } from "../../src/volume/volume.ts";
import { type CephEnv, cephUp } from "../backend/_ceph.ts";
import {
  type Backend,
  type BackendKind,
  backendOf,
  deleteVolume,
  firstDifference,
  lsvd,
  makeTempDir,
  readVolume,
  uniquePrefix,
  VolumeModel,
  VolumeWriter,
  waitFor,
  waitForStall,
} from "./_volume_backends.ts";

const VOLUME_BYTES = 64 * 1024 * 1024;
const CACHE_BYTES = 64 * 1024 * 1024; // journal: 32 MiB
const BATCH_BYTES = 64 * 1024; // many small objects: many puts to fail

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

interface Fixture {
  backend: Backend;
  directory: string;
  prefix: string;
  cachePath: string;
  admin: ObjectStore;
}

async function makeVolume(kind: BackendKind, tag: string): Promise<Fixture> {
  const backend = backendOf(kind, env);
  const directory = makeTempDir(`${tag}-${kind}`);
  const prefix = uniquePrefix(`${tag}${kind}`);
  const cachePath = path.join(directory, "cache");
  await lsvd(backend, ["mkdisk", "--size", String(VOLUME_BYTES), backend.uri(prefix), ...backend.cliArgs]);
  await lsvd(backend, ["mkcache", "--volume", backend.uri(prefix), "--size", String(CACHE_BYTES), cachePath, ...backend.cliArgs]);
  return { backend, directory, prefix, cachePath, admin: await backend.openStore() };
}

async function dropVolume(fixture: Fixture): Promise<void> {
  await deleteVolume(fixture.admin, fixture.prefix);
  await fixture.admin.close();
  fs.rmSync(fixture.directory, { recursive: true, force: true });
}

/**
 * Volume.open on FaultyStore(real store) under a RetryingStore with short backoffs (the faults are instant).
 * `faultsBeforeOpen` arms faults that recovery itself meets.
 */
async function openFaulty(fixture: Fixture, seed: number, faultsBeforeOpen: (faulty: FaultyStore) => void = () => {}, sealedObjectsAheadMax?: number) {
  const faulty = new FaultyStore(await fixture.backend.openStore(), { seed });
  faultsBeforeOpen(faulty);
  const store = new RetryingStore(faulty, { delayMsMin: 5, delayMsMax: 50 });
  const device = await openUringDevice(fixture.cachePath);
  const volume = await Volume.open({ store, prefix: fixture.prefix, cache: device, pool: device.pool, batchBytes: BATCH_BYTES, batchIdleMs: 100, sealedObjectsAheadMax });
  return {
    faulty,
    store,
    volume,
    async close() {
      await volume.close();
      await device.close();
      await store.close();
    },
  };
}

describe("volume on a backend that fails some requests", () => {
  for (const kind of ["rados", "s3"] as BackendKind[]) {
    test(`${kind}: random request failures lose nothing`, async () => {
      const fixture = await makeVolume(kind, "flt");
      try {
        const model = new VolumeModel(VOLUME_BYTES, kind === "rados" ? 31 : 32);
        let opened = await openFaulty(fixture, 101);
        const durableAtOpen = opened.volume.stats().durableSeq;
        // Set after open: recovery of a brand-new volume is not the point here (it is below).
        opened.faulty.failWithProbability("any", 0.2);
        // The put landed, the reply was lost: the retry finds the name taken, by our own bytes (read back: success).
        opened.faulty.failNextAfterApply("putIfAbsent", 3);
        // A permanent error: RetryingStore gives up at once, the object writer logs it and tries again later.
        opened.faulty.failNext("putIfAbsent", 1, { transient: false });
        const writer = new VolumeWriter(opened.volume, model, { workers: 4, writeBytes: 16 * 1024, totalBytes: 6 * 1024 * 1024, seed: 3 });
        await writer.done;
        expect(writer.errors).toEqual([]);
        // Read back while running: recent data from memory, older data from the backend (through the faults). Some
        // objects of this run must be durable first, or every read is served from memory: puts lag behind the
        // writes, and the permanent failure above holds the durable prefix back for the object writer's pause.
        await waitFor("objects of this run durable", () => opened.volume.stats().durableSeq >= durableAtOpen + 4, 60_000);
        expect(firstDifference(await readVolume(opened.volume), model.bytes)).toBe(-1);
        await opened.close();
        // Counted after the close has drained the backlog: writes run ahead of puts while the journal has room.
        const stats = opened.volume.stats();
        expect(stats.puts).toBeGreaterThan(20);
        expect(stats.backendReads).toBeGreaterThan(0);
        expect(opened.faulty.injected).toBeGreaterThan(20);
        expect(opened.store.retries).toBeGreaterThan(20);

        // Reopen with faults from the start: recovery (list, stat, get) and every read go through them.
        opened = await openFaulty(fixture, 202, (faulty) => faulty.failWithProbability("any", 0.2));
        expect(opened.volume.recovery.journalRecordsReplayed).toBe(0);
        expect(firstDifference(await readVolume(opened.volume), model.bytes)).toBe(-1);
        await opened.close();
        expect(opened.faulty.injected).toBeGreaterThan(0);

        // And from the plain store: what the backend holds is the volume, not what the faults happened to show.
        const clean = new RetryingStore(await fixture.backend.openStore());
        const device = await openUringDevice(fixture.cachePath);
        const volume = await Volume.open({ store: clean, prefix: fixture.prefix, cache: device, pool: device.pool });
        expect(firstDifference(await readVolume(volume), model.bytes)).toBe(-1);
        await volume.close();
        await device.close();
        await clean.close();
      } finally {
        await dropVolume(fixture);
      }
    }, 120_000);
  }

  // While the backend is unreachable, writes keep being absorbed by the journal until it is full: batches that find
  // no free buffer stay journal-only (this once stalled after PUTS_INFLIGHT_MAX + 1 small batches). The bound on
  // objects ahead of the backend (SEALED_OBJECTS_AHEAD_MAX) would stop 64 KiB batches at 1 MiB: lifted here, so the
  // journal is what binds, as it is at large batches.
  test("rados, 64 KiB batches: an outage is absorbed up to the journal's capacity", async () => {
    const fixture = await makeVolume("rados", "out");
    try {
      const model = new VolumeModel(VOLUME_BYTES, 41);
      const opened = await openFaulty(fixture, 404, undefined, 1024);
      opened.faulty.setOutage(true);
      const writer = new VolumeWriter(opened.volume, model, { workers: 4, writeBytes: 64 * 1024, totalBytes: 24 * 1024 * 1024, seed: 5 });
      let absorbed = 0;
      try {
        await waitForStall(writer, 1000, 60_000);
        absorbed = writer.ackedBytes;
      } finally {
        opened.faulty.setOutage(false);
        await writer.done;
        expect(writer.errors).toEqual([]);
        expect(firstDifference(await readVolume(opened.volume), model.bytes)).toBe(-1);
        await opened.close();
      }
      // Journal 32 MiB: 24 MiB must fit without a stall, or at least most of it.
      expect(absorbed).toBeGreaterThan(16 * 1024 * 1024);
    } finally {
      await dropVolume(fixture);
    }
  }, 120_000);
});
