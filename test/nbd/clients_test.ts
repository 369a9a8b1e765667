// Real NBD clients against the server, over a unix socket and over TCP on 127.0.0.1 (ephemeral port):
// nbdinfo (--json, --list, --map), qemu-io (odd offsets, pattern checks), nbdcopy (hash round trip),
// python3-libnbd (structured replies, block status, cache, fast zero, server-side errors) and fio verify.
// Clients run as child processes (async spawn: the server shares this event loop), each bounded by a timeout.
// Each runs on both transports, Bun's sockets and io_uring (nbd_io.ts).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NBD_REQUEST_BYTES_MAX } from "../../src/constants.ts";
import { startNbdServer, type NbdServer } from "../../src/nbd/server.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";
import { NBD_IO_KINDS, nbdIoRing } from "./nbd_io.ts";

const SIZE_BYTES = 8 * 1024 * 1024;
const CLIENT_TIMEOUT_MS = 30_000;

interface RunResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

async function run(cmd: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const child = Bun.spawn({
    cmd,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}`, ...env },
    timeout: CLIENT_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  const exitCode = await child.exited;
  return { exitCode, stdout, stderr };
}

function expectSuccess(result: RunResult): void {
  if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}\n${result.stdout}\n${result.stderr}`);
}

const PYTHON_CHECKS = `
import errno, sys, nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation")
assert h.can_cache() and h.can_fast_zero() and h.can_df() and h.can_multi_conn()
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero() and not h.is_read_only()
size = h.get_size()
assert size == int(sys.argv[2])

# Structured read: one OFFSET_DATA chunk covering the request.
h.pwrite(b"\\x5a" * 8192 + b"\\xa5" * 4096, 65536, nbd.CMD_FLAG_FUA)
chunks = []
def chunk(subbuf, offset, status, error):
    chunks.append((len(subbuf), offset, status))
    return 0
buf = h.pread_structured(12288, 65536, chunk, nbd.CMD_FLAG_DF)
assert buf == b"\\x5a" * 8192 + b"\\xa5" * 4096, "structured read data"
assert chunks == [(12288, 65536, nbd.READ_DATA)], chunks

# Block status: data where written, hole+zero elsewhere; REQ_ONE gives one extent.
extents = []
def extent(metacontext, offset, entries, err):
    assert metacontext == "base:allocation"
    extents.extend(entries)
    return 0
h.block_status(1024 * 1024, 0, extent)
assert extents[0:6] == [65536, 3, 12288, 0, 1024 * 1024 - 65536 - 12288, 3], extents
extents.clear()
h.block_status(1024 * 1024, 0, extent, nbd.CMD_FLAG_REQ_ONE)
assert extents == [65536, 3], extents

# Cache, fast zero (holes), then the zeroed range reads as zeroes and reports a hole.
h.cache(65536, 65536)
h.zero(8192, 65536, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(8192, 65536) == bytes(8192)
extents.clear()
h.block_status(8192, 65536, extent)
assert extents == [8192, 3], extents
h.trim(4096, 73728)
h.flush()

# Errors from the server (client-side checks off): EINVAL past the end, EINVAL above the maximum.
h.set_strict_mode(0)
for count, offset in ((4096, size), (${NBD_REQUEST_BYTES_MAX} + 512, 0)):
    try:
        h.pread(count, offset)
        raise AssertionError("read should fail")
    except nbd.Error as e:
        assert e.errnum == errno.EINVAL, e
try:
    h.pwrite(b"x" * 512, size)
    raise AssertionError("write should fail")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
assert h.pread(512, 0) == bytes(512)
h.shutdown()
print("ok")
`;

const nbdIo = nbdIoRing();

