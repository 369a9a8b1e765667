// lsvd snapshot create|list|delete|rollback: named, read-only points of a volume's log (docs/architecture.md,
// "Snapshots"). Offline: the command takes the volume's lease itself; volume/snapshot_admin.ts and volume/snapshots.ts.

import { adminRequest } from "../../admin/client.ts";
import { IOError, InvalidArgumentError } from "../../errors.ts";
import { makeLogger } from "../../util/log.ts";
import { readSuperblock } from "../../volume/recovery/backend.ts";
import { createSnapshotOffline, deleteSnapshotOffline, rollbackToSnapshot, type SnapshotAdminOptions } from "../../volume/snapshot_admin.ts";
import { listSnapshots } from "../../volume/snapshots.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec, type Parsed } from "../args.ts";
import { openVolumeForCommand } from "../open_volume.ts";
import type { Volume } from "../../volume/volume.ts";
import { writeOut } from "../output.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend, type OwnedBackend } from "../ownership.ts";
import type { Command } from "./command.ts";
import { servedBy } from "../served_by.ts";
import { SNAPSHOT_CREATE_OP, SNAPSHOT_DELETE_OP } from "../serve_snapshot_ops.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";

const USAGE = "lsvd snapshot create|delete|rollback [--cache CACHE] [--json] VOLUME NAME | lsvd snapshot list [--json] VOLUME";
const OPTIONS: OptionSpec = { cache: { type: "string" }, json: { type: "boolean" }, ...VOLUME_OPTIONS, ...LEASE_OPTIONS, ...BACKEND_OPTIONS, ...LOG_OPTIONS };
const HELP = `Usage: ${USAGE}

A snapshot is a named, read-only point of a volume: what it held when the snapshot was made. Making one costs one
checkpoint at most (the volume's map, never its data); the snapshot keeps every object it reads from garbage
collection until it is deleted. Serve one with 'lsvd serve --read-only VOLUME@NAME'.

  create    makes snapshot NAME of VOLUME. If a 'lsvd serve' on this host serves VOLUME, that process makes it (over
            its admin socket, found through the lease): it holds every write acknowledged before the command
            started. Otherwise the command takes the volume's lease; if the volume's previous owner stopped cleanly, its last checkpoint becomes the snapshot (no --cache needed); otherwise writes it acknowledged
            may be only in its cache's journal: give --cache CACHE (the volume is recovered with it first).
  list      the snapshots: name, seq (its checkpoint object), when made.
  delete    deletes snapshot NAME (by the serving process if VOLUME is served on this host); what only it kept is garbage collection's again. Refused while clones of it
            exist (the error names them).
  rollback  the volume's content becomes snapshot NAME's (the snapshot stays). Writes made since are gone for
            good, also from the cache's journal. --cache as for create.

Options:
  --cache CACHE   the volume's cache (create, rollback): recover the volume with it first
  --json          print the result as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}
NAME: 1 to 255 UTF-8 bytes, without '@', '/' or control characters. rollback, and create or delete of a volume
nobody serves, take the volume's lease: a volume being served (rollback) or owned by another command is refused at
once (see 'lsvd lock show'); a volume served on another host is refused with the host's name.
Exit status: 0 done, 1 refused or failed.
`;

function adminOptions(backend: OwnedBackend, parsed: Parsed, command: string): SnapshotAdminOptions {
  return { store: backend.leaseStore, prefix: backend.prefix, command, durationMs: leaseDurationFrom(parsed), log: makeLogger("lsvd", true) };
}

/**
 * With --cache: the volume opened with its cache (full recovery), `during` run on it (if any), and closed cleanly; a
 * rollback then finds it clean for the offline step. Returns what `during` returned.
 */
async function withCache<T>(volumeUri: string, parsed: Parsed, action: string, during: (volume: Volume) => Promise<T>): Promise<T> {
  const log = makeLogger("lsvd", parsed.values.json === true);
  const holder = { command: `snapshot ${action}`, leaseDurationMs: leaseDurationFrom(parsed) };
  const opened = await openVolumeForCommand(volumeUri, stringOption(parsed, "cache")!, backendOptionsFrom(parsed), log, holder, { gc: false, log });
  let result: T;
  try {
    result = await during(opened.volume);
  } finally {
    await opened.close();
  }
  return result;
}

async function list(backend: OwnedBackend, json: boolean): Promise<void> {
  const snapshots = listSnapshots(await readSuperblock(backend.leaseStore, backend.prefix));
  const created = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  if (json) {
    writeOut(`${JSON.stringify({ volume: backend.uri, snapshots: snapshots.map((snap) => ({ name: snap.name, seq: snap.seq, created: created(snap.createdMs) })) })}\n`);
    return;
  }
  if (snapshots.length === 0) writeOut(`volume ${backend.uri} has no snapshots\n`);
  for (const snap of snapshots) writeOut(`${snap.name}\tseq ${snap.seq}\t${created(snap.createdMs) ?? "(time not recorded)"}\n`);
}

