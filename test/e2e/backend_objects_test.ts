// The backend objects `lsvd serve` leaves behind hold exactly what was written through NBD (format:
// docs/format.md, "Data object", "Checkpoint object", "Superblock object"). A python3-libnbd client does seeded
// random writes, overwrites, trims and write-zeroes (some with FUA, some NO_HOLE) and keeps a model image; after a
// clean stop every object parses with `lsvd parse --json`, the volume image rebuilt from the DATA objects alone
// (seq order, data area back to back in data_map order, trims applied before their extent) equals the model, and
// the newest checkpoint's map points at the same bytes. Then a second run ends in SIGKILL, a restart replays the
// journal, a clean stop puts it, and the objects still rebuild the model.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, runOk, type VolumePaths } from "./_harness.ts";

const MIB = 1024 * 1024;
const SECTOR_BYTES = 512;
const VOLUME_BYTES = 16 * MIB;
const TEST_TIMEOUT_MS = 120_000;
/** `lsvd parse` processes run at once (the machine has 2 cores). */
const PARSE_PARALLEL_MAX = 4;
const SEED = Number(process.env.LSVD_SEED ?? 4242);

/** Seeded random NBD operations over a model image kept in a file (argv: uri model seed operations). */
const CLIENT_PY = `
import random, sys, nbd
uri, model_path, seed, operations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = bytearray(open(model_path, "rb").read())
rng = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
assert size == len(model), (size, len(model))
def pick(max_sectors):
    sectors = rng.randint(1, max_sectors)
    lba = rng.randrange(0, size // 512 - sectors + 1)
    return lba * 512, sectors * 512
for index in range(operations):
    kind = rng.random()
    if kind < 0.75:
        offset, length = pick(256)
        data = rng.randbytes(length)
        h.pwrite(data, offset, nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0)
        model[offset:offset + length] = data
    elif kind < 0.88:
        offset, length = pick(1024)
        h.trim(length, offset)
        model[offset:offset + length] = bytes(length)
    else:
        offset, length = pick(512)
        h.zero(length, offset, nbd.CMD_FLAG_NO_HOLE if rng.random() < 0.5 else 0)
        model[offset:offset + length] = bytes(length)
    if index % 97 == 0:
        h.flush()
h.flush()
# Read everything back through NBD too, so a server-side mismatch shows here first.
for offset in range(0, size, 4 * 1024 * 1024):
    assert h.pread(4 * 1024 * 1024, offset) == bytes(model[offset:offset + 4 * 1024 * 1024]), offset
h.shutdown()
open(model_path, "wb").write(model)
`;

interface ParsedObject {
  name: string;
  type: "SUPER" | "DATA" | "CKPT";
  volUuid: string;
  seq: number;
  hdrSectors: number;
  dataSectors: number;
}
interface SuperJson extends ParsedObject {
  volSectors: number;
  checkpoints: number[];
  nextSeq: number;
}
interface DataJson extends ParsedObject {
  extents: Array<{ lba: number; sectors: number }>;
  trims: Array<{ lba: number; sectors: number; beforeIndex: number }>;
}
interface CheckpointJson extends ParsedObject {
  map: Array<{ lba: number; sectors: number; obj: number; offsetSectors: number }>;
  objects: Array<{ seq: number; hdrSectors: number; dataSectors: number; liveSectors: number }>;
}

async function parseObject(path: string): Promise<ParsedObject> {
  const result = await lsvd(["parse", "--json", path]);
  if (result.exitCode !== 0) throw new Error(`lsvd parse ${path}: exit ${result.exitCode}: ${result.stderr}`);
  expect(result.stderr).toBe("");
  return JSON.parse(result.stdout) as ParsedObject;
}

/** Parses every object in the backend directory and checks how they fit together. */
async function parseAll(paths: VolumePaths): Promise<{ superblock: SuperJson; data: DataJson[]; checkpoints: CheckpointJson[] }> {
  const names = readdirSync(paths.backendDir).sort();
  const superblock = (await parseObject(paths.volume)) as SuperJson;
  expect(superblock.type).toBe("SUPER");
  expect(superblock.seq).toBe(0);
  expect(superblock.volSectors).toBe(VOLUME_BYTES / SECTOR_BYTES);
  const data: DataJson[] = [];
  const checkpoints: CheckpointJson[] = [];
  // The file store's lock file (src/backend/file_store.ts) and the volume's lease are the files besides the objects.
  const objectNames = names.filter((name) => name !== "vol" && name !== ".lsvd-store.lock" && name !== "vol.lease");
  expect(names).toContain("vol.lease");
  // Only numbered objects: no temporary files left by puts.
  for (const name of objectNames) expect(name).toMatch(/^vol\.[0-9a-f]{8}$/);
  const parsedObjects: ParsedObject[] = [];
  for (let start = 0; start < objectNames.length; start += PARSE_PARALLEL_MAX) {
    const group = objectNames.slice(start, start + PARSE_PARALLEL_MAX);
    parsedObjects.push(...(await Promise.all(group.map((name) => parseObject(join(paths.backendDir, name))))));
  }
  for (const [index, parsed] of parsedObjects.entries()) {
    const name = objectNames[index]!;
    expect(parsed.volUuid).toBe(superblock.volUuid);
    expect(parsed.seq).toBe(Number.parseInt(name.slice(4), 16));
    expect(parsed.seq).toBeLessThan(superblock.nextSeq);
    if (parsed.type === "DATA") data.push(parsed as DataJson);
    else if (parsed.type === "CKPT") checkpoints.push(parsed as CheckpointJson);
    else throw new Error(`unexpected ${parsed.type} object ${name}`);
  }
  data.sort((a, b) => a.seq - b.seq);
  // The superblock's checkpoints exist; the newest of them is the newest checkpoint there is.
  expect(superblock.checkpoints.length).toBeGreaterThan(0);
  for (const seq of superblock.checkpoints) expect(checkpoints.some((checkpoint) => checkpoint.seq === seq)).toBe(true);
  expect(superblock.checkpoints.at(-1)).toBe(Math.max(...checkpoints.map((checkpoint) => checkpoint.seq)));
  return { superblock, data, checkpoints };
}

