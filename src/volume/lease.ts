// The lease: one owner per volume, across processes and hosts (docs/architecture.md, "Ownership and fencing"; the
// record: docs/format.md, "Lease object"). Built only on the store's conditional puts, so it works on every backend.
//
// Rules, in one place:
// 1. Acquire: read the lease; decide by the table below (decideAcquisition, a pure function); take it with
//    putIfAbsent (no lease yet) or putIfVersion on the version read (compare-and-swap), with epoch = max(lease
//    epoch, superblock owner epoch) + 1. A ConflictError there means another process won the race: refuse.
// 2. Renew every durationMs / LEASE_RENEW_DIVISOR with putIfVersion on the version last written. The holder's local
//    deadline is the monotonic time it sent its last successful renewal + durationMs - durationMs/LEASE_MARGIN_DIVISOR;
//    others may take the lease only once durationMs has passed since that renewal's wall-clock time. A ConflictError
//    on a renewal: someone took the lease; a transient error: retried until the deadline.
// 3. Fenced (lease lost, or the deadline passed, or the owner found its superblock changed by someone else): final.
//    check() throws FencedError from then on; listeners are told once. Every backend put, delete and superblock
//    write checks first (GuardedStore), and the volume checks before it acknowledges a write.
// 4. Release (clean exit only, every put landed): the record is rewritten as Released with the same epoch, so the
//    next owner knows no stale writer can be left. A fenced or crashed holder never releases. Nor does one that took
//    the lease from an unclean holder and did not move the log start above that holder's possible late puts
//    (markSettled): it leaves the lease to expire, so the next owner guards against them in turn.
//
// Acquisition decision table (liveness: "dead" only for a holder on this host and boot whose process is gone):
//   @A  no lease object                                 -> take (unclean: who wrote last is unknown)
//   @B  lease object does not decode                    -> refuse (`lsvd lock break --force` replaces it)
//   @C  Released                                        -> take (clean)
//   @D  Held or Broken, holder dead                     -> take at once (unclean)
//   @E  Held or Broken, holder not dead, expired        -> take (unclean): its holder has fenced itself
//   @F  Held, holder not dead, not expired              -> refuse, naming the holder
//   @G  Broken, holder not dead, not expired            -> wait until it expires: the broken holder may still be
//                                                          writing until its own deadline, which comes first

import { NIL as NIL_UUID, v4 as uuidv4 } from "uuid";
import { LEASE_DURATION_MS_DEFAULT, LEASE_MARGIN_DIVISOR, LEASE_RENEW_DIVISOR } from "../constants.ts";
import { assert, ConflictError, CorruptionError, LsvdError, NotFoundError } from "../errors.ts";
import type { ObjectStore, ObjectVersion } from "../backend/object_store.ts";
import { decodeLease, encodeLease, LeaseState, type LeaseRecord } from "../format/lease_object.ts";
import { leaseName } from "../format/object_name.ts";
import { decodeSuperblock } from "../format/superblock_object.ts";
import { processRuns, thisProcess, type ProcessIdentity } from "../util/process_identity.ts";
import type { TimerHandle } from "../util/clock.ts";

/** This process may no longer change the volume: its lease was lost or ran out. Never retried. */
export class FencedError extends ConflictError {}

/** The lease is held by someone else: the command cannot run now. */
export class LeaseHeldError extends ConflictError {}

/** What every writer of a volume checks before it changes anything (a Lease, or a test's stand-in). */
export interface Fence {
  /** Throws FencedError once this process may no longer change the volume. Cheap: call it before every write. */
  check(): void;
  /** Why the fence closed, or null while this process may write. */
  readonly fencedReason: string | null;
  /** Called once, when the fence closes (at once if it already has). */
  onFenced(listener: (reason: string) => void): void;
  /** Closes the fence (e.g. the superblock was changed by someone else). */
  fence(reason: string): void;
}

export type HolderLiveness = "alive" | "dead" | "unknown";

export type LeaseFound = { kind: "absent" } | { kind: "corrupt"; reason: string } | { kind: "lease"; lease: LeaseRecord };

export type AcquisitionCase = "@A" | "@B" | "@C" | "@D" | "@E" | "@F" | "@G";

export type Acquisition =
  | { case: AcquisitionCase; action: "take"; clean: boolean }
  | { case: AcquisitionCase; action: "refuse" }
  | { case: AcquisitionCase; action: "wait"; untilMs: number };

