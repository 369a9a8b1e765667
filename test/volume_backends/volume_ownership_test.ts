// Late landings on a real RADOS pool and S3 bucket (issue 12, item 3; docs/architecture.md, "Ownership and fencing"):
// a volume owner whose DATA puts and superblock rewrite are held in flight (FaultyStore.holdNext between its
// lease-guarded view and the real store) loses its lease (virtual time: it is paused past it); a second owner takes
// the volume over with another cache and writes; then the held requests reach the backend. Puts land in the skipped
// range or are refused, the superblock rewrite is refused (compare-and-swap on a version the successor replaced), and
// a third owner reads exactly the successor's data, byte for byte.
//
// The cluster is the shared default one from test/ceph/up.sh (memstore), started here if needed; FAIL if it cannot.

import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { GuardedStore } from "../../src/backend/guarded_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import { decodeSuperblock, skippedRangeOf } from "../../src/format/superblock_object.ts";
import { openUringDevice } from "../../ffi/uring_device.ts";
import type { Lease } from "../../src/volume/lease.ts";
import { takeOwnership } from "../../src/volume/ownership.ts";
import { Volume } from "../../src/volume/volume.ts";
import { type CephEnv, cephUp } from "../backend/_ceph.ts";
import { VirtualLeaseClock } from "../sim/virtual_lease_clock.ts";
import { type Backend, type BackendKind, backendOf, deleteVolume, lsvd, makeTempDir, readVolume, uniquePrefix, waitFor } from "./_volume_backends.ts";
import { Prng } from "../sim/prng.ts";

const VOLUME_BYTES = 16 * 1024 * 1024;
const CACHE_BYTES = 64 * 1024 * 1024;
const DURATION_MS = 30_000;
const BOOT = "5e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
/**
 * Puts are held until the successor took over: every object sealed after the first held one stays ahead of the
 * backend. Under load the batch idle timer seals many small objects, so the default limit (16) could make the first
 * owner's writes wait for puts that are released only after them; this test is about late landings, not back-pressure.
 */
const SEALED_AHEAD_UNBOUNDED = 1024;

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

interface Owner {
  volume: Volume;
  lease: Lease;
  faulty: FaultyStore;
  close(): Promise<void>;
}

/** Volume.open as process `pid` of host `host`: lease through a RetryingStore, the volume through guard + faults. */
async function openAs(backend: Backend, prefix: string, cachePath: string, host: string, pid: number, clock: VirtualLeaseClock): Promise<Owner> {
  const real = await backend.openStore();
  const leaseStore = new RetryingStore(real, { delayMsMin: 5, delayMsMax: 50 });
  const faulty = new FaultyStore(real, { seed: pid });
  let lease: Lease | null = null;
  const store: ObjectStore = new GuardedStore(faulty, () => lease!.check());
  const taken = await takeOwnership(
    { store: leaseStore, prefix, command: "serve", durationMs: DURATION_MS, clock, identity: { host, bootId: BOOT, pid, processStartTicks: 1 }, processRuns: () => false },
    store,
  );
  lease = taken.lease;
  const device = await openUringDevice(cachePath, { exclusive: true });
  const volume = await Volume.open({ owner: taken.owner, store, prefix, cache: device, pool: device.pool, batchBytes: 64 * 1024, batchIdleMs: 50, checkpointIntervalObjects: 4, gc: false, sealedObjectsAheadMax: SEALED_AHEAD_UNBOUNDED });
  return {
    volume,
    lease: taken.lease,
    faulty,
    async close() {
      await faulty.releaseHeld({ fail: true });
      await device.close();
      await leaseStore.close();
    },
  };
}

async function writeBlocks(volume: Volume, prng: Prng, model: Uint8Array | null, count: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    const offset = prng.int(VOLUME_BYTES / 16384) * 16384;
    const data = new Uint8Array(16384);
    prng.fill(data);
    model?.set(data, offset);
    await volume.write(offset, data, false);
  }
}

