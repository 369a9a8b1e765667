// Snapshots end to end, with the real binary and real NBD connections: a stamped random write load from several
// connections, snapshots made offline between serves (after a clean stop, after kill -9 with --cache), each served
// read-only as VOLUME@SNAP (while the head is served too) and checked against the model after GC, a kill -9 and a
// lost cache; rollback; mkdisk --force and rm refused; deleting the snapshots lets GC bring the backend back near the
// head's live size (the numbers are printed).

import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { NbdClient } from "../crash/_nbd_client.ts";
import { cleanupAll, createVolume, LsvdServer, lsvd, type VolumePaths } from "./_harness.ts";
import { Prng } from "../sim/prng.ts";

const TEST_TIMEOUT_MS = 240_000;
const VOLUME_BYTES = 32 * 1024 * 1024;
const BLOCK = 4096;
const CONNECTIONS = 4;

afterAll(cleanupAll);

/** Block `block` stamped with its write number: every 4 KiB write is unique, so a misplaced block is always seen. */
function stamped(block: number, writeNumber: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  const view = new DataView(data.buffer);
  for (let at = 0; at < BLOCK; at += 8) {
    view.setUint32(at, block, true);
    view.setUint32(at + 4, writeNumber, true);
  }
  return data;
}

/** `count` random block writes spread over CONNECTIONS connections at once, each waited for; the model follows. */
async function writeLoad(server: LsvdServer, model: Uint8Array, count: number, seed: number, firstWrite: number): Promise<void> {
  const socket = server.uri.replace("nbd+unix:///?socket=", "");
  const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => NbdClient.connect(socket)));
  const random = new Prng(seed);
  const blocks = VOLUME_BYTES / BLOCK;
  // Each connection owns the blocks equal to its index modulo CONNECTIONS: writes in flight never overlap, so the
  // model is exact whatever order they complete in.
  await Promise.all(
    clients.map(async (client, index) => {
      for (let i = 0; i < count / CONNECTIONS; i++) {
        const block = random.int(blocks / CONNECTIONS) * CONNECTIONS + index;
        const data = stamped(block, firstWrite + i * CONNECTIONS + index);
        model.set(data, block * BLOCK);
        await client.write(block * BLOCK, data);
      }
      await client.flush();
    }),
  );
  for (const client of clients) client.disconnect();
}

async function readWhole(server: LsvdServer): Promise<Uint8Array> {
  const client = await NbdClient.connect(server.uri.replace("nbd+unix:///?socket=", ""));
  const out = new Uint8Array(VOLUME_BYTES);
  for (let offset = 0; offset < VOLUME_BYTES; offset += 1024 * 1024) out.set(await client.read(offset, 1024 * 1024), offset);
  client.disconnect();
  return out;
}

function expectSame(actual: Uint8Array, model: Uint8Array, what: string): void {
  for (let block = 0; block < VOLUME_BYTES / BLOCK; block++) {
    const a = actual.subarray(block * BLOCK, (block + 1) * BLOCK);
    const m = model.subarray(block * BLOCK, (block + 1) * BLOCK);
    if (!Buffer.from(a).equals(Buffer.from(m))) throw new Error(`${what}: block ${block} differs (read stamp ${new DataView(a.buffer, a.byteOffset).getUint32(4, true)}, expected ${new DataView(m.buffer, m.byteOffset).getUint32(4, true)})`);
  }
}

async function expectSnapshot(paths: VolumePaths, name: string, model: Uint8Array, what: string): Promise<void> {
  const server = await LsvdServer.start({ volume: `${paths.volume}@${name}`, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: ["--read-only"] });
  expectSame(await readWhole(server), model, `snapshot ${name}, ${what}`);
  expect((await server.stop()).exitCode).toBe(0);
}

async function ok(args: string[]): Promise<string> {
  const result = await lsvd(args);
  if (result.exitCode !== 0) throw new Error(`lsvd ${args.join(" ")}: exit ${result.exitCode}\n${result.stderr}`);
  return result.stdout;
}

