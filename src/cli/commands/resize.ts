// lsvd resize: grow a volume (its superblock's size), under its lease; volume/volume_admin.ts.

import { InvalidArgumentError } from "../../errors.ts";
import { resizeVolume } from "../../volume/volume_admin.ts";
import { makeLogger } from "../../util/log.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import { writeOut } from "../output.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend } from "../ownership.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import type { Command } from "./command.ts";
import { checkVolumeSize } from "./mkdisk.ts";

const USAGE = "lsvd resize --size SIZE [--json] VOLUME";
const OPTIONS: OptionSpec = { size: { type: "string" }, json: { type: "boolean" }, ...VOLUME_OPTIONS, ...LEASE_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Grows VOLUME to SIZE (a multiple of 4 KiB); the new space reads as zeroes. Shrinking is refused. Takes the volume's
lease: refused while the volume is served or otherwise owned (see 'lsvd lock show'); a client sees the new size
when the volume is next served.

Options:
  --size SIZE   the new size (required), e.g. 20g
  --json        print the result as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
`;

export const resizeCommand: Command = {
  name: "resize",
  summary: "grow a volume",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { VOLUME: volume } = namedArguments(parsed, ["VOLUME"], USAGE);
    const sizeText = stringOption(parsed, "size");
    if (sizeText === undefined) throw new InvalidArgumentError(`--size is required. Usage: ${USAGE}`);
    const sizeBytes = parseSize(sizeText, "size");
    checkVolumeSize(sizeBytes);
    const durationMs = leaseDurationFrom(parsed);
    const log = makeLogger("lsvd", true); // quiet, like mkdisk: refusals and errors are thrown
    const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), log, durationMs);
    try {
      const result = await resizeVolume({ store: backend.leaseStore, prefix: backend.prefix, command: "resize", durationMs, log }, sizeBytes);
      if (parsed.values.json === true) writeOut(`${JSON.stringify({ volume: backend.uri, ...result })}\n`);
      else if (result.oldBytes === result.newBytes) writeOut(`volume ${backend.uri} is already ${formatSize(result.newBytes)}\n`);
      else writeOut(`resized volume ${backend.uri}: ${formatSize(result.oldBytes)} -> ${formatSize(result.newBytes)}\n`);
      return 0;
    } finally {
      await backend.close();
    }
  },
};
