// Logs of a real `lsvd serve` and the offline tools (docs/architecture.md, "Logs and progress"): --log-format json gives
// one parseable object per line with time, level, msg and fields; --log-level warn leaves out what serve does and keeps
// failed requests; after kill -9 the restart says in plain words what recovery did (the journal case only in debug);
// a backend outage ends with a "reachable again" line; fsck and gc, not on a terminal, write a line per step.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { NBD_CMD_WRITE, NBD_EPERM } from "../../src/nbd/wire.ts";
import { RawClient } from "../nbd/raw_client.ts";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, lsvd, run, runOk } from "./_harness.ts";
import { endpointOf } from "./_raw_nbd.ts";

const TEST_TIMEOUT_MS = 120_000;
const WAIT_MS = 30_000;

beforeAll(async () => {
  await ensureBuilt();
}, TEST_TIMEOUT_MS);
afterAll(cleanupAll);

/** Every line parses as JSON with time, level, msg and fields; returns the objects. */
function jsonLines(text: string): Array<{ time: string; level: string; msg: string; fields: Record<string, unknown> }> {
  const lines = text.split("\n").filter((line) => line !== "");
  return lines.map((line) => {
    const object = JSON.parse(line);
    expect(Object.keys(object)).toEqual(["time", "level", "msg", "fields"]);
    expect(Number.isNaN(Date.parse(object.time))).toBe(false);
    expect(["error", "warn", "info", "debug"]).toContain(object.level);
    expect(typeof object.msg).toBe("string");
    expect(object.fields.component).toBe("lsvd");
    return object;
  });
}

async function qemuWrite(uri: string, commands: string[]): Promise<void> {
  await runOk(["qemu-io", "-f", "raw", ...commands.flatMap((command) => ["-c", command]), uri]);
}

test(
  "--log-format json: every line of a serve run (start, writes, stop) is one object with time, level, msg, fields",
  async () => {
    const paths = await createVolume("log-json", { size: "64m", cacheSize: "64m" });
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--log-format", "json", "--log-level", "debug"] });
    await qemuWrite(server.uri, ["write -P 7 0 1M"]);
    const { log, exitCode } = await server.stop();
    expect(exitCode).toBe(0);
    const objects = jsonLines(log);
    const messages = objects.map((object) => object.msg);
    expect(messages.some((msg) => msg.startsWith("serving on nbd+unix://"))).toBe(true);
    expect(messages.some((msg) => /^stopped after [\d.]+ s: \d+ writes/.test(msg))).toBe(true);
    expect(objects.some((object) => object.level === "debug" && object.msg.startsWith("recovery: journal case @"))).toBe(true);
    const recovery = objects.find((object) => object.msg.startsWith("recovery: rolled forward"))!;
    expect(recovery.level).toBe("info");
    expect(recovery.fields).toEqual({ component: "lsvd", objectsRolledForward: 0, checkpointSeq: 0, journalRecordsReplayed: 0, journalDiscarded: false });
    expect(objects.find((object) => object.msg.startsWith("recovery: journal case"))!.fields.journalCase).toMatch(/^@[A-F]$/);
  },
  TEST_TIMEOUT_MS,
);

