// One `lsvd serve` process with several exports (--export / --config; docs/architecture.md, "One daemon, many
// exports"), as real processes with real NBD clients:
// - three exports, each under its own stamped load (this folder's pipelining client, one connection per export by
//   name), SIGKILL of the daemon mid-write, restart: every acknowledged op of every export reads back, checked
//   against each export's history; then a clean stop closes (checkpoints) every export and fsck finds nothing;
// - one export's backend made unwritable (chattr +i) and its journal filled: its writes wait, while the other two
//   take writes and flushes and put objects; once the backend is back, everything reads back;
// - a second daemon claiming a volume the first serves is refused, naming the holder, and gives back the lease of
//   its other export; config-file errors name the line; NBD_OPT_LIST names every export; status, metrics and
//   `lsvd snapshot create` reach the right export.

import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { sharedDiskNote } from "../../src/cli/backend_placement.ts";
import { JOURNAL_RECORD_DATA_BYTES_MAX } from "../../src/constants.ts";
import { Prng } from "../sim/prng.ts";
import { BLOCK_BYTES, History, REPO_ROOT, WORKLOAD_DEFAULT, checkPrefix, lsvdArgv, readVolume, runLsvd, runWorkload, stampBlock } from "./_harness.ts";
import { NbdClient } from "./_nbd_client.ts";

const MIB = 1024 * 1024;
const VOLUME_BYTES = 64 * MIB;
const BLOCKS = VOLUME_BYTES / BLOCK_BYTES;
const BATCH = "1m";
const PIECE_BLOCKS = Math.min(MIB, JOURNAL_RECORD_DATA_BYTES_MAX) / BLOCK_BYTES;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 240_000;
/** PATH with the system tools first (nbdinfo, chattr). */
const TOOL_ENV = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}` };

const dirs: string[] = [];
const daemons = new Set<Daemon>();
const immutable: string[] = [];

afterAll(async () => {
  for (const dir of immutable) Bun.spawnSync(["chattr", "-i", dir]);
  for (const daemon of daemons) await daemon.kill();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Volume {
  name: string;
  backendDir: string;
  volume: string;
  cache: string;
}

function makeDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "lsvd-daemon-"));
  dirs.push(dir);
  return dir;
}

function lsvdOk(args: string[]): string {
  const result = runLsvd(args);
  if (result.code !== 0) throw new Error(`lsvd ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

/** mkdisk + mkcache for export `name` under `dir`. */
function makeVolume(dir: string, name: string): Volume {
  const backendDir = path.join(dir, `b-${name}`);
  mkdirSync(backendDir);
  const volume = path.join(backendDir, "vol");
  const cache = path.join(dir, `cache-${name}`);
  lsvdOk(["mkdisk", "--size", String(VOLUME_BYTES), volume]);
  lsvdOk(["mkcache", "--volume", volume, "--size", "40m", cache]);
  return { name, backendDir, volume, cache };
}

function exportArgs(volumes: readonly Volume[]): string[] {
  return volumes.flatMap((v) => ["--export", `${v.name}=${v.volume},cache=${v.cache}`]);
}

/** One daemon process; its log goes to a file so that it survives SIGKILL. */
class Daemon {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly logPath: string;
  readonly socket: string;
  readonly admin: string;

