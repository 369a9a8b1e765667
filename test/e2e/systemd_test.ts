// `lsvd serve` under systemd's protocols, with the real binary and real clients:
// - socket activation: systemd-socket-activate (Debian's systemd package) binds a unix socket and a TCP port and
//   execs serve on the first connection; nbdcopy writes through the unix socket and reads back through TCP; the
//   same with --nbd-io uring, the passed descriptors accepted on through the ring (the unix path left in place);
// - readiness: a unix datagram socket of the test's own (a python3 receiver) is NOTIFY_SOCKET; STATUS=recovering,
//   then READY=1 naming both addresses, then STOPPING=1 after SIGTERM; no READY=1 when serve cannot serve;
// - --pid-file: written while serving, removed at exit, refused while it names a live process, stale replaced;
// - the unit files in systemd/ pass `systemd-analyze verify` (no running systemd needed) without a warning.
// Every process started here is killed at cleanup.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LSVD_BINARY, LsvdServer, REPO_ROOT, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, listenerBlocking, lsvd, makeTempDir, run, runOk, sha256File, writeRandomFile } from "./_harness.ts";

const WAIT_MS = 30_000;
const TEST_TIMEOUT_MS = 120_000;
const DATA_BYTES = 8 * 1024 * 1024;
const TCP_PORT_MIN = 20_000;
const TCP_PORT_MAX = 60_000;
const PORT_ATTEMPTS_MAX = 8;

const children = new Set<Child>();
process.on("exit", () => {
  for (const child of children) child.process.kill("SIGKILL");
});

/** A child process whose stdout and stderr are collected as one text. */
class Child {
  text = "";
  readonly done: Promise<number>;

