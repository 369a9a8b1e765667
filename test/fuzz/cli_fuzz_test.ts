// Fuzzing through the real CLI: `lsvd parse` on mutated object files and `lsvd fsck` on volumes with a mutated object
// must exit with their documented codes and a worded error, never "internal error" (a foreign exception).
// Few iterations: each one starts a process. LSVD_BIN=dist/lsvd tests the compiled binary.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { FileStore } from "../../src/backend/file_store.ts";
import { Prng, seedFromEnv } from "../sim/prng.ts";
import { immediateClock, makeWorld, openVolume } from "../sim/volume_world.ts";
import { runLsvd } from "../crash/_harness.ts";
import { mutate, resealObject } from "./_mutate.ts";
import { parseObjectName } from "../../src/format/object_name.ts";

const PARSE_RUNS = 24;
const FSCK_RUNS = 8;
const seed = seedFromEnv(99);
let dir: string;
let backend: string;
let names: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "lsvd-fuzz-cli-"));
  backend = path.join(dir, "b");
  mkdirSync(backend);
  const store = await FileStore.open(backend);
  const world = await makeWorld(seed, { volumeBytes: 1024 * 1024, cacheBytes: 4 * 1024 * 1024, journalBytes: 2 * 1024 * 1024, store });
  const volume = await openVolume(world, { clock: immediateClock, checkpointIntervalObjects: 3 });
  for (let index = 0; index < 30; index++) {
    const data = new Uint8Array(16384);
    world.prng.fill(data);
    await volume.write(16384 * world.prng.int(64), data, false);
  }
  await volume.close();
  names = readdirSync(backend).sort();
  expect(names.length).toBeGreaterThan(5);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("fuzz: the CLI on damaged objects", () => {
  test(`lsvd parse: ${PARSE_RUNS} mutated objects`, () => {
    const prng = new Prng(seed + 1);
    for (let index = 0; index < PARSE_RUNS; index++) {
      const name = names[prng.int(names.length)]!;
      const mutation = mutate(readFileSync(path.join(backend, name)), prng, 512, resealObject);
      const file = path.join(dir, `m.${index}`);
      writeFileSync(file, mutation.bytes);
      const result = runLsvd(["parse", file]);
      const context = `seed ${seed} run ${index} (${name}: ${mutation.description}): exit ${result.code}\n${result.stderr}`;
      expect([0, 1], context).toContain(result.code);
      expect(result.stderr, context).not.toContain("internal error");
      if (result.code === 1) expect(result.stderr, context).toContain("lsvd parse: ");
    }
  }, 60_000);

  test(`lsvd fsck: ${FSCK_RUNS} volumes with a mutated object`, () => {
    const prng = new Prng(seed + 2);
    for (let index = 0; index < FSCK_RUNS; index++) {
      const copy = path.join(dir, `v${index}`);
      mkdirSync(copy);
      for (const name of names) writeFileSync(path.join(copy, name), readFileSync(path.join(backend, name)));
      // The volume's objects: not the lease (which fsck does not check: it is not the volume's data) nor a lock file.
      const objects = names.filter((candidate) => candidate === "vol" || parseObjectName("vol", candidate) !== null);
      const name = objects[prng.int(objects.length)]!;
      const mutation = mutate(readFileSync(path.join(copy, name)), prng, 512, null);
      writeFileSync(path.join(copy, name), mutation.bytes);
      const result = runLsvd(["fsck", "--json", path.join(copy, "vol")]);
      const context = `seed ${seed} run ${index} (${name}: ${mutation.description}): exit ${result.code}\n${result.stdout}\n${result.stderr}`;
      expect(result.stderr, context).not.toContain("internal error");
      // Every byte is under a CRC: a changed object is a problem (4); with bytes appended to a DATA object, a note (0).
      expect([0, 4], context).toContain(result.code);
      if (result.code === 0) expect(mutation.description, context).toContain("appended");
      expect(JSON.parse(result.stdout).exitCode).toBe(result.code);
    }
  }, 60_000);
});