  constructor(dir: string, args: string[], tag: string) {
    this.logPath = path.join(dir, `daemon.${tag}.log`);
    this.socket = path.join(dir, "sock");
    this.admin = path.join(dir, "admin.sock");
    this.proc = Bun.spawn([...lsvdArgv(), "serve", "--socket", this.socket, "--admin-socket", this.admin, "--batch-size", BATCH, "--batch-idle-ms", "50", "--log-level", "debug", ...args], {
      cwd: REPO_ROOT,
      stdout: Bun.file(this.logPath),
      stderr: Bun.file(this.logPath),
      env: process.env,
    });
    daemons.add(this);
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  /** Waits for "serving on"; the exit code instead when it exits first. */
  async started(): Promise<"serving" | number> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.log().includes("serving on")) return "serving";
      if (this.proc.exitCode !== null) return this.proc.exitCode;
      await Bun.sleep(20);
    }
    throw new Error(`daemon neither served nor exited:\n${this.log()}`);
  }

  async serving(): Promise<void> {
    const outcome = await this.started();
    if (outcome !== "serving") throw new Error(`daemon exited ${outcome}:\n${this.log()}`);
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
    await this.proc.exited;
    daemons.delete(this);
  }

  /** Waits (bounded) until the log matches. */
  async waitLog(pattern: RegExp): Promise<void> {
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (!pattern.test(this.log())) {
      if (Date.now() > deadline) throw new Error(`no ${pattern} in the daemon's log:\n${this.log()}`);
      await Bun.sleep(50);
    }
  }

  async stop(signal = true): Promise<number> {
    if (signal) this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
    const code = await this.proc.exited;
    clearTimeout(timer);
    daemons.delete(this);
    return code;
  }
}

/** Reads export `name` whole and checks it against its history: every acknowledged op must be there. */
async function verify(socket: string, name: string, history: History): Promise<void> {
  const client = await NbdClient.connect(socket, name);
  const observed = await readVolume(client, BLOCKS);
  client.disconnect();
  const check = checkPrefix(history, observed, Math.max(history.maxAcked(), history.flushedBound));
  if (!check.ok) throw new Error(`export ${name}: ${check.message}`);
}

function fsckClean(volume: Volume): void {
  const result = runLsvd(["fsck", "--json", "--cache", volume.cache, volume.volume]);
  const report = JSON.parse(result.stdout) as { problems: Array<{ kind: string; message: string }> };
  expect({ name: volume.name, code: result.code, problems: report.problems }).toEqual({ name: volume.name, code: 0, problems: [] });
}

function objectCount(volume: Volume): number {
  return readdirSync(volume.backendDir).filter((entry) => /^vol\.[0-9a-f]{8}$/.test(entry)).length;
}

/** Each export's read-cache counters, from `lsvd status`. */
function readCacheStatus(daemon: Daemon): Array<{ hits: number; blocks: number }> {
  const status = JSON.parse(lsvdOk(["status", "--json", "--admin-socket", daemon.admin])) as { exports: Array<{ readCache: { hits: number; blocks: number } }> };
  return status.exports.map((e) => e.readCache);
}

/** Bytes of each export re-read by rereadUntilHits: the three windows fit the 16 MiB shared device together. */
const HIT_WINDOW_BYTES = 4 * MIB;
const HIT_ATTEMPTS = 50;

/**
 * Re-reads the first HIT_WINDOW_BYTES of every export until the read cache reports a hit (bounded). Whether the
 * whole-volume verifying reads hit depends on timing: three 64 MiB scans through a 16 MiB cache evict one another's
 * fills, and blocks still in the write cache are never filled (a CI run once saw no hit). A window the cache holds,
 * read again once its fills have landed, hits whenever its data is in backend objects, which the daemon's idle puts
 * make it within seconds.
 */
async function rereadUntilHits(daemon: Daemon, volumes: readonly Volume[]): Promise<void> {
  for (let attempt = 0; attempt < HIT_ATTEMPTS; attempt++) {
    if (readCacheStatus(daemon).some((e) => e.hits > 0)) return;
    for (const v of volumes) {
      const client = await NbdClient.connect(daemon.socket, v.name);
      await client.read(0, HIT_WINDOW_BYTES);
      client.disconnect();
    }
    await Bun.sleep(100);
  }
  throw new Error(`no read-cache hit after ${HIT_ATTEMPTS} re-reads of each export's first ${HIT_WINDOW_BYTES / MIB} MiB`);
}

