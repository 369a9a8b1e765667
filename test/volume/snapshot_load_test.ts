// Snapshots made while serving, under a stamped random write load from several NBD connections (the real NBD server
// in process over the real volume code; memory backend and cache): each snapshot holds every write acknowledged
// before Volume.createSnapshot was called and none started after it returned; what each reads then stays exactly the
// same through garbage collection rounds, a crash (the process's state dropped) and the loss of the cache.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNbdServer, type NbdServer } from "../../src/nbd/server.ts";
import { SnapshotDevice } from "../../src/volume/snapshot_device.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { NbdClient } from "../crash/_nbd_client.ts";
import { MemoryCacheDevice } from "../sim/memory_cache_device.ts";
import { crashWorld, formatCache, immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";

const BLOCK = 4096;
const CONNECTIONS = 4;
const SNAPSHOTS = 5;
const OPTIONS = { clock: immediateClock, gc: true, gcThreshold: 0.9, gcIntervalMs: 3_600_000, gcForceCheckpointMs: 0, batchIdleMs: 20 };
const dir = mkdtempSync(join(tmpdir(), "lsvd-snapshot-load-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Per block, its writes in order: [write number, event count when started, when acknowledged]. */
type History = Map<number, Array<{ n: number; started: number; acked: number }>>;

function stamp(block: number, n: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  const view = new DataView(data.buffer);
  for (let at = 0; at < BLOCK; at += 8) {
    view.setUint32(at, block, true);
    view.setUint32(at + 4, n, true);
  }
  return data;
}

/** The write number a block of a read holds (0: never written); throws if the block is not one stamp throughout. */
function stampOf(bytes: Uint8Array, block: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset + block * BLOCK, BLOCK);
  const n = view.getUint32(4, true);
  for (let at = 0; at < BLOCK; at += 8) {
    const ok = n === 0 ? view.getUint32(at, true) === 0 && view.getUint32(at + 4, true) === 0 : view.getUint32(at, true) === block && view.getUint32(at + 4, true) === n;
    if (!ok) throw new Error(`block ${block} is torn or misplaced`);
  }
  return n;
}

async function readAll(device: { read(offset: number, length: number): Promise<Uint8Array> }, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  for (let offset = 0; offset < bytes; offset += 256 * 1024) out.set(await device.read(offset, 256 * 1024), offset);
  return out;
}

async function snapshotBytes(world: World, name: string): Promise<Uint8Array> {
  return await readAll(await SnapshotDevice.open(world.store, PREFIX, name), world.volumeBytes);
}

describe("snapshots under load", () => {
  test("several NBD connections write while snapshots are made; each holds what it must; GC, a crash and a lost cache change none", async () => {
    const world = await makeWorld(1420, { volumeBytes: 2 * 1024 * 1024 });
    let volume: Volume = await openVolume(world, OPTIONS);
    const socketPath = join(dir, "nbd.sock");
    const server: NbdServer = await startNbdServer({ socketPath, device: volume });
    const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => NbdClient.connect(socketPath)));
    const history: History = new Map();
    let events = 0;
    let writing = true;
    const blocks = world.volumeBytes / BLOCK;
    // Connection i owns the blocks equal to i modulo CONNECTIONS and writes them one at a time.
    const loads = clients.map(async (client, index) => {
      for (let n = index + 1; writing; n += CONNECTIONS) {
        const block = world.prng.int(blocks / CONNECTIONS) * CONNECTIONS + index;
        const entry = { n, started: ++events, acked: Number.POSITIVE_INFINITY };
        history.set(block, [...(history.get(block) ?? []), entry]);
        await client.write(block * BLOCK, stamp(block, n));
        entry.acked = ++events;
      }
    });
    const taken: Array<{ name: string; callStarted: number; returned: number }> = [];
    for (let index = 0; index < SNAPSHOTS; index++) {
      await Bun.sleep(100);
      const callStarted = ++events;
      await volume.createSnapshot(`s${index}`);
      taken.push({ name: `s${index}`, callStarted, returned: ++events });
    }
    writing = false;
    await Promise.all(loads);
    for (const client of clients) client.disconnect();
    await server.close();

    const firstReads = new Map<string, Uint8Array>();
    for (const snap of taken) {
      const bytes = await snapshotBytes(world, snap.name);
      firstReads.set(snap.name, bytes);
      for (let block = 0; block < blocks; block++) {
        const writes = history.get(block) ?? [];
        const n = stampOf(bytes, block);
        const mustHave = writes.filter((write) => write.acked < snap.callStarted).at(-1)?.n ?? 0;
        const mayHave = writes.filter((write) => write.started < snap.returned).at(-1)?.n ?? 0;
        if (n < mustHave || n > mayHave) throw new Error(`snapshot ${snap.name}, block ${block}: write ${n}, expected ${mustHave}..${mayHave}`);
      }
    }
    const total = [...history.values()].reduce((sum, writes) => sum + writes.length, 0);
    console.log(`snapshot_load_test: ${total} writes from ${CONNECTIONS} connections, ${SNAPSHOTS} snapshots made during them`);
    expect(total).toBeGreaterThan(SNAPSHOTS * CONNECTIONS);

    const same = async (when: string) => {
      for (const snap of taken) expect(Buffer.from(await snapshotBytes(world, snap.name)).equals(Buffer.from(firstReads.get(snap.name)!)), `${snap.name} ${when}`).toBe(true);
    };
    await volume.collectGarbageUntilQuiet();
    await same("after GC");
    crashWorld(world, volume);
    volume = await openVolume(world, OPTIONS);
    await volume.collectGarbageUntilQuiet();
    await same("after a crash and GC");
    crashWorld(world, volume);
    world.device = new MemoryCacheDevice(world.device.sizeBytes, world.prng);
    formatCache(world.device, world.volUuid, 7000);
    volume = await openVolume(world, OPTIONS);
    await same("after the cache was lost");
    await volume.close();
  }, 60_000);
});
