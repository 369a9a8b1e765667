// lsvd mkdisk: create a volume by writing its superblock object (format: docs/format.md, "SUPER objects").

import { writeOut } from "../output.ts";
import { v4 as uuidv4, validate as uuidValidate } from "uuid";
import { PAGE_BYTES, SECTOR_BYTES, VOLUME_BYTES_DEFAULT, VOLUME_BYTES_MAX } from "../../constants.ts";
import { InvalidArgumentError } from "../../errors.ts";
import { openBackend } from "../../backend/backend_uri.ts";
import { encodeSuperblock, newSuperblock } from "../../format/superblock_object.ts";
import { parseObjectName } from "../../format/object_name.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, parseCommandArgs, requirePositional, stringOption } from "../args.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd mkdisk [--size SIZE] [--uuid UUID] [--force] [--json] VOLUME";
const HELP = `Usage: ${USAGE}

Creates a volume: writes its superblock object. The volume's data objects (PREFIX.00000001, ...) appear as it is used.

Options:
  --size SIZE   volume size (default 1g); a multiple of 4 KiB, at most ${formatSize(VOLUME_BYTES_MAX)}
  --uuid UUID   volume UUID (default: a new random one)
  --force       replace an existing volume at VOLUME (its objects are deleted)
  --json        print the result as JSON
${BACKEND_HELP}
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
  async run(argv) {
    const parsed = parseCommandArgs(argv, {
      size: { type: "string" },
      uuid: { type: "string" },
      force: { type: "boolean" },
      json: { type: "boolean" },
      ...BACKEND_OPTIONS,
    });
    if (parsed.help) {
      writeOut(HELP);
      return 0;
    }
    const [volume] = requirePositional(parsed, 1, USAGE);
    const sizeText = stringOption(parsed, "size");
    const sizeBytes = sizeText === undefined ? VOLUME_BYTES_DEFAULT : parseSize(sizeText, "size");
    checkVolumeSize(sizeBytes);
    const volUuid = stringOption(parsed, "uuid") ?? uuidv4();
    if (!uuidValidate(volUuid)) throw new InvalidArgumentError(`Invalid UUID '${volUuid}'`);
    const { store, prefix, uri } = await openBackend(volume!, { ...backendOptionsFrom(parsed), createDirectory: true });
    try {
      if (await store.stat(prefix)) {
        if (parsed.values.force !== true) {
          throw new InvalidArgumentError(`A volume already exists at ${uri} (use --force to replace it and delete its objects)`);
        }
        // Old data objects must go: a new superblock over old objects would mix two volumes' logs.
        for (const name of await store.list(`${prefix}.`)) {
          if (parseObjectName(prefix, name) !== null) await store.delete(name);
        }
      }
      const volSectors = sizeBytes / SECTOR_BYTES;
      await store.put(prefix, encodeSuperblock(newSuperblock(volUuid, volSectors)));
      if (parsed.values.json === true) {
        writeOut(`${JSON.stringify({ volume: uri, uuid: volUuid, sizeBytes })}\n`);
      } else {
        writeOut(`created volume ${uri}: ${formatSize(sizeBytes)}, UUID ${volUuid}\n`);
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
