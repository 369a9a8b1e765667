// Watching a live `lsvd serve` (docs/operations.md): its Prometheus endpoint passes `promtool check metrics` after
// real NBD traffic (nbdsh), and its counters move by exactly the I/O done; `lsvd status` answers through the admin
// socket found in the volume's lease and through --admin-socket, with the right figures; a volume nobody serves has
// its own exit code; a live admin socket is never taken over; hostile input on the admin socket gets clear errors
// while NBD clients and status go on being served; status follows a failing backend and a draining shutdown;
// --metrics refuses a non-loopback host unless asked.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { v4 as uuidv4 } from "uuid";
import { encodeLease, LeaseState, type LeaseRecord } from "../../src/format/lease_object.ts";
import { thisProcess } from "../../src/util/process_identity.ts";
import { join } from "node:path";
import { decodeReply } from "../../src/admin/protocol.ts";
import { ADMIN_CONNECTIONS_MAX } from "../../src/admin/server.ts";
import { defaultAdminSocketPath } from "../../src/cli/serve_monitor.ts";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, lsvd, run, runOk, type VolumePaths } from "./_harness.ts";

const TEST_TIMEOUT_MS = 120_000;

beforeAll(async () => {
  await ensureBuilt();
}, TEST_TIMEOUT_MS);
/** Backend directories made immutable: made mutable again even when a test times out, or cleanup cannot remove them. */
const immutableDirs: string[] = [];
afterAll(async () => {
  for (const dir of immutableDirs) await run(["chattr", "-i", dir]);
  await cleanupAll();
});

/** `promtool` from Debian's prometheus package (scripts/install-deps.sh test): the test fails without it. */
function promtool(): string {
  const path = Bun.which("promtool", { PATH: TOOL_ENV.PATH });
  if (path === null) throw new Error("promtool is missing: install Debian's prometheus package (scripts/install-deps.sh test)");
  return path;
}

async function scrape(url: string): Promise<{ text: string; samples: Map<string, number> }> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const text = await response.text();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return { text, samples };
}

function sample(samples: Map<string, number>, key: string): number {
  const value = samples.get(key);
  if (value === undefined) throw new Error(`no sample ${key}`);
  return value;
}

async function nbdsh(uri: string, script: string): Promise<string> {
  return (await runOk(["nbdsh", "-u", uri, "-c", script], { env: TOOL_ENV, timeoutMs: 60_000 })).stdout;
}

async function statusJson(args: string[]): Promise<{ exitCode: number; json: any; stderr: string }> {
  const result = await lsvd(["status", "--json", ...args]);
  return { exitCode: result.exitCode ?? -1, json: result.stdout === "" ? null : JSON.parse(result.stdout), stderr: result.stderr };
}

function metricsUrl(server: LsvdServer): string {
  const match = /metrics at (http:\/\/\S+)/.exec(server.log);
  if (match === null) throw new Error(`no metrics line in the log:\n${server.log}`);
  return match[1]!;
}

