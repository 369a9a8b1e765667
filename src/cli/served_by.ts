// Who serves a volume, and how to reach it: the lease names the holder, and a serving process records its admin
// socket there as admin:unix:PATH (docs/operations.md). Shared by the commands that ask a serving process instead of
// taking the lease themselves: `lsvd status` and `lsvd snapshot create|delete`.

import { adminPathFromAddresses } from "../admin/server.ts";
import { processRuns, thisProcess } from "../util/process_identity.ts";
import { inspectLease } from "../volume/lease_admin.ts";
import { backendOptionsFrom, type Parsed } from "./args.ts";
import { openOwnedBackend } from "./ownership.ts";

/** The admin socket of a serving process on this host, or why there is none to ask. */
export type ServedBy =
  /** `volume`: the volume's URI as parsed, which a process serving several volumes takes in args.volume. */
  | { kind: "socket"; path: string; volume?: string }
  | { kind: "not-served"; reason: string }
  | { kind: "elsewhere"; reason: string }
  | { kind: "owned"; reason: string };

/** How VOLUME's lease holder can be reached: its admin socket when it is a live `serve` on this host. */
export async function servedBy(parsed: Parsed, volume: string): Promise<ServedBy> {
  const backend = await openOwnedBackend(volume, backendOptionsFrom(parsed), () => undefined, 30_000);
  try {
    const inspection = await inspectLease(backend.leaseStore, backend.prefix, { nowMs: Date.now(), identity: thisProcess(), processRuns });
    const lease = inspection.lease;
    if (inspection.status !== "held" || lease === null) return { kind: "not-served", reason: `volume ${backend.uri} is not served (its lease is ${inspection.status})` };
    const holder = `${lease.command} pid ${lease.pid} on host ${lease.host}`;
    if (lease.command !== "serve") return { kind: "owned", reason: `volume ${backend.uri} is not served: ${holder} holds it` };
    if (inspection.liveness === "dead") return { kind: "not-served", reason: `volume ${backend.uri} is not served: its holder, ${holder}, is gone` };
    if (inspection.liveness === "unknown") return { kind: "elsewhere", reason: `volume ${backend.uri} is served by ${holder}, not on this host` };
    const path = adminPathFromAddresses(lease.addresses);
    if (path === null) return { kind: "elsewhere", reason: `volume ${backend.uri} is served by ${holder} without an admin socket` };
    return { kind: "socket", path, volume: backend.uri };
  } finally {
    await backend.close();
  }
}
