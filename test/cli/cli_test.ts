// The `lsvd` command line (dist/lsvd, src/cli/): help and exit codes (0 ok, 1 error or bad input, 2 usage), mkdisk
// sizes and refusals, parse output of every object kind and of damaged files, mkcache creation, --show, and its
// refusal to format a cache whose journal still holds records, serve refusing another volume's cache or a taken
// port, and the binary run from cwd=/. Every error is one line on stderr, without a stack trace.
// Formats: docs/format.md; the reference's `parse` prints name, magic, UUID, version, type, seq, n_hdr, n_data.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { encodeDataObjectHeader } from "../../src/format/data_object.ts";
import { LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, makeTempDir, runOk, type RunResult, type VolumePaths } from "../e2e/_harness.ts";

const COMMAND_NAMES = ["mkdisk", "mkcache", "parse", "serve", "fsck", "gc", "lock", "import", "export", "ls", "rm", "resize"];
const GIB = 1024 ** 3;
const TEST_TIMEOUT_MS = 60_000;
/** A timestamped log line of `lsvd serve` (stderr); anything else there must be the one error line. */
const LOG_LINE = /^\d{4}-\d\d-\d\dT[\d:.]+Z lsvd: /;

/** Exit 1, nothing on stdout, and exactly one stderr line (after serve's log lines), matching `pattern`. */
function expectOneLineError(result: RunResult, command: string, pattern: RegExp): void {
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  const errors = lines.filter((line) => !LOG_LINE.test(line));
  expect({ exitCode: result.exitCode, errors }).toEqual({ exitCode: 1, errors: [expect.stringMatching(pattern)] });
  expect(errors[0]!.startsWith(`lsvd ${command}: `)).toBe(true);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stderr).not.toContain("internal error");
  expect(result.stdout).toBe("");
}