describe("observability of lsvd serve", () => {
  let paths: VolumePaths;
  let server: LsvdServer;
  let adminSocket: string;

  beforeAll(async () => {
    paths = await createVolume("observe", { size: "64m", cacheSize: "96m" });
    adminSocket = join(paths.dir, "admin.asok");
    server = await LsvdServer.start({
      ...paths,
      transport: "unix",
      dir: paths.dir,
      extraArgs: ["--metrics", "127.0.0.1:0", "--admin-socket", adminSocket, "--batch-idle-ms", "20"],
    });
  }, TEST_TIMEOUT_MS);

  test("the metrics pass promtool after NBD traffic and count exactly the I/O done", async () => {
    const url = metricsUrl(server);
    const before = (await scrape(url)).samples;
    const writeBytes = 3 * 65536;
    // Three 64 KiB writes, two 4 KiB reads, a flush, and a read past the end that the server refuses.
    await nbdsh(server.uri, [
      "for i in range(3): h.pwrite(bytes([i + 1]) * 65536, i * 65536)",
      "h.flush()",
      "h.pread(4096, 0); h.pread(4096, 131072)",
      "h.set_strict_mode(0)",
      "try:\n    h.pread(4096, h.get_size())\nexcept nbd.Error:\n    pass",
    ].join("\n"));
    const after = (await scrape(url)).samples;
    const delta = (key: string) => sample(after, key) - sample(before, key);
    expect({
      writeBytes: delta('lsvd_nbd_request_bytes_total{command="write"}'),
      readBytes: delta('lsvd_nbd_request_bytes_total{command="read"}'),
      writes: delta('lsvd_nbd_requests_total{command="write"}'),
      reads: delta('lsvd_nbd_requests_total{command="read"}'),
      flushes: delta('lsvd_nbd_requests_total{command="flush"}'),
      writeLatencies: delta('lsvd_nbd_request_duration_seconds_count{command="write"}'),
      readLatencies: delta('lsvd_nbd_request_duration_seconds_count{command="read"}'),
      readErrors: delta('lsvd_nbd_request_errors_total{command="read"}'),
      writeErrors: delta('lsvd_nbd_request_errors_total{command="write"}'),
      connections: delta("lsvd_nbd_connections_accepted_total"),
    }).toEqual({ writeBytes, readBytes: 8192, writes: 3, reads: 2, flushes: 1, writeLatencies: 3, readLatencies: 2, readErrors: 1, writeErrors: 0, connections: 1 });
    expect(sample(after, 'lsvd_serve_state{state="serving"}')).toBe(1);
    expect(sample(after, "lsvd_volume_size_bytes")).toBe(64 * 1024 * 1024);
    expect(sample(after, "lsvd_recovery_duration_seconds")).toBeGreaterThan(0);
    expect(sample(after, "lsvd_journal_size_bytes")).toBeGreaterThan(0);
    // The writes reach the backend (a partial batch is put after 20 ms without writes): one put of at least their bytes.
    let samples = after;
    while (sample(samples, 'lsvd_backend_written_bytes_total{store="volume"}') < writeBytes) samples = (await scrape(url)).samples;
    expect(sample(samples, 'lsvd_backend_requests_total{store="volume",op="put_if_absent"}')).toBeGreaterThanOrEqual(1);
    expect(sample(samples, 'lsvd_backend_request_duration_seconds_count{store="volume",op="put_if_absent"}')).toBe(sample(samples, 'lsvd_backend_requests_total{store="volume",op="put_if_absent"}'));
    expect(sample(samples, 'lsvd_backend_requests_total{store="lease",op="put_if_version"}')).toBeGreaterThanOrEqual(1);
    expect(sample(samples, "lsvd_backend_up")).toBe(1);
    expect(sample(samples, "lsvd_backend_objects")).toBeGreaterThanOrEqual(1);

    const { text } = await scrape(url);
    const check = Bun.spawnSync({ cmd: [promtool(), "check", "metrics"], stdin: Buffer.from(text), env: TOOL_ENV });
    expect({ exitCode: check.exitCode, out: `${check.stdout}${check.stderr}` }).toEqual({ exitCode: 0, out: "" });
  }, TEST_TIMEOUT_MS);

  test("lsvd status --json answers through the lease and through --admin-socket, with the right figures", async () => {
    const lock = JSON.parse((await lsvd(["lock", "show", "--json", paths.volume])).stdout);
    expect(lock.holder.addresses).toEqual([server.uri, `admin:unix:${adminSocket}`, `metrics:${metricsUrl(server)}`]);
    // Messages naming the holder say where it serves NBD; the admin socket and metrics are not that.
    expect((await lsvd(["lock", "show", paths.volume])).stdout).toContain(`serving ${server.uri} since `);
    const viaLease = await statusJson([paths.volume]);
    const viaSocket = await statusJson(["--admin-socket", adminSocket]);
    for (const { exitCode, json } of [viaLease, viaSocket]) {
      expect(exitCode).toBe(0);
      expect(json).toMatchObject({
        served: true,
        adminSocket,
        state: "serving",
        pid: server.process.pid,
        volume: { uri: `file://${paths.volume}`, cache: paths.cache, sizeBytes: 64 * 1024 * 1024, readOnly: false },
        nbdAddresses: [server.uri],
        metricsUrl: metricsUrl(server),
        backend: { reachable: true, failingSince: null },
        clients: { connections: 0, requestsInFlight: 0 },
      });
      expect(json.volume.uuid).toMatch(/^[0-9a-f-]{36}$/);
      expect(json.recoverySeconds).toBeGreaterThan(0);
      expect(json.journal.sizeBytes).toBeGreaterThan(0);
    }
    // The figures the metrics test produced (it ran first, in this file).
    expect(viaLease.json.requests).toMatchObject({ writes: 3, bytesWritten: 3 * 65536, reads: 2, bytesRead: 8192, flushes: 1, errors: 1 });
    const human = await lsvd(["status", paths.volume]);
    expect(human.exitCode).toBe(0);
    expect(human.stdout).toContain(`volume file://${paths.volume} (64 MiB, UUID ${viaLease.json.volume.uuid}) with cache ${paths.cache}`);
    expect(human.stdout).toMatch(/^state: serving since /m);
    expect(human.stdout).toContain("requests: 2 reads (8 KiB), 3 writes (192 KiB), 1 flushes");
  }, TEST_TIMEOUT_MS);

  test("hostile input on the admin socket gets clear errors; NBD clients and status go on", async () => {
    const replies = async (payload: string, count: number) => {
      const lines: string[] = [];
      let text = "";
      const done = Promise.withResolvers<void>();
      const socket = await Bun.connect({
        unix: adminSocket,
        socket: {
          data(_s, chunk) {
            text += new TextDecoder().decode(chunk);
            for (let newline = text.indexOf("\n"); newline >= 0; newline = text.indexOf("\n")) {
              lines.push(text.slice(0, newline));
              text = text.slice(newline + 1);
            }
            if (lines.length >= count) done.resolve();
          },
          close: () => done.resolve(),
          // The server resets a connection it closed while the client still sends (the huge line): not a failure here.
          error: () => done.resolve(),
        },
      });
      socket.write(payload);
      await done.promise;
      socket.end();
      return lines.map((line) => {
        const reply = decodeReply(line);
        return reply.ok ? "ok" : reply.error.code;
      });
    };
    expect(await replies("\u0000\u00ff garbage\n{\"op\":\"rm -rf\"}\n{\"op\":\"drop-tables\"}\n{\"op\":\"status\"}\n", 4)).toEqual(["bad-json", "bad-request", "unknown-op", "ok"]);
    expect(await replies("{".repeat(1024 * 1024), 1)).toEqual(["too-long"]);
    const held = await Promise.all(Array.from({ length: ADMIN_CONNECTIONS_MAX + 4 }, () => Bun.connect({ unix: adminSocket, socket: { data() {} } })));
    const whileHeld = await statusJson(["--admin-socket", adminSocket]);
    expect(whileHeld.exitCode).toBe(1);
    expect(whileHeld.stderr).toContain("busy: ");
    expect(await nbdsh(server.uri, "print(len(h.pread(65536, 0)))")).toBe("65536\n");
    for (const socket of held) socket.end();
    let again = await statusJson(["--admin-socket", adminSocket]);
    while (again.exitCode !== 0) again = await statusJson(["--admin-socket", adminSocket]);
    expect(again.json.state).toBe("serving");
    expect(server.running).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a second server may not take the live admin socket: exit 1 before recovery; the first goes on", async () => {
    const other = await createVolume("observe-other", { size: "64m", cacheSize: "96m" });
    const second = await lsvd(["serve", "--volume", other.volume, "--cache", other.cache, "--socket", join(other.dir, "nbd.sock"), "--admin-socket", adminSocket]);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`socket ${adminSocket} is in use by a running server; not replacing it`);
    expect(second.stderr).not.toContain("recovery");
    expect((await statusJson(["--admin-socket", adminSocket])).json.state).toBe("serving");
  }, TEST_TIMEOUT_MS);

  test("after a clean stop the socket is gone and status says the volume is not served (exit 3)", async () => {
    const stopped = await server.stop();
    expect(stopped.exitCode).toBe(0);
    expect(existsSync(adminSocket)).toBe(false);
    const viaLease = await statusJson([paths.volume]);
    expect(viaLease).toMatchObject({ exitCode: 3, json: { served: false } });
    expect(viaLease.json.reason).toBe(`volume file://${paths.volume} is not served (its lease is released)`);
    const viaSocket = await lsvd(["status", "--admin-socket", adminSocket]);
    expect(viaSocket.exitCode).toBe(3);
    expect(viaSocket.stderr).toContain(`nothing answers on admin socket ${adminSocket} (ENOENT)`);
  }, TEST_TIMEOUT_MS);
});