test("three exports on one shared read cache under load, the daemon killed mid-write: every acknowledged write of every export is there after a restart", async () => {
  const dir = makeDir();
  const volumes = ["a", "b", "c"].map((name) => makeVolume(dir, name));
  const histories = volumes.map(() => new History(BLOCKS, PIECE_BLOCKS));
  // Every export on one shared read-cache device, kept across the kills: reads after each restart may be served from
  // entries an earlier process persisted, and must still match the history.
  const shared = path.join(dir, "shared.rc");
  lsvdOk(["mkcache", "--read-cache-only", "--size", "16m", shared]);
  const servedArgs = ["--read-cache-device", shared, ...exportArgs(volumes)];
  let daemon = new Daemon(dir, servedArgs, "1");
  await daemon.serving();
  for (let round = 0; round < 2; round++) {
    const clients = await Promise.all(volumes.map((v) => NbdClient.connect(daemon.socket, v.name)));
    const victim = daemon;
    const killer = Bun.sleep(700 + 300 * round).then(() => victim.kill());
    const results = await Promise.all(clients.map((client, index) => runWorkload(client, histories[index]!, new Prng(100 * round + index + 1), Date.now() + 30_000)));
    await killer;
    for (const client of clients) client.terminate();
    for (const [index, result] of results.entries()) {
      expect({ export: volumes[index]!.name, error: result.error?.message ?? null }).toEqual({ export: volumes[index]!.name, error: null });
      expect(result.acked).toBeGreaterThan(0);
    }
    daemon = new Daemon(dir, servedArgs, `restart${round}`);
    await daemon.serving();
    for (const [index, v] of volumes.entries()) await verify(daemon.socket, v.name, histories[index]!);
    for (const [index, v] of volumes.entries()) {
      const client = await NbdClient.connect(daemon.socket, v.name);
      const observed = await readVolume(client, BLOCKS);
      client.disconnect();
      histories[index]!.nextRound(Int32Array.from(observed as number[]));
    }
  }
  // The verifying reads went through the shared device: it holds blocks (filled by this process or persisted by one
  // killed before). Reads are hits too, and verified: a stale entry would show.
  expect(readCacheStatus(daemon).every((e) => e.blocks > 0)).toBe(true);
  await rereadUntilHits(daemon, volumes);
  for (const [index, v] of volumes.entries()) await verify(daemon.socket, v.name, histories[index]!);
  // More writes, then a clean stop: it closes every export (each puts its journal and checkpoints), exit 0; fsck
  // finds nothing, and with every cache wiped the backends alone hold every acknowledged write.
  const clients = await Promise.all(volumes.map((v) => NbdClient.connect(daemon.socket, v.name)));
  const results = await Promise.all(clients.map((client, index) => runWorkload(client, histories[index]!, new Prng(50 + index), Date.now() + 1000)));
  for (const result of results) expect(result.error).toBeNull();
  for (const client of clients) client.disconnect();
  expect(await daemon.stop()).toBe(0);
  for (const v of volumes) expect(daemon.log()).toContain(`export ${v.name}: stopped after`);
  for (const v of volumes) fsckClean(v);
  for (const v of volumes) lsvdOk(["mkcache", "--force", "--volume", v.volume, "--size", "40m", v.cache]);
  const fresh = new Daemon(dir, exportArgs(volumes), "fresh-caches");
  await fresh.serving();
  for (const [index, v] of volumes.entries()) await verify(fresh.socket, v.name, histories[index]!);
  expect(await fresh.stop()).toBe(0);
}, TEST_TIMEOUT_MS);