async function parseJson(path: string): Promise<Record<string, unknown>> {
  const result = await lsvd(["parse", "--json", path]);
  if (result.exitCode !== 0) throw new Error(`parse ${path}: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

/** Text `parse` output as key -> value for its "key: value" lines. */
function fields(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z0-9_ ]+):\s+(.*)$/.exec(line);
    if (match) out[match[1]!.trim()] = match[2]!.trim();
  }
  return out;
}

function objectPath(paths: VolumePaths, seq: number): string {
  return `${paths.volume}.${seq.toString(16).padStart(8, "0")}`;
}

let dir: string;
let backendDir: string;
/** A volume with DATA and checkpoint objects: written through NBD, then stopped cleanly. */
let used: VolumePaths;

beforeAll(async () => {
  await ensureBuilt();
  dir = makeTempDir("cli");
  backendDir = join(dir, "backend");
  await runOk(["mkdir", backendDir]);
  used = await createVolume("cli-used", { size: "64m", cacheSize: "64m" });
  const server = await LsvdServer.start({ ...used, transport: "unix", dir: used.dir });
  await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 1m", "-c", "discard 65536 4096", "-c", "write -P 0x62 8m 64k", server.uri]);
  expect((await server.stop()).exitCode).toBe(0);
}, TEST_TIMEOUT_MS);

afterAll(cleanupAll);

describe("help and exit codes", () => {
  test("lsvd --help lists every command, exit 0; no arguments is a usage error, exit 2", async () => {
    const help = await lsvd(["--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stderr).toBe("");
    for (const name of COMMAND_NAMES) expect(help.stdout).toMatch(new RegExp(`^  ${name} `, "m"));
    expect((await lsvd(["-h"])).exitCode).toBe(0);
    const bare = await lsvd([]);
    expect(bare.exitCode).toBe(2);
    expect(bare.stdout).toContain("Usage: lsvd <command>");
  });

  for (const name of COMMAND_NAMES) {
    test(`lsvd ${name} --help, exit 0`, async () => {
      const result = await lsvd([name, "--help"]);
      expect(result.exitCode).toBe(0);
      expect(result.stderr).toBe("");
      expect(result.stdout.startsWith(`Usage: lsvd ${name}`)).toBe(true);
    });
  }

  test("unknown command: exit 2, one line", async () => {
    const result = await lsvd(["frobnicate", "--x"]);
    expect(result.exitCode).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe("lsvd: unknown command 'frobnicate' (try 'lsvd --help')\n");
  });

  test("unknown option and missing arguments: exit 1, one line", async () => {
    expectOneLineError(await lsvd(["mkdisk", "--bogus", "x", join(backendDir, "o")]), "mkdisk", /bogus/);
    expectOneLineError(await lsvd(["mkdisk"]), "mkdisk", /expected VOLUME, got none/);
    // parseArgs' own message for a dash-led value has three lines; it must come out as one.
    expectOneLineError(await lsvd(["mkdisk", "--size", "-1", join(backendDir, "o")]), "mkdisk", /--size/);
    // mkcache's usage text has two lines; so does the message that embeds it.
    expectOneLineError(await lsvd(["mkcache", "--size", "64m", join(dir, "c")]), "mkcache", /exactly one of --volume or --uuid/);
  });
});

describe("mkdisk", () => {
  test("default size is 1 GiB; human sizes", async () => {
    for (const [size, bytes] of [
      [undefined, GIB],
      ["512m", 512 * 1024 ** 2],
      ["2g", 2 * GIB],
      ["1.5g", 1.5 * GIB],
      ["64k", 65536],
      ["32t", 32 * 1024 ** 4],
    ] as const) {
      const volume = join(backendDir, `size-${size ?? "default"}`);
      const result = await lsvd(["mkdisk", ...(size ? ["--size", size] : []), volume]);
      expect({ size, exitCode: result.exitCode, stderr: result.stderr }).toEqual({ size, exitCode: 0, stderr: "" });
      expect(result.stdout).toMatch(/^created volume file:\/\/\S+: .*, UUID [0-9a-f-]{36}\n$/);
      expect((await parseJson(volume)).volSectors).toBe(bytes / 512);
    }
  });

  test("refuses 0, sizes not a multiple of 4 KiB, above 32 TiB, and garbage", async () => {
    for (const [size, pattern] of [
      ["0", /cannot be empty/],
      ["1000", /not a multiple of 4 KiB/],
      ["4097", /not a multiple of 4 KiB/],
      ["33t", /at most 32 TiB/],
      [String(32 * 1024 ** 4 + 4096), /at most 32 TiB/],
      ["12x", /Invalid size '12x'/],
    ] as const) {
      const volume = join(backendDir, `bad-${size}`);
      expectOneLineError(await lsvd(["mkdisk", "--size", size, volume]), "mkdisk", pattern);
      expect(existsSync(volume)).toBe(false);
    }
  });

  test("refuses an existing volume without --force; --force replaces it and deletes its objects", async () => {
    const before = await parseJson(used.volume);
    expect(readdirSync(used.backendDir).length).toBeGreaterThan(2);
    const refused = await lsvd(["mkdisk", "--size", "128m", used.volume]);
    expectOneLineError(refused, "mkdisk", /already exists .*--force/);
    expect(await parseJson(used.volume)).toEqual(before);
    expect((await lsvd(["parse", objectPath(used, 1)])).exitCode).toBe(0);
  });

  test(
    "--force replaces a volume: its objects are deleted, a new UUID and size, nothing old reads back",
    async () => {
      const paths = await createVolume("cli-force", { size: "64m", cacheSize: "64m" });
      let server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 256k", server.uri]);
      expect((await server.stop()).exitCode).toBe(0);
      const before = await parseJson(paths.volume);
      expect(readdirSync(paths.backendDir).length).toBeGreaterThan(2);

      const replaced = await lsvd(["mkdisk", "--force", "--size", "128m", paths.volume]);
      expect(replaced.exitCode).toBe(0);
      // Besides the new superblock only the file store's lock file (src/backend/file_store.ts) and the lease are left.
      expect(readdirSync(paths.backendDir).sort()).toEqual([".lsvd-store.lock", "vol", "vol.lease"]);
      const after = await parseJson(paths.volume);
      expect(after.volUuid).not.toBe(before.volUuid);
      expect(after).toMatchObject({ volSectors: (128 * 1024 ** 2) / 512, checkpoints: [] });
      // The new volume's log starts above every name the old one used, which are skipped for good.
      const nextSeq = Number(after.nextSeq);
      expect(nextSeq).toBeGreaterThanOrEqual(Number(before.nextSeq));
      expect(after.skipped).toEqual([{ first: 1, last: nextSeq - 1 }]);

      // The old cache belongs to the old UUID; its journal was flushed by the clean stop, so no --force is needed.
      expect((await lsvd(["mkcache", "--volume", paths.volume, paths.cache])).exitCode).toBe(0);
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runOk(["qemu-io", "-f", "raw", "-c", "read -P 0 0 256k", server.uri]);
      expect((await server.stop()).exitCode).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  test("--uuid sets the UUID, a bad one is refused; --json", async () => {
    const uuid = "0b3a4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d";
    const volume = join(backendDir, "with-uuid");
    const created = await lsvd(["mkdisk", "--uuid", uuid, "--size", "8m", "--json", volume]);
    expect(created.exitCode).toBe(0);
    expect(JSON.parse(created.stdout)).toEqual({ volume: `file://${volume}`, uuid, sizeBytes: 8 * 1024 ** 2, epoch: 1, firstSeq: 1, objectsDeleted: 0 });
    expect((await parseJson(volume)).volUuid).toBe(uuid);
    for (const bad of ["nope", "0b3a4c5d-6e7f-4a8b-9c0d", "0b3a4c5d6e7f4a8b9c0d1e2f3a4b5c6d0"]) {
      expectOneLineError(await lsvd(["mkdisk", "--uuid", bad, join(backendDir, "bad-uuid")]), "mkdisk", /Invalid UUID/);
    }
    expect(existsSync(join(backendDir, "bad-uuid"))).toBe(false);
  });

  test("a missing backend directory is created; one that cannot be is a one-line error", async () => {
    const created = await lsvd(["mkdisk", join(dir, "new-dir", "sub", "vol")]);
    expect(created.exitCode).toBe(0);
    expect(existsSync(join(dir, "new-dir", "sub", "vol"))).toBe(true);
    await Bun.write(join(dir, "a-file"), "x");
    expectOneLineError(await lsvd(["mkdisk", join(dir, "a-file", "vol")]), "mkdisk", /Cannot create directory/);
  });
});

