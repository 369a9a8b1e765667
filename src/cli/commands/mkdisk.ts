// lsvd mkdisk: create a volume by writing its superblock object (format: docs/format.md, "SUPER objects").

import { writeOut } from "../output.ts";
import { v4 as uuidv4, validate as uuidValidate } from "uuid";
import { PAGE_BYTES, SECTOR_BYTES, VOLUME_BYTES_MAX } from "../../constants.ts";
import { InvalidArgumentError } from "../../errors.ts";
import { createVolume } from "../../volume/ownership.ts";
import { makeLogger } from "../../util/log.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend } from "../ownership.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd mkdisk [--size SIZE] [--uuid UUID] [--force] [--json] VOLUME";
const OPTIONS: OptionSpec = {
  size: { type: "string", default: "1g" },
  uuid: { type: "string" },
  force: { type: "boolean" },
  json: { type: "boolean" },
  ...VOLUME_OPTIONS,
  ...LEASE_OPTIONS,
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
};
const HELP = `Usage: ${USAGE}

Creates a volume: writes its superblock object. The volume's data objects (PREFIX.00000001, ...) appear as it is used.

Options:
  --size SIZE   volume size (default 1g); a multiple of 4 KiB, at most ${formatSize(VOLUME_BYTES_MAX)}
  --uuid UUID   volume UUID (default: a new random one)
  --force       replace an existing volume at VOLUME (its objects are deleted); refused while the volume is owned
                (served, or held by another command: see 'lsvd lock show')
  --json        print the result as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}

The new volume's objects start above every object name that exists at VOLUME, so that nothing written for an
earlier volume there can ever be taken for part of the new one.
`;

export function checkVolumeSize(bytes: number): void {
  if (bytes <= 0) throw new InvalidArgumentError("Invalid size: a volume cannot be empty");
  if (bytes % PAGE_BYTES !== 0) throw new InvalidArgumentError(`Invalid size ${bytes}: not a multiple of 4 KiB`);
  if (bytes > VOLUME_BYTES_MAX) {
    throw new InvalidArgumentError(`Invalid size ${formatSize(bytes)}: the LSVD v1 format addresses at most ${formatSize(VOLUME_BYTES_MAX)}`);
  }
}

export const mkdiskCommand: Command = {
  name: "mkdisk",
  summary: "create a volume (its superblock object)",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { VOLUME: volume } = namedArguments(parsed, ["VOLUME"], USAGE);
    const sizeBytes = parseSize(stringOption(parsed, "size")!, "size");
    checkVolumeSize(sizeBytes);
    const volUuid = stringOption(parsed, "uuid") ?? uuidv4();
    const log = makeLogger("lsvd", true);
    if (!uuidValidate(volUuid)) throw new InvalidArgumentError(`Invalid UUID '${volUuid}'`);
    const backend = await openOwnedBackend(volume!, { ...backendOptionsFrom(parsed), createDirectory: true }, log, leaseDurationFrom(parsed));
    try {
      const { leaseStore: store, prefix, uri } = backend;
      // Said first, without touching the lease: the usual mistake is a missing --force.
      if (parsed.values.force !== true && (await store.stat(prefix))) {
        throw new InvalidArgumentError(`A volume already exists at ${uri} (use --force to replace it and delete its objects)`);
      }
      const created = await createVolume({
        store,
        prefix,
        volUuid,
        volSectors: sizeBytes / SECTOR_BYTES,
        replace: parsed.values.force === true,
        lease: { command: "mkdisk", durationMs: leaseDurationFrom(parsed), log },
      });
      if (parsed.values.json === true) {
        writeOut(`${JSON.stringify({ volume: uri, uuid: volUuid, sizeBytes, epoch: created.epoch, firstSeq: created.nextSeq, objectsDeleted: created.deleted })}\n`);
      } else {
        const replaced = created.deleted > 0 ? `; ${created.deleted} object(s) of the volume it replaces deleted` : "";
        writeOut(`created volume ${uri}: ${formatSize(sizeBytes)}, UUID ${volUuid}${replaced}\n`);
      }
      return 0;
    } finally {
      await backend.close();
    }
  },
};