test("per export damage after a kill: one export's cache wiped, the others intact: each recovers by its own case", async () => {
  const dir = makeDir();
  const volumes = ["a", "b", "c"].map((name) => makeVolume(dir, name));
  const histories = volumes.map(() => new History(BLOCKS, PIECE_BLOCKS));
  const daemon = new Daemon(dir, exportArgs(volumes), "1");
  await daemon.serving();
  const clients = await Promise.all(volumes.map((v) => NbdClient.connect(daemon.socket, v.name)));
  const killer = Bun.sleep(900).then(() => daemon.kill());
  const results = await Promise.all(clients.map((client, index) => runWorkload(client, histories[index]!, new Prng(300 + index), Date.now() + 30_000)));
  await killer;
  for (const client of clients) client.terminate();
  for (const result of results) expect(result.error).toBeNull();
  // b loses its cache: what it acknowledged but had not put is gone, and it reads as a prefix of whole ops.
  lsvdOk(["mkcache", "--force", "--volume", volumes[1]!.volume, "--size", "40m", volumes[1]!.cache]);
  const again = new Daemon(dir, exportArgs(volumes), "2");
  await again.serving();
  for (const [index, v] of volumes.entries()) {
    const client = await NbdClient.connect(again.socket, v.name);
    const observed = await readVolume(client, BLOCKS);
    client.disconnect();
    const history = histories[index]!;
    const check = v.name === "b"
      ? checkPrefix(history, observed, history.firstUnit - 1, true)
      : checkPrefix(history, observed, Math.max(history.maxAcked(), history.flushedBound));
    expect({ export: v.name, message: check.message }).toEqual({ export: v.name, message: "" });
  }
  expect(again.log()).toMatch(/export a: recovery: journal case @[BD]/);
  expect(again.log()).toMatch(/export c: recovery: journal case @[BD]/);
  expect(again.log()).toMatch(/export b: recovery: journal case @F/);
  expect(await again.stop()).toBe(0);
  for (const v of volumes) fsckClean(v);
}, TEST_TIMEOUT_MS);