describe("parse", () => {
  test("superblock: the reference's fields, and --json", async () => {
    const volume = join(backendDir, "parse-me");
    const uuid = "11111111-2222-4333-8444-555555555555";
    expect((await lsvd(["mkdisk", "--size", "3g", "--uuid", uuid, volume])).exitCode).toBe(0);
    const text = await lsvd(["parse", volume]);
    expect(text.exitCode).toBe(0);
    expect(fields(text.stdout)).toMatchObject({
      name: volume,
      magic: "OK",
      UUID: uuid,
      version: "1",
      type: "SUPER",
      seq: "0",
      n_hdr: "8",
      n_data: "0",
      vol_size: String((3 * GIB) / 512),
      ckpts: "[]",
      next_seq: "1",
    });
    expect(await parseJson(volume)).toMatchObject({ type: "SUPER", volUuid: uuid, seq: 0, hdrSectors: 8, dataSectors: 0, volSectors: (3 * GIB) / 512, checkpoints: [] });
  });

  test("data and checkpoint objects of a used volume, and a cache file", async () => {
    const superblock = await parseJson(used.volume);
    const checkpointSeq = (superblock.checkpoints as number[]).at(-1)!;
    const data = await lsvd(["parse", objectPath(used, 1)]);
    expect(data.exitCode).toBe(0);
    const dataFields = fields(data.stdout);
    expect(dataFields).toMatchObject({ magic: "OK", UUID: superblock.volUuid as string, version: "1", type: "DATA", seq: "1" });
    expect(dataFields.data_crc32c).toMatch(/^[0-9a-f]{8} \(OK\)$/);
    const checkpoint = await lsvd(["parse", objectPath(used, checkpointSeq)]);
    expect(checkpoint.exitCode).toBe(0);
    expect(fields(checkpoint.stdout)).toMatchObject({ type: "CKPT", seq: String(checkpointSeq), n_data: "0" });
    const cache = await lsvd(["parse", used.cache]);
    expect(cache.exitCode).toBe(0);
    expect(fields(cache.stdout)).toMatchObject({ kind: "CACHE", "volume UUID": superblock.volUuid as string });
  });

  test("a data object with 20,000 extents: --json output far beyond a pipe's 64 KiB arrives whole", async () => {
    // process.exit() right after process.stdout.write() used to cut piped output at the pipe's 64 KiB.
    const extentCount = 20_000;
    const extents = Array.from({ length: extentCount }, (_, i) => ({ lba: i * 16, sectors: 8 }));
    const dataArea = new Uint8Array(extentCount * 8 * 512);
    const header = encodeDataObjectHeader(
      { volUuid: randomUUID(), seq: 7, cacheSeq: 1, cacheSeqLast: 2, cacheUuid: randomUUID(), objsCleaned: [], extents, trims: [], writeContinues: false },
      dataArea,
    );
    const path = join(dir, "many-extents");
    const object = new Uint8Array(header.length + dataArea.length);
    object.set(header);
    writeFileSync(path, object);
    const result = await lsvd(["parse", "--json", path]);
    expect({ exitCode: result.exitCode, stderr: result.stderr }).toEqual({ exitCode: 0, stderr: "" });
    expect(result.stdout.length).toBeGreaterThan(16 * 65536);
    const parsed = JSON.parse(result.stdout) as { extents: Array<{ lba: number; sectors: number }> };
    expect(parsed.extents.length).toBe(extentCount);
    expect(parsed.extents.at(-1)).toEqual(extents.at(-1)!);
  });

  test("truncated, corrupted, foreign and missing files: exit 1, one line", async () => {
    const superblockBytes = readFileSync(used.volume);
    const dataBytes = readFileSync(objectPath(used, 1));
    const cases: Array<[string, Uint8Array | null, RegExp]> = [
      ["truncated-super", superblockBytes.subarray(0, 100), /Cannot parse .*truncated-super/],
      ["truncated-header", dataBytes.subarray(0, 30), /truncated/],
      ["truncated-data", dataBytes.subarray(0, dataBytes.length - 512), /truncated/],
      ["corrupt-super", withByteFlipped(superblockBytes, 60), /CRC/],
      ["corrupt-data-area", withByteFlipped(dataBytes, dataBytes.length - 100), /CRC/],
      ["not-lsvd", new TextEncoder().encode("#!/bin/sh\necho this is not an lsvd object, but long enough to have a header\n"), /bad magic/],
      ["empty", new Uint8Array(0), /truncated/],
      ["missing", null, /Cannot open .*missing: ENOENT/],
    ];
    for (const [name, bytes, pattern] of cases) {
      const path = join(dir, name);
      if (bytes) writeFileSync(path, bytes);
      const result = await lsvd(["parse", path]);
      expectOneLineError(result, "parse", pattern);
      expectOneLineError(await lsvd(["parse", "--json", path]), "parse", pattern);
    }
  }, 30_000); // a dozen CLI processes: slow on a loaded machine
});