for (const io of NBD_IO_KINDS) {
  for (const transport of ["unix", "tcp"] as const) {
    describe(`real clients over ${transport}, NBD over ${io}`, () => {
      let directory: string;
      let device: MemoryBlockDevice;
      let server: NbdServer;
      let uri: string;
      const logLines: string[] = [];

      beforeAll(async () => {
        directory = mkdtempSync(join(tmpdir(), `lsvd-nbd-clients-${transport}-${io}-`));
        device = new MemoryBlockDevice(SIZE_BYTES);
        server = await startNbdServer({
          device,
          exportName: "disk",
          description: "lsvd test disk",
          ...(transport === "unix"
            ? { socketPath: join(directory, "nbd.sock") }
            : { listen: { host: "127.0.0.1", port: 0 } }),
          log: (line) => logLines.push(line),
          ...nbdIo.options(io),
        });
        expect(server.addresses.length).toBe(1);
        uri = server.addresses[0]!;
        if (transport === "unix") expect(uri).toBe(`nbd+unix:///disk?socket=${join(directory, "nbd.sock")}`);
        else expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
      });

      afterAll(async () => {
        await server.close();
        expect(server.connectionCount()).toBe(0);
        nbdIo.expectIdle();
        rmSync(directory, { recursive: true, force: true });
        // Real clients never trip a protocol error.
        expect(server.stats().protocolErrors).toBe(0);
      });

      test("nbdinfo --json: size, flags, block sizes", async () => {
        const result = await run(["nbdinfo", "--json", uri]);
        expectSuccess(result);
        const info = JSON.parse(result.stdout);
        expect(info.protocol).toBe("newstyle-fixed");
        expect(info.structured).toBe(true);
        const exported = info.exports[0];
        expect(exported["export-name"]).toBe("disk");
        expect(exported.description).toBe("lsvd test disk");
        expect(exported["export-size"]).toBe(SIZE_BYTES);
        expect(exported.contexts).toEqual(["base:allocation"]);
        expect(exported.block_size_minimum).toBe(1);
        expect(exported.block_size_preferred).toBe(4096);
        expect(exported.block_size_maximum).toBe(NBD_REQUEST_BYTES_MAX);
        for (const flag of ["can_multi_conn", "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_df"]) {
          expect([flag, exported[flag]]).toEqual([flag, true]);
        }
        expect(exported.is_read_only).toBe(false);
      });

      test("nbdinfo --list", async () => {
        const result = await run(["nbdinfo", "--list", "--json", uri]);
        expectSuccess(result);
        const info = JSON.parse(result.stdout);
        expect(info.exports.map((exported: { "export-name": string }) => exported["export-name"])).toEqual(["disk"]);
      });

      test("qemu-io at odd offsets with pattern verification, discard, write -z", async () => {
        const commands = [
          "write -P 0xab 1000 3000",
          "write -P 0xcd 4000 10000",
          "read -P 0xab 1000 3000",
          "read -P 0xcd 4000 10000",
          "read -P 0 0 1000",
          "write -z 5001 2000",
          "read -P 0 5001 2000",
          "read -P 0xcd 4000 1001",
          "read -P 0xcd 7001 6999",
          "discard 1048576 65536",
          "read -P 0 1048576 65536",
          "aio_write -P 0x11 2097152 4096",
          "aio_write -P 0x22 2101248 4096",
          "aio_flush",
          "read -P 0x11 2097152 4096",
          "read -P 0x22 2101248 4096",
        ];
        const args = ["qemu-io", "-f", "raw", "-d", "unmap"];
        for (const command of commands) args.push("-c", command);
        const result = await run([...args, uri]);
        expectSuccess(result);
        expect(result.stdout + result.stderr).not.toMatch(/fail|error|mismatch/i);
        expect(result.stdout.match(/^read /gm)?.length).toBe(9);
      });

      test("nbdinfo --map shows holes and data", async () => {
        const data = new Uint8Array(65536).fill(7);
        await device.write(4 * 1024 * 1024, data, false);
        const result = await run(["nbdinfo", "--map", "--json", uri]);
        expectSuccess(result);
        const map: { offset: number; length: number; type: number }[] = JSON.parse(result.stdout);
        const at = (offset: number) => map.find((entry) => entry.offset <= offset && offset < entry.offset + entry.length)!;
        expect(at(4 * 1024 * 1024).type).toBe(0);
        expect(at(4 * 1024 * 1024 + 65535).type).toBe(0);
        expect(at(4 * 1024 * 1024 + 65536).type).toBe(3);
        expect(at(SIZE_BYTES - 1).type).toBe(3);
        expect(map.reduce((sum, entry) => sum + entry.length, 0)).toBe(SIZE_BYTES);
      });

      test("nbdcopy a random file in and out: hashes match", async () => {
        const source = join(directory, "source.bin");
        const target = join(directory, "target.bin");
        const content = randomBytes(SIZE_BYTES);
        writeFileSync(source, content);
        expectSuccess(await run(["nbdcopy", "--connections=2", "--requests=16", source, uri]));
        expectSuccess(await run(["nbdcopy", uri, target]));
        const hash = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
        expect(hash(readFileSync(target))).toBe(hash(content));
      });

      test("python3-libnbd: structured replies, block status, cache, fast zero, server errors", async () => {
        // Start from a clean first MiB so the expected extents are exact.
        await device.writeZeroes(0, 1024 * 1024, false);
        const script = join(directory, "checks.py");
        writeFileSync(script, PYTHON_CHECKS);
        const errorRepliesBefore = server.stats().errorReplies;
        const result = await run(["/usr/bin/python3", script, uri, String(SIZE_BYTES)]);
        expectSuccess(result);
        expect(result.stdout.trim()).toBe("ok");
        // The three refused requests were refused by the server, not by libnbd.
        expect(server.stats().errorReplies - errorRepliesBefore).toBe(3);
      });

      test("fio --ioengine=nbd with crc32c verify", async () => {
        const result = await run([
          "fio",
          "--ioengine=nbd",
          `--uri=${uri}`,
          "--name=verify",
          "--rw=randwrite",
          "--bs=4k",
          "--iodepth=16",
          "--size=4m",
          "--verify=crc32c",
          "--verify_fatal=1",
          "--verify_state_save=0", // no local-verify-0-verify.state left in the working directory
          "--output-format=json",
        ]);
        expectSuccess(result);
        const report = JSON.parse(result.stdout.slice(result.stdout.indexOf("{")));
        expect(report.jobs[0].error).toBe(0);
        expect(report.jobs[0].write.total_ios).toBe(1024);
        expect(report.jobs[0].read.total_ios).toBe(1024);
      });
    });
  }
}