test("status follows the backend failing and the shutdown draining, and says what the drain waits for", async () => {
  const paths = await createVolume("observe-drain", { size: "64m", cacheSize: "128m" });
  const adminSocket = join(paths.dir, "admin.asok");
  const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--no-gc", "--admin-socket", adminSocket, "--batch-idle-ms", "20"] });
  // The backend becomes unreachable: nothing can be created in its directory, so every put fails.
  immutableDirs.push(paths.backendDir);
  const immutable = await run(["chattr", "+i", paths.backendDir]);
  if (immutable.exitCode !== 0) {
    console.log(`observability_test: drain case skipped (chattr +i failed: ${immutable.stderr.trim()})`);
    expect((await server.stop()).exitCode).toBe(0);
    return;
  }
  try {
    await nbdsh(server.uri, "h.pwrite(b'd' * 1048576, 0); h.flush()");
    let status = await statusJson(["--admin-socket", adminSocket]);
    while (status.json.backend.reachable) status = await statusJson(["--admin-socket", adminSocket]);
    expect(status.json).toMatchObject({ state: "serving", backend: { reachable: false } });
    expect(Date.parse(status.json.backend.failingSince)).toBeGreaterThan(Date.parse(status.json.startedAt) - 1);
    expect(status.json.backend.lastError).toMatch(/EPERM|permission|not permitted/i);
    const human = await lsvd(["status", "--admin-socket", adminSocket]);
    expect(human.stdout).toMatch(/^backend: failing since \S+ \(last error: .+\); retrying/m);
    server.process.kill("SIGTERM");
    status = await statusJson(["--admin-socket", adminSocket]);
    while (status.json.state !== "draining" || status.json.waitingFor === null) status = await statusJson(["--admin-socket", adminSocket]);
    expect(status.json.waitingFor).toMatch(/^waiting for \d+ object\(s\) \([^)]+\) to reach the backend/);
    expect(status.json.backend.reachable).toBe(false);
  } finally {
    await run(["chattr", "-i", paths.backendDir]);
  }
  // The backend is back: the shutdown begun above finishes by itself (a second SIGTERM would cut it short).
  await server.process.exited;
  const stopped = await server.stop();
  expect(stopped.exitCode).toBe(0);
  expect(existsSync(adminSocket)).toBe(false);
}, TEST_TIMEOUT_MS);

