// lsvd status: asks a serving process over its admin socket (src/admin/) what it is doing: state, volume, clients,
// and the figures its metrics export. The socket is found in the volume's lease (the holder records it as
// admin:unix:PATH) or given with --admin-socket. Spec: docs/operations.md, "lsvd status".

import { adminRequest } from "../../admin/client.ts";
import { IOError, InvalidArgumentError, NotFoundError } from "../../errors.ts";
import { formatSize } from "../../util/size.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec, type Parsed } from "../args.ts";
import { writeOut } from "../output.ts";
import { servedBy, type ServedBy } from "../served_by.ts";
import type { Command } from "./command.ts";

/** Exit codes (also in the help): answered, error, not served, served where this host cannot ask. */
export const STATUS_EXIT = { answered: 0, error: 1, notServed: 3, elsewhere: 4 } as const;

const USAGE = "lsvd status [--json] (VOLUME | --admin-socket PATH)";
const OPTIONS: OptionSpec = { json: { type: "boolean" }, "admin-socket": { type: "string" }, ...VOLUME_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Asks the 'lsvd serve' process serving VOLUME what it is doing: its state (recovering, serving, draining, and while
draining what it waits for), whether the backend answers (or since when it fails), the volume, its clients, requests
and bytes served, journal fill, backend objects and live share, garbage collection and read-cache figures. VOLUME's
lease names the server and its admin socket; the server must run on this host. A server of several volumes
(serve --export) answers for VOLUME's export; asked with --admin-socket alone, it lists every export.

Options:
  --json                 print the server's answer as JSON (docs/operations.md lists the fields)
  --admin-socket PATH    ask the server on this admin socket instead of looking VOLUME's lease up
${VOLUME_HELP}
${BACKEND_HELP}

Exit status: ${STATUS_EXIT.answered} the server answered; ${STATUS_EXIT.notServed} the volume is not served (no holder, the holder is not
serve or is gone, nothing answers on the admin socket); ${STATUS_EXIT.elsewhere} served by a process this host cannot ask (on another
host, or without an admin socket); ${STATUS_EXIT.error} any other error (bad arguments, backend unreachable, a bad answer).
`;

/** The admin socket of VOLUME's holder, from its lease (served_by.ts); "owned" by another command is "not served". */
async function findSocket(parsed: Parsed, volume: string): Promise<ServedBy> {
  const found = await servedBy(parsed, volume);
  if (found.kind === "owned") return { kind: "not-served", reason: found.reason };
  if (found.kind === "elsewhere" && found.reason.endsWith("not on this host")) return { kind: "elsewhere", reason: `${found.reason}: run lsvd status there` };
  return found;
}

function percent(part: number, whole: number): string {
  return whole === 0 ? "0%" : `${((100 * part) / whole).toFixed(part === 0 || part === whole ? 0 : 1)}%`;
}

/** The human form of the status op's result (fields: serve_monitor.ts status()): one volume, or every export. */
export function describeStatus(status: any): string {
  const server = [`state: ${status.state} since ${status.stateSince}; pid ${status.pid}, up ${status.uptimeSeconds.toFixed(0)} s${status.recoverySeconds === null ? "" : `, recovery took ${status.recoverySeconds.toFixed(1)} s`}`];
  if (status.waitingFor) server.push(`  ${status.waitingFor}`);
  const admin = `admin socket: ${status.adminSocket ?? "none"}; metrics: ${status.metricsUrl ?? "off"}`;
  if (status.volume !== undefined) {
    const [volumeLine, ...rest] = describeExport(status);
    return `${[volumeLine!, ...server, ...rest, admin].join("\n")}\n`;
  }
  const exports = (status.exports as any[]).flatMap((exported) => {
    const [volumeLine, ...rest] = describeExport(exported);
    return [`export ${exported.name}: ${volumeLine}`, ...rest.map((line) => `  ${line}`)];
  });
  return `${[...server, `${status.exports.length} exports:`, ...exports, admin].join("\n")}\n`;
}

/** One export's lines, its volume first. */
function describeExport(status: any): string[] {
  const lines: string[] = [];
  const volume = status.volume;
  const size = volume.sizeBytes === null ? "" : ` (${formatSize(volume.sizeBytes)}, UUID ${volume.uuid}${volume.readOnly ? ", read-only" : ""})`;
  lines.push(`volume ${volume.uri}${size} with cache ${volume.cache}`);
  if (status.lost) lines.push(`LOST: no longer served here: ${status.lost}`);
  const backend = status.backend;
  const reach = backend.reachable ? "reachable" : `failing since ${backend.failingSince} (last error: ${backend.lastError}); retrying`;
  lines.push(`backend: ${reach}; ${backend.retries} retries`);
  if (backend.objects !== null) {
    lines.push(`  ${backend.objects} objects, ${formatSize(backend.bytes)}, ${(backend.liveShare * 100).toFixed(1)}% of their data live; durable up to seq ${backend.durableSeq}; ${backend.backlogObjects} object(s) (${formatSize(backend.backlogBytes)}) not yet put`);
  }
  if (status.nbdAddresses.length > 0) lines.push(`nbd: ${status.nbdAddresses.join(", ")}`);
  if (status.clients !== null) {
    const clients = status.clients;
    lines.push(`clients: ${clients.connections} connection(s) (${clients.negotiating} negotiating), ${clients.requestsInFlight} request(s) in flight; ${clients.accepted} accepted, ${clients.refused} refused`);
    const requests = status.requests;
    lines.push(`requests: ${requests.reads} reads (${formatSize(requests.bytesRead)}), ${requests.writes} writes (${formatSize(requests.bytesWritten)}), ${requests.flushes} flushes, ${requests.trims} trims, ${requests.writeZeroes} zeroes, ${requests.blockStatuses} block status; ${requests.errors} errors`);
  }
  if (status.journal !== null) {
    const journal = status.journal;
    lines.push(`journal: ${formatSize(journal.usedBytes)} of ${formatSize(journal.sizeBytes)} used (${percent(journal.usedBytes, journal.sizeBytes)}), ${journal.writesInFlight} write(s) in flight, ${journal.records} records written`);
  }
  if (status.gc !== null) lines.push(`gc: ${status.gc.rounds} rounds, ${status.gc.objectsCleaned} objects cleaned, ${status.gc.objectsDeleted} deleted, ${formatSize(status.gc.reclaimedBytes)} reclaimed`);
  if (status.readCache !== null) lines.push(`read cache: ${status.readCache.hits} hits, ${status.readCache.misses} misses, ${status.readCache.blocks} blocks`);
  return lines;
}

function notServed(json: boolean, kind: "not-served" | "elsewhere" | "owned", reason: string): number {
  if (json) writeOut(`${JSON.stringify({ served: false, reason })}\n`);
  else process.stderr.write(`lsvd status: ${reason}\n`);
  return kind === "not-served" ? STATUS_EXIT.notServed : STATUS_EXIT.elsewhere;
}

export const statusCommand: Command = {
  name: "status",
  summary: "ask a serving process what it is doing (state, clients, figures)",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const json = parsed.values.json === true;
    const explicit = stringOption(parsed, "admin-socket");
    const volume = stringOption(parsed, "volume") ?? parsed.positionals[0];
    const count = parsed.positionals.length + (stringOption(parsed, "volume") === undefined ? 0 : 1);
    if (count > 1 || (explicit === undefined) === (volume === undefined)) {
      throw new InvalidArgumentError(`expected VOLUME or --admin-socket PATH (one of them). Usage: ${USAGE}`);
    }
    const found: ServedBy = explicit !== undefined ? { kind: "socket", path: explicit } : await findSocket(parsed, volume!);
    if (found.kind !== "socket") return notServed(json, found.kind, found.reason);
    let reply;
    try {
      reply = await adminRequest(found.path, "status", found.volume === undefined ? {} : { volume: found.volume });
    } catch (error) {
      if (error instanceof NotFoundError) return notServed(json, "not-served", `${volume === undefined ? "" : `volume ${volume} is not served: `}${error.message}`);
      throw error;
    }
    if (!reply.ok) throw new IOError(`the server refused the status request: ${reply.error.code}: ${reply.error.message}`);
    writeOut(json ? `${JSON.stringify({ served: true, adminSocket: found.path, ...(reply.result as object) })}\n` : describeStatus(reply.result));
    return STATUS_EXIT.answered;
  },
};
