// Garbage collection through the real binary: a volume filled and overwritten through `lsvd serve` (nbdcopy,
// qemu-io), then `lsvd gc` deletes the objects that hold nothing live and cleans the half-dead ones; the volume
// still reads back byte for byte, fsck finds nothing wrong, and `lsvd serve` opens it again.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, makeTempDir, runOk, sha256File, writeRandomFile } from "./_harness.ts";

const MIB = 1024 * 1024;
const VOLUME_BYTES = 48 * MIB;
const SEED = Number(process.env.LSVD_SEED ?? 0x6c);
const TEST_TIMEOUT_MS = 180_000;

let dataDir: string;

beforeAll(async () => {
  await ensureBuilt();
  dataDir = makeTempDir("gc-data");
});

afterAll(cleanupAll);

function dataObjects(backendDir: string): number {
  return readdirSync(backendDir).filter((name) => /^vol\.[0-9a-f]{8}$/.test(name)).length;
}

describe("lsvd gc", () => {
  test(
    "overwritten data is reclaimed; the volume reads back the same, fsck is clean, serve opens it",
    async () => {
      const paths = await createVolume("gc", { size: "48m", cacheSize: "256m" });
      const first = join(dataDir, "first.raw");
      const second = join(dataDir, "second.raw");
      const model = join(dataDir, "model.raw");
      writeRandomFile(first, VOLUME_BYTES, SEED);
      writeRandomFile(second, VOLUME_BYTES, SEED + 1);
      // GC off while serving, so that what `lsvd gc` finds is exactly what this test made.
      let server = await LsvdServer.start({ ...paths, transport: "unix", extraArgs: ["--no-gc"] });
      await runOk(["nbdcopy", first, server.uri]);
      await runOk(["nbdcopy", second, server.uri]); // every object of the first copy is dead now
      // Every other MiB of the first half again: the second copy's objects there become half dead.
      const pattern: string[] = [];
      for (let mib = 0; mib < 24; mib += 2) pattern.push("-c", `write -P 0x5a ${mib * MIB} ${MIB}`);
      await runOk(["qemu-io", "-f", "raw", ...pattern, server.uri]);
      expect((await server.stop()).exitCode).toBe(0);

      const expected = readFileSync(second);
      for (let mib = 0; mib < 24; mib += 2) expected.fill(0x5a, mib * MIB, (mib + 1) * MIB);
      writeFileSync(model, expected);
      const before = dataObjects(paths.backendDir);

      // 0.6: the second copy's objects in the first half are exactly half live, which the default 0.5 leaves alone.
      const gc = await lsvd(["gc", "--json", "--gc-threshold", "0.6", "--volume", paths.volume, "--cache", paths.cache]);
      expect(gc.exitCode).toBe(0);
      const result = JSON.parse(gc.stdout);
      expect(result.errors).toBe(0);
      // The first copy's 6 objects (8 MiB each) are dead, and the 3 half-overwritten ones once cleaned.
      expect(result.objectsDeleted).toBeGreaterThanOrEqual(9);
      expect(result.objectsCleaned).toBeGreaterThan(0);
      expect(result.copiedBytes).toBeGreaterThan(0);
      expect(result.backendObjectsBefore).toBe(before);
      const after = dataObjects(paths.backendDir);
      expect(result.backendObjectsAfter).toBe(after);
      expect(after).toBeLessThanOrEqual(before - 5);

      const fsck = await lsvd(["fsck", "--json", paths.volume]);
      expect(fsck.exitCode).toBe(0);
      expect(JSON.parse(fsck.stdout).problems).toEqual([]);

      server = await LsvdServer.start({ ...paths, transport: "unix" });
      const output = join(dataDir, "out.raw");
      await runOk(["nbdcopy", server.uri, output]);
      expect(await sha256File(output)).toBe(await sha256File(model));
      rmSync(output, { force: true });
      expect((await server.stop()).exitCode).toBe(0);

      // A second run finds nothing more to do.
      const again = JSON.parse((await lsvd(["gc", "--json", "--volume", paths.volume, "--cache", paths.cache])).stdout);
      expect(again.objectsCleaned).toBe(0);
      expect(again.backendObjectsAfter).toBeLessThanOrEqual(again.backendObjectsBefore);
    },
    TEST_TIMEOUT_MS,
  );

  test("a cache in use by a server is refused by gc, a second serve and mkcache; the data is untouched", async () => {
    const paths = await createVolume("gc-lock", { size: "16m", cacheSize: "64m" });
    const input = join(dataDir, "lock.raw");
    writeRandomFile(input, 16 * MIB, SEED + 2);
    const server = await LsvdServer.start({ ...paths, transport: "unix" });
    await runOk(["nbdcopy", input, server.uri]);
    // gc and a second serve are refused by the volume's lease before they reach the cache (its lock is the second
    // line of defence: ownership_test.ts); mkcache takes no lease and meets the cache lock.
    const gc = await lsvd(["gc", "--volume", paths.volume, "--cache", paths.cache]);
    expect(gc.exitCode).toBe(1);
    expect(gc.stderr).toContain(`is owned by serve pid ${server.process.pid}`);
    const mkcache = await lsvd(["mkcache", "--force", "--volume", paths.volume, paths.cache]);
    expect(mkcache.exitCode).toBe(1);
    expect(mkcache.stderr).toContain("in use by another process");
    const second = await lsvd(["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", join(paths.dir, "second.sock")]);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`is owned by serve pid ${server.process.pid}`);
    const output = join(dataDir, "lock.out");
    await runOk(["nbdcopy", server.uri, output]);
    expect(await sha256File(output)).toBe(await sha256File(input));
    // SIGKILL releases the lock with the process, and gc takes the dead server's lease over at once: it then opens
    // the cache (and replays its journal).
    await server.kill();
    const after = await lsvd(["gc", "--json", "--volume", paths.volume, "--cache", paths.cache]);
    expect(after.exitCode).toBe(0);
  }, TEST_TIMEOUT_MS);

  test("--help, and a bad threshold is refused with exit 1", async () => {
    const help = await lsvd(["gc", "--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain("Usage: lsvd gc");
    const bad = await lsvd(["gc", "--volume", "/nonexistent/vol", "--cache", "/nonexistent/cache", "--gc-threshold", "1.5"]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain("--gc-threshold");
  });
});