test("status reads the lease: another host's server (4), no admin socket (4), a holder gone or not serve (3)", async () => {
  const paths = await createVolume("observe-lease", { size: "64m", cacheSize: "96m" });
  const here = thisProcess();
  const now = Date.now();
  const lease = (fields: Partial<LeaseRecord>): LeaseRecord => ({
    state: LeaseState.Held, epoch: 7, durationMs: 600_000, acquiredAtMs: now - 1000, renewedAtMs: now, cookie: uuidv4(),
    host: here.host, bootId: here.bootId, pid: here.pid, processStartTicks: here.processStartTicks, command: "serve", addresses: [], ...fields,
  });
  const cases: Array<[string, LeaseRecord, number, string]> = [
    ["another host", lease({ host: "elsewhere.example", bootId: uuidv4(), addresses: ["admin:unix:/run/lsvd/x.asok"] }), 4, "is served by serve pid 4242 on host elsewhere.example, not on this host: run lsvd status there"],
    ["no admin socket", lease({ addresses: ["nbd://127.0.0.1:1"] }), 4, `is served by serve pid ${here.pid} on host ${here.host} without an admin socket`],
    ["holder gone", lease({ processStartTicks: here.processStartTicks + 1, addresses: ["admin:unix:/run/lsvd/x.asok"] }), 3, "is not served: its holder, serve pid"],
    ["not serve", lease({ command: "gc" }), 3, `is not served: gc pid ${here.pid} on host ${here.host} holds it`],
  ];
  for (const [what, record, exitCode, message] of cases) {
    if (what === "another host") record.pid = 4242;
    writeFileSync(`${paths.volume}.lease`, encodeLease(record));
    const result = await statusJson([paths.volume]);
    expect({ what, exitCode: result.exitCode, served: result.json.served }).toEqual({ what, exitCode, served: false });
    expect(result.json.reason).toContain(message);
  }
}, TEST_TIMEOUT_MS);

