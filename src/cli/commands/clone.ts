// lsvd clone: a writable volume whose content starts as a snapshot of another (volume/clone_create.ts).

import { v4 as uuidv4, validate as uuidValidate } from "uuid";
import { openBackend, parseBackendUri } from "../../backend/backend_uri.ts";
import { RetryingStore } from "../../backend/retrying_store.ts";
import { adminRequest } from "../../admin/client.ts";
import { IOError, InvalidArgumentError } from "../../errors.ts";
import { createClone, type CreateCloneOptions } from "../../volume/clone_create.ts";
import { makeLogger } from "../../util/log.ts";
import { writeOut } from "../output.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom } from "../ownership.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, type OptionSpec, type Parsed } from "../args.ts";
import { servedBy } from "../served_by.ts";
import { CLONE_REGISTER_OP } from "../serve_snapshot_ops.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd clone [--uuid UUID] [--json] VOLUME@SNAP NEWVOLUME";
const OPTIONS: OptionSpec = { uuid: { type: "string" }, json: { type: "boolean" }, ...LEASE_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Creates NEWVOLUME, a writable clone of snapshot SNAP of VOLUME: it reads as the snapshot did, and its writes never
change VOLUME. Nothing is copied but the snapshot's map (one checkpoint object): the clone reads VOLUME's objects as
of the snapshot, which VOLUME keeps while the clone exists. NEWVOLUME must be on the same backend as VOLUME (the same
directory, pool or bucket) and must not exist. The clone is recorded in VOLUME's superblock: by the 'lsvd serve'
process serving VOLUME on this host (over its admin socket, found through the lease), or else under VOLUME's lease
(VOLUME owned by another command, or served on another host, is refused, naming its holder). Clones of clones work.

Options:
  --uuid UUID   the new volume's UUID (default: a random one)
  --json        print the result as JSON
${LEASE_HELP}
${BACKEND_HELP}
Exit codes: 0 created; 1 refused (no such volume or snapshot, NEWVOLUME exists, another backend, VOLUME owned)
or failed.
`;

/** VOLUME@SNAP: the snapshot name follows the last '@'. */
export function parseVolumeAtSnapshot(text: string): { volume: string; snapshot: string } {
  const at = text.lastIndexOf("@");
  if (at <= 0 || at === text.length - 1) throw new InvalidArgumentError(`Expected VOLUME@SNAP, got '${text}'`);
  return { volume: text.slice(0, at), snapshot: text.slice(at + 1) };
}

/** When VOLUME is served on this host: the serving process records the clone (createClone's default otherwise). */
async function registrarOf(parsed: Parsed, volume: string): Promise<CreateCloneOptions["register"]> {
  const served = await servedBy(parsed, volume);
  if (served.kind === "elsewhere") throw new InvalidArgumentError(`${served.reason}: run 'lsvd clone' where it runs`);
  if (served.kind !== "socket") return undefined;
  return async (snapshot, clone) => {
    const args = { snapshotSeq: snapshot.seq, snapshotName: snapshot.name, clonePrefix: clone.prefix, cloneUuid: clone.volUuid, volume: served.volume };
    const reply = await adminRequest(served.path, CLONE_REGISTER_OP, args);
    if (!reply.ok) throw new IOError(`the process serving ${volume} did not record the clone: ${reply.error.message}`);
  };
}

export const cloneCommand: Command = {
  name: "clone",
  summary: "create a writable clone of a volume's snapshot",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const args = namedArguments(parsed, ["VOLUME@SNAP", "NEWVOLUME"], USAGE);
    const { volume, snapshot } = parseVolumeAtSnapshot(args["VOLUME@SNAP"]!);
    const base = parseBackendUri(volume);
    const clone = parseBackendUri(args.NEWVOLUME!);
    if (base.scheme !== clone.scheme || base.location !== clone.location) {
      throw new InvalidArgumentError(`A clone lives on its base's backend: ${clone.uri} is not in ${base.uri.slice(0, base.uri.length - base.prefix.length)}`);
    }
    const cloneUuid = stringOption(parsed, "uuid") ?? uuidv4();
    if (!uuidValidate(cloneUuid)) throw new InvalidArgumentError(`Invalid UUID '${cloneUuid}'`);
    const log = makeLogger("lsvd", true);
    const backend = await openBackend(volume, backendOptionsFrom(parsed));
    const store = new RetryingStore(backend.store, { log: (line: string) => log(`backend: ${line}`) });
    try {
      const startMs = performance.now();
      const result = await createClone({
        store,
        basePrefix: base.prefix,
        snapshot,
        clonePrefix: clone.prefix,
        cloneUuid,
        lease: { command: "clone", durationMs: leaseDurationFrom(parsed), log },
        register: await registrarOf(parsed, volume),
      });
      const ms = performance.now() - startMs;
      if (parsed.values.json === true) {
        writeOut(`${JSON.stringify({ volume: clone.uri, base: base.uri, snapshot, ...result, ms: Math.round(ms * 10) / 10 })}\n`);
      } else {
        writeOut(`created clone ${clone.uri} of ${base.uri}@${snapshot}: UUID ${cloneUuid}, ${result.mapEntries} extent(s) shared, ${ms.toFixed(0)} ms\n`);
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