async function change(action: string, volumeUri: string, name: string, backend: OwnedBackend, parsed: Parsed): Promise<void> {
  const json = parsed.values.json === true;
  const options = adminOptions(backend, parsed, `snapshot ${action}`);
  const out = (text: string, result: Record<string, unknown>) => writeOut(json ? `${JSON.stringify({ volume: backend.uri, snapshot: name, ...result })}\n` : `${text}\n`);
  const cached = stringOption(parsed, "cache") !== undefined;
  if (action === "create") {
    // With the cache, the snapshot is made as a serving process makes it (a checkpoint at a write boundary).
    const seq = cached ? await withCache(volumeUri, parsed, action, (volume) => volume.createSnapshot(name)) : (await createSnapshotOffline(options, name)).seq;
    out(`created snapshot ${name} of ${backend.uri} (checkpoint seq ${seq})`, { seq });
  } else if (action === "delete") {
    if (stringOption(parsed, "cache") !== undefined) throw new InvalidArgumentError("--cache is for create and rollback");
    const { seq, checkpointDeleted } = await deleteSnapshotOffline(options, name);
    out(`deleted snapshot ${name} of ${backend.uri} (checkpoint seq ${seq}${checkpointDeleted ? ", deleted" : ", deleted later by gc or fsck --repair"})`, { seq, checkpointDeleted });
  } else {
    if (cached) await withCache(volumeUri, parsed, action, async () => undefined);
    const { seq, snapshotSeq } = await rollbackToSnapshot(options, name);
    out(`rolled ${backend.uri} back to snapshot ${name} (seq ${snapshotSeq}); its new checkpoint is seq ${seq}`, { seq, snapshotSeq });
  }
}

/**
 * create and delete on a served volume: the serving process does it (its admin socket, found through the lease).
 * Returns false when nobody serves the volume (the caller then takes the lease itself).
 */
async function askedServer(parsed: Parsed, action: "create" | "delete", volume: string, name: string): Promise<boolean> {
  const served = await servedBy(parsed, volume);
  if (served.kind === "elsewhere") throw new InvalidArgumentError(`${served.reason}: run 'lsvd snapshot ${action}' where it runs`);
  if (served.kind !== "socket") return false;
  const reply = await adminRequest(served.path, action === "create" ? SNAPSHOT_CREATE_OP : SNAPSHOT_DELETE_OP, { name, volume: served.volume });
  if (!reply.ok) throw new IOError(`the serving process refused: ${reply.error.message}`);
  const json = parsed.values.json === true;
  const seq = (reply.result as { seq?: number }).seq;
  const text = action === "create" ? `created snapshot ${name} of ${volume} (checkpoint seq ${seq}), by the process serving it` : `deleted snapshot ${name} of ${volume}, by the process serving it`;
  writeOut(json ? `${JSON.stringify({ volume, snapshot: name, ...(reply.result as object), servedBy: served.path })}\n` : `${text}\n`);
  return true;
}

export const snapshotCommand: Command = {
  name: "snapshot",
  summary: "create, list, delete or roll back to a volume's snapshots",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const action = parsed.positionals[0];
    if (action === "list") {
      const { VOLUME: volume } = namedArguments({ ...parsed, positionals: parsed.positionals.slice(1) }, ["VOLUME"], USAGE);
      if (stringOption(parsed, "cache") !== undefined) throw new InvalidArgumentError("--cache is for create and rollback");
      const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), () => undefined, leaseDurationFrom(parsed));
      try {
        await list(backend, parsed.values.json === true);
      } finally {
        await backend.close();
      }
      return 0;
    }
    if (action !== "create" && action !== "delete" && action !== "rollback") throw new InvalidArgumentError(`unknown snapshot action '${action ?? ""}'. Usage: ${USAGE}`);
    const { VOLUME: volume, NAME: name } = namedArguments({ ...parsed, positionals: parsed.positionals.slice(1) }, ["VOLUME", "NAME"], USAGE);
    if (action !== "rollback" && stringOption(parsed, "cache") === undefined && (await askedServer(parsed, action, volume!, name!))) return 0;
    const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), makeLogger("lsvd", true), leaseDurationFrom(parsed));
    try {
      await change(action, volume!, name!, backend, parsed);
    } finally {
      await backend.close();
    }
    return 0;
  },
};
