// `lsvd serve --nbd-io uring`, the real binary on a file backend (docs/architecture.md, "NBD on io_uring"): an
// unknown --nbd-io, and --nbd-io uring with --tls, are refused as bad input (exit 1, one clear line) before anything
// is bound or owned; fio verifies its writes through it over a unix socket and TCP, the listener being the server's
// own (a blocking socket: Bun's are non-blocking), and SIGTERM stops it cleanly (exit 0, the stop summary); a
// SIGKILL under writes and a restart, on io_uring again, keep every acknowledged write (the crash harness's intact
// case, test/crash/_cases.ts: its history model, recovery case, fsck after the kill and after the clean stop).
// The other serve forms on the ring: the daemon form (two exports, whose cache devices share the ring with the
// sockets: fio verifies through each at once over one socket, SIGTERM exits 0, both volumes fsck clean) and a
// snapshot served read-only (no cache device: the ring serves the sockets only; qemu-io reads the patterns back).
// Socket activation on the ring is in systemd_test.ts.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runCrashCase } from "../crash/_cases.ts";
import { LSVD_BINARY, LsvdServer, STOP_SUMMARY_PATTERN, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, listenerBlocking, lsvd, run, runOk } from "./_harness.ts";

const MIB = 1024 * 1024;
const FIO_BYTES = 16 * MIB;
/** Each export's share in the daemon form (two at once). */
const DAEMON_FIO_BYTES = 8 * MIB;
const FIO_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 120_000;
const URING = ["--nbd-io", "uring"];

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

/** The command's error lines (a note such as ISA-L's missing library may come before them). */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => line.startsWith("lsvd serve: "));
}

/** qemu-io COMMANDS on `uri`; throws unless each ran and each read found its pattern. */
async function runQemuIo(uri: string, commands: string[], flags: string[] = []): Promise<void> {
  const result = await run(["qemu-io", "-f", "raw", ...flags, uri, ...commands.flatMap((command) => ["-c", command])]);
  if (result.exitCode !== 0 || /fail|error/i.test(result.stdout + result.stderr)) throw new Error(`qemu-io ${commands.join("; ")}: exit ${result.exitCode}\n${result.stdout}\n${result.stderr}`);
}

function fioArgs(uri: string, bytes = FIO_BYTES): string[] {
  return [
    "fio",
    "--name=uring",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randwrite",
    "--bs=4k",
    `--size=${bytes}`,
    "--iodepth=32",
    "--verify=crc32c",
    "--verify_fatal=1",
    "--verify_state_save=0", // no local-uring-0-verify.state left in the working directory
    "--output-format=json",
  ];
}