export function leaseExpiresAtMs(lease: LeaseRecord): number {
  return lease.renewedAtMs + lease.durationMs;
}

/** Why a lease could be taken, in plain words for the log (the case code is a debug line). */
const TAKEN_BECAUSE: Partial<Record<AcquisitionCase, string>> = {
  "@C": "its holder released it",
  "@D": "its holder is no longer running",
  "@E": "its lease expired (its holder stopped renewing it)",
};

/** The acquisition table above, as a pure function. */
export function decideAcquisition(found: LeaseFound, nowMs: number, liveness: HolderLiveness): Acquisition {
  if (found.kind === "absent") return { case: "@A", action: "take", clean: false };
  if (found.kind === "corrupt") return { case: "@B", action: "refuse" };
  const lease = found.lease;
  if (lease.state === LeaseState.Released) return { case: "@C", action: "take", clean: true };
  if (liveness === "dead") return { case: "@D", action: "take", clean: false };
  if (nowMs >= leaseExpiresAtMs(lease)) return { case: "@E", action: "take", clean: false };
  if (lease.state === LeaseState.Held) return { case: "@F", action: "refuse" };
  assert(lease.state === LeaseState.Broken, "every lease state is decided");
  return { case: "@G", action: "wait", untilMs: leaseExpiresAtMs(lease) };
}

/**
 * Whether the holder of `lease` is known to run or known to be gone: only a holder on this host (same host name and
 * boot id) can be looked up, in /proc. Anyone else is "unknown", and only expiry frees its lease.
 */
export function holderLiveness(lease: LeaseRecord, local: ProcessIdentity, runs: (pid: number, startTicks: number) => boolean): HolderLiveness {
  if (lease.host !== local.host || lease.bootId === NIL_UUID || lease.bootId !== local.bootId) return "unknown";
  return runs(lease.pid, lease.processStartTicks) ? "alive" : "dead";
}

/** "serve pid 1234 on host h1 (nbd://...) since 2026-...; renewed 2.0 s ago": for messages and `lsvd lock show`. */
export function describeHolder(lease: LeaseRecord, nowMs: number): string {
  // NBD addresses say where it serves; its admin socket and metrics endpoint (admin:..., metrics:...) are not that.
  const served = lease.addresses.filter((address) => !/^(admin|metrics):/.test(address));
  const where = served.length > 0 ? ` serving ${served.join(", ")}` : "";
  const ago = ((nowMs - lease.renewedAtMs) / 1000).toFixed(1);
  return `${lease.command} pid ${lease.pid} on host ${lease.host}${where} since ${new Date(lease.acquiredAtMs).toISOString()} (epoch ${lease.epoch}), lease renewed ${ago} s ago`;
}

export interface LeaseClock {
  /** Wall clock, ms since 1970: what the lease record holds. */
  wallMs(): number;
  /** Monotonic ms (runs on while the process is stopped): what the local deadline is measured on. */
  monotonicMs(): number;
  setTimer(delayMs: number, fn: () => void): TimerHandle;
  sleep(delayMs: number): Promise<void>;
}

export const systemLeaseClock: LeaseClock = {
  wallMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimer(delayMs, fn) {
    const timer = setTimeout(fn, delayMs);
    // Renewals alone do not keep a process alive: whatever holds the lease (a server, a command) does.
    timer.unref?.();
    return { cancel: () => clearTimeout(timer) };
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, delayMs)),
};

export interface LeaseOptions {
  /** Unguarded (the lease's own writes must not wait for the lease), usually a RetryingStore. */
  store: ObjectStore;
  prefix: string;
  /** What holds it: "serve", "gc", "mkdisk", "fsck --repair". */
  command: string;
  addresses?: string[];
  durationMs?: number;
  clock?: LeaseClock;
  /** This process; tests pretend to be others. */
  identity?: ProcessIdentity;
  /** Whether a process of this host runs (tests inject their own). */
  processRuns?: (pid: number, startTicks: number) => boolean;
  /** mkdisk: the volume need not exist yet. Otherwise a missing superblock is "no volume here", before any lease. */
  volumeMayBeAbsent?: boolean;
  log?: (line: string) => void;
  /** The cookie of a new holding (default: a random version 4 uuid); the simulator draws it from its seeded PRNG. */
  newCookie?: () => string;
}