  constructor(readonly process: import("bun").Subprocess<"ignore", "pipe", "pipe">) {
    children.add(this);
    const decoder = new TextDecoder();
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) this.text += decoder.decode(chunk, { stream: true });
    };
    this.done = Promise.all([drain(process.stdout), drain(process.stderr)]).then(() => process.exited);
  }

  static spawn(cmd: string[], env: Record<string, string> = {}): Child {
    return new Child(Bun.spawn({ cmd, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...TOOL_ENV, ...env } }));
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  async waitFor(pattern: RegExp, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!pattern.test(this.text)) {
      if (!this.running) {
        await this.done;
        if (pattern.test(this.text)) return;
        throw new Error(`${what}: the process exited (${this.process.exitCode ?? this.process.signalCode}) first:\n${this.text}`);
      }
      if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms:\n${this.text}`);
      await Bun.sleep(20);
    }
  }

  /** Waits (bounded) for the exit after `signal` (none: it exits on its own); SIGKILL when it does not come. */
  async exit(signal?: "SIGTERM"): Promise<number | null> {
    if (signal !== undefined && this.running) this.process.kill(signal);
    const exited = await Promise.race([this.done.then(() => true), Bun.sleep(WAIT_MS).then(() => false)]);
    if (!exited) this.process.kill("SIGKILL");
    await this.done;
    children.delete(this);
    if (!exited) throw new Error(`no exit within ${WAIT_MS} ms:\n${this.text}`);
    return this.process.exitCode;
  }
}

/** A unix datagram socket of the test's own (python3 binds and prints each datagram as a JSON string). */
async function notifyReceiver(dir: string): Promise<{ path: string; messages: () => string[]; child: Child }> {
  const path = join(dir, "notify.sock");
  const script = "import json,socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('bound',flush=True)\nwhile True: print(json.dumps(s.recv(65536).decode()),flush=True)";
  const child = Child.spawn(["python3", "-c", script, path]);
  await child.waitFor(/^bound$/m, "notify receiver bound");
  const messages = () => child.text.split("\n").filter((line) => line.startsWith('"')).map((line) => JSON.parse(line) as string);
  return { path, messages, child };
}

async function waitForMessage(messages: () => string[], pattern: RegExp, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!messages().some((message) => pattern.test(message))) {
    if (Date.now() > deadline) throw new Error(`${what}: no such notification within ${WAIT_MS} ms; got ${JSON.stringify(messages())}`);
    await Bun.sleep(20);
  }
}

/**
 * `systemd-socket-activate -l UNIX -l 127.0.0.1:PORT lsvd serve ...`, once both are bound (a taken port: another
 * one). It execs serve on the first connection, so the returned process is serve's.
 */
async function activated(dir: string, serveArgs: string[], env: Record<string, string>): Promise<{ child: Child; unixPath: string; port: number }> {
  for (let attempt = 0; ; attempt++) {
    const unixPath = join(dir, `activated.${attempt}.sock`);
    const port = TCP_PORT_MIN + Math.floor(Math.random() * (TCP_PORT_MAX - TCP_PORT_MIN));
    const envArgs = Object.entries(env).flatMap(([key, value]) => ["-E", `${key}=${value}`]);
    const child = Child.spawn(["systemd-socket-activate", "-l", unixPath, "-l", `127.0.0.1:${port}`, ...envArgs, LSVD_BINARY, "serve", ...serveArgs]);
    try {
      await child.waitFor(new RegExp(`Listening on 127\\.0\\.0\\.1:${port} as 4`), "systemd-socket-activate bound");
      return { child, unixPath, port };
    } catch (error) {
      if (attempt + 1 >= PORT_ATTEMPTS_MAX || !/in use/i.test(child.text)) throw error;
      await child.exit();
    }
  }
}

beforeAll(async () => {
  await ensureBuilt();
}, 180_000);

afterAll(async () => {
  for (const child of children) child.process.kill("SIGKILL");
  await cleanupAll();
});

describe("socket activation and readiness", () => {
  test(
    "serve on sockets passed by systemd-socket-activate (unix and TCP), READY=1 after recovery, STOPPING=1, pid file",
    async () => {
      const paths = await createVolume("sd-activate", { size: "64m", cacheSize: "64m" });
      const receiver = await notifyReceiver(paths.dir);
      const pidFile = join(paths.dir, "serve.pid");
      const { child, unixPath, port } = await activated(paths.dir, ["--volume", paths.volume, "--cache", paths.cache, "--pid-file", pidFile], {
        NOTIFY_SOCKET: receiver.path,
      });
      const unixUri = `nbd+unix:///?socket=${unixPath}`;
      const tcpUri = `nbd://127.0.0.1:${port}`;
      const input = join(paths.dir, "in.raw");
      writeRandomFile(input, DATA_BYTES, 0x5d);
      // The first connection makes systemd-socket-activate exec serve, which greets it after recovery.
      await runOk(["nbdcopy", input, unixUri]);
      await waitForMessage(receiver.messages, /^READY=1$/m, "READY=1");
      const ready = receiver.messages().findIndex((message) => /^READY=1$/m.test(message));
      expect(receiver.messages()[ready]).toBe(`READY=1\nSTATUS=serving file://${paths.volume} on ${unixUri}, ${tcpUri}`);
      expect(receiver.messages().slice(0, ready)).toEqual([`STATUS=recovering volume ${paths.volume}`]);
      expect(readFileSync(pidFile, "utf8")).toBe(`${child.process.pid}\n`);

      const output = join(paths.dir, "out.raw");
      await runOk(["nbdcopy", tcpUri, output]);
      expect(await sha256File(output, DATA_BYTES)).toBe(await sha256File(input));
      expect(child.text).toContain(`serving on ${unixUri}`);
      expect(child.text).toContain(`serving on ${tcpUri}`);

      expect(await child.exit("SIGTERM")).toBe(0);
      expect(receiver.messages().slice(ready + 1)[0]).toBe("STOPPING=1\nSTATUS=shutting down (SIGTERM): draining requests, flushing to the backend");
      expect(existsSync(pidFile)).toBe(false);
      // The socket belongs to the service manager (it keeps listening and starts serve again): never unlinked.
      expect(existsSync(unixPath)).toBe(true);
      await receiver.child.exit("SIGTERM");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "--nbd-io uring: the passed sockets are accepted on through the ring; the passed unix socket outlives serve",
    async () => {
      const paths = await createVolume("sd-uring", { size: "64m", cacheSize: "64m" });
      const serveArgs = ["--volume", paths.volume, "--cache", paths.cache, "--admin-socket", join(paths.dir, "admin.sock"), "--nbd-io", "uring"];
      const { child, unixPath, port } = await activated(paths.dir, serveArgs, {});
      const unixUri = `nbd+unix:///?socket=${unixPath}`;
      const tcpUri = `nbd://127.0.0.1:${port}`;
      const input = join(paths.dir, "in.raw");
      writeRandomFile(input, DATA_BYTES, 0x5e);
      await runOk(["nbdcopy", input, unixUri]);
      // serve accepts on the passed descriptors themselves, through the ring: left blocking (Bun's would not be).
      expect([listenerBlocking(child.process.pid, unixUri), listenerBlocking(child.process.pid, tcpUri)]).toEqual([[true], [true]]);
      const output = join(paths.dir, "out.raw");
      await runOk(["nbdcopy", tcpUri, output]);
      expect(await sha256File(output, DATA_BYTES)).toBe(await sha256File(input));
      expect(await child.exit("SIGTERM")).toBe(0);
      // Not ours to remove: the service manager keeps listening on it.
      expect(existsSync(unixPath)).toBe(true);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "no READY=1 when serve cannot serve (another server owns the volume): exit 1, no pid file",
    async () => {
      const paths = await createVolume("sd-owned", { size: "64m", cacheSize: "64m" });
      const owner = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      const receiver = await notifyReceiver(paths.dir);
      const otherCache = join(paths.dir, "other.cache");
      await runOk([LSVD_BINARY, "mkcache", "--volume", paths.volume, "--size", "64m", otherCache]);
      const pidFile = join(paths.dir, "refused.pid");
      const { child, unixPath } = await activated(paths.dir, ["--volume", paths.volume, "--cache", otherCache, "--pid-file", pidFile], {
        NOTIFY_SOCKET: receiver.path,
      });
      const client = await run(["nbdinfo", "--size", `nbd+unix:///?socket=${unixPath}`]);
      expect(client.exitCode).not.toBe(0);
      expect(await child.exit()).toBe(1);
      expect(child.text).toMatch(/owned by|owns|lease/i);
      expect(receiver.messages()).toEqual([`STATUS=recovering volume ${paths.volume}`]);
      expect(existsSync(pidFile)).toBe(false);
      expect((await owner.stop()).exitCode).toBe(0);
      await receiver.child.exit("SIGTERM");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "--socket is refused with passed sockets",
    async () => {
      const paths = await createVolume("sd-both", { size: "64m", cacheSize: "64m" });
      const { child, unixPath } = await activated(paths.dir, ["--volume", paths.volume, "--cache", paths.cache, "--socket", join(paths.dir, "own.sock")], {});
      await run(["nbdinfo", "--size", `nbd+unix:///?socket=${unixPath}`]);
      expect(await child.exit()).toBe(1);
      expect(child.text).toContain("--socket and --listen cannot be combined with socket activation (2 socket(s) passed in LISTEN_FDS)");
    },
    TEST_TIMEOUT_MS,
  );
});