/** The volume as the DATA objects alone describe it. */
function rebuildFromDataObjects(paths: VolumePaths, data: DataJson[]): Buffer {
  const image = Buffer.alloc(VOLUME_BYTES);
  const trim = (t: { lba: number; sectors: number }) => image.fill(0, t.lba * SECTOR_BYTES, (t.lba + t.sectors) * SECTOR_BYTES);
  for (const object of data) {
    const bytes = readFileSync(join(paths.backendDir, `vol.${object.seq.toString(16).padStart(8, "0")}`));
    expect(bytes.length).toBe((object.hdrSectors + object.dataSectors) * SECTOR_BYTES);
    let cursor = object.hdrSectors * SECTOR_BYTES;
    let trimIndex = 0;
    object.extents.forEach((extent, extentIndex) => {
      while (trimIndex < object.trims.length && object.trims[trimIndex]!.beforeIndex === extentIndex) trim(object.trims[trimIndex++]!);
      const length = extent.sectors * SECTOR_BYTES;
      bytes.copy(image, extent.lba * SECTOR_BYTES, cursor, cursor + length);
      cursor += length;
    });
    while (trimIndex < object.trims.length) trim(object.trims[trimIndex++]!);
    expect(cursor).toBe(bytes.length);
  }
  return image;
}

/** The volume as the newest checkpoint's map describes it (map entries point into DATA objects). */
function rebuildFromCheckpoint(paths: VolumePaths, checkpoint: CheckpointJson): Buffer {
  const image = Buffer.alloc(VOLUME_BYTES);
  const objects = new Map<number, Buffer>();
  for (const entry of checkpoint.map) {
    let bytes = objects.get(entry.obj);
    if (!bytes) {
      bytes = readFileSync(join(paths.backendDir, `vol.${entry.obj.toString(16).padStart(8, "0")}`));
      objects.set(entry.obj, bytes);
    }
    const start = entry.offsetSectors * SECTOR_BYTES;
    bytes.copy(image, entry.lba * SECTOR_BYTES, start, start + entry.sectors * SECTOR_BYTES);
  }
  return image;
}

function firstDifference(a: Buffer, b: Buffer): string {
  if (a.equals(b)) return "equal";
  for (let index = 0; index < a.length; index++) if (a[index] !== b[index]) return `first difference at byte ${index} (sector ${Math.floor(index / 512)})`;
  return "equal";
}

async function expectObjectsHold(paths: VolumePaths, model: Buffer): Promise<void> {
  const { data, checkpoints } = await parseAll(paths);
  expect(data.length).toBeGreaterThan(3);
  // The trims must be exercised, including ones ordered between a batch's extents.
  expect(data.some((object) => object.trims.some((trim) => trim.beforeIndex > 0 && trim.beforeIndex < object.extents.length))).toBe(true);
  expect(firstDifference(rebuildFromDataObjects(paths, data), model)).toBe("equal");
  const newest = checkpoints.reduce((a, b) => (a.seq > b.seq ? a : b));
  expect(firstDifference(rebuildFromCheckpoint(paths, newest), model)).toBe("equal");
  // Every DATA object the map points into is listed in the checkpoint's object table.
  for (const entry of newest.map) expect(newest.objects.some((object) => object.seq === entry.obj)).toBe(true);
}

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

describe("backend objects", () => {
  test(
    "every object parses, and the DATA objects and the checkpoint hold exactly what was written",
    async () => {
      console.log(`backend_objects_test: LSVD_SEED=${SEED}`);
      const paths = await createVolume("objects", { size: "16m", cacheSize: "64m" });
      const client = join(paths.dir, "client.py");
      const modelPath = join(paths.dir, "model.raw");
      writeFileSync(client, CLIENT_PY);
      writeFileSync(modelPath, Buffer.alloc(VOLUME_BYTES));
      // Small batches, so the writes spread over many DATA objects and trims land in several of them.
      // No garbage collection: rebuilding the image from the DATA objects alone needs every object, and the
      // collector deletes dead ones (an object holding only trims, say). test/e2e/gc_test.ts covers it.
      const serveArgs = ["--batch-size", "1m", "--no-gc"];

      let server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await runOk(["python3", client, server.uri, modelPath, String(SEED), "400"]);
      expect((await server.stop()).exitCode).toBe(0);
      await expectObjectsHold(paths, readFileSync(modelPath));

      // A crash: acknowledged writes live in the journal only until the restart replays them.
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      await runOk(["python3", client, server.uri, modelPath, String(SEED + 1), "200"]);
      await server.kill();
      server = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: serveArgs });
      expect((await server.stop()).exitCode).toBe(0);
      await expectObjectsHold(paths, readFileSync(modelPath));
    },
    TEST_TIMEOUT_MS,
  );
});