test("one export's backend unwritable and its journal full: its writes wait, the other exports keep taking writes and putting objects, and close at SIGTERM without waiting for it", async () => {
  const dir = makeDir();
  const volumes = ["ok1", "stuck", "ok2"].map((name) => makeVolume(dir, name));
  const [ok1, stuck, ok2] = volumes as [Volume, Volume, Volume];
  // The lease object lives in the frozen directory too: a long lease keeps this a backend outage, not a lost lease.
  const daemon = new Daemon(dir, [...exportArgs(volumes), "--lease-seconds", "600"], "1");
  await daemon.serving();
  const frozen = Bun.spawnSync(["chattr", "+i", stuck.backendDir], { env: TOOL_ENV });
  if (frozen.exitCode !== 0) {
    console.log(`daemon_test: fault case skipped (chattr +i failed: ${frozen.stderr.toString().trim()})`);
    await daemon.stop();
    return;
  }
  immutable.push(stuck.backendDir);
  const stuckObjects = objectCount(stuck);
  // 48 MiB of 1 MiB writes into a journal of less than 40 MiB whose records cannot be put: the last ones must wait.
  const stuckClient = await NbdClient.connect(daemon.socket, stuck.name);
  const stuckHistory = new History(BLOCKS, PIECE_BLOCKS);
  const stuckWrites: Array<Promise<void>> = [];
  for (let index = 0; index < 48; index++) {
    const op = stuckHistory.add("write", index * 256, 256);
    const data = new Uint8Array(MIB);
    for (let block = 0; block < 256; block++) stampBlock(data.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES), op.id, op.block + block);
    const write = stuckClient.write(op.block * BLOCK_BYTES, data).then(() => void (op.acked = true));
    write.catch(() => undefined); // settled below; a failing run must not add unhandled rejections
    stuckWrites.push(write);
  }
  // Meanwhile the others: stamped load with flushes; their objects reach their backends.
  const okHistories = [new History(BLOCKS, PIECE_BLOCKS), new History(BLOCKS, PIECE_BLOCKS)];
  const okClients = await Promise.all([ok1, ok2].map((v) => NbdClient.connect(daemon.socket, v.name)));
  const okObjects = [objectCount(ok1), objectCount(ok2)];
  const results = await Promise.all(okClients.map((client, index) => runWorkload(client, okHistories[index]!, new Prng(7 + index), Date.now() + 3000, { ...WORKLOAD_DEFAULT, flushFraction: 0.1 })));
  for (const client of okClients) await client.flush();
  for (const result of results) {
    expect(result.error).toBeNull();
    expect(result.acked).toBeGreaterThan(50);
  }
  // Both healthy exports put objects; the stuck one put none and still has writes waiting for journal space.
  const status = JSON.parse(lsvdOk(["status", "--json", "--admin-socket", daemon.admin])) as { exports: Array<{ name: string; backend: { reachable: boolean }; journal: { usedBytes: number; sizeBytes: number } }> };
  const byName = new Map(status.exports.map((e) => [e.name, e]));
  expect(objectCount(ok1)).toBeGreaterThan(okObjects[0]!);
  expect(objectCount(ok2)).toBeGreaterThan(okObjects[1]!);
  expect(objectCount(stuck)).toBe(stuckObjects);
  expect(stuckClient.inFlight).toBeGreaterThan(0);
  expect(byName.get("stuck")!.backend.reachable).toBe(false);
  expect(byName.get("ok1")!.backend.reachable).toBe(true);
  expect(byName.get("ok2")!.backend.reachable).toBe(true);
  // SIGTERM while the backend is still away: the healthy exports close (checkpoint, lease released) at once; the
  // stuck one says what it waits for.
  for (const client of okClients) client.disconnect();
  daemon.proc.kill("SIGTERM");
  await daemon.waitLog(/export ok1: lease of vol: released/);
  await daemon.waitLog(/export ok2: lease of vol: released/);
  await daemon.waitLog(/export stuck: waiting for \d+ connection\(s\) to finish \d+ request\(s\)/);
  expect(daemon.log()).not.toContain("export stuck: lease of vol: released");
  // The backend comes back: the waiting writes complete, the stuck export closes too, exit 0, and everything reads
  // back after a restart.
  Bun.spawnSync(["chattr", "-i", stuck.backendDir], { env: TOOL_ENV });
  immutable.splice(immutable.indexOf(stuck.backendDir), 1);
  await Promise.allSettled(stuckWrites);
  stuckClient.terminate();
  expect(await daemon.stop(false)).toBe(0);
  expect(daemon.log()).toContain("export stuck: lease of vol: released");
  const again = new Daemon(dir, exportArgs(volumes), "2");
  await again.serving();
  await verify(again.socket, "stuck", stuckHistory);
  await verify(again.socket, "ok1", okHistories[0]!);
  await verify(again.socket, "ok2", okHistories[1]!);
  expect(await again.stop()).toBe(0);
}, TEST_TIMEOUT_MS);

test("one export loses its lease: its requests fail, the other export keeps serving, and the daemon exits 1 at its stop", async () => {
  const dir = makeDir();
  const [lost, kept] = [makeVolume(dir, "lost"), makeVolume(dir, "kept")];
  const daemon = new Daemon(dir, [...exportArgs([lost, kept]), "--lease-seconds", "3"], "1");
  await daemon.serving();
  const broken = runLsvd(["lock", "break", "--force", lost.volume]);
  expect(broken.code).toBe(0);
  const deadline = Date.now() + 60_000;
  while (!daemon.log().includes("export lost: this server no longer owns volume") && Date.now() < deadline) await Bun.sleep(50);
  expect(daemon.log()).toContain("the other exports go on");
  const block = new Uint8Array(BLOCK_BYTES).fill(1);
  const lostClient = await NbdClient.connect(daemon.socket, "lost");
  await expect(lostClient.write(0, block).then(() => lostClient.flush())).rejects.toThrow(/failed with error/);
  const keptHistory = new History(BLOCKS, PIECE_BLOCKS);
  const keptClient = await NbdClient.connect(daemon.socket, "kept");
  const result = await runWorkload(keptClient, keptHistory, new Prng(3), Date.now() + 1500);
  await keptClient.flush();
  expect(result.error).toBeNull();
  expect(result.acked).toBeGreaterThan(20);
  const status = JSON.parse(lsvdOk(["status", "--json", "--admin-socket", daemon.admin])) as { state: string; exports: Array<{ name: string; lost: string | null }> };
  expect(status.state).toBe("serving");
  expect(status.exports.map((e) => [e.name, e.lost !== null])).toEqual([["lost", true], ["kept", false]]);
  lostClient.terminate();
  keptClient.disconnect();
  expect(await daemon.stop()).toBe(1);
  expect(daemon.log()).toContain("export kept: stopped after");
  fsckClean(kept);
}, TEST_TIMEOUT_MS);

