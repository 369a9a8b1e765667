// `lsvd serve --nbd-io uring`, the real binary on a file backend (docs/architecture.md, "NBD on io_uring"): an
// unknown --nbd-io, and --nbd-io uring with --tls, are refused as bad input (exit 1, one clear line) before anything
// is bound or owned; fio verifies its writes through it over a unix socket and TCP, the listener being the server's
// own (a blocking socket: Bun's are non-blocking), and SIGTERM stops it cleanly (exit 0, the stop summary); a
// SIGKILL under writes and a restart, on io_uring again, keep every acknowledged write (the crash harness's intact
// case, test/crash/_cases.ts: its history model, recovery case, fsck after the kill and after the clean stop).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { runCrashCase } from "../crash/_cases.ts";
import { LSVD_BINARY, LsvdServer, STOP_SUMMARY_PATTERN, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, lsvd, run } from "./_harness.ts";

const MIB = 1024 * 1024;
const FIO_BYTES = 16 * MIB;
const FIO_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 120_000;
const URING = ["--nbd-io", "uring"];
/** O_NONBLOCK in /proc/PID/fdinfo's octal flags. */
const O_NONBLOCK = 0o4000;

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

/** Inodes of the sockets listening on `port` (TCP, IPv4) or bound to the unix socket `path`. */
function listeningInodes(where: { port: number } | { path: string }): Set<string> {
  const inodes = new Set<string>();
  if ("path" in where) {
    for (const line of readFileSync("/proc/net/unix", "utf8").split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[7] === where.path) inodes.add(fields[6]!);
    }
    return inodes;
  }
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
    if (fields[3] === "0A" && Number.parseInt(fields[1]!.split(":")[1]!, 16) === where.port) inodes.add(fields[9]!);
  }
  return inodes;
}

/** Whether each of the process's descriptors for the listening socket of `uri` is blocking (ours) or not (Bun's). */
function listenerBlocking(pid: number, uri: string): boolean[] {
  const unix = /[?&]socket=([^&]+)/.exec(uri);
  const inodes = listeningInodes(unix !== null ? { path: unix[1]! } : { port: Number(/:(\d+)/.exec(uri.slice("nbd://".length))![1]) });
  const blocking: boolean[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode === undefined || !inodes.has(inode)) continue;
    const flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"))![1]!, 8);
    blocking.push((flags & O_NONBLOCK) === 0);
  }
  return blocking;
}

/** The command's error lines (a note such as ISA-L's missing library may come before them). */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => line.startsWith("lsvd serve: "));
}

function fioArgs(uri: string): string[] {
  return [
    "fio",
    "--name=uring",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randwrite",
    "--bs=4k",
    `--size=${FIO_BYTES}`,
    "--iodepth=32",
    "--verify=crc32c",
    "--verify_fatal=1",
    "--output-format=json",
  ];
}

describe("lsvd serve --nbd-io uring", () => {
  test("an unknown --nbd-io, and --nbd-io uring with --tls, are bad input: exit 1, one clear line, nothing bound", async () => {
    const paths = await createVolume("uring-refused", { size: "32m", cacheSize: "64m" });
    const socket = join(paths.dir, "refused.sock");
    const serve = ["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", socket, "--admin-socket", join(paths.dir, "admin.sock")];
    const tls = await lsvd([...serve, ...URING, "--tls", "on", "--tls-certificates", join(paths.dir, "no-pki")]);
    expect(tls.exitCode).toBe(1);
    expect(errorLines(tls.stderr)).toEqual(["lsvd serve: --nbd-io uring offers no TLS: leave --tls off, or serve TLS with --nbd-io socket"]);
    const bogus = await lsvd([...serve, "--nbd-io", "bogus"]);
    expect(bogus.exitCode).toBe(1);
    expect(errorLines(bogus.stderr)).toEqual(["lsvd serve: Invalid --nbd-io 'bogus': expected socket or uring"]);
    expect(existsSync(socket)).toBe(false);
    // Nothing was owned either: the volume serves at once.
    const server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: URING });
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