for (const kind of ["rados", "s3"] as BackendKind[]) {
  describe(`ownership on ${kind}`, () => {
    test("puts and a superblock rewrite held in flight past a takeover land in the skipped range or are refused; the successor's data reads back byte for byte", async () => {
      const backend = backendOf(kind, env);
      const directory = makeTempDir(`own-${kind}`);
      const prefix = uniquePrefix(`own${kind}`);
      const admin = await backend.openStore();
      const caches = [path.join(directory, "cache1"), path.join(directory, "cache2"), path.join(directory, "cache3")];
      try {
        await lsvd(backend, ["mkdisk", "--size", String(VOLUME_BYTES), backend.uri(prefix), ...backend.cliArgs]);
        for (const cache of caches) await lsvd(backend, ["mkcache", "--volume", backend.uri(prefix), "--size", String(CACHE_BYTES), cache, ...backend.cliArgs]);
        const prng = new Prng(kind === "rados" ? 71 : 72);
        const clock = new VirtualLeaseClock();

        const first = await openAs(backend, prefix, caches[0]!, "a", 1, clock);
        await writeBlocks(first.volume, prng, null, 40);
        await first.volume.flush();
        await waitFor("some objects durable", () => first.volume.stats().durableSeq > first.volume.recovery.logStartSeq + 2, 60_000);
        // From now on its next superblock rewrite (the next checkpoint's), then its next puts, travel for a long time.
        first.faulty.holdNext("putIfVersion", 1);
        await writeBlocks(first.volume, prng, null, 40);
        await first.volume.flush();
        await waitFor("a superblock rewrite held", () => first.faulty.heldCount >= 1, 60_000);
        first.faulty.holdNext("putIfAbsent", 3);
        await writeBlocks(first.volume, prng, null, 40);
        await first.volume.flush();
        await waitFor("puts held", () => first.faulty.heldCount >= 4, 60_000);
        clock.stop(DURATION_MS); // and it is paused past its lease

        const second = await openAs(backend, prefix, caches[1]!, "b", 2, clock);
        expect(second.lease.taken.case).toBe("@E");
        const range = second.volume.recovery.skippedRange!;
        expect(range).not.toBeNull();
        const model = await readVolume(second.volume);
        await writeBlocks(second.volume, prng, model, 60);
        await second.volume.close();
        await second.lease.release();
        await second.close();

        // The held requests reach the backend now.
        const held = first.faulty.heldCount;
        await first.faulty.releaseHeld();
        const landed: number[] = [];
        for (const name of await admin.list(`${prefix}.`)) {
          const seq = parseObjectName(prefix, name);
          if (seq !== null && seq >= range.first && seq <= range.last) landed.push(seq);
        }
        expect(held).toBe(4);
        expect(landed.length).toBeGreaterThan(0);
        const superblock = decodeSuperblock(await admin.get(prefix));
        expect(superblock.ownerEpoch).toBe(second.lease.epoch); // the held rewrite was refused
        for (const seq of landed) expect(skippedRangeOf(superblock.skipped, seq)).not.toBeNull();
        await clock.advance(0);
        expect(first.lease.fencedReason).not.toBeNull();
        first.volume.abandon();
        await first.close();

        const third = await openAs(backend, prefix, caches[2]!, "c", 3, clock);
        expect(Buffer.from(await readVolume(third.volume)).equals(Buffer.from(model))).toBe(true);
        await third.volume.close();
        await third.lease.release();
        await third.close();
        // The late landings were deleted when the third owner opened.
        for (const name of await admin.list(`${prefix}.`)) {
          const seq = parseObjectName(prefix, name);
          if (seq !== null) expect(landed).not.toContain(seq);
        }
      } finally {
        await deleteVolume(admin, prefix);
        await admin.close();
        fs.rmSync(directory, { recursive: true, force: true });
      }
    }, 300_000);
  });
}