/** Reads the lease object: absent, undecodable, or a record with its version. */
export async function readLease(store: ObjectStore, prefix: string): Promise<{ found: LeaseFound; version: ObjectVersion | null }> {
  const object = await store.getVersioned(leaseName(prefix));
  if (object === null) return { found: { kind: "absent" }, version: null };
  try {
    return { found: { kind: "lease", lease: decodeLease(object.data) }, version: object.version };
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
    return { found: { kind: "corrupt", reason: error.message }, version: object.version };
  }
}

/** The superblock's owner epoch (0 when it has none or does not decode); null when there is no superblock. */
export async function superblockEpoch(store: ObjectStore, prefix: string): Promise<number | null> {
  const object = await store.getVersioned(prefix);
  if (object === null) return null;
  try {
    return decodeSuperblock(object.data).ownerEpoch;
  } catch (error) {
    if (error instanceof CorruptionError) return 0;
    throw error;
  }
}

function refusal(prefix: string, found: LeaseFound, nowMs: number): LeaseHeldError {
  if (found.kind === "corrupt") {
    return new LeaseHeldError(`Volume ${prefix}: its lease object cannot be read (${found.reason}); see 'lsvd lock show', and 'lsvd lock break --force' to replace it`);
  }
  assert(found.kind === "lease", "only a lease object refuses");
  const lease = found.lease;
  const left = ((leaseExpiresAtMs(lease) - nowMs) / 1000).toFixed(1);
  return new LeaseHeldError(`Volume ${prefix} is owned by ${describeHolder(lease, nowMs)}, expires in ${left} s; see 'lsvd lock show'`);
}

/** How long to sleep between retries of a renewal that failed with a transient error. */
function renewRetryMs(durationMs: number): number {
  return Math.max(10, Math.floor(durationMs / (4 * LEASE_RENEW_DIVISOR)));
}

export class Lease implements Fence {
  /** How the lease was taken: its table case, and whether the previous holder released it cleanly. */
  readonly taken: { case: AcquisitionCase; clean: boolean; previous: LeaseRecord | null };
  private record: LeaseRecord;
  private version: ObjectVersion;
  /** Monotonic ms past which this holder may no longer write. */
  private deadlineMs: number;
  private reason: string | null = null;
  private listeners: Array<(reason: string) => void> = [];
  private renewTimer: TimerHandle | null = null;
  private deadlineTimer: TimerHandle | null = null;
  private renewing: Promise<void> | null = null;
  private stopped = false;
  /** No late write of an earlier holder can land where it matters (taken clean, or the log start moved above them). */
  private settled: boolean;
  /** Renewals written (tests, logs). */
  renewals = 0;

  private constructor(
    private readonly options: Required<Pick<LeaseOptions, "store" | "prefix" | "clock" | "log">>,
    record: LeaseRecord,
    version: ObjectVersion,
    sentAtMs: number,
    taken: Lease["taken"],
  ) {
    this.record = record;
    this.version = version;
    this.deadlineMs = sentAtMs + localValidityMs(record.durationMs);
    this.taken = taken;
    this.settled = taken.clean;
    this.armTimers(sentAtMs);
  }

