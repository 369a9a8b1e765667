// `lsvd import`, `export`, `ls`, `rm` and `resize` on the file backend, as real processes (dist/lsvd): images round
// trip byte for byte and sparse, an import replaces what the volume held, served volumes are refused, export writes
// nothing to the backend, and rm leaves nothing (also after an interrupted rm). Order of writes and rules:
// docs/architecture.md, "Volume tools".

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeSuperblock, newSuperblock } from "../../src/format/superblock_object.ts";
import { LsvdServer, TOOL_ENV, cleanupAll, ensureBuilt, lsvd, makeTempDir, run, type RunResult } from "../e2e/_harness.ts";

const TEST_TIMEOUT_MS = 120_000;
/** Not a multiple of 512: the volume is this rounded up to 4 KiB, the tail reads as zeroes. */
const IMAGE_BYTES = 20_000_000 + 1000;
const VOLUME_BYTES = Math.ceil(IMAGE_BYTES / 4096) * 4096;

function ok(result: RunResult, what: string): RunResult {
  if (result.exitCode !== 0) throw new Error(`${what} failed (exit ${result.exitCode}):\n${result.stderr}${result.stdout}`);
  return result;
}

/** An image with data in `regions` ([offset, length]) and zeroes elsewhere. */
function makeImage(path: string, bytes: number, regions: Array<[number, number]>): Buffer {
  const image = Buffer.alloc(bytes);
  for (const [offset, length] of regions) randomBytes(length).copy(image, offset);
  writeFileSync(path, image);
  return image;
}

function padded(image: Buffer, bytes: number): Buffer {
  return Buffer.concat([image, Buffer.alloc(bytes - image.byteLength)]);
}

/** Name, inode, mtime and content digest of every file in a directory: "unchanged" for a file backend, rewrites of equal bytes included. */
function snapshot(directory: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(directory).sort()) {
    const path = join(directory, name);
    const { ino, mtimeMs } = statSync(path);
    out[name] = `${ino} ${mtimeMs} ${createHash("sha256").update(readFileSync(path)).digest("hex")}`;
  }
  return out;
}

let dir: string;
let backend: string;
let volume: string;
let image1: Buffer;
let image2: Buffer;

beforeAll(async () => {
  await ensureBuilt();
  dir = makeTempDir("tools");
  backend = join(dir, "backend"); // not created: import creates it, as mkdisk does
  volume = join(backend, "vol");
}, TEST_TIMEOUT_MS); // ensureBuilt may compile

afterAll(cleanupAll);

