// Backend recovery when the newest objects are lost (an SSD-less restart after a backend rollback, or a crash between
// a checkpoint's put and the superblock's): a checkpoint the superblock lists but recovery could not use must stop
// being listed before its seq is reused, or a later superblock would name a DATA object as a checkpoint.

import { expect, test } from "bun:test";
import { parseObjectName } from "../../src/format/object_name.ts";
import { fsckVolume } from "../../src/volume/fsck.ts";
import { readSuperblock } from "../../src/volume/recovery.ts";
import { Prng } from "../sim/prng.ts";
import { immediateClock, makeWorld, openVolume, PREFIX } from "../sim/volume_world.ts";

const MIB = 1024 * 1024;

test("a lost newest checkpoint is dropped from the superblock; its seq is reused for data and fsck stays clean", async () => {
  const world = await makeWorld(11, { volumeBytes: 4 * MIB });
  const prng = new Prng(12);
  const first = new Uint8Array(MIB);
  const second = new Uint8Array(MIB);
  prng.fill(first);
  prng.fill(second);

  let volume = await openVolume(world, { clock: immediateClock });
  await volume.write(0, first, false);
  await volume.close();
  volume = await openVolume(world, { clock: immediateClock });
  await volume.write(MIB, second, false);
  await volume.close();
  const listed = (await readSuperblock(world.store, PREFIX)).checkpoints;
  expect(listed.length).toBeGreaterThanOrEqual(2);
  const lost = listed.at(-1)!;

  // Lose the newest checkpoint and every object from the last one before it onwards: the second session's data
  // is gone from the backend, the first session's is intact behind the older checkpoint.
  const previous = listed.at(-2)!;
  for (const name of await world.store.list(`${PREFIX}.`)) {
    const seq = parseObjectName(PREFIX, name);
    if (seq !== null && seq > previous) await world.store.delete(name);
  }

  volume = await openVolume(world, { clock: immediateClock });
  expect((await readSuperblock(world.store, PREFIX)).checkpoints).not.toContain(lost);
  expect(world.logs.some((line) => line.includes("no longer lists unusable checkpoint"))).toBe(true);
  expect(await volume.read(0, MIB)).toEqual(first);
  // New data takes the lost checkpoint's seq (and later ones); a clean close writes a fresh checkpoint.
  await volume.write(2 * MIB, second, false);
  await volume.close();

  const report = await fsckVolume({ store: world.store, prefix: PREFIX });
  expect(report.problems).toEqual([]);
  expect(report.exitCode).toBe(0);
  volume = await openVolume(world, { clock: immediateClock });
  expect(await volume.read(0, MIB)).toEqual(first);
  expect(await volume.read(2 * MIB, MIB)).toEqual(second);
  await volume.close();
});