describe("--pid-file", () => {
  test(
    "refused while it names a running server; removed at exit; a stale one is replaced",
    async () => {
      const first = await createVolume("sd-pid-a", { size: "64m", cacheSize: "64m" });
      const second = await createVolume("sd-pid-b", { size: "64m", cacheSize: "64m" });
      const pidFile = join(makeTempDir("sd-pid"), "lsvd.pid");
      const serverA = await LsvdServer.start({ ...first, transport: "unix", dir: first.dir, extraArgs: ["--pid-file", pidFile] });
      expect(readFileSync(pidFile, "utf8")).toBe(`${serverA.process.pid}\n`);

      const refused = await lsvd(["serve", "--volume", second.volume, "--cache", second.cache, "--socket", join(second.dir, "b.sock"), "--pid-file", pidFile]);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toContain(`--pid-file ${pidFile} names process ${serverA.process.pid}, which is running; not replacing it`);
      expect(readFileSync(pidFile, "utf8")).toBe(`${serverA.process.pid}\n`);

      expect((await serverA.stop()).exitCode).toBe(0);
      expect(existsSync(pidFile)).toBe(false);

      // A pid file a killed server left behind names a process that is gone: replaced.
      const serverB = await LsvdServer.start({ ...second, transport: "unix", dir: second.dir, extraArgs: ["--pid-file", pidFile] });
      await serverB.kill();
      expect(readFileSync(pidFile, "utf8")).toBe(`${serverB.process.pid}\n`);
      const serverC = await LsvdServer.start({ ...second, transport: "unix", dir: second.dir, extraArgs: ["--pid-file", pidFile] });
      expect(readFileSync(pidFile, "utf8")).toBe(`${serverC.process.pid}\n`);
      expect((await serverC.stop()).exitCode).toBe(0);

      writeFileSync(pidFile, "not a pid\n");
      const notPid = await lsvd(["serve", "--volume", second.volume, "--cache", second.cache, "--socket", join(second.dir, "c.sock"), "--pid-file", pidFile]);
      expect(notPid.exitCode).toBe(1);
      expect(notPid.stderr).toContain("does not hold a process id; not replacing it");
      expect(readFileSync(pidFile, "utf8")).toBe("not a pid\n");
    },
    TEST_TIMEOUT_MS,
  );
});

