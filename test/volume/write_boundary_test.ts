// The write path's write boundaries (src/volume/write/record_former.ts): objects that end inside a client write carry
// WRITE_CONTINUES, and a long write that an open batch cannot hold whole starts a new object, so a run of such
// objects never outgrows one write's pieces. Without that rule, a repeating pattern of writes keeps every object
// ending inside a write, and recovery without the cache would fall back past all of them (no checkpoint either).

import { describe, expect, test } from "bun:test";
import { decodeDataObjectHeader } from "../../src/format/data_object.ts";
import { ObjectType, decodeCommonHeader } from "../../src/format/object_header.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import { immediateClock, makeWorld, openVolume, PREFIX, type World } from "../sim/volume_world.ts";

const MIB = 1024 * 1024;

/** WRITE_CONTINUES of every DATA object in the backend, in seq order. */
async function continuesFlags(world: World): Promise<boolean[]> {
  const seqs = (await world.store.list(`${PREFIX}.`)).map((name) => parseObjectName(PREFIX, name)).filter((seq): seq is number => seq !== null).sort((a, b) => a - b);
  const flags: boolean[] = [];
  for (const seq of seqs) {
    const bytes = await world.store.get(`${PREFIX}.${seq.toString(16).padStart(8, "0")}`);
    if (decodeCommonHeader(bytes).type === ObjectType.Data) flags.push(decodeDataObjectHeader(bytes).writeContinues);
  }
  return flags;
}

function longestRun(flags: boolean[]): number {
  let best = 0;
  let run = 0;
  for (const flag of flags) {
    run = flag ? run + 1 : 0;
    best = Math.max(best, run);
  }
  return best;
}

describe("write boundaries in the objects", () => {
  test("8 MiB batches, writes of 1, 12.5, 12.5 MiB repeated: runs of WRITE_CONTINUES objects stay within one write", async () => {
    // Pieces are 4 MiB. Filling batches piece by piece, this pattern cuts every batch inside a write; sealing before
    // a long write that does not fit whole (or after a batch that began inside a write) restores a boundary.
    const world = await makeWorld(41, { volumeBytes: 16 * MIB, cacheBytes: 96 * MIB });
    const volume = await openVolume(world, { clock: immediateClock, batchBytes: 8 * MIB, batchIdleMs: 60_000, checkpointIntervalObjects: 1000 });
    const sizes = [1, 12.5, 12.5, 1, 12.5, 12.5, 1, 12.5, 12.5];
    for (const [index, mib] of sizes.entries()) {
      await volume.write(0, new Uint8Array(mib * MIB).fill(index + 1), false);
    }
    await volume.close();
    const flags = await continuesFlags(world);
    expect(flags.filter((flag) => flag).length).toBeGreaterThan(0);
    expect(longestRun(flags)).toBeLessThanOrEqual(Math.ceil(12.5 / 4) - 1);
    expect(flags.at(-1)).toBe(false);
  }, 60_000);
});