test("read-cache=on|off per export: each volume's own cache file region, on for one export only", async () => {
  const dir = makeDir();
  const [cached, uncached] = [makeVolume(dir, "cached"), makeVolume(dir, "uncached")];
  const args = ["--export", `cached=${cached.volume},cache=${cached.cache},read-cache=on`, "--export", `uncached=${uncached.volume},cache=${uncached.cache},read-cache=off`];
  const data = new Uint8Array(MIB).fill(9);
  const first = new Daemon(dir, args, "1");
  await first.serving();
  for (const name of ["cached", "uncached"]) {
    const client = await NbdClient.connect(first.socket, name);
    await client.write(0, data);
    await client.flush();
    client.disconnect();
  }
  expect(await first.stop()).toBe(0);
  // After a clean stop the data is in the backends only: reading it fills the read cache of the export that has one.
  const second = new Daemon(dir, args, "2");
  await second.serving();
  for (const name of ["cached", "uncached"]) {
    const client = await NbdClient.connect(second.socket, name);
    expect(Buffer.from(await client.read(0, MIB)).equals(Buffer.from(data))).toBe(true);
    client.disconnect();
  }
  const status = JSON.parse(lsvdOk(["status", "--json", "--admin-socket", second.admin])) as { exports: Array<{ name: string; readCache: { misses: number; blocks: number } }> };
  const readCache = new Map(status.exports.map((e) => [e.name, e.readCache]));
  expect(readCache.get("cached")!.blocks).toBeGreaterThan(0);
  expect(readCache.get("uncached")).toEqual({ hits: 0, misses: 0, blocks: 0 } as never);
  expect(await second.stop()).toBe(0);
}, TEST_TIMEOUT_MS);

test("--read-cache-device: one shared read-cache device for every export, kept across a restart; read-cache=off keeps an export off it", async () => {
  const dir = makeDir();
  const [a, b, off] = [makeVolume(dir, "a"), makeVolume(dir, "b"), makeVolume(dir, "off")];
  const shared = path.join(dir, "shared.rc");
  lsvdOk(["mkcache", "--read-cache-only", "--size", "16m", shared]);
  const args = ["--read-cache-device", shared, "--export", `a=${a.volume},cache=${a.cache}`, "--export", `b=${b.volume},cache=${b.cache}`, "--export", `off=${off.volume},cache=${off.cache},read-cache=off`];
  const names = ["a", "b", "off"];
  const data = names.map((_, index) => new Uint8Array(MIB).fill(index + 1));
  const first = new Daemon(dir, args, "1");
  await first.serving();
  for (const [index, name] of names.entries()) {
    const client = await NbdClient.connect(first.socket, name);
    await client.write(0, data[index]!);
    await client.flush();
    client.disconnect();
  }
  expect(await first.stop()).toBe(0);
  const readAll = async (daemon: Daemon) => {
    for (const [index, name] of names.entries()) {
      const client = await NbdClient.connect(daemon.socket, name);
      expect(Buffer.from(await client.read(0, MIB)).equals(Buffer.from(data[index]!))).toBe(true);
      client.disconnect();
    }
  };
  const second = new Daemon(dir, args, "2");
  await second.serving();
  await readAll(second);
  const status = JSON.parse(lsvdOk(["status", "--json", "--admin-socket", second.admin])) as { exports: Array<{ name: string; readCache: { blocks: number } | null }> };
  const readCache = new Map(status.exports.map((e) => [e.name, e.readCache]));
  // One device: both exports see the same blocks held (the device's), filled by both; the third has no read cache.
  expect(readCache.get("a")!.blocks).toBeGreaterThan(0);
  expect(readCache.get("a")!.blocks).toBe(readCache.get("b")!.blocks);
  expect(readCache.get("off")).toEqual({ hits: 0, misses: 0, blocks: 0 } as never);
  expect(await second.stop()).toBe(0);
  const third = new Daemon(dir, args, "3");
  await third.serving();
  expect(third.log()).toMatch(/read cache device .*shared\.rc: [^,]+, [1-9]\d* blocks kept/);
  await readAll(third);
  expect(await third.stop()).toBe(0);
}, TEST_TIMEOUT_MS);

