// One writer per volume, with the real binary on the file backend (issue 12, items 1 and 3; docs/architecture.md,
// "Ownership and fencing"):
// - a second serve (another cache, or the same) is refused at once, exit 1, naming the first; mkdisk --force,
//   fsck --repair and gc on a served volume are refused and change nothing;
// - the holder killed with SIGKILL: a restart on this host takes the lease over at once, long before it expires;
// - a lease held by another host blocks until it expires, then the volume is taken over;
// - lsvd lock show / lock break (refused for a running holder without --force; with it, the holder is fenced and
//   exits 1, and the next serve waits the broken lease out);
// - a holder stopped with SIGSTOP past its lease, resumed after another server took the volume over and wrote: it
//   exits non-zero saying so, puts nothing, and the successor's data reads back byte for byte (also through the
//   stopped holder's own cache, whose journal the log has gone past).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { v4 as uuidv4 } from "uuid";
import { encodeLease, LeaseState } from "../../src/format/lease_object.ts";
import { LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, makeTempDir, run, runOk, writeRandomFile, type VolumePaths } from "./_harness.ts";

const MIB = 1024 * 1024;
const TEST_TIMEOUT_MS = 180_000;
const SEED = Number(process.env.LSVD_SEED ?? 0x0e7e);

let dataDir: string;

beforeAll(async () => {
  await ensureBuilt();
  dataDir = makeTempDir("owner-data");
});

afterAll(cleanupAll);

/** Every backend object (names, sizes, mtimes), leaving out the lease (renewed all the time) and hidden files. */
function backendListing(paths: VolumePaths): string {
  return readdirSync(paths.backendDir)
    .filter((name) => !name.startsWith(".") && !name.endsWith(".lease"))
    .sort()
    .map((name) => {
      const stat = statSync(join(paths.backendDir, name));
      return `${name} ${stat.size} ${stat.mtimeMs}`;
    })
    .join("\n");
}

async function mkcache(paths: VolumePaths, name: string): Promise<string> {
  const cache = join(paths.dir, name);
  await runOk([await ensureBuilt(), "mkcache", "--volume", paths.volume, "--size", "64m", cache]);
  return cache;
}

/** Random bytes (seeded), written to the export at `offset` with nbdsh, then flushed; returns them. */
async function pwrite(uri: string, offset: number, bytes: number, seed: number): Promise<Uint8Array> {
  const file = join(dataDir, `w.${seed}.raw`);
  writeRandomFile(file, bytes, seed);
  const script = `d = open(${JSON.stringify(file)}, "rb").read()\nh.pwrite(d, ${offset})\nh.flush()`;
  await runOk(["nbdsh", "-u", uri, "-c", script], { timeoutMs: 120_000 });
  return new Uint8Array(readFileSync(file));
}

/** The whole export. */
async function readAll(uri: string): Promise<Uint8Array> {
  const out = join(dataDir, `r.${Math.random().toString(36).slice(2, 8)}.raw`);
  await runOk(["nbdcopy", uri, out], { timeoutMs: 120_000 });
  return new Uint8Array(readFileSync(out));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a).equals(Buffer.from(b));
}

interface LockShow {
  status: string;
  epoch: number | null;
  holder: { command: string; pid: number; host: string; addresses: string[]; running: string } | null;
  expiresInMs: number | null;
  superblockEpoch: number | null;
}

async function lockShow(volume: string): Promise<LockShow> {
  const result = await lsvd(["lock", "show", "--json", volume]);
  expect(result.exitCode).toBe(0);
  return JSON.parse(result.stdout) as LockShow;
}

async function waitUntil(what: string, condition: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await Bun.sleep(100);
  }
}

/** Starts a server once the volume's lease lets it (a refusal exits 1 naming the holder: try again). */
async function startWhenFree(options: Parameters<typeof LsvdServer.start>[0]): Promise<LsvdServer> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await LsvdServer.start(options);
    } catch (error) {
      if (!String(error).includes("is owned by") || attempt >= 100) throw error;
      await Bun.sleep(200);
    }
  }
}

