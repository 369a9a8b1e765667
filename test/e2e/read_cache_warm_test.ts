// The read cache stays warm across a restart, a clean stop and a SIGKILL alike (docs/architecture.md, "The read
// path"): a working set written and read through NBD is served after the restart with every backend object made
// unreadable (copied aside and truncated once recovery is done: a kept read handle sees the empty file too), and
// every byte is what was written.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LSVD_BINARY as LSVD_BINARY_PATH, LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, runOk } from "./_harness.ts";

const MIB = 1024 * 1024;
const WORKING_SET_BYTES = 4 * MIB;
const WORKING_SET_BLOCKS = WORKING_SET_BYTES / 4096;
const TEST_TIMEOUT_MS = 120_000;
const PERSIST_WAIT_MS = 30_000;

/** argv: uri mode (write|read) seed. Write: seeded data over the working set. Read: 4 KiB reads, checked. */
const CLIENT_PY = `
import random, sys, nbd
uri, mode, seed, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = random.Random(seed).randbytes(size)
h = nbd.NBD()
h.connect_uri(uri)
if mode == "write":
    h.pwrite(data, 0)
    h.flush()
else:
    order = list(range(0, size, 4096))
    random.Random(seed + 1).shuffle(order)
    for offset in order:
        assert h.pread(4096, offset) == data[offset:offset + 4096], offset
h.shutdown()
`;

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(async () => {
  await cleanupAll();
});

/** Object files of the volume (names PREFIX.SEQ), copied aside and truncated: any backend read of them fails. */
function makeObjectsUnreadable(backendDir: string, asideDir: string): number {
  let count = 0;
  for (const name of readdirSync(backendDir)) {
    if (!/^vol\.[0-9a-f]+$/.test(name)) continue;
    copyFileSync(join(backendDir, name), join(asideDir, name));
    truncateSync(join(backendDir, name), 0);
    count += 1;
  }
  return count;
}

/** True once a persist round's debug line says the index named at least `blocks` blocks (false after the wait). */
async function waitForIndexed(server: LsvdServer, blocks: number, waitMs = PERSIST_WAIT_MS): Promise<boolean> {
  const pattern = /index persisted, \d+ page\(s\), (\d+) blocks indexed/g;
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    const counts = [...server.log.matchAll(pattern)].map((match) => Number(match[1]));
    if (counts.some((count) => count >= blocks)) return true;
    await Bun.sleep(50);
  }
  return false;
}

async function requireIndexed(server: LsvdServer, blocks: number): Promise<void> {
  if (!(await waitForIndexed(server, blocks))) throw new Error(`the read cache index never named ${blocks} blocks:\n${server.log}`);
}