test("a second daemon claiming a served volume is refused, naming the holder, and gives back its other leases", async () => {
  const dir = makeDir();
  const [a, b] = [makeVolume(dir, "a"), makeVolume(dir, "b")];
  const first = new Daemon(dir, exportArgs([a]), "first");
  await first.serving();
  const secondDir = makeDir();
  const second = new Daemon(secondDir, exportArgs([b, a]), "second");
  expect(await second.started()).toBe(1);
  expect(second.log()).toMatch(new RegExp(`export a: .*serve pid ${first.proc.pid}`));
  // b's lease was given back at once: a third daemon takes it without waiting for it to expire.
  const lock = JSON.parse(lsvdOk(["lock", "show", "--json", b.volume])) as { status: string };
  expect(lock.status).not.toBe("held");
  const third = new Daemon(makeDir(), exportArgs([b]), "third");
  await third.serving();
  expect(await third.stop()).toBe(0);
  expect(await first.stop()).toBe(0);
}, TEST_TIMEOUT_MS);

test("config file errors name the line; --export with --cache is refused; nothing is bound", () => {
  const dir = makeDir();
  const config = path.join(dir, "exports.conf");
  writeFileSync(config, "# two volumes\na=/srv/a,cache=/c/a\n\nb=/srv/b,cache=/c/b,read-cache=maybe\n");
  const bad = runLsvd(["serve", "--socket", path.join(dir, "sock"), "--config", config]);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toContain(`${config}:4: export b: read-cache takes on or off, not 'maybe'`);
  expect(existsSync(path.join(dir, "sock"))).toBe(false);
  const mixed = runLsvd(["serve", "--socket", path.join(dir, "sock"), "--cache", "/c/x", "--export", "a=/srv/a,cache=/c/a"]);
  expect(mixed.code).toBe(1);
  expect(mixed.stderr).toContain("--cache is for serving one volume");
  const same = runLsvd(["serve", "--socket", path.join(dir, "sock"), "--export", "a=/srv/a,cache=/c/a", "--export", "b=/srv/a,cache=/c/b"]);
  expect(same.stderr).toContain("exports a and b name the same volume /srv/a");
});