describe("options", () => {
  test("--metrics refuses a non-loopback host unless --metrics-public, and a malformed address", async () => {
    const paths = await createVolume("observe-options", { size: "64m", cacheSize: "96m" });
    const base = ["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", join(paths.dir, "nbd.sock"), "--no-admin-socket"];
    const open = await lsvd([...base, "--metrics", "0.0.0.0:0"]);
    expect(open.exitCode).toBe(1);
    expect(open.stderr).toContain("--metrics 0.0.0.0:0: 0.0.0.0 is not a loopback address; add --metrics-public");
    const bad = await lsvd([...base, "--metrics", "9100"]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain("Invalid --metrics '9100': expected HOST:PORT");
    const public_ = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--no-admin-socket", "--metrics", "0.0.0.0:0", "--metrics-public"] });
    expect(metricsUrl(public_)).toMatch(/^http:\/\/0\.0\.0\.0:\d+\/metrics$/);
    const response = await fetch(metricsUrl(public_).replace("0.0.0.0", "127.0.0.1").replace("/metrics", "/other"));
    expect(response.status).toBe(404);
    expect((await public_.stop()).exitCode).toBe(0);
  }, TEST_TIMEOUT_MS);

  test("without --admin-socket, the socket is /run/lsvd/ + the escaped volume + .asok, and status finds it in the lease", async () => {
    const paths = await createVolume("observe-default", { size: "64m", cacheSize: "96m" });
    const expected = defaultAdminSocketPath(paths.volume);
    expect(expected).toBe(`/run/lsvd/${paths.volume.slice(1).replace(/[^A-Za-z0-9._-]+/g, "-")}.asok`);
    expect(defaultAdminSocketPath(`file://${paths.volume}`)).toBe(expected);
    expect(defaultAdminSocketPath("rados://pool/vol")).toBe("/run/lsvd/rados-pool-vol.asok");
    const long = defaultAdminSocketPath(`s3://bucket/${"x".repeat(200)}`);
    expect(long.length).toBeLessThan(100);
    expect(long).not.toBe(defaultAdminSocketPath(`s3://bucket/${"x".repeat(199)}y`));
    const served = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, defaultAdminSocket: true });
    try {
      const status = await statusJson([paths.volume]);
      expect(status).toMatchObject({ exitCode: 0, json: { served: true, adminSocket: expected, state: "serving" } });
    } finally {
      expect((await served.stop()).exitCode).toBe(0);
    }
    expect(existsSync(expected)).toBe(false);
  }, TEST_TIMEOUT_MS);
});
