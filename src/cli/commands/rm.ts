// lsvd rm: delete a volume (superblock, objects, lease), under its lease; volume/volume_admin.ts.

import { removeVolume } from "../../volume/volume_admin.ts";
import { makeLogger } from "../../util/log.ts";
import { writeOut } from "../output.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend } from "../ownership.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd rm [--json] VOLUME";
const OPTIONS: OptionSpec = { json: { type: "boolean" }, ...VOLUME_OPTIONS, ...LEASE_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Deletes VOLUME: its superblock, then every object of it, then its lease. Takes the lease first: refused while the
volume is served or otherwise owned (see 'lsvd lock show'), and refused while another volume in the same place is
a clone of it. Interrupted, it leaves no volume (the superblock goes first), only objects: run it again to delete
them.

Options:
  --json   print the result as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
`;

export const rmCommand: Command = {
  name: "rm",
  summary: "delete a volume and all its objects",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { VOLUME: volume } = namedArguments(parsed, ["VOLUME"], USAGE);
    const durationMs = leaseDurationFrom(parsed);
    const log = makeLogger("lsvd", true); // quiet, like mkdisk: refusals and errors are thrown
    const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), log, durationMs);
    try {
      const result = await removeVolume({ store: backend.leaseStore, prefix: backend.prefix, command: "rm", durationMs, log });
      if (parsed.values.json === true) writeOut(`${JSON.stringify({ volume: backend.uri, ...result })}\n`);
      else if (result.hadSuperblock) writeOut(`removed volume ${backend.uri}: ${result.objectsDeleted} object(s) deleted\n`);
      else writeOut(`no volume at ${backend.uri}; deleted ${result.objectsDeleted} object(s) left by an interrupted removal\n`);
      return 0;
    } finally {
      await backend.close();
    }
  },
};
