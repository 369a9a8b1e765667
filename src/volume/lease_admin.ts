// `lsvd lock show` and `lsvd lock break` (docs/architecture.md, "Ownership and fencing"): what the lease says, and
// breaking it for a holder that is gone, as `rbd lock rm` does. Breaking rewrites the lease (compare-and-swap on the
// version read) as Broken with the next epoch: the holder, if it still runs, finds its next renewal refused and stops;
// the next owner takes a broken lease only once the holder's last renewal has run out (decision @G), since until
// then the holder may still be writing. The holder's renewal time is kept for exactly that.

import { LEASE_DURATION_MS_DEFAULT } from "../constants.ts";
import { ConflictError } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { encodeLease, LeaseState, type LeaseRecord } from "../format/lease_object.ts";
import { leaseName } from "../format/object_name.ts";
import type { ProcessIdentity } from "../util/process_identity.ts";
import { describeHolder, holderLiveness, LeaseHeldError, leaseExpiresAtMs, readLease, superblockEpoch, type HolderLiveness } from "./lease.ts";
import { v4 as uuidv4, NIL as NIL_UUID } from "uuid";

export type LeaseStatus = "absent" | "unreadable" | "held" | "expired" | "released" | "broken";

export interface LeaseInspection {
  status: LeaseStatus;
  lease: LeaseRecord | null;
  /** Why the lease object does not decode. */
  unreadable: string | null;
  /** For a holder on this host: whether its process still runs ("unknown" elsewhere). */
  liveness: HolderLiveness;
  renewedAgoMs: number | null;
  /** Until anyone may take it (negative: since it expired); null when not held or broken. */
  expiresInMs: number | null;
  /** The owner epoch the superblock records (null: no superblock). */
  superblockEpoch: number | null;
}

export interface LeaseAdminContext {
  nowMs: number;
  identity: ProcessIdentity;
  processRuns: (pid: number, startTicks: number) => boolean;
}

export async function inspectLease(store: ObjectStore, prefix: string, context: LeaseAdminContext): Promise<LeaseInspection & { version: string | null }> {
  const { found, version } = await readLease(store, prefix);
  const epoch = await superblockEpoch(store, prefix);
  const base = { superblockEpoch: epoch, version, liveness: "unknown" as HolderLiveness, renewedAgoMs: null, expiresInMs: null, unreadable: null, lease: null };
  if (found.kind === "absent") return { ...base, status: "absent" };
  if (found.kind === "corrupt") return { ...base, status: "unreadable", unreadable: found.reason };
  const lease = found.lease;
  const expiresInMs = leaseExpiresAtMs(lease) - context.nowMs;
  const status: LeaseStatus =
    lease.state === LeaseState.Released ? "released" : lease.state === LeaseState.Broken ? "broken" : expiresInMs <= 0 ? "expired" : "held";
  return {
    ...base,
    status,
    lease,
    liveness: holderLiveness(lease, context.identity, context.processRuns),
    renewedAgoMs: context.nowMs - lease.renewedAtMs,
    expiresInMs: lease.state === LeaseState.Released ? null : expiresInMs,
  };
}

export interface BreakResult {
  /** False: there was nothing to break (no lease, or released). */
  broke: boolean;
  before: LeaseInspection;
  /** The lease as written (Broken, next epoch). */
  after: LeaseRecord | null;
  /** What breaking it risks and what happens next, in plain words. */
  message: string;
}

/**
 * Breaks the lease of `prefix`. Refused (LeaseHeldError) for a holder on this host whose process runs and whose lease
 * has not run out, unless `force`; an unreadable lease object is replaced only with `force`.
 */
/** The lease's version changed between our read and our write (a running holder renewed it): decide again. */
class LeaseChangedError extends LeaseHeldError {}

/** Reads and decides again this many times when a holder's renewal races the break. */
const BREAK_ATTEMPTS_MAX = 3;

export async function breakLease(store: ObjectStore, prefix: string, force: boolean, context: LeaseAdminContext): Promise<BreakResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await breakLeaseOnce(store, prefix, force, context);
    } catch (error) {
      if (!(error instanceof LeaseChangedError) || attempt >= BREAK_ATTEMPTS_MAX) throw error;
    }
  }
}

async function breakLeaseOnce(store: ObjectStore, prefix: string, force: boolean, context: LeaseAdminContext): Promise<BreakResult> {
  const before = await inspectLease(store, prefix, context);
  if (before.status === "absent" || before.status === "released") {
    return { broke: false, before, after: null, message: `nothing to break: the lease of ${prefix} is ${before.status === "absent" ? "absent (nobody has taken it)" : "released"}` };
  }
  if (before.status === "unreadable" && !force) {
    throw new LeaseHeldError(`The lease object of ${prefix} cannot be read (${before.unreadable}); 'lsvd lock break --force' replaces it`);
  }
  const lease = before.lease;
  if (lease !== null && before.liveness === "alive" && before.status === "held" && !force) {
    throw new LeaseHeldError(
      `Volume ${prefix} is owned by ${describeHolder(lease, context.nowMs)}, and that process is running on this host: stop it, or use --force (it will be fenced: it stops writing and exits)`,
    );
  }
  const epoch = Math.max(lease?.epoch ?? 0, before.superblockEpoch ?? 0) + 1;
  // An unreadable lease names nobody: the next owner waits a whole default lease from now (a nil boot id is never
  // "this host"), since whoever wrote it may still be writing.
  const after: LeaseRecord =
    lease !== null
      ? { ...lease, state: LeaseState.Broken, epoch }
      : {
          state: LeaseState.Broken,
          epoch,
          durationMs: LEASE_DURATION_MS_DEFAULT,
          acquiredAtMs: context.nowMs,
          renewedAtMs: context.nowMs,
          cookie: uuidv4(),
          host: "unknown (unreadable lease replaced)",
          bootId: NIL_UUID,
          pid: 0,
          processStartTicks: 0,
          command: "lock break",
          addresses: [],
        };
  try {
    await store.putIfVersion(leaseName(prefix), encodeLease(after), before.version!);
  } catch (error) {
    if (error instanceof ConflictError) throw new LeaseChangedError(`The lease of ${prefix} changed while it was being broken; look again with 'lsvd lock show'`);
    throw error;
  }
  return { broke: true, before, after, message: breakMessage(prefix, before, after, context.nowMs) };
}

function breakMessage(prefix: string, before: LeaseInspection, after: LeaseRecord, nowMs: number): string {
  const lease = before.lease;
  const who = lease === null ? "an unreadable lease" : `the lease of ${describeHolder(lease, nowMs)}`;
  const waitSeconds = Math.max(0, (leaseExpiresAtMs(after) - nowMs) / 1000).toFixed(1);
  const running =
    before.liveness === "dead"
      ? "Its process is gone."
      : `If its holder still runs, its next renewal is refused and it stops writing, answers every request with an error and exits; the next owner waits until its lease has run out (${waitSeconds} s from now), since until then it may still be writing.`;
  return [
    `Broke ${who} on ${prefix} (epoch ${after.epoch}).`,
    running,
    "Writes it acknowledged but had not yet put to the backend are not part of the volume: they are in its cache, which the next owner replays only if it serves the volume with that same cache.",
  ].join(" ");
}