  /** Takes the lease by the table above, or throws LeaseHeldError naming the holder. */
  static async acquire(options: LeaseOptions): Promise<Lease> {
    const clock = options.clock ?? systemLeaseClock;
    const log = options.log ?? (() => {});
    const identity = options.identity ?? thisProcess();
    const runs = options.processRuns ?? processRuns;
    const durationMs = options.durationMs ?? LEASE_DURATION_MS_DEFAULT;
    const { store, prefix } = options;
    for (let attempt = 0; ; attempt++) {
      const epochOfSuperblock = await superblockEpoch(store, prefix);
      if (epochOfSuperblock === null && options.volumeMayBeAbsent !== true) {
        throw new NotFoundError(`No volume at ${store.description}/${prefix}: superblock object '${prefix}' is missing`);
      }
      const { found, version } = await readLease(store, prefix);
      const nowMs = clock.wallMs();
      const liveness = found.kind === "lease" ? holderLiveness(found.lease, identity, runs) : "unknown";
      const decision = decideAcquisition(found, nowMs, liveness);
      if (decision.action === "refuse") throw refusal(prefix, found, nowMs);
      if (decision.action === "wait") {
        const waitMs = decision.untilMs - nowMs;
        const lease = (found as { lease: LeaseRecord }).lease;
        // A broken lease whose renewal time lies far ahead (a clock far off) is not waited for.
        if (waitMs > lease.durationMs || attempt > 2) throw refusal(prefix, found, nowMs);
        log(`lease of ${prefix} was broken; waiting ${(waitMs / 1000).toFixed(1)} s until its holder (${describeHolder(lease, nowMs)}) has certainly stopped writing`);
        await clock.sleep(waitMs + 1);
        continue;
      }
      const previous = found.kind === "lease" ? found.lease : null;
      const epoch = Math.max(previous?.epoch ?? 0, epochOfSuperblock ?? 0) + 1;
      const sentAtMs = clock.monotonicMs();
      const wallMs = Math.floor(clock.wallMs());
      const record: LeaseRecord = {
        state: LeaseState.Held,
        epoch,
        durationMs,
        acquiredAtMs: wallMs,
        renewedAtMs: wallMs,
        cookie: options.newCookie?.() ?? uuidv4(),
        ...identity,
        command: options.command,
        addresses: options.addresses ?? [],
      };
      const bytes = encodeLease(record);
      let written: ObjectVersion;
      try {
        written = version === null ? await store.putIfAbsent(leaseName(prefix), bytes) : await store.putIfVersion(leaseName(prefix), bytes, version);
      } catch (error) {
        // Someone else wrote the lease between our read and our put: read again, and refuse if it is theirs now.
        if (error instanceof ConflictError && attempt < 2) continue;
        if (error instanceof ConflictError) throw new LeaseHeldError(`Volume ${prefix}: another process took its lease at the same moment; see 'lsvd lock show'`);
        throw error;
      }
      const because = TAKEN_BECAUSE[decision.case] ?? "";
      const how = previous === null ? "new lease" : `taken over from ${describeHolder(previous, nowMs)}${because ? `: ${because}` : ""}`;
      log(`lease of ${prefix}: epoch ${epoch}, ${how}`);
      log(`debug: lease of ${prefix}: taken (case ${decision.case})`);
      return new Lease({ store, prefix, clock, log }, record, written, sentAtMs, { case: decision.case, clean: decision.clean, previous });
    }
  }

  get epoch(): number {
    return this.record.epoch;
  }

  get durationMs(): number {
    return this.record.durationMs;
  }

  get holder(): LeaseRecord {
    return this.record;
  }

  get fencedReason(): string | null {
    return this.reason;
  }

  check(): void {
    if (this.reason === null && this.options.clock.monotonicMs() >= this.deadlineMs) this.expireLocally();
    if (this.reason !== null) throw new FencedError(`Volume ${this.options.prefix}: this process no longer owns it (${this.reason})`);
  }

  onFenced(listener: (reason: string) => void): void {
    if (this.reason !== null) listener(this.reason);
    else this.listeners.push(listener);
  }

  fence(reason: string): void {
    if (this.reason !== null) return;
    this.reason = reason;
    this.cancelTimers();
    this.options.log(`error: fenced: ${reason}`);
    for (const listener of this.listeners.splice(0)) listener(reason);
  }

  private expireLocally(): void {
    const sinceMs = this.options.clock.monotonicMs() - (this.deadlineMs - localValidityMs(this.record.durationMs));
    this.fence(`lease epoch ${this.record.epoch} ran out: no renewal succeeded for ${(sinceMs / 1000).toFixed(1)} s (lease ${this.record.durationMs / 1000} s); another process may own the volume now`);
  }

  private armTimers(sentAtMs: number): void {
    const { clock } = this.options;
    this.renewTimer?.cancel();
    this.deadlineTimer?.cancel();
    const renewInMs = Math.max(0, sentAtMs + this.record.durationMs / LEASE_RENEW_DIVISOR - clock.monotonicMs());
    this.renewTimer = clock.setTimer(renewInMs, () => this.startRenewal());
    this.deadlineTimer = clock.setTimer(Math.max(0, this.deadlineMs - clock.monotonicMs()), () => {
      if (this.reason === null && !this.stopped && clock.monotonicMs() >= this.deadlineMs) this.expireLocally();
    });
  }

  private cancelTimers(): void {
    this.renewTimer?.cancel();
    this.deadlineTimer?.cancel();
    this.renewTimer = null;
    this.deadlineTimer = null;
  }

  private startRenewal(): void {
    this.renewTimer = null;
    if (this.stopped || this.reason !== null || this.renewing !== null) return;
    this.renewing = this.renew().finally(() => (this.renewing = null));
  }

