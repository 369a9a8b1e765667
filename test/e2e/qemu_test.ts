// qemu-img and qemu-io against the real `lsvd serve`, over a unix socket and TCP:
// - `qemu-img convert -n` of a raw image (random data with zero runs, over a volume pre-filled with 0xff so the
//   zero runs must really be zeroed) into the volume and back out, compared byte for byte and by `qemu-img compare`;
// - `qemu-io -f raw` writes with patterns at 512-aligned, not 4 KiB-aligned offsets and across 4 KiB boundaries,
//   pattern-checked reads, discard, write -z (with and without -u) reading back zeroes, flush; the whole image is
//   then checked against a model, again after a clean restart.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LsvdServer, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, isZeroRange, run, runOk, sha256File, writeRandomFile } from "./_harness.ts";

const MIB = 1024 * 1024;
const VOLUME_BYTES = 64 * MIB;
const IMAGE_BYTES = 40 * MIB;
const TEST_TIMEOUT_MS = 90_000;
const SEED = Number(process.env.LSVD_SEED ?? 0x9e37);

/** qemu-io with -f raw (no probing) over the URI; throws with all output on a failed command or pattern check. */
async function qemuIo(uri: string, commands: string[]): Promise<string> {
  const result = await run(["qemu-io", "-f", "raw", ...commands.flatMap((command) => ["-c", command]), uri]);
  const output = `${result.stdout}${result.stderr}`;
  if (result.exitCode !== 0 || /failed|error/i.test(output)) throw new Error(`qemu-io exit ${result.exitCode}:\n${output}`);
  return output;
}

/** Copies the volume out with qemu-img and returns its first `bytes`. */
async function readVolume(uri: string, dir: string, bytes: number): Promise<Buffer> {
  const output = join(dir, `out.${Math.random().toString(36).slice(2, 8)}.raw`);
  try {
    await runOk(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, output]);
    expect(await isZeroRange(output, bytes, VOLUME_BYTES)).toBe(true);
    return readFileSync(output).subarray(0, bytes);
  } finally {
    rmSync(output, { force: true });
  }
}

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

for (const transport of TRANSPORTS) {
  describe(`qemu over ${transport}`, () => {
    test(
      "qemu-img convert -n in and out",
      async () => {
        const paths = await createVolume(`qemu-img-${transport}`, { size: "64m", cacheSize: "128m" });
        const server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        // Random data with zero runs of several sizes, some not 4 KiB-aligned.
        const image = join(paths.dir, "in.raw");
        writeRandomFile(image, IMAGE_BYTES, SEED);
        const bytes = readFileSync(image);
        for (const [offset, length] of [
          [0, 4096],
          [MIB + 512, 3584],
          [5 * MIB, 2 * MIB],
          [IMAGE_BYTES - 65536, 65536],
        ] as const) {
          bytes.fill(0, offset, offset + length);
        }
        writeFileSync(image, bytes);
        // Pre-fill so that the zero runs of the image, if skipped, would show as 0xff.
        await qemuIo(server.uri, [`write -P 0xff 0 ${IMAGE_BYTES}`]);

        await runOk(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", image, server.uri]);
        // qemu-img compare allows the longer image to have a zero tail (not -s).
        await runOk(["qemu-img", "compare", "-f", "raw", "-F", "raw", image, server.uri]);
        const back = await readVolume(server.uri, paths.dir, IMAGE_BYTES);
        expect(Buffer.compare(back, bytes)).toBe(0);

        expect((await server.stop()).exitCode).toBe(0);
        const again = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        const restarted = join(paths.dir, "restarted.raw");
        await runOk(["qemu-img", "convert", "-f", "raw", "-O", "raw", again.uri, restarted]);
        expect(await sha256File(restarted, IMAGE_BYTES)).toBe(await sha256File(image));
        expect((await again.stop()).exitCode).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );

    test(
      "qemu-io patterns at odd offsets, discard, write -z, flush",
      async () => {
        const paths = await createVolume(`qemu-io-${transport}`, { size: "64m", cacheSize: "128m" });
        let server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        const modelBytes = 4 * MIB;
        const model = Buffer.alloc(modelBytes);
        const writes: Array<[number, number, number]> = [
          [0xa1, 512, 1024], // inside page 0, not page-aligned
          [0xa2, 3584, 1024], // across the 4096 boundary
          [0xa3, 1023 * 512, 8704], // across several boundaries, odd sector count
          [0xb1, MIB, 128 * 1024],
          [0xb2, MIB + 7 * 512, 512], // one sector over the middle of b1
          [0xc1, 2 * MIB - 512, 1536], // across a MiB boundary
          [0xc2, 3 * MIB, 256 * 1024],
        ];
        const commands: string[] = [];
        for (const [pattern, offset, length] of writes) {
          commands.push(`write -P ${pattern} ${offset} ${length}`);
          model.fill(pattern, offset, offset + length);
        }
        for (const [pattern, offset, length] of writes.slice(0, 3)) commands.push(`read -P ${pattern} ${offset} ${length}`);
        commands.push("read -P 0 0 512", "read -P 0 1536 2048", `read -P 0 ${1023 * 512 + 8704} 512`);
        commands.push(`read -P 0xb1 ${MIB} ${7 * 512}`, `read -P 0xb2 ${MIB + 7 * 512} 512`, `read -P 0xb1 ${MIB + 8 * 512} 512`);
        await qemuIo(server.uri, commands);

        // Discard, write-zeroes (qemu may unmap with -u), then flush; every range reads back as zeroes.
        const zeroed: Array<[string, number, number]> = [
          ["discard", MIB + 4096, 8192],
          ["write -z", MIB + 65536 + 512, 1536],
          ["write -z -u", 3 * MIB + 4096, 65536],
          ["discard", 2 * MIB - 512, 512],
        ];
        const zeroCommands: string[] = [];
        for (const [command, offset, length] of zeroed) {
          zeroCommands.push(`${command} ${offset} ${length}`);
          model.fill(0, offset, offset + length);
        }
        zeroCommands.push("flush");
        for (const [, offset, length] of zeroed) zeroCommands.push(`read -P 0 ${offset} ${length}`);
        zeroCommands.push(`read -P 0xb1 ${MIB} 3584`, `read -P 0xb1 ${MIB + 12288} 4096`, `read -P 0xc1 ${2 * MIB} 1024`);
        await qemuIo(server.uri, zeroCommands);

        // A failed pattern check must fail qemuIo (so the checks above can fail).
        await expect(qemuIo(server.uri, [`read -P 0xa9 512 1024`])).rejects.toThrow(/Pattern verification failed/);

        expect(Buffer.compare(await readVolume(server.uri, paths.dir, modelBytes), model)).toBe(0);
        expect((await server.stop()).exitCode).toBe(0);
        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        expect(Buffer.compare(await readVolume(server.uri, paths.dir, modelBytes), model)).toBe(0);
        await qemuIo(server.uri, [`read -P 0xa2 3584 1024`, `read -P 0 ${MIB + 4096} 8192`]);
        expect((await server.stop()).exitCode).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );
  });
}