describe("unit files", () => {
  test("systemd/lsvd@.service and lsvd@.socket pass systemd-analyze verify without a warning; their options exist", async () => {
    const dir = makeTempDir("sd-units");
    // verify checks that ExecStart's program exists: point it at the built binary; an instance name fills %i.
    const service = readFileSync(join(REPO_ROOT, "systemd/lsvd@.service"), "utf8");
    expect(service).toContain("ExecStart=/usr/local/bin/lsvd serve ");
    writeFileSync(join(dir, "lsvd@vol1.service"), service.replaceAll("/usr/local/bin/lsvd", LSVD_BINARY));
    writeFileSync(join(dir, "lsvd@vol1.socket"), readFileSync(join(REPO_ROOT, "systemd/lsvd@.socket"), "utf8"));
    const verify = await run(["systemd-analyze", "verify", "--man=no", "lsvd@vol1.service", "lsvd@vol1.socket"], { cwd: dir });
    expect(`exit ${verify.exitCode}: ${verify.stderr}${verify.stdout}`).toBe("exit 0: ");

    const help = (await lsvd(["serve", "--help"])).stdout;
    const execStart = /^ExecStart=(.*)$/m.exec(service)![1]!;
    for (const option of execStart.match(/--[a-z-]+/g)!) expect(help).toContain(option);
    expect(service).toMatch(/^Type=notify$/m);
    // The allocator's purge off (docs/operations.md), before the EnvironmentFile, which may override it.
    expect(service).toMatch(/^Environment=MIMALLOC_PURGE_DELAY=-1\nEnvironmentFile=/m);
  });

  test("systemd/lsvd-exports@.service (several volumes from a config file) passes systemd-analyze verify; its options exist", async () => {
    const dir = makeTempDir("sd-exports");
    const service = readFileSync(join(REPO_ROOT, "systemd/lsvd-exports@.service"), "utf8");
    expect(service).toContain("ExecStart=/usr/local/bin/lsvd serve --config ");
    writeFileSync(join(dir, "lsvd-exports@host1.service"), service.replaceAll("/usr/local/bin/lsvd", LSVD_BINARY));
    const verify = await run(["systemd-analyze", "verify", "--man=no", "lsvd-exports@host1.service"], { cwd: dir });
    expect(`exit ${verify.exitCode}: ${verify.stderr}${verify.stdout}`).toBe("exit 0: ");
    const help = (await lsvd(["serve", "--help"])).stdout;
    for (const line of [/^ExecStart=(.*)$/m.exec(service)![1]!, /^Environment="LSVD_OPTIONS=(.*)"$/m.exec(service)![1]!]) {
      for (const option of line.match(/--[a-z-]+/g)!) expect(help).toContain(option);
    }
    expect(service).toMatch(/^Type=notify$/m);
    expect(service).toMatch(/^Environment=MIMALLOC_PURGE_DELAY=-1\nEnvironment="LSVD_OPTIONS=/m);
  });

  test("serve --help documents socket activation, readiness and --pid-file", async () => {
    const help = (await lsvd(["serve", "--help"])).stdout;
    for (const text of ["--pid-file PATH", "LISTEN_FDS", "NOTIFY_SOCKET", "READY=1", "STOPPING=1", "STATUS="]) expect(help).toContain(text);
  });
});
