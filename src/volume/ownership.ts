// Ownership of a volume, end to end (docs/architecture.md, "Ownership and fencing"): take the lease (lease.ts), then
// record the new owner's epoch in the superblock with a compare-and-swap, so that from then on no superblock write of
// an earlier owner can land; and where a new ownership starts its log (planLogStart): above every name that may exist,
// so that names are never written twice and late landings of an earlier owner are harmless.

import { SKIPPED_RANGES_MAX, STALE_SEQ_MARGIN, SUPERBLOCK_CAS_ATTEMPTS_MAX } from "../constants.ts";
import { assert, ConflictError, CorruptionError, InvalidArgumentError, NoSpaceError, NotFoundError } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName, parseObjectName } from "../format/object_name.ts";
import { encodeSuperblock, newSuperblock, skippedRangeOf, type SeqRange, type SuperblockObject } from "../format/superblock_object.ts";
import type { BackendState } from "./recovery/backend.ts";
import type { CrashPoint } from "../util/clock.ts";
import { FencedError, Lease, type Fence, type LeaseOptions } from "./lease.ts";
import { decodeVolumeSuperblock, SuperblockStore } from "./superblock_store.ts";
import { refuseIfSnapshotsOrClones } from "./snapshots.ts";

/** What a volume needs to know about its owner. */
export interface VolumeOwner {
  fence: Fence;
  /** The owner's lease epoch, written into the superblock. */
  epoch: number;
  /** The previous owner released its lease cleanly: no late puts of a stale writer can come. */
  previousClean: boolean;
  /**
   * Called once this owner's log start is durable (beginLog): from then on a stale writer's late puts land only where
   * nobody reads, so this owner may release the lease as clean even if it took it from an unclean holder.
   */
  logStarted?: () => void;
  /** The superblock as the owner wrote it when it took the volume (else the volume reads it). */
  superblocks?: SuperblockStore;
}

/** A fence that never closes unless told to: for volumes opened without a lease (tests, tools that own the store). */
export class LocalFence implements Fence {
  private reason: string | null = null;
  private listeners: Array<(reason: string) => void> = [];

  get fencedReason(): string | null {
    return this.reason;
  }

  check(): void {
    if (this.reason !== null) throw new FencedError(`this process no longer owns the volume (${this.reason})`);
  }

  onFenced(listener: (reason: string) => void): void {
    if (this.reason !== null) listener(this.reason);
    else this.listeners.push(listener);
  }

  fence(reason: string): void {
    if (this.reason !== null) return;
    this.reason = reason;
    for (const listener of this.listeners.splice(0)) listener(reason);
  }
}

/**
 * Takes the lease (through `options.store`, which no lease guards) and records the new epoch in the superblock with a
 * compare-and-swap. A conflict there is a write of the previous holder landing late (it was started before that
 * holder's deadline): read again and retry. Returns the superblock store the owner writes through (`writeStore`,
 * normally the lease-guarded view of the same backend). On failure the lease is released again: nothing was written.
 */
export async function takeOwnership(options: LeaseOptions, writeStore: ObjectStore = options.store): Promise<{ lease: Lease; owner: VolumeOwner }> {
  const lease = await Lease.acquire(options);
  try {
    const superblocks = await recordEpoch(options.store, writeStore, options.prefix, lease);
    const owner: VolumeOwner = { fence: lease, epoch: lease.epoch, previousClean: lease.taken.clean, superblocks, logStarted: () => lease.markSettled() };
    return { lease, owner };
  } catch (error) {
    await lease.release();
    throw error;
  }
}

async function recordEpoch(store: ObjectStore, writeStore: ObjectStore, prefix: string, lease: Lease): Promise<SuperblockStore> {
  for (let attempt = 1; ; attempt++) {
    lease.check();
    const object = await store.getVersioned(prefix);
    if (object === null) throw new NotFoundError(`No volume at ${store.description}/${prefix}: superblock object '${prefix}' is missing`);
    const decoded = decodeVolumeSuperblock(prefix, object.data);
    const superblock = decoded.superblock;
    if (superblock.ownerEpoch > lease.epoch) {
      lease.fence(`the superblock names owner epoch ${superblock.ownerEpoch}, newer than this lease's ${lease.epoch}`);
      lease.check();
    }
    if (superblock.ownerEpoch === lease.epoch) return new SuperblockStore(writeStore, prefix, decoded, object.version, lease);
    // Only the epoch changes: a checkpoint list read without a checksum stays marked so (recovery checks it).
    const next = { ...superblock, ownerEpoch: lease.epoch };
    try {
      const version = await store.putIfVersion(prefix, encodeSuperblock(next), object.version);
      return new SuperblockStore(writeStore, prefix, { ...decoded, superblock: next }, version, lease);
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= SUPERBLOCK_CAS_ATTEMPTS_MAX) throw error;
    }
  }
}