describe("lsvd serve --nbd-io uring", () => {
  test("an unknown --nbd-io, and --nbd-io uring with --tls, are bad input: exit 1, one clear line, nothing bound; the default takes the ring", async () => {
    const paths = await createVolume("uring-refused", { size: "32m", cacheSize: "64m" });
    const socket = join(paths.dir, "refused.sock");
    const serve = ["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", socket, "--admin-socket", join(paths.dir, "admin.sock")];
    const tls = await lsvd([...serve, ...URING, "--tls", "on", "--tls-certificates", join(paths.dir, "no-pki")]);
    expect(tls.exitCode).toBe(1);
    expect(errorLines(tls.stderr)).toEqual(["lsvd serve: --nbd-io uring offers no TLS: leave --tls off, or serve TLS with --nbd-io socket"]);
    const bogus = await lsvd([...serve, "--nbd-io", "bogus"]);
    expect(bogus.exitCode).toBe(1);
    expect(errorLines(bogus.stderr)).toEqual(["lsvd serve: Invalid --nbd-io 'bogus': expected auto, socket or uring"]);
    expect(existsSync(socket)).toBe(false);
    // Nothing was owned either: the volume serves at once. The default, auto, takes the ring here (no TLS, a unix
    // socket, kernel 6.0+) and says so.
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
    expect(server.log).toContain("NBD on io_uring (--nbd-io auto)");
    expect((await server.stop()).exitCode).toBe(0);
  });

  for (const transport of TRANSPORTS) {
    test(
      `fio verify over ${transport} through the server's own listener; SIGTERM: exit 0 and the stop summary`,
      async () => {
        const paths = await createVolume(`uring-fio-${transport}`, { size: "64m", cacheSize: "64m" });
        const server = await LsvdServer.start({ ...paths, transport, dir: paths.dir, extraArgs: URING });
        expect(listenerBlocking(server.process.pid, server.uri)).toEqual([true]);
        const fio = await run(fioArgs(server.uri), { cwd: paths.dir, timeoutMs: FIO_TIMEOUT_MS });
        if (fio.exitCode !== 0) throw new Error(`fio failed:\n${fio.stdout}\n${fio.stderr}\n${server.log}`);
        const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
        expect(job.error).toBe(0);
        expect(job.write.io_bytes).toBe(FIO_BYTES);
        expect(job.read.io_bytes).toBe(FIO_BYTES);
        const stopped = await server.stop("SIGTERM");
        expect(stopped.exitCode).toBe(0);
        const summary = STOP_SUMMARY_PATTERN.exec(stopped.log);
        expect(summary).not.toBeNull();
        expect(Number(summary![1])).toBeGreaterThanOrEqual(FIO_BYTES / 4096);
        expect(stopped.log).not.toMatch(/error|internal|assertion/i);
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    "the daemon form: two exports share the ring; fio verify through each over one socket; SIGTERM: exit 0; both fsck clean",
    async () => {
      const a = await createVolume("uring-daemon-a", { size: "32m", cacheSize: "64m" });
      const b = await createVolume("uring-daemon-b", { size: "32m", cacheSize: "64m" });
      const exports = { a, b };
      const server = await LsvdServer.start({
        exports: Object.entries(exports).map(([name, paths]) => `${name}=${paths.volume},cache=${paths.cache}`),
        transport: "unix",
        dir: a.dir,
        extraArgs: URING,
      });
      expect(listenerBlocking(server.process.pid, server.uri)).toEqual([true]);
      // Both at once: each export's requests and cache-device ops are on the one ring together.
      const fios = await Promise.all(
        Object.keys(exports).map((name) => run(fioArgs(server.uri.replace(":///?", `:///${name}?`), DAEMON_FIO_BYTES), { cwd: a.dir, timeoutMs: FIO_TIMEOUT_MS })),
      );
      for (const fio of fios) {
        if (fio.exitCode !== 0) throw new Error(`fio failed:\n${fio.stdout}\n${fio.stderr}\n${server.log}`);
        const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
        expect([job.error, job.write.io_bytes, job.read.io_bytes]).toEqual([0, DAEMON_FIO_BYTES, DAEMON_FIO_BYTES]);
      }
      const stopped = await server.stop("SIGTERM");
      expect(stopped.exitCode).toBe(0);
      expect(stopped.log).not.toMatch(/error|internal|assertion/i);
      for (const paths of Object.values(exports)) {
        const fsck = await lsvd(["fsck", "--json", "--cache", paths.cache, paths.volume]);
        expect(fsck.exitCode).toBe(0);
        expect(JSON.parse(fsck.stdout).problems).toEqual([]);
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a snapshot (VOLUME@SNAP --read-only, no cache device): the ring serves the sockets; it reads back as written",
    async () => {
      const paths = await createVolume("uring-snapshot", { size: "16m", cacheSize: "64m" });
      const head = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runQemuIo(head.uri, ["write -P 0xa5 0 4M", "write -P 0x5a 4M 1M"]);
      expect((await head.stop("SIGTERM")).exitCode).toBe(0);
      await runOk([LSVD_BINARY, "snapshot", "create", paths.volume, "s1"]);
      const snapshot = await LsvdServer.start({ volume: `${paths.volume}@s1`, transport: "unix", dir: paths.dir, extraArgs: ["--read-only", ...URING] });
      expect(listenerBlocking(snapshot.process.pid, snapshot.uri)).toEqual([true]);
      await runQemuIo(snapshot.uri, ["read -P 0xa5 0 4M", "read -P 0x5a 4M 1M", "read -P 0 5M 11M"], ["-r"]);
      const stopped = await snapshot.stop("SIGTERM");
      expect(stopped.exitCode).toBe(0);
      expect(stopped.log).toContain("no cache");
      expect(stopped.log).not.toMatch(/error|internal|assertion/i);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "SIGKILL under writes, restart on io_uring: every acknowledged write reads back (the crash harness's intact case)",
    async () => {
      const savedBin = process.env.LSVD_BIN;
      process.env.LSVD_BIN = LSVD_BINARY; // the harness runs $LSVD_BIN: the real binary, not the sources
      try {
        const result = await runCrashCase("intact", 1, { rounds: 2, serverArgs: URING });
        if (result.failure) throw new Error(result.failure);
        expect(result.killPoints).toBe(2);
        expect(result.opsAcked).toBeGreaterThan(0);
      } finally {
        if (savedBin === undefined) delete process.env.LSVD_BIN;
        else process.env.LSVD_BIN = savedBin;
      }
    },
    TEST_TIMEOUT_MS,
  );
});
