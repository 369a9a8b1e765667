// lsvd ls: the volumes in a directory, pool or bucket (names whose object decodes as a superblock).

import { openBackendLocation } from "../../backend/backend_uri.ts";
import { listVolumes } from "../../volume/volume_admin.ts";
import { formatSize } from "../../util/size.ts";
import { writeOut } from "../output.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, type OptionSpec } from "../args.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd ls [--json] LOCATION";
const OPTIONS: OptionSpec = { json: { type: "boolean" }, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Lists the volumes in LOCATION: a directory (/dir, file:///dir), a RADOS pool (rados://POOL) or an S3 bucket
(s3://BUCKET), optionally followed by the start of the names wanted (rados://POOL/vm-; for a path that is not a
directory, its last part). A volume is a name whose object decodes as a volume superblock; its other objects
(NAME.%08x, NAME.lease) are not listed.

Options:
  --json   print a JSON array: volume (its URI), name, sizeBytes, uuid, cloneOf
${BACKEND_HELP}
`;

export const lsCommand: Command = {
  name: "ls",
  summary: "list the volumes in a directory, pool or bucket",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { LOCATION: location } = namedArguments(parsed, ["LOCATION"], USAGE);
    const { store, namePrefix, uriOf } = await openBackendLocation(location!, backendOptionsFrom(parsed));
    try {
      const volumes = await listVolumes(store, namePrefix);
      if (parsed.values.json === true) {
        const rows = volumes.map((volume) => ({ volume: uriOf(volume.name), name: volume.name, sizeBytes: volume.sizeBytes, uuid: volume.volUuid, cloneOf: volume.clone?.baseName ?? null }));
        writeOut(`${JSON.stringify(rows)}\n`);
        return 0;
      }
      for (const volume of volumes) {
        const clone = volume.clone ? `  clone of ${volume.clone.baseName}` : "";
        writeOut(`${volume.name}\t${formatSize(volume.sizeBytes)}\t${volume.volUuid}${clone}\n`);
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