describe("snapshots (real processes)", () => {
  test(
    "stamped writes from several connections; snapshots made, served read-only, kept by GC, kill -9 and a lost cache; rollback; deletion frees the space",
    async () => {
      const paths = await createVolume("snap", { size: "32m", cacheSize: "128m" });
      const serveArgs = ["--batch-size", "1m", "--gc-threshold", "0.9"];
      const model = new Uint8Array(VOLUME_BYTES);
      let server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await writeLoad(server, model, 4000, 1, 1);
      expect((await server.stop()).exitCode).toBe(0);
      await ok(["snapshot", "create", paths.volume, "s1"]);
      const s1 = model.slice();

      server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await writeLoad(server, model, 4000, 2, 10_001);
      await server.kill(); // kill -9: acknowledged writes are in the cache's journal only
      const refused = await lsvd(["snapshot", "create", paths.volume, "s2"]);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toContain("--cache");
      await ok(["snapshot", "create", "--cache", paths.cache, paths.volume, "s2"]);
      const s2 = model.slice();
      const listed = JSON.parse(await ok(["snapshot", "list", "--json", paths.volume]));
      expect(listed.snapshots.map((snap: { name: string }) => snap.name)).toEqual(["s1", "s2"]);

      // The head is served (and overwritten) while a snapshot is served by another process.
      server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await writeLoad(server, model, 4000, 3, 20_001);
      await expectSnapshot(paths, "s1", s1, "while the head is served");
      await server.kill();
      await ok(["gc", "--cache", paths.cache, "--gc-threshold", "0.9", paths.volume]);
      await expectSnapshot(paths, "s1", s1, "after kill -9 and gc");
      await expectSnapshot(paths, "s2", s2, "after kill -9 and gc");
      const fsck = await lsvd(["fsck", "--json", paths.volume]);
      expect(fsck.exitCode).toBe(0);

      // The cache is lost: snapshots live in the backend alone.
      await ok(["mkcache", "--volume", paths.volume, "--size", "128m", "--force", paths.cache]);
      await expectSnapshot(paths, "s2", s2, "after the cache was lost");
      server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      expectSame(await readWhole(server), model, "head after gc and a new cache");
      expect((await server.stop()).exitCode).toBe(0);

      // A volume with snapshots is neither replaced nor removed.
      const mkdisk = await lsvd(["mkdisk", "--force", "--size", "32m", paths.volume]);
      expect(mkdisk.exitCode).toBe(1);
      expect(mkdisk.stderr).toContain("s1, s2");
      const rm = await lsvd(["rm", paths.volume]);
      expect(rm.exitCode).toBe(1);
      expect(rm.stderr).toContain("s1, s2");

      // Rollback: the head reads as s1, also when served with the old cache.
      await ok(["snapshot", "rollback", paths.volume, "s1"]);
      server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      expectSame(await readWhole(server), s1, "head after rollback to s1");
      await writeLoad(server, s1, 1000, 4, 30_001);
      expect((await server.stop()).exitCode).toBe(0);

      const before = JSON.parse(await ok(["info", "--json", paths.volume]));
      // s2's content is gone from the head (rolled back to s1, then written): objects only s2 names hold it.
      expect(before.snapshots.find((snap: { name: string }) => snap.name === "s2").bytesOnlyItHolds).toBeGreaterThan(0);
      expect(before.snapshots.map((snap: { created: string | null }) => snap.created !== null)).toEqual([true, true]);
      await ok(["snapshot", "delete", paths.volume, "s1"]);
      await ok(["snapshot", "delete", paths.volume, "s2"]);
      for (let round = 0; round < 2; round++) await ok(["gc", "--cache", paths.cache, "--gc-threshold", "0.9", paths.volume]);
      const after = JSON.parse(await ok(["info", "--json", paths.volume]));
      console.log(
        `snapshot_test: backend ${before.backendBytes} bytes (${before.objects} objects) with 2 snapshots, live ${before.liveBytes}; after deleting them and gc: ${after.backendBytes} bytes (${after.objects} objects), live ${after.liveBytes}`,
      );
      expect(after.snapshots).toEqual([]);
      expect(after.backendBytes).toBeLessThan(before.backendBytes);
      expect(after.backendBytes).toBeLessThan(1.5 * after.liveBytes + 2 * 1024 * 1024);
      server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      expectSame(await readWhole(server), s1, "head after the snapshots were deleted");
      expect((await server.stop()).exitCode).toBe(0);
      expect(join(paths.dir)).toBeTruthy();
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "on a served volume, lsvd snapshot create and delete reach the serving process: a snapshot holds every write acknowledged before the command, none started after it returned",
    async () => {
      const paths = await createVolume("snapserved", { size: "32m", cacheSize: "128m" });
      const serveArgs = ["--batch-size", "1m", "--admin-socket", join(paths.dir, "admin.sock")];
      const model = new Uint8Array(VOLUME_BYTES);
      const server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await writeLoad(server, model, 2000, 11, 1);
      const made = JSON.parse(await ok(["snapshot", "create", "--json", paths.volume, "live1"]));
      expect(made.seq).toBeGreaterThan(0);
      expect(made.servedBy).toBe(join(paths.dir, "admin.sock"));
      const live1 = model.slice();
      await writeLoad(server, model, 2000, 12, 10_001);
      await expectSnapshot(paths, "live1", live1, "made by the serving process, head written since");
      await ok(["snapshot", "create", paths.volume, "live2"]);
      const live2 = model.slice();
      // Rollback stays offline: the served volume's lease refuses it.
      const rollback = await lsvd(["snapshot", "rollback", paths.volume, "live1"]);
      expect(rollback.exitCode).toBe(1);
      await server.kill(); // kill -9: the snapshots were durable when the commands returned
      await expectSnapshot(paths, "live2", live2, "after kill -9 of the server that made it");
      const again = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      expectSame(await readWhole(again), model, "head after kill -9 and restart");
      await ok(["snapshot", "delete", paths.volume, "live1"]);
      const listed = JSON.parse(await ok(["snapshot", "list", "--json", paths.volume]));
      expect(listed.snapshots.map((snap: { name: string }) => snap.name)).toEqual(["live2"]);
      const duplicate = await lsvd(["snapshot", "create", paths.volume, "live2"]);
      expect(duplicate.exitCode).toBe(1);
      expect(duplicate.stderr).toContain("live2");
      expect((await again.stop()).exitCode).toBe(0);
      await expectSnapshot(paths, "live2", live2, "after a clean stop");
    },
    TEST_TIMEOUT_MS,
  );
});