/** Where a new ownership's log starts, and the skipped ranges its superblock records. */
export interface LogStart {
  /** The first seq the new owner writes. */
  nextSeq: number;
  /** The superblock's skipped ranges from now on. */
  skipped: SeqRange[];
  /** The range added (merged with the newest one when the log ended right after it), or null. */
  added: SeqRange | null;
}

/**
 * A new ownership writes above every name that may exist (rule 6): above the log end, the highest seq name in the
 * backend and the superblock's next_seq, plus STALE_SEQ_MARGIN when the previous holder did not release its lease
 * (puts it had started may still land). Seqs between the log end and the new start are recorded as skipped: no owner
 * ever writes them, and recovery and fsck ignore whatever lands there.
 */
export function planLogStart(logEnd: number, highestSeq: number, superblock: SuperblockObject, previousClean: boolean): LogStart {
  assert(Number.isSafeInteger(logEnd) && logEnd >= 1 && Number.isSafeInteger(highestSeq) && highestSeq >= 0, "log end and highest seq");
  let nextSeq = Math.max(logEnd, highestSeq + 1, superblock.nextSeq);
  if (!previousClean) nextSeq += STALE_SEQ_MARGIN;
  if (nextSeq > 0xffffffff) throw new NoSpaceError(`Volume has no object seqs left (the next would be ${nextSeq}, above 2^32 - 1)`);
  // Ranges beyond the log end lie inside the one added below; the others are kept, also below the oldest checkpoint,
  // where recovery no longer needs them: they tell left-overs landing there late from objects of the log.
  let skipped = superblock.skipped.filter((range) => range.last < logEnd);
  for (const range of superblock.skipped) assert(!(range.first < logEnd && range.last >= logEnd), "the log never ends inside a skipped range");
  let added: SeqRange | null = null;
  if (nextSeq > logEnd) {
    const newest = skipped.at(-1);
    const merge = newest !== undefined && newest.last === logEnd - 1;
    added = { first: merge ? newest.first : logEnd, last: nextSeq - 1 };
    skipped = [...(merge ? skipped.slice(0, -1) : skipped), added];
  }
  // More ranges than a superblock holds: the oldest go (they lie below every checkpoint after this many takeovers, each
  // of which wrote one; only left-overs in them would no longer be recognised).
  if (skipped.length > SKIPPED_RANGES_MAX) skipped = skipped.slice(-SKIPPED_RANGES_MAX);
  return { nextSeq, skipped, added };
}


/**
 * Makes the new ownership's log start durable before anything is written at or above it: one superblock
 * compare-and-swap with the owner's epoch, the new next_seq, the skipped ranges (planLogStart) and without the
 * checkpoints recovery could not use; then deletes what lies in skipped ranges (nobody reads or writes those names).
 */
export async function beginLog(
  store: ObjectStore,
  state: BackendState,
  superblocks: SuperblockStore,
  owner: Pick<VolumeOwner, "epoch" | "previousClean" | "logStarted">,
  log: (line: string) => void,
  crashPoint?: CrashPoint,
): Promise<LogStart> {
  // Whether an unfinished tail is part of the log decides where the log ends: settled before (recovery/journal.ts, settleUnfinishedTail).
  assert(state.unfinished === null, "the unfinished tail is kept or dropped before the log start is planned");
  const plan = planLogStart(state.nextSeq, state.highestSeq, state.superblock, owner.previousClean);
  const next: SuperblockObject = {
    ...state.superblock,
    ownerEpoch: Math.max(owner.epoch, state.superblock.ownerEpoch),
    nextSeq: plan.nextSeq,
    skipped: plan.skipped,
  };
  if (JSON.stringify(next) !== JSON.stringify(superblocks.superblock)) await superblocks.write(next);
  await crashPoint?.("recovery.log-started");
  owner.logStarted?.();
  const prefix = superblocks.prefix;
  if (plan.added !== null) {
    const why = owner.previousClean ? "" : ` (${STALE_SEQ_MARGIN} seqs of margin: the previous holder did not release the volume cleanly)`;
    log(`recovery: the log continues at ${objectName(prefix, plan.nextSeq)}; seqs ${plan.added.first}..${plan.added.last} are skipped for good${why}`);
  }
  // Beyond the gap lies inside the range just added; the others lay in ranges already recorded (dropped or not).
  const doomed = [...state.beyondGap, ...state.skippedObjects];
  const snapshot = state.superblock.snapshots.find((snap) => doomed.includes(snap.seq));
  if (snapshot) throw new CorruptionError(`Volume ${superblocks.prefix}: snapshot '${snapshot.name}' names ${objectName(superblocks.prefix, snapshot.seq)}, which lies beyond the log end or in a skipped range: refusing to delete it ('lsvd fsck' tells more)`);
  for (const seq of state.beyondGap) assert(skippedRangeOf(plan.skipped, seq) !== null, `object ${seq} beyond the gap is skipped now`);
  for (const seq of doomed.sort((a, b) => b - a)) {
    await crashPoint?.("recovery.delete-skipped");
    await store.delete(objectName(prefix, seq));
  }
  if (doomed.length > 0) log(`recovery: deleted ${doomed.length} object(s) in skipped ranges (beyond a gap, or landed after their writer lost the volume)`);
  return plan;
}