  /** One renewal; reschedules itself (next renewal, or a retry after a transient error). */
  private async renew(): Promise<void> {
    const { clock, store, prefix, log } = this.options;
    try {
      this.check();
    } catch {
      return;
    }
    const sentAtMs = clock.monotonicMs();
    const record = { ...this.record, renewedAtMs: Math.max(Math.floor(clock.wallMs()), this.record.acquiredAtMs) };
    try {
      const version = await store.putIfVersion(leaseName(prefix), encodeLease(record), this.version);
      if (this.reason !== null) return; // fenced meanwhile (deadline): fencing is final
      this.record = record;
      this.version = version;
      this.deadlineMs = sentAtMs + localValidityMs(record.durationMs);
      this.renewals += 1;
      if (!this.stopped) this.armTimers(sentAtMs);
    } catch (error) {
      if (error instanceof ConflictError && (await this.adoptOwnWrite())) {
        this.renewTimer = clock.setTimer(0, () => this.startRenewal());
        return;
      }
      if (error instanceof ConflictError) {
        this.fence(`lease epoch ${this.record.epoch} was taken over: ${await this.describeSuccessor()}`);
        return;
      }
      if (this.reason !== null || this.stopped) return;
      log(`warning: lease of ${prefix}: renewal failed (${error instanceof LsvdError ? error.message : String(error)}); retrying until ${((this.deadlineMs - clock.monotonicMs()) / 1000).toFixed(1)} s from now`);
      this.renewTimer = clock.setTimer(renewRetryMs(this.record.durationMs), () => this.startRenewal());
    }
  }

  /**
   * After a conflict: if the lease still is ours (our cookie and epoch, held), an earlier renewal of ours landed though
   * its caller saw it fail; take its version and renew again. Its deadline is not taken: we do not know when it was
   * sent, so the last confirmed one stands.
   */
  private async adoptOwnWrite(): Promise<boolean> {
    try {
      const { found, version } = await readLease(this.options.store, this.options.prefix);
      if (found.kind !== "lease" || version === null) return false;
      const lease = found.lease;
      if (lease.cookie !== this.record.cookie || lease.epoch !== this.record.epoch || lease.state !== LeaseState.Held) return false;
      if (version === this.version || this.reason !== null) return false;
      this.version = version;
      this.record = lease;
      return true;
    } catch {
      return false;
    }
  }

  private async describeSuccessor(): Promise<string> {
    try {
      const { found } = await readLease(this.options.store, this.options.prefix);
      if (found.kind === "lease") return `the lease now says ${found.lease.state === LeaseState.Held ? "held by" : found.lease.state === LeaseState.Broken ? "broken, last held by" : "released by"} ${describeHolder(found.lease, this.options.clock.wallMs())}`;
      return found.kind === "absent" ? "the lease object is gone" : `the lease object cannot be read (${found.reason})`;
    } catch (error) {
      return `the lease could not be read back (${String(error)})`;
    }
  }

  /**
   * Clean exit, after every put landed: stops renewing and writes the lease back as Released (same epoch), so the
   * next owner need not guard against stale writes. A fenced holder does nothing. Never throws.
   */
  async release(): Promise<void> {
    this.stopped = true;
    this.cancelTimers();
    await this.renewing;
    if (this.reason !== null) return;
    const { clock, store, prefix, log } = this.options;
    if (clock.monotonicMs() >= this.deadlineMs) return this.expireLocally();
    if (!this.settled) {
      log(`lease of ${prefix}: left to expire, not released: it was taken from a holder that did not release it, and late writes of that holder are not yet fenced off`);
      return;
    }
    const record = { ...this.record, state: LeaseState.Released, renewedAtMs: Math.max(Math.floor(clock.wallMs()), this.record.acquiredAtMs) };
    try {
      this.version = await store.putIfVersion(leaseName(prefix), encodeLease(record), this.version);
      this.record = record;
      log(`lease of ${prefix}: released (epoch ${record.epoch})`);
    } catch (error) {
      log(`error: lease of ${prefix} could not be released: ${String(error)} (the next owner takes it over as after a crash)`);
    }
  }

  /** This owner's log now starts above whatever an earlier, unclean holder may still land (see rule 4). */
  markSettled(): void {
    this.settled = true;
  }

  /** Stops renewing without releasing: a command that failed leaves the lease to expire (or to its successor). */
  abandon(): void {
    this.stopped = true;
    this.cancelTimers();
  }
}

/** How long after sending a renewal its holder may go on writing. */
export function localValidityMs(durationMs: number): number {
  return durationMs - durationMs / LEASE_MARGIN_DIVISOR;
}
