// lsvd import: a raw image file into a volume, written straight to the backend (no cache). The writing is
// volume/image_import.ts; this file checks the arguments, creates the volume when missing and takes its lease.

import { open as openFile, stat } from "node:fs/promises";
import { v4 as uuidv4 } from "uuid";
import { PAGE_BYTES, SECTOR_BYTES } from "../../constants.ts";
import { InvalidArgumentError } from "../../errors.ts";
import type { Lease } from "../../volume/lease.ts";
import { createVolume, takeOwnership } from "../../volume/ownership.ts";
import { readSuperblock } from "../../volume/recovery/backend.ts";
import { importImage, type ImportProgress } from "../../volume/image_import.ts";
import { makeLogger } from "../../util/log.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import { writeOut } from "../output.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend } from "../ownership.ts";
import { Progress } from "../progress.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import type { Command } from "./command.ts";
import { checkVolumeSize } from "./mkdisk.ts";

const OBJECT_BYTES_DEFAULT_TEXT = "32m";
const USAGE = "lsvd import [--progress] [--object-size SIZE] [--json] FILE VOLUME";
const OPTIONS: OptionSpec = {
  progress: { type: "boolean" },
  "object-size": { type: "string", default: OBJECT_BYTES_DEFAULT_TEXT },
  json: { type: "boolean" },
  ...VOLUME_OPTIONS,
  ...LEASE_OPTIONS,
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
};
const HELP = `Usage: ${USAGE}

Writes the raw image FILE into VOLUME, straight to the backend (no cache is needed). VOLUME is created, sized to
FILE rounded up to 4 KiB, when it does not exist; an existing VOLUME must have that size (see 'lsvd resize'), and
its old contents are replaced: what FILE has as zeroes reads as zeroes. All-zero 4 KiB blocks of FILE are not
stored. Takes the volume's lease first: refused while the volume is served or otherwise owned.

An interrupted import leaves the volume holding part of the image: run it again.

Options:
  --progress           show progress (on a terminal, one line redrawn; otherwise a line per step and per 10%)
  --object-size SIZE   data bytes per backend object (default ${OBJECT_BYTES_DEFAULT_TEXT}, a multiple of 4 KiB, at most 64m)
  --json               print the result as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}
`;

const OBJECT_BYTES_MAX = 64 * 1024 * 1024;

function objectBytesOption(text: string): number {
  const bytes = parseSize(text, "object size");
  if (bytes <= 0 || bytes % PAGE_BYTES !== 0 || bytes > OBJECT_BYTES_MAX) {
    throw new InvalidArgumentError(`Invalid --object-size '${text}': expected a multiple of 4 KiB, at most ${formatSize(OBJECT_BYTES_MAX)}`);
  }
  return bytes;
}

/** The image's size; refuses what is not a regular file (a device's size would need other calls). */
async function imageSize(path: string): Promise<number> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new InvalidArgumentError(`Cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  if (!info.isFile()) throw new InvalidArgumentError(`${path} is not a regular file`);
  if (info.size === 0) throw new InvalidArgumentError(`${path} is empty: a volume cannot be empty`);
  return info.size;
}

function describeStep(event: ImportProgress): string {
  return { "log-start": "volume taken, log started", data: "", checkpoint: `${event.objects} data object(s) stored; checkpoint written, superblock names it`, superblock: "" }[event.step];
}

export const importCommand: Command = {
  name: "import",
  summary: "write a raw image file into a volume (creating it if needed)",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { FILE: file, VOLUME: volume } = namedArguments(parsed, ["FILE", "VOLUME"], USAGE);
    const objectBytes = objectBytesOption(stringOption(parsed, "object-size")!);
    const fileBytes = await imageSize(file!);
    const volumeBytes = Math.ceil(fileBytes / PAGE_BYTES) * PAGE_BYTES;
    checkVolumeSize(volumeBytes);
    const durationMs = leaseDurationFrom(parsed);
    // Lease and recovery lines only with --progress (a quiet command otherwise, like mkdisk); a backend that keeps
    // failing (retries) is said either way, so that a slow import does not look like a hang.
    const log = makeLogger("lsvd", parsed.values.progress !== true);
    const progress = new Progress("import", parsed.values.progress === true);
    const started = Date.now();
    const backend = await openOwnedBackend(volume!, { ...backendOptionsFrom(parsed), createDirectory: true }, log, durationMs);
    let lease: Lease | null = null;
    const handle = await openFile(file!, "r");
    try {
      const { leaseStore, prefix, uri } = backend;
      let created = false;
      if ((await leaseStore.stat(prefix)) === null) {
        await createVolume({ store: leaseStore, prefix, volUuid: uuidv4(), volSectors: volumeBytes / SECTOR_BYTES, replace: false, lease: { command: "import", durationMs, log } });
        created = true;
        progress.step(`created volume ${uri} (${formatSize(volumeBytes)})`);
      } else {
        checkSizeMatches((await readSuperblock(leaseStore, prefix)).volSectors * SECTOR_BYTES, volumeBytes, uri, file!, fileBytes);
      }
      const store = backend.ownerStore(() => lease!);
      const taken = await takeOwnership({ store: leaseStore, prefix, command: "import", durationMs, log }, store);
      lease = taken.lease;
      // Checked again under the lease: someone may have resized or replaced the volume in between.
      checkSizeMatches(taken.owner.superblocks!.superblock.volSectors * SECTOR_BYTES, volumeBytes, uri, file!, fileBytes);
      const source = { sizeBytes: fileBytes, read: async (offset: number, into: Uint8Array) => (await handle.read(into, 0, into.byteLength, offset)).bytesRead };
      const result = await importImage({
        store,
        prefix,
        owner: taken.owner,
        source,
        objectBytes,
        log,
        progress: (event) => {
          if (event.step === "data") progress.bytes(event.bytesRead, fileBytes, "read");
          else if (event.step !== "superblock") progress.step(describeStep(event));
        },
      });
      await store.close();
      await lease.release();
      lease = null;
      const seconds = (Date.now() - started) / 1000;
      if (parsed.values.json === true) {
        writeOut(`${JSON.stringify({ volume: uri, file, created, fileBytes, volumeBytes, ...result, seconds })}\n`);
      } else {
        writeOut(
          `imported ${file} (${formatSize(fileBytes)}) into ${created ? "new " : ""}volume ${uri}: ${formatSize(result.dataBytes)} of non-zero data in ${result.objects} object(s), ` +
            `checkpoint ${result.checkpointSeq}, ${seconds.toFixed(1)} s\n`,
        );
      }
      return 0;
    } finally {
      progress.clear();
      lease?.abandon(); // puts may still be in flight: the lease expires rather than being given back clean
      await handle.close();
      await backend.close();
    }
  },
};

function checkSizeMatches(volumeBytes: number, wantedBytes: number, uri: string, file: string, fileBytes: number): void {
  if (volumeBytes === wantedBytes) return;
  const rounded = wantedBytes === fileBytes ? "" : ` (${wantedBytes} once rounded up to 4 KiB)`;
  throw new InvalidArgumentError(
    `Volume ${uri} is ${volumeBytes} bytes (${formatSize(volumeBytes)}) but ${file} is ${fileBytes} bytes${rounded}: the sizes must match ` +
      `(grow the volume with 'lsvd resize --size ${wantedBytes}', or import into a new volume)`,
  );
}