describe("read cache warm across restarts", () => {
  for (const ending of ["clean stop", "SIGKILL"] as const) {
    test(`after a ${ending}, the working set is served from the cache with the backend objects unreadable`, async () => {
      const paths = await createVolume("rcache-warm", { size: "64m", cacheSize: "64m" });
      const client = join(paths.dir, "client.py");
      writeFileSync(client, CLIENT_PY);
      const aside = join(paths.dir, "aside");
      await runOk(["mkdir", aside]);
      const serve = (cache = "--read-cache") => LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: [cache, "--no-gc"] });
      // Written without the read cache, so that the entries come from the backend reads of the run that ends below.
      let server = await serve("--no-read-cache");
      await runOk(["python3", client, server.uri, "write", "7", String(WORKING_SET_BYTES)]);
      expect((await server.stop()).exitCode).toBe(0); // everything in the backend, the journal empty

      server = await serve();
      // Fills from the backend; another pass fills what a bounded fill skipped (at most a few passes).
      for (let pass = 0; pass < 4; pass++) {
        await runOk(["python3", client, server.uri, "read", "7", String(WORKING_SET_BYTES)]);
        if (await waitForIndexed(server, WORKING_SET_BLOCKS, 5_000)) break;
      }
      if (ending === "clean stop") expect((await server.stop()).exitCode).toBe(0);
      else {
        await requireIndexed(server, WORKING_SET_BLOCKS);
        await server.kill();
      }

      server = await serve();
      expect(server.log).toMatch(new RegExp(`read cache: ${WORKING_SET_BLOCKS} blocks kept from the persisted index`));
      expect(makeObjectsUnreadable(paths.backendDir, aside)).toBeGreaterThan(0);
      await runOk(["python3", client, server.uri, "read", "7", String(WORKING_SET_BYTES)]);
      await server.kill();
    }, TEST_TIMEOUT_MS);
  }

  test("write-to-read migration: blocks written are served from the cache once their objects are durable", async () => {
    const paths = await createVolume("rcache-migrate", { size: "64m", cacheSize: "64m" });
    const client = join(paths.dir, "client.py");
    writeFileSync(client, CLIENT_PY);
    const aside = join(paths.dir, "aside");
    await runOk(["mkdir", aside]);
    const server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: ["--read-cache", "--no-gc", "--batch-idle-ms", "100"] });
    await runOk(["python3", client, server.uri, "write", "9", String(WORKING_SET_BYTES)]);
    // Only adoption fills the cache here (nothing was read): the index names the blocks once their object is
    // durable and its journal records released.
    await requireIndexed(server, WORKING_SET_BLOCKS);
    expect(makeObjectsUnreadable(paths.backendDir, aside)).toBeGreaterThan(0);
    await runOk(["python3", client, server.uri, "read", "9", String(WORKING_SET_BYTES)]);
    await server.kill();
  }, TEST_TIMEOUT_MS);

  test("a shared read-cache device (mkcache --read-cache-only): warm after a SIGKILL with the backend objects unreadable; refused as a --cache", async () => {
    const paths = await createVolume("rcache-shared", { size: "64m", cacheSize: "64m" });
    const client = join(paths.dir, "client.py");
    writeFileSync(client, CLIENT_PY);
    const aside = join(paths.dir, "aside");
    await runOk(["mkdir", aside]);
    const shared = join(paths.dir, "shared.rc");
    expect((await runOk([LSVD_BINARY_PATH, "mkcache", "--read-cache-only", "--size", "32m", shared])).stdout).toContain("formatted shared read-cache device");
    expect((await runOk([LSVD_BINARY_PATH, "parse", shared])).stdout).toContain("READ-CACHE (shared)");
    expect((await runOk([LSVD_BINARY_PATH, "mkcache", "--show", shared])).stdout).toContain("READ-CACHE (shared)");
    const asCache = await lsvd(["serve", "--volume", paths.volume, "--cache", shared, "--socket", join(paths.dir, "s")]);
    expect(asCache.exitCode).not.toBe(0);
    expect(asCache.stderr).toContain("is a shared read-cache device");
    const serve = () => LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: ["--read-cache-device", shared, "--no-gc", "--batch-idle-ms", "100"] });
    let server = await serve();
    expect(server.log).toContain("read cache: shared device");
    // Written through the server: the blocks enter the shared cache as their objects become durable (adoption).
    await runOk(["python3", client, server.uri, "write", "11", String(WORKING_SET_BYTES)]);
    await requireIndexed(server, WORKING_SET_BLOCKS);
    await server.kill();
    server = await serve();
    expect(server.log).toMatch(new RegExp(`read cache device ${shared.replace(/[.]/g, "\\.")}: [^,]+, ${WORKING_SET_BLOCKS} blocks kept`));
    expect(makeObjectsUnreadable(paths.backendDir, aside)).toBeGreaterThan(0);
    await runOk(["python3", client, server.uri, "read", "11", String(WORKING_SET_BYTES)]);
    await server.kill();
  }, TEST_TIMEOUT_MS);

  test("a file volume is served without the read cache unless asked; both flags together are refused", async () => {
    const paths = await createVolume("rcache-flags", { size: "64m", cacheSize: "64m" });
    const both = await lsvd(["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", join(paths.dir, "s"), "--read-cache", "--no-read-cache"]);
    expect(both.exitCode).toBe(1);
    expect(both.stderr).toContain("--read-cache and --no-read-cache");
    const plain = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir });
    expect(plain.log).not.toContain("read cache:");
    await plain.stop();
    const asked = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, extraArgs: ["--read-cache"] });
    expect(asked.log).toContain("read cache: 0 blocks kept");
    await asked.stop();
  }, TEST_TIMEOUT_MS);
});