function withByteFlipped(bytes: Uint8Array, offset: number): Uint8Array {
  const copy = new Uint8Array(bytes);
  copy[offset]! ^= 0x40;
  return copy;
}

describe("mkcache", () => {
  test("--size creates; --show and --show --json read it back", async () => {
    const cache = join(dir, "cache-new");
    const created = await lsvd(["mkcache", "--volume", used.volume, "--size", "96m", cache]);
    expect(created.exitCode).toBe(0);
    expect(created.stdout).toContain("(96 MiB)");
    const volUuid = (await parseJson(used.volume)).volUuid;
    const shown = await lsvd(["mkcache", "--show", cache]);
    expect(shown.exitCode).toBe(0);
    expect(fields(shown.stdout)).toMatchObject({ kind: "CACHE", "volume UUID": volUuid as string, size: String(96 * 1024 ** 2) });
    const json = JSON.parse((await lsvd(["mkcache", "--show", "--json", cache])).stdout);
    expect(json).toMatchObject({ kind: "cache", volUuid, sizeBytes: 96 * 1024 ** 2, journalStartBytes: 4096, journalBytes: 48 * 1024 ** 2 - 4096 });
    expect(json.replayOffsetBytes).toBe(json.journalStartBytes);
  });

  test("--uuid instead of --volume; a bad UUID or both are refused", async () => {
    const uuid = "22222222-3333-4444-8555-666666666666";
    const cache = join(dir, "cache-uuid");
    expect((await lsvd(["mkcache", "--uuid", uuid, "--size", "64m", "--json", cache])).exitCode).toBe(0);
    expect(JSON.parse((await lsvd(["mkcache", "--show", "--json", cache])).stdout).volUuid).toBe(uuid);
    expectOneLineError(await lsvd(["mkcache", "--uuid", "xyz", "--size", "64m", join(dir, "cache-bad-uuid")]), "mkcache", /Invalid UUID/);
    expectOneLineError(await lsvd(["mkcache", "--uuid", uuid, "--volume", used.volume, "--size", "64m", join(dir, "cache-both")]), "mkcache", /exactly one/);
    expect(existsSync(join(dir, "cache-bad-uuid"))).toBe(false);
  });

  test("refuses a cache too small or not a multiple of 4 KiB, without leaving a file; a missing file needs --size", async () => {
    const cache = join(dir, "cache-small");
    expectOneLineError(await lsvd(["mkcache", "--volume", used.volume, "--size", "1m", cache]), "mkcache", /too small/);
    expect(existsSync(cache)).toBe(false);
    expectOneLineError(await lsvd(["mkcache", "--volume", used.volume, "--size", "65537k", cache]), "mkcache", /multiple of 4 KiB/);
    expect(existsSync(cache)).toBe(false);
    expectOneLineError(await lsvd(["mkcache", "--volume", used.volume, cache]), "mkcache", /does not exist: give --size/);
    expect(existsSync(cache)).toBe(false);
    // After the refusals, the same path formats normally.
    expect((await lsvd(["mkcache", "--volume", used.volume, "--size", "64m", cache])).exitCode).toBe(0);
  });

  test(
    "refuses a cache whose journal holds live records (after SIGKILL); --force formats it; a clean stop leaves none",
    async () => {
      const paths = await createVolume("cli-live", { size: "64m", cacheSize: "64m" });
      let server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x77 4096 8192", server.uri]);
      await server.kill();
      expectOneLineError(await lsvd(["mkcache", "--volume", paths.volume, paths.cache]), "mkcache", /live cache of this volume .*--force/);
      const otherUuid = "33333333-4444-4555-8666-777777777777";
      expectOneLineError(await lsvd(["mkcache", "--uuid", otherUuid, paths.cache]), "mkcache", /live cache of another volume/);
      // The refusals changed nothing: serving replays the write.
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runOk(["qemu-io", "-f", "raw", "-c", "read -P 0x77 4096 8192", server.uri]);
      await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x78 65536 4096", server.uri]);
      await server.kill();
      const forced = await lsvd(["mkcache", "--volume", paths.volume, "--force", paths.cache]);
      expect(forced.exitCode).toBe(0);
      const json = JSON.parse((await lsvd(["mkcache", "--show", "--json", paths.cache])).stdout);
      expect(json.replayOffsetBytes).toBe(json.journalStartBytes);

      // A clean stop puts everything in the backend: mkcache needs no --force then.
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x79 0 4096", server.uri]);
      expect((await server.stop()).exitCode).toBe(0);
      expect((await lsvd(["mkcache", "--volume", paths.volume, paths.cache])).exitCode).toBe(0);
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir });
      // (What --force discarded may or may not have reached the backend first; the clean stop's write must be there.)
      await runOk(["qemu-io", "-f", "raw", "-c", "read -P 0x79 0 4096", server.uri]);
      expect((await server.stop()).exitCode).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("serve", () => {
  test("refuses a cache of another volume with a clear message, exit 1", async () => {
    const other = join(backendDir, "other-volume");
    expect((await lsvd(["mkdisk", "--size", "64m", other])).exitCode).toBe(0);
    const result = await lsvd(["serve", "--volume", other, "--cache", used.cache, "--socket", join(dir, "never.sock")]);
    const usedUuid = (await parseJson(used.volume)).volUuid as string;
    expectOneLineError(result, "serve", new RegExp(`Cache .* belongs to volume ${usedUuid}, not [0-9a-f-]{36}: refusing`));
    expect(existsSync(join(dir, "never.sock"))).toBe(false);
  });

  test("missing --cache, and a TCP port already taken: exit 1, one line", async () => {
    expectOneLineError(await lsvd(["serve", "--volume", used.volume]), "serve", /--cache is required/);
    const blocker = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const result = await lsvd(["serve", "--volume", used.volume, "--cache", used.cache, "--listen", `127.0.0.1:${blocker.port}`]);
      expectOneLineError(result, "serve", new RegExp(`Cannot listen on 127.0.0.1:${blocker.port}: EADDRINUSE`));
    } finally {
      blocker.stop(true);
    }
    // The failed start closed the volume properly: it serves again.
    const server = await LsvdServer.start({ ...used, transport: "unix", dir: used.dir });
    expect((await server.stop()).exitCode).toBe(0);
  });
});

describe("cwd=/", () => {
  test(
    "every command works when run from /",
    async () => {
      const work = makeTempDir("cli-root");
      await runOk(["mkdir", join(work, "b")]);
      const volume = join(work, "b", "vol");
      const cache = join(work, "cache");
      expect((await lsvd(["mkdisk", "--size", "32m", volume], { cwd: "/" })).exitCode).toBe(0);
      expect((await lsvd(["mkcache", "--volume", volume, "--size", "64m", cache], { cwd: "/" })).exitCode).toBe(0);
      expect((await lsvd(["parse", volume], { cwd: "/" })).exitCode).toBe(0);
      const server = await LsvdServer.start({ volume, cache, transport: "unix", dir: work, cwd: "/" });
      await runOk(["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 64k", "-c", "read -P 0x42 0 64k", server.uri], { cwd: "/" });
      expect((await server.stop()).exitCode).toBe(0);
      expect((await lsvd(["parse", `${volume}.00000001`], { cwd: "/" })).exitCode).toBe(0);
      expect((await lsvd(["--help"], { cwd: "/" })).exitCode).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});