test(
  "--log-level warn: no line of what serve does, but failed requests are logged",
  async () => {
    const paths = await createVolume("log-warn", { size: "64m", cacheSize: "64m" });
    const socket = join(paths.dir, "sock");
    const pidFile = join(paths.dir, "serve.pid");
    const child = Bun.spawn({
      cmd: [await ensureBuilt(), "serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", socket, "--read-only", "--log-level", "warn", "--pid-file", pidFile],
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: TOOL_ENV,
    });
    const stderr = new Response(child.stderr).text();
    try {
      // The pid file is written once the server serves (no "serving on" line at this level to wait for).
      for (let waited = 0; !existsSync(pidFile) && waited < WAIT_MS && child.exitCode === null; waited += 20) await Bun.sleep(20);
      expect(existsSync(pidFile)).toBe(true);
      const client = await RawClient.connect(endpointOf(`nbd+unix:///?socket=${socket}`));
      await client.negotiate();
      await client.request(NBD_CMD_WRITE, 4096, 512, { cookie: 1, payload: new Uint8Array(512) });
      expect((await client.readSimpleReply()).error).toBe(NBD_EPERM);
      client.terminate();
    } finally {
      child.kill("SIGTERM");
      await Promise.race([child.exited, Bun.sleep(WAIT_MS)]);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    const log = await stderr;
    expect(child.exitCode).toBe(0);
    expect(log).toContain("WRITE at 4096 length 512 failed: EPERM (the export is read-only)");
    for (const infoLine of ["serving on", "recovery:", "lease of", "stopped after", "SIGTERM: shutting down", "connected"]) expect(log).not.toContain(infoLine);
  },
  TEST_TIMEOUT_MS,
);

test(
  "kill -9, then restart at the default level: recovery says in plain words what it rolled forward and replayed",
  async () => {
    const paths = await createVolume("log-recovery", { size: "64m", cacheSize: "64m" });
    // A long idle time: the writes stay in the journal, so the restart must replay them.
    const first = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--batch-idle-ms", "600000"] });
    await qemuWrite(first.uri, ["write -P 1 0 64k", "write -P 2 1M 64k", "write -P 3 2M 64k", "flush"]);
    await first.kill();
    const second = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--log-level", "info"] });
    const { log, exitCode } = await second.stop();
    expect(exitCode).toBe(0);
    const recovered = /recovery: rolled forward (\d+) objects? (after checkpoint \S+\.[0-9a-f]{8}|from the start of the log); replayed (\d+) journal records?\n/.exec(log);
    expect(recovered).not.toBeNull();
    expect(Number(recovered![3])).toBeGreaterThanOrEqual(3);
    expect(log).toMatch(new RegExp(`recovery: journal records walked: (\\d+) of \\1 \\(100%\\)`));
    expect(log).toMatch(/lease of vol: epoch \d+, taken over from serve pid \d+ .*: its holder is no longer running/);
    expect(log).not.toContain("journal case");
    expect(log).not.toContain("(case @");
  },
  TEST_TIMEOUT_MS,
);

test(
  "a backend outage (puts refused) ends with a line saying the backend is reachable again, after how long",
  async () => {
    const paths = await createVolume("log-outage", { size: "64m", cacheSize: "64m" });
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--batch-idle-ms", "100", "--no-gc"] });
    // Nothing can be created in the backend's directory: every put fails (as in serve_connections_test).
    const immutable = await run(["chattr", "+i", paths.backendDir]);
    if (immutable.exitCode !== 0) {
      console.log(`logging_test: outage skipped (chattr +i failed: ${immutable.stderr.trim()})`);
      expect((await server.stop()).exitCode).toBe(0);
      return;
    }
    try {
      await qemuWrite(server.uri, ["write -P 5 0 256k", "flush"]);
      expect(await server.waitFor(/error: put of \S+ failed, retrying in/, WAIT_MS)).toBe("found");
      expect(server.log).not.toContain("reachable again");
    } finally {
      await runOk(["chattr", "-i", paths.backendDir]);
    }
    expect(await server.waitFor(/warning: backend reachable again after \d+\.\d s, \d+ retr(y|ies) \(object puts land again\)/, WAIT_MS)).toBe("found");
    expect((await server.stop()).exitCode).toBe(0);
  },
  TEST_TIMEOUT_MS,
);

test(
  "fsck and gc, not on a terminal: a line per step (no line rewritten in place); json logs parse",
  async () => {
    const paths = await createVolume("log-tools", { size: "64m", cacheSize: "64m" });
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--batch-size", "64k", "--no-gc"] });
    await qemuWrite(server.uri, ["write -P 1 0 256k", "write -P 2 0 256k", "flush"]);
    expect((await server.stop()).exitCode).toBe(0);

    const fsck = await lsvd(["fsck", paths.volume]);
    expect(fsck.exitCode).toBe(0);
    expect(fsck.stderr).not.toContain("\r");
    const objects = Number(/^lsvd fsck: checking (\d+) object\(s\)$/m.exec(fsck.stderr)?.[1]);
    expect(objects).toBeGreaterThanOrEqual(8);
    expect(fsck.stderr).toContain("lsvd fsck: listing the objects\n");
    expect(fsck.stderr).toContain(`lsvd fsck: objects checked: ${objects} of ${objects} (100%)\n`);
    // A line per tenth of the objects: several, from the first (0%) on.
    expect(fsck.stderr).toContain(`lsvd fsck: objects checked: 0 of ${objects} (0%)\n`);
    expect(fsck.stderr.match(/^lsvd fsck: objects checked: /gm)!.length).toBeGreaterThanOrEqual(3);
    expect(fsck.stderr).toContain("lsvd fsck: building the map as recovery does\n");

    const json = await lsvd(["fsck", "--log-format", "json", paths.volume]);
    expect(json.exitCode).toBe(0);
    expect(jsonLines(json.stderr).some((object) => object.msg === `lsvd fsck: objects checked: ${objects} of ${objects} (100%)`)).toBe(true);

    const gc = await lsvd(["gc", "--cache", paths.cache, "--gc-threshold", "0.9", paths.volume]);
    expect(gc.exitCode).toBe(0);
    expect(gc.stderr).not.toContain("\r");
    expect(gc.stderr).toMatch(/^lsvd gc: \d+ object\(s\) in the backend; collecting$/m);
    expect(gc.stderr).toMatch(/^lsvd gc: round 1: \d+ object\(s\) cleaned, \d+ deleted, \d+ waiting for a checkpoint$/m);

    const quiet = await lsvd(["fsck", "--log-level", "warn", paths.volume]);
    expect({ exitCode: quiet.exitCode, stderr: quiet.stderr }).toEqual({ exitCode: 0, stderr: "" });

    // Refusals and failures: a bad level is named; with json logs the failure line is json too.
    const loud = await lsvd(["gc", "--log-level", "loud", "--cache", paths.cache, paths.volume]);
    expect({ exitCode: loud.exitCode, stderr: loud.stderr }).toEqual({ exitCode: 1, stderr: "lsvd gc: Invalid --log-level 'loud': expected one of error, warn, info, debug\n" });
    const both = await lsvd(["serve", "--quiet", "--log-level", "debug", "--cache", paths.cache, paths.volume]);
    expect({ exitCode: both.exitCode, stderr: both.stderr }).toEqual({ exitCode: 1, stderr: "lsvd serve: --quiet is --log-level warn; it cannot be given with --log-level debug\n" });
    const missing = await lsvd(["gc", "--log-format", "json", "--cache", paths.cache, `${paths.volume}-missing`]);
    expect(missing.exitCode).toBe(1);
    const failure = jsonLines(missing.stderr);
    expect(failure.at(-1)!.level).toBe("error");
    expect(failure.at(-1)!.msg).toStartWith("lsvd gc: ");
  },
  TEST_TIMEOUT_MS,
);