describe("import and export", () => {
  test("import creates the volume sized to FILE; export gives the image back, sparse; fsck is clean; serve reads the same", async () => {
    // Data at the start, an unaligned run in the middle, and the unaligned tail; zeroes elsewhere.
    image1 = makeImage(join(dir, "image1"), IMAGE_BYTES, [[0, 3_000_000], [8 * 1024 * 1024 + 100, 5000], [IMAGE_BYTES - 700, 700]]);
    const imported = ok(await lsvd(["import", "--json", "--object-size", "1m", join(dir, "image1"), volume]), "import");
    const result = JSON.parse(imported.stdout);
    expect({ created: result.created, volumeBytes: result.volumeBytes, fileBytes: result.fileBytes }).toEqual({ created: true, volumeBytes: VOLUME_BYTES, fileBytes: IMAGE_BYTES });
    // Only non-zero 4 KiB pages are stored: 3,000,000 bytes span 733 pages, the middle run 2 or 3, the tail 1.
    expect(result.dataBytes).toBeLessThanOrEqual((733 + 3 + 1) * 4096);
    expect(result.objects).toBe(3); // 1 MiB objects

    const out = join(dir, "exported", "deeper", "image1.raw"); // missing directories are created
    ok(await lsvd(["export", volume, out]), "export");
    const exported = readFileSync(out);
    expect(exported.byteLength).toBe(VOLUME_BYTES);
    expect(exported.equals(padded(image1, VOLUME_BYTES))).toBe(true);
    // Sparse: about the data's size is allocated, not the image's 20 MB.
    expect(statSync(out).blocks * 512).toBeLessThan(4 * 1024 * 1024);
    expect((await lsvd(["fsck", volume])).exitCode).toBe(0);

    // The volume serves what was imported (no journal is replayed over it: the cache is new to it).
    const cache = join(dir, "cache");
    ok(await lsvd(["mkcache", "--volume", volume, "--size", "64m", cache]), "mkcache");
    const server = await LsvdServer.start({ volume, cache, transport: "unix", dir });
    try {
      ok(await run(["nbdcopy", server.uri, join(dir, "served.raw")], { env: TOOL_ENV }), "nbdcopy");
    } finally {
      expect((await server.stop()).exitCode).toBe(0);
    }
    expect(readFileSync(join(dir, "served.raw")).equals(padded(image1, VOLUME_BYTES))).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("import into a volume that holds data replaces it: what the new image has as zeroes reads as zeroes", async () => {
    // Zeroes where image1 has data, data where it has zeroes.
    image2 = makeImage(join(dir, "image2"), IMAGE_BYTES, [[3_000_000, 1_000_000], [12_000_000, 4096]]);
    const run2 = ok(await lsvd(["import", "--json", "--progress", join(dir, "image2"), "--volume", volume]), "import");
    const imported = JSON.parse(run2.stdout);
    // Not a terminal: a line per step, and lines for the reading in between.
    const lines = run2.stderr.split("\n").filter((line) => line.startsWith("import: "));
    expect(lines[0]).toBe("import: volume taken, log started");
    expect(lines.at(-1)).toMatch(/^import: \d+ data object\(s\) stored; checkpoint written, superblock names it$/);
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines.slice(1, -1)) expect(line).toMatch(/^import: read [\d.]+ \S+ of 19.1 MiB \(\d+%\)$/);
    expect({ created: imported.created, trimmedOldData: imported.trimmedOldData }).toEqual({ created: false, trimmedOldData: true });
    const out = join(dir, "image2.raw");
    ok(await lsvd(["export", "--volume", volume, out]), "export");
    expect(readFileSync(out).equals(padded(image2, VOLUME_BYTES))).toBe(true);
    expect((await lsvd(["fsck", volume])).exitCode).toBe(0);
  }, TEST_TIMEOUT_MS);

  test("an image of another size is refused clearly and changes nothing; export refuses an existing FILE without --force", async () => {
    makeImage(join(dir, "small"), 1024 * 1024, [[0, 4096]]);
    const before = snapshot(backend);
    const refused = await lsvd(["import", join(dir, "small"), volume]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/^lsvd import: Volume file:\/\/\S+ is 20004864 bytes \(19.1 MiB\) but \S+ is 1048576 bytes: the sizes must match/);
    expect(snapshot(backend)).toEqual(before);
    const exists = await lsvd(["export", volume, join(dir, "image2.raw")]);
    expect(exists.exitCode).toBe(1);
    expect(exists.stderr).toMatch(/exists \(give --force to replace it\)/);
  }, TEST_TIMEOUT_MS);
});

describe("a served volume", () => {
  test("import, rm and resize are refused; export is refused unless --force", async () => {
    const cache = join(dir, "cache");
    const server = await LsvdServer.start({ volume, cache, transport: "unix", dir });
    try {
      for (const args of [["import", join(dir, "image1"), volume], ["rm", volume], ["resize", "--size", "64m", volume]]) {
        const result = await lsvd(args);
        expect({ args, exitCode: result.exitCode }).toEqual({ args, exitCode: 1 });
        expect(result.stderr).toMatch(/serve pid \d+/);
      }
      const refused = await lsvd(["export", volume, join(dir, "owned.raw")]);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toMatch(/is owned by serve pid \d+.*--force/);
      expect(existsSync(join(dir, "owned.raw"))).toBe(false);
      ok(await lsvd(["export", "--force", volume, join(dir, "owned.raw")]), "export --force");
      expect(readFileSync(join(dir, "owned.raw")).equals(padded(image2, VOLUME_BYTES))).toBe(true);
    } finally {
      expect((await server.stop()).exitCode).toBe(0);
    }
  }, TEST_TIMEOUT_MS);

  test("export after a crash reads the backend only and writes nothing to it", async () => {
    const cache = join(dir, "cache");
    const server = await LsvdServer.start({ volume, cache, transport: "unix", dir, extraArgs: ["--batch-size", "64k"] });
    // 1 MiB of writes at 4 MiB: objects are put as they fill; the rest stays in the journal when the server dies.
    // Its second half is zeroes: stored as data, the export writes it as holes (checked once the journal is replayed).
    writeFileSync(join(dir, "patch"), Buffer.concat([randomBytes(512 * 1024), Buffer.alloc(512 * 1024)]));
    ok(await run(["nbdsh", "-u", server.uri, "-c", `h.pwrite(open("${join(dir, "patch")}", "rb").read(), 4194304)`], { env: TOOL_ENV }), "nbdsh");
    await server.kill();
    const before = snapshot(backend);
    ok(await lsvd(["export", volume, join(dir, "crashed.raw")]), "export");
    expect(snapshot(backend)).toEqual(before);
    // What it exported is image2 with a prefix of the writes (whole 64 KiB objects), never anything else.
    const exported = readFileSync(join(dir, "crashed.raw"));
    const patch = readFileSync(join(dir, "patch"));
    const expected = padded(image2, VOLUME_BYTES);
    let landed = 0;
    while (landed < patch.byteLength && exported.subarray(4194304 + landed, 4194304 + landed + 65536).equals(patch.subarray(landed, landed + 65536))) landed += 65536;
    patch.copy(expected, 4194304, 0, landed);
    expect(exported.equals(expected)).toBe(true);
  }, TEST_TIMEOUT_MS);
});

describe("resize, ls, rm", () => {
  test("resize grows the volume (the new space reads as zeroes) and refuses to shrink", async () => {
    // The crashed server's journal is replayed first, so that the volume is whole again.
    const server = await LsvdServer.start({ volume, cache: join(dir, "cache"), transport: "unix", dir });
    expect((await server.stop()).exitCode).toBe(0);
    const shrink = await lsvd(["resize", "--size", "16m", volume]);
    expect(shrink.exitCode).toBe(1);
    expect(shrink.stderr).toMatch(/Cannot shrink volume vol from 20004864 to 16777216 bytes/);
    expect(ok(await lsvd(["resize", "--size", "32MiB", volume]), "resize").stdout).toMatch(/19.1 MiB -> 32 MiB/);
    const out = join(dir, "grown.raw");
    const exported = JSON.parse(ok(await lsvd(["export", "--json", volume, out]), "export").stdout);
    // The patch's 512 KiB of zeroes are mapped (written as data) but stay holes in the file.
    expect(exported.mappedBytes - exported.writtenBytes).toBeGreaterThanOrEqual(512 * 1024);
    expect(statSync(out).blocks * 512).toBeLessThanOrEqual(exported.writtenBytes + 64 * 1024);
    const grown = readFileSync(out);
    expect(grown.byteLength).toBe(32 * 1024 * 1024);
    expect(grown.subarray(VOLUME_BYTES).equals(Buffer.alloc(32 * 1024 * 1024 - VOLUME_BYTES))).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("ls lists the volumes of a directory (not their objects, not other files), also by name start and as JSON", async () => {
    ok(await lsvd(["mkdisk", "--size", "1gb", join(backend, "other")]), "mkdisk");
    writeFileSync(join(backend, "notes.txt"), "not a volume");
    const text = ok(await lsvd(["ls", backend]), "ls").stdout;
    expect(text.split("\n").filter(Boolean).map((line) => line.split("\t").slice(0, 2))).toEqual([["other", "1 GiB"], ["vol", "32 MiB"]]);
    const json = JSON.parse(ok(await lsvd(["ls", "--json", `file://${backend}/vo`]), "ls --json").stdout);
    expect(json.map((row: { name: string; sizeBytes: number }) => [row.name, row.sizeBytes])).toEqual([["vol", 32 * 1024 * 1024]]);
    expect(json[0].volume).toBe(`file://${volume}`);
  }, TEST_TIMEOUT_MS);

  test("rm is refused while a clone names the volume, then deletes superblock, objects and lease", async () => {
    const volUuid = JSON.parse(ok(await lsvd(["parse", "--json", volume]), "parse").stdout).volUuid;
    const clone = { ...newSuperblock(randomUUID(), 65536), clone: { baseUuid: volUuid, lastSeq: 3, baseName: "vol" } };
    writeFileSync(join(backend, "clone1"), encodeSuperblock(clone));
    const refused = await lsvd(["rm", volume]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/Cannot remove volume vol: it has clones clone1 \(delete them first/);
    expect(existsSync(volume)).toBe(true);
    ok(await lsvd(["rm", join(backend, "clone1")]), "rm clone1");
    expect(ok(await lsvd(["rm", volume]), "rm").stdout).toMatch(/^removed volume file:\/\/\S+: \d+ object\(s\) deleted\n$/);
    expect(readdirSync(backend).filter((name) => name.startsWith("vol")).sort()).toEqual([]);
    expect((await lsvd(["rm", volume])).stderr).toMatch(/No volume at/);
  }, TEST_TIMEOUT_MS);

  test("rm after an interrupted rm (superblock gone, objects left) deletes what is left", async () => {
    const v2 = join(backend, "v2");
    ok(await lsvd(["import", join(dir, "image1"), v2]), "import");
    rmSync(v2); // the first step of rm done, then a crash
    expect(ok(await lsvd(["rm", v2]), "rm").stdout).toMatch(/no volume at \S+; deleted \d+ object\(s\) left by an interrupted removal/);
    expect(readdirSync(backend).filter((name) => name.startsWith("v2"))).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