test(
  "a second serve is refused at once, naming the first, with another cache or the same; mkdisk --force, fsck --repair and gc too",
  async () => {
    const paths = await createVolume("owner-two", { size: "32m", cacheSize: "64m" });
    const otherCache = await mkcache(paths, "cache2");
    const first = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
    const data = await pwrite(first.uri, 0, 8 * MIB, SEED);
    const before = backendListing(paths);
    const socket = join(paths.dir, "second.sock");
    for (const cache of [otherCache, paths.cache]) {
      const second = await lsvd(["serve", "--volume", paths.volume, "--cache", cache, "--socket", socket]);
      expect(second.exitCode).toBe(1);
      expect(second.stderr).toContain(`is owned by serve pid ${first.process.pid} on host ${hostname()} serving ${first.uri}`);
      expect(second.stderr).toContain("lsvd lock show");
      expect(second.stderr).not.toContain("recovery:");
    }
    const mkdisk = await lsvd(["mkdisk", "--force", "--size", "32m", paths.volume]);
    expect(mkdisk.exitCode).toBe(1);
    expect(mkdisk.stderr).toContain(`owned by serve pid ${first.process.pid}`);
    const fsck = await lsvd(["fsck", "--repair", paths.volume]);
    expect(fsck.exitCode).toBe(8);
    expect(fsck.stderr).toContain(`owned by serve pid ${first.process.pid}`);
    const gc = await lsvd(["gc", "--volume", paths.volume, "--cache", otherCache]);
    expect(gc.exitCode).toBe(1);
    expect(gc.stderr).toContain(`owned by serve pid ${first.process.pid}`);
    // A plain fsck only reads: allowed.
    expect((await lsvd(["fsck", paths.volume])).exitCode).toBe(0);

    expect(backendListing(paths)).toBe(before);
    expect(first.running).toBe(true);
    expect(sameBytes((await readAll(first.uri)).subarray(0, 8 * MIB), data)).toBe(true);
    expect((await first.stop()).exitCode).toBe(0);
    expect((await lockShow(paths.volume)).status).toBe("released");
    // Released: gc (another command) takes it and gives it back.
    expect((await lsvd(["gc", "--volume", paths.volume, "--cache", paths.cache])).exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);

test(
  "the holder killed with SIGKILL: a restart on this host takes the lease over at once, with every acknowledged write",
  async () => {
    const paths = await createVolume("owner-kill", { size: "32m", cacheSize: "64m" });
    const killed = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--lease-seconds", "600"] });
    const data = await pwrite(killed.uri, 4 * MIB, 8 * MIB, SEED + 1);
    const epoch = (await lockShow(paths.volume)).epoch!;
    await killed.kill();
    const stale = await lockShow(paths.volume);
    expect(stale).toMatchObject({ status: "held", epoch });
    expect(stale.holder).toMatchObject({ pid: killed.process.pid, running: "dead" });
    expect(stale.expiresInMs!).toBeGreaterThan(500_000); // far from expiry: only the dead pid lets the restart in

    const restarted = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
    expect(restarted.log).toContain("(case @D)");
    const now = await lockShow(paths.volume);
    expect(now).toMatchObject({ status: "held", epoch: epoch + 1 });
    expect(now.holder!.pid).toBe(restarted.process.pid);
    expect(sameBytes((await readAll(restarted.uri)).subarray(4 * MIB, 12 * MIB), data)).toBe(true);
    expect((await restarted.stop()).exitCode).toBe(0);
    expect((await lsvd(["fsck", "--cache", paths.cache, paths.volume])).exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);

test(
  "a lease held by another host is refused until it expires, then taken over",
  async () => {
    const paths = await createVolume("owner-remote", { size: "32m", cacheSize: "64m" });
    const durationMs = 4000;
    const now = Date.now();
    const lease = encodeLease({
      state: LeaseState.Held,
      epoch: 7,
      durationMs,
      acquiredAtMs: now - 60_000,
      renewedAtMs: now,
      cookie: uuidv4(),
      host: "elsewhere.example",
      bootId: uuidv4(),
      pid: 4242,
      processStartTicks: 99,
      command: "serve",
      addresses: ["nbd://192.0.2.7:10809"],
    });
    writeFileSync(`${paths.volume}.lease`, lease);
    const refused = await lsvd(["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", join(paths.dir, "s")]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain("is owned by serve pid 4242 on host elsewhere.example serving nbd://192.0.2.7:10809");
    const shown = await lockShow(paths.volume);
    expect(shown).toMatchObject({ status: "held", epoch: 7 });
    expect(shown.holder!.running).toBe("unknown");
    await waitUntil("the other host's lease expired", async () => (await lockShow(paths.volume)).status === "expired", 4 * durationMs);
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
    expect(server.log).toContain("(case @E)");
    expect(server.log).toContain("host elsewhere.example");
    expect(await lockShow(paths.volume)).toMatchObject({ status: "held", epoch: 8, superblockEpoch: 8 });
    expect((await server.stop()).exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);

test(
  "lock show, and lock break: refused for a running holder without --force; forced, the holder is fenced and exits 1",
  async () => {
    const paths = await createVolume("owner-break", { size: "32m", cacheSize: "64m" });
    const holder = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--lease-seconds", "3"] });
    const data = await pwrite(holder.uri, 0, 4 * MIB, SEED + 2);
    const text = await lsvd(["lock", "show", paths.volume]);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toContain(`lease of file://${paths.volume}: held`);
    expect(text.stdout).toContain(`serve pid ${holder.process.pid} on host ${hostname()} serving ${holder.uri}`);
    expect(text.stdout).toContain(`its process (pid ${holder.process.pid}, on this host) is running`);

    const refused = await lsvd(["lock", "break", paths.volume]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain("running on this host");
    expect(refused.stderr).toContain("--force");
    const epoch = (await lockShow(paths.volume)).epoch!;
    const broken = await lsvd(["lock", "break", "--force", paths.volume]);
    expect(broken.exitCode).toBe(0);
    expect(broken.stdout).toContain("Writes it acknowledged but had not yet put to the backend are not part of the volume");
    expect(await lockShow(paths.volume)).toMatchObject({ status: "broken", epoch: epoch + 1 });

    expect(await holder.waitFor(/exiting: volume .* was lost/, 30_000)).toBe("found");
    const stopped = await holder.stop("SIGTERM");
    expect(stopped.exitCode).toBe(1);
    expect(stopped.log).toContain("was taken over");
    // The next serve waits the broken lease out, then takes it; the data the holder flushed is there.
    const next = await startWhenFree({ ...paths, transport: "unix", dir: paths.dir });
    expect(sameBytes((await readAll(next.uri)).subarray(0, 4 * MIB), data)).toBe(true);
    expect((await next.stop()).exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);

test(
  "a holder stopped past its lease and resumed after another server took over and wrote: it exits saying so, puts nothing, and the successor's data reads back byte for byte",
  async () => {
    const paths = await createVolume("owner-stop", { size: "32m", cacheSize: "64m" });
    const otherCache = await mkcache(paths, "cache2");
    // A: durable in the backend (the first server closes cleanly).
    const setup = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
    const a = await pwrite(setup.uri, 0, 8 * MIB, SEED + 3);
    expect((await setup.stop()).exitCode).toBe(0);
    // C: acknowledged by the holder (journal, flushed) but still in its open batch when it is stopped. Its idle seal
    // (1.5 s after the write) comes due while it is stopped, before its lease timers (it renews every 2 s and stops
    // 5 s after a renewal): when it runs again, it first tries to put C, and the guard must refuse that put.
    const holder = await LsvdServer.start({
      ...paths,
      transport: "unix",
      dir: paths.dir,
      extraArgs: ["--lease-seconds", "6", "--batch-idle-ms", "1500", "--no-gc"],
    });
    await pwrite(holder.uri, 8 * MIB, 2 * MIB, SEED + 4);
    holder.process.kill("SIGSTOP");
    try {
      // The successor (another cache, as on another host) is refused until the lease runs out, then takes over.
      const successor = await startWhenFree({ ...paths, cache: otherCache, transport: "unix", dir: paths.dir, extraArgs: ["--lease-seconds", "5"] });
      expect(successor.log).toContain("(case @E)");
      const seen = await readAll(successor.uri);
      expect(sameBytes(seen.subarray(0, 8 * MIB), a)).toBe(true);
      expect(sameBytes(seen.subarray(8 * MIB, 10 * MIB), new Uint8Array(2 * MIB))).toBe(true); // C never reached the backend
      const b = await pwrite(successor.uri, 4 * MIB, 8 * MIB, SEED + 5);
      const expected = seen.slice();
      expected.set(b, 4 * MIB);
      expect((await successor.stop()).exitCode).toBe(0);
      const before = backendListing(paths);

      // SIGCONT: the holder runs again, finds its lease gone, and goes, having put nothing.
      // (The successor could only take over once the lease ran out: at least 4 s after the stop, past the idle seal.)
      holder.process.kill("SIGCONT");
      expect(await holder.waitFor(/exiting: volume .* was lost/, 60_000)).toBe("found");
      const resumed = await holder.stop("SIGTERM");
      expect(resumed.exitCode).not.toBe(0);
      expect(resumed.log).toMatch(/this server no longer owns volume .*(ran out|taken over)/);
      expect(backendListing(paths)).toBe(before);

      // Served again with the stopped holder's cache: its journal (C) is behind the log and is discarded.
      const third = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      expect(sameBytes(await readAll(third.uri), expected)).toBe(true);
      expect((await third.stop()).exitCode).toBe(0);
      const fsck = await lsvd(["fsck", paths.volume]);
      expect(fsck.exitCode).toBe(0);
    } finally {
      if (holder.running) holder.process.kill("SIGCONT");
    }
  },
  TEST_TIMEOUT_MS,
);

test("lock --help and unknown actions", async () => {
  const help = await lsvd(["lock", "--help"]);
  expect(help.exitCode).toBe(0);
  expect(help.stdout).toContain("lsvd lock show [--json] VOLUME");
  expect((await lsvd(["lock", "frob", "x"])).exitCode).toBe(1);
  expect((await lsvd(["serve", "--help"])).stdout).toContain("--lease-seconds");
  expect((await run([await ensureBuilt(), "--help"])).stdout).toContain("lock");
});