export interface CreateVolumeOptions {
  /** Unguarded (the lease is written through it), usually a RetryingStore. */
  store: ObjectStore;
  prefix: string;
  volUuid: string;
  volSectors: number;
  /** Replace a volume that exists at the prefix (mkdisk --force); otherwise one that exists is refused. */
  replace: boolean;
  /** Lease options for the time of the creation (command "mkdisk"). */
  lease: Omit<LeaseOptions, "store" | "prefix" | "volumeMayBeAbsent">;
}

/**
 * `lsvd mkdisk`: under the lease (refused while anyone owns the prefix), writes a new superblock whose log starts
 * above every name that exists at the prefix (objects of a replaced or deleted volume, plus the margin when their
 * writer did not release its lease), with those names skipped, then deletes the old objects and releases the lease.
 * The superblock goes first (compare-and-swap over the old one, or create-exclusive): a crash before the deletes
 * leaves objects in a skipped range, which the next open deletes.
 */
export async function createVolume(options: CreateVolumeOptions): Promise<{ epoch: number; nextSeq: number; deleted: number }> {
  const { store, prefix } = options;
  const lease = await Lease.acquire({ ...options.lease, store, prefix, volumeMayBeAbsent: true });
  try {
    const existing = await store.getVersioned(prefix);
    if (existing !== null && !options.replace) {
      throw new InvalidArgumentError(`A volume already exists at ${store.description}/${prefix} (use --force to replace it and delete its objects)`);
    }
    const old: number[] = [];
    for (const name of await store.list(`${prefix}.`)) {
      const seq = parseObjectName(prefix, name);
      if (seq !== null && seq !== 0) old.push(seq);
    }
    if (existing !== null) refuseReplacingSnapshots(prefix, existing.data);
    const previousNextSeq = existing === null ? 0 : superblockNextSeq(prefix, existing.data);
    let nextSeq = Math.max(1, ...old.map((seq) => seq + 1), previousNextSeq);
    const anythingBefore = existing !== null || old.length > 0 || lease.taken.previous !== null;
    if (!lease.taken.clean && anythingBefore) nextSeq += STALE_SEQ_MARGIN;
    if (nextSeq > 0xffffffff) throw new NoSpaceError(`Volume prefix ${prefix} has no object seqs left`);
    const superblock: SuperblockObject = {
      ...newSuperblock(options.volUuid, options.volSectors),
      nextSeq,
      ownerEpoch: lease.epoch,
      skipped: nextSeq > 1 ? [{ first: 1, last: nextSeq - 1 }] : [],
    };
    lease.check();
    const bytes = encodeSuperblock(superblock);
    if (existing === null) await store.putIfAbsent(prefix, bytes);
    else await store.putIfVersion(prefix, bytes, existing.version);
    lease.markSettled(); // the new log starts above everything a stale writer may still land
    for (const seq of old.sort((a, b) => b - a)) {
      lease.check();
      await store.delete(objectName(prefix, seq));
    }
    await lease.release();
    return { epoch: lease.epoch, nextSeq, deleted: old.length };
  } catch (error) {
    // Nothing of ours can land late (every call above completed), so the lease is given back clean.
    await lease.release();
    throw error;
  }
}

/** A volume with snapshots or clones is never replaced (one that does not decode may be). */
function refuseReplacingSnapshots(prefix: string, bytes: Uint8Array): void {
  let superblock: SuperblockObject;
  try {
    superblock = decodeVolumeSuperblock(prefix, bytes).superblock;
  } catch (error) {
    if (error instanceof CorruptionError) return;
    throw error;
  }
  refuseIfSnapshotsOrClones(prefix, superblock, "replace");
}

/** The next_seq of a superblock being replaced (0 if it does not decode: its objects are listed anyway). */
function superblockNextSeq(prefix: string, bytes: Uint8Array): number {
  try {
    return decodeVolumeSuperblock(prefix, bytes).superblock.nextSeq;
  } catch {
    return 0;
  }
}