test("LIST names every export; status, metrics and snapshot create reach the export of the volume named", async () => {
  const dir = makeDir();
  // db first: a request that names no export, or names it wrongly, lands on the first one.
  const volumes = ["db", "web"].map((name) => makeVolume(dir, name));
  const [db, web] = volumes as [Volume, Volume];
  const config = path.join(dir, "exports.conf");
  writeFileSync(config, `# exports\n${volumes.map((v) => `${v.name}=${v.volume},cache=${v.cache}${v.name === "db" ? ",read-only" : ""}`).join("\n")}\n`);
  const daemon = new Daemon(dir, ["--config", config, "--metrics", "127.0.0.1:0"], "1");
  await daemon.serving();
  // The writable export, its backend on its cache's disk, gets the placement note; the read-only one puts nothing.
  const note = sharedDiskNote(web.volume, web.cache, false);
  expect(note, "this suite's temp dir is on a disk (as on every machine it runs on)").not.toBeNull();
  expect(daemon.log()).toContain(`export web: ${note}`);
  expect(daemon.log()).not.toContain("export db: note:");
  const list = Bun.spawnSync(["nbdinfo", "--list", "--json", `nbd+unix:///?socket=${daemon.socket}`], { env: TOOL_ENV });
  expect(list.exitCode).toBe(0);
  const listed = JSON.parse(list.stdout.toString()) as { exports: Array<{ "export-name": string; is_read_only: boolean }> };
  expect(listed.exports.map((e) => [e["export-name"], e.is_read_only])).toEqual([["db", true], ["web", false]]);
  const unknown = Bun.spawnSync(["nbdinfo", `nbd+unix:///nope?socket=${daemon.socket}`], { env: TOOL_ENV });
  expect(unknown.exitCode).not.toBe(0);
  // qemu-io names the export in its URI (the read-only one opened read-only).
  const qemu = (uri: string, command: string, ...flags: string[]) => Bun.spawnSync(["qemu-io", ...flags, "-f", "raw", "-c", command, uri], { env: TOOL_ENV });
  const webUri = `nbd+unix:///web?socket=${daemon.socket}`;
  expect(qemu(webUri, "write -P 0x5a 1M 64k").exitCode).toBe(0);
  expect(qemu(webUri, "read -P 0x5a 1M 64k").stdout.toString()).toContain("read 65536/65536 bytes");
  expect(qemu(`nbd+unix:///db?socket=${daemon.socket}`, "read -P 0 1M 64k", "-r").stdout.toString()).toContain("read 65536/65536 bytes");
  // Writes to web only.
  const client = await NbdClient.connect(daemon.socket, "web");
  const data = new Uint8Array(64 * 1024).fill(7);
  for (let index = 0; index < 5; index++) await client.write(index * data.length, data);
  await client.flush();
  client.disconnect();
  const webStatus = JSON.parse(lsvdOk(["status", "--json", web.volume])) as { volume: { uri: string }; requests: { writes: number }; exports: unknown[] };
  expect(webStatus.volume.uri).toBe(`file://${web.volume}`);
  expect(webStatus.requests.writes).toBe(6);
  expect(webStatus.exports.length).toBe(2);
  const dbStatus = JSON.parse(lsvdOk(["status", "--json", db.volume])) as { requests: { writes: number }; volume: { readOnly: boolean }; metricsUrl: string };
  expect(dbStatus.requests.writes).toBe(0);
  expect(dbStatus.volume.readOnly).toBe(true);
  const text = lsvdOk(["status", "--admin-socket", daemon.admin]);
  expect(text).toContain("2 exports:");
  expect(text).toMatch(new RegExp(`^export web: volume file://${web.volume} \\(64 MiB`, "m"));
  expect(text).toMatch(/^ {2}requests: 1 reads \(64 KiB\), 6 writes \(384 KiB\)/m);
  const metrics = await (await fetch(dbStatus.metricsUrl)).text();
  expect(metrics).toContain('lsvd_nbd_requests_total{export="web",command="write"} 6');
  expect(metrics).toContain('lsvd_nbd_requests_total{export="db",command="write"} 0');
  expect(metrics).toMatch(/lsvd_volume_size_bytes\{export="db"\} 67108864/);
  // A snapshot of web is made by the daemon, in web's volume and not db's.
  expect(lsvdOk(["snapshot", "create", web.volume, "s1"])).toContain("by the process serving it");
  expect(lsvdOk(["snapshot", "list", web.volume])).toContain("s1");
  expect(lsvdOk(["snapshot", "list", db.volume])).not.toContain("s1");
  expect(await daemon.stop()).toBe(0);
}, TEST_TIMEOUT_MS);
