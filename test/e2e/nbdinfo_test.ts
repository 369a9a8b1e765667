// nbdinfo against the real `lsvd serve`, over a unix socket and TCP: the export's advertised size, flags and block
// sizes (--json), the allocation map (--map: a fresh volume is one hole+zero run; after writes and a discard, data
// exactly where written, holes elsewhere, and the same map again after a restart, when it comes from backend
// objects), and the export list (--list). Spec: NBD doc/proto.md (INFO_BLOCK_SIZE, base:allocation).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { LsvdServer, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, runOk, type VolumePaths } from "./_harness.ts";

const VOLUME_BYTES = 384 * 1024 * 1024;
const SECTOR_BYTES = 512;
const TEST_TIMEOUT_MS = 60_000;

interface MapEntry {
  offset: number;
  length: number;
  type: number;
}

/** nbdinfo --map --json: [{offset, length, type, description}]. */
async function readMap(uri: string): Promise<MapEntry[]> {
  const result = await runOk(["nbdinfo", "--map", "--json", uri]);
  return (JSON.parse(result.stdout) as MapEntry[]).map(({ offset, length, type }) => ({ offset, length, type }));
}

/** What the map must be: per sector, data (0) where the last operation was a write, hole+zero (3) elsewhere. */
class AllocationModel {
  private readonly sectors = new Uint8Array(VOLUME_BYTES / SECTOR_BYTES).fill(3);

  write(offset: number, length: number): void {
    this.sectors.fill(0, offset / SECTOR_BYTES, (offset + length) / SECTOR_BYTES);
  }

  discard(offset: number, length: number): void {
    this.sectors.fill(3, offset / SECTOR_BYTES, (offset + length) / SECTOR_BYTES);
  }

  runs(): MapEntry[] {
    const runs: MapEntry[] = [];
    for (let index = 0; index < this.sectors.length; index++) {
      const type = this.sectors[index]!;
      const last = runs[runs.length - 1];
      if (last && last.type === type) last.length += SECTOR_BYTES;
      else runs.push({ offset: index * SECTOR_BYTES, length: SECTOR_BYTES, type });
    }
    return runs;
  }
}

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

for (const transport of TRANSPORTS) {
  describe(`nbdinfo over ${transport}`, () => {
    let paths: VolumePaths;
    let server: LsvdServer;

    beforeAll(async () => {
      paths = await createVolume(`nbdinfo-${transport}`, { size: "384m", cacheSize: "128m" });
      server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
    });

    afterAll(async () => {
      if (server?.running) await server.stop();
    });

    test("--json reports size, flags and block sizes", async () => {
      const info = JSON.parse((await runOk(["nbdinfo", "--json", server.uri])).stdout);
      expect(info.protocol).toBe("newstyle-fixed");
      expect(info.structured).toBe(true);
      expect(info.exports).toHaveLength(1);
      const exported = info.exports[0];
      expect(exported["export-size"]).toBe(VOLUME_BYTES);
      expect(exported.is_read_only).toBe(false);
      expect(exported.is_rotational).toBe(false);
      for (const flag of ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn", "can_df"]) {
        expect({ flag, value: exported[flag] }).toEqual({ flag, value: true });
      }
      expect(exported.block_size_minimum).toBe(1);
      expect(exported.block_size_preferred).toBe(4096);
      expect(exported.block_size_maximum).toBe(32 * 1024 * 1024);
      expect(exported.contexts).toContain("base:allocation");
    });

    test("--list shows the one export", async () => {
      const listing = JSON.parse((await runOk(["nbdinfo", "--list", "--json", server.uri])).stdout);
      expect(listing.exports).toHaveLength(1);
      expect(listing.exports[0]["export-name"]).toBe("");
      expect(listing.exports[0].description).toBe(`lsvd volume file://${paths.volume}`);
      expect(listing.exports[0]["export-size"]).toBe(VOLUME_BYTES);
      const text = (await runOk(["nbdinfo", "--list", server.uri])).stdout;
      expect(text).toContain('export="":');
      expect(text).toContain(`export-size: ${VOLUME_BYTES}`);
    });

    test(
      "--map: hole+zero when fresh, data exactly where written, the same after a restart",
      async () => {
        const model = new AllocationModel();
        expect(await readMap(server.uri)).toEqual([{ offset: 0, length: VOLUME_BYTES, type: 3 }]);
        expect(model.runs()).toEqual([{ offset: 0, length: VOLUME_BYTES, type: 3 }]);

        // 512-aligned but not 4 KiB-aligned, a 1 MiB run with a discarded hole in it, and the very last page.
        const writes: Array<[number, number, number]> = [
          [0x11, 4608, 8192],
          [0x22, 1024 * 1024, 65536],
          [0x33, 3 * 1024 * 1024, 1024 * 1024],
          [0x44, VOLUME_BYTES - 4096, 4096],
          [0x55, 200 * 1024 * 1024 + 512, 512],
        ];
        const discard: [number, number] = [3 * 1024 * 1024 + 256 * 1024, 128 * 1024];
        const commands: string[] = [];
        for (const [pattern, offset, length] of writes) {
          commands.push("-c", `write -P ${pattern} ${offset} ${length}`);
          model.write(offset, length);
        }
        commands.push("-c", `discard ${discard[0]} ${discard[1]}`, "-c", "flush");
        model.discard(...discard);
        await runOk(["qemu-io", "-f", "raw", ...commands, server.uri]);

        const expected = model.runs();
        expect(expected.length).toBe(12);
        expect(await readMap(server.uri)).toEqual(expected);

        // After a clean stop everything is in backend objects and the map is rebuilt from the checkpoint.
        const stopped = await server.stop();
        expect(stopped.exitCode).toBe(0);
        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        expect(await readMap(server.uri)).toEqual(expected);
        // Text mode shows the same runs with their names.
        const text = (await runOk(["nbdinfo", "--map", server.uri])).stdout.trim().split("\n");
        expect(text).toHaveLength(expected.length);
        expect(text[0]!.trim().split(/\s+/)).toEqual(["0", "4608", "3", "hole,zero"]);
        expect(text[1]!.trim().split(/\s+/)).toEqual(["4608", "8192", "0", "data"]);
      },
      TEST_TIMEOUT_MS,
    );
  });
}
