// lsvd lock show | break: the volume's lease (who owns the volume) and breaking it for a holder that is gone.
// The rules live in volume/lease.ts and volume/lease_admin.ts; docs/architecture.md, "Ownership and fencing".

import { writeOut } from "../output.ts";
import { InvalidArgumentError } from "../../errors.ts";
import { LeaseState } from "../../format/lease_object.ts";
import { processRuns, thisProcess } from "../../util/process_identity.ts";
import { describeHolder } from "../../volume/lease.ts";
import { breakLease, inspectLease, type LeaseAdminContext, type LeaseInspection } from "../../volume/lease_admin.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { openOwnedBackend } from "../ownership.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd lock show [--json] VOLUME | lsvd lock break [--force] [--json] VOLUME";
const OPTIONS: OptionSpec = { force: { type: "boolean" }, json: { type: "boolean" }, ...VOLUME_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

A volume has one owner at a time: serve, gc, mkdisk and fsck --repair take its lease (the object VOLUME.lease) and
renew it while they run. A holder that cannot renew in time stops writing.

  show    prints the lease: held, expired, released or broken; the holder (command, pid, host, addresses, since
          when), its epoch, when it was renewed and when it expires, and whether the holder's process runs (when it
          is on this host).
  break   for a holder that is gone, like 'rbd lock rm': rewrites the lease as broken with the next epoch. A holder
          that still runs finds its next renewal refused, stops writing and exits; the next owner takes the volume once
          the holder's lease has run out. Writes the holder acknowledged but had not yet put to the backend are not part
          of the volume unless it is served again with the holder's cache. Refused for a holder on this host whose
          process runs and whose lease has not run out, unless --force. A holder that is gone on this host needs no
          break: the next owner takes its lease at once.

Options:
  --force   break a lease whose holder runs on this host; replace a lease object that cannot be read
  --json    print the result as JSON
${VOLUME_HELP}
${BACKEND_HELP}

Exit status: 0 shown or broken (or nothing to break), 1 refused or failed.
`;

function context(): LeaseAdminContext {
  return { nowMs: Date.now(), identity: thisProcess(), processRuns };
}


function seconds(ms: number | null): string {
  return ms === null ? "?" : `${(ms / 1000).toFixed(1)} s`;
}

function describe(uri: string, inspection: LeaseInspection, nowMs: number): string {
  const lines = [`lease of ${uri}: ${inspection.status}`];
  const lease = inspection.lease;
  if (inspection.status === "unreadable") lines.push(`the lease object cannot be read: ${inspection.unreadable}`);
  if (lease !== null) {
    lines.push(`${lease.state === LeaseState.Held ? "holder" : "last holder"}: ${describeHolder(lease, nowMs)}`);
    if (inspection.expiresInMs !== null) {
      lines.push(inspection.expiresInMs > 0 ? `expires in ${seconds(inspection.expiresInMs)} unless renewed (lease ${lease.durationMs / 1000} s)` : `expired ${seconds(-inspection.expiresInMs)} ago`);
    }
    if (inspection.liveness !== "unknown") lines.push(`its process (pid ${lease.pid}, on this host) is ${inspection.liveness === "alive" ? "running" : "gone"}`);
  }
  lines.push(`superblock owner epoch: ${inspection.superblockEpoch ?? "no superblock"}`);
  return `${lines.join("\n")}\n`;
}

function asJson(uri: string, inspection: LeaseInspection, extra: Record<string, unknown> = {}): string {
  const { lease } = inspection;
  return `${JSON.stringify({
    volume: uri,
    status: inspection.status,
    epoch: lease?.epoch ?? null,
    holder: lease === null ? null : { command: lease.command, pid: lease.pid, host: lease.host, bootId: lease.bootId, addresses: lease.addresses, since: new Date(lease.acquiredAtMs).toISOString(), running: inspection.liveness },
    renewedAgoMs: inspection.renewedAgoMs,
    expiresInMs: inspection.expiresInMs,
    durationMs: lease?.durationMs ?? null,
    superblockEpoch: inspection.superblockEpoch,
    unreadable: inspection.unreadable,
    ...extra,
  })}\n`;
}

export const lockCommand: Command = {
  name: "lock",
  summary: "show or break a volume's lease (who owns it)",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { ACTION: action, VOLUME: volume } = namedArguments(parsed, ["ACTION", "VOLUME"], USAGE);
    if (action !== "show" && action !== "break") throw new InvalidArgumentError(`unknown lock action '${action}'. Usage: ${USAGE}`);
    if (action === "show" && parsed.values.force === true) throw new InvalidArgumentError("--force is for 'lsvd lock break'");
    const json = parsed.values.json === true;
    const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), () => undefined, 30_000);
    try {
      if (action === "show") {
        const now = context();
        const inspection = await inspectLease(backend.leaseStore, backend.prefix, now);
        writeOut(json ? asJson(backend.uri, inspection) : describe(backend.uri, inspection, now.nowMs));
        return 0;
      }
      const result = await breakLease(backend.leaseStore, backend.prefix, parsed.values.force === true, context());
      if (json) writeOut(asJson(backend.uri, result.before, { broke: result.broke, newEpoch: result.after?.epoch ?? null, message: result.message }));
      else writeOut(`${result.message}\n`);
      return 0;
    } finally {
      await backend.close();
    }
  },
};
