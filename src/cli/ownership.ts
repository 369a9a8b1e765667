// The backend as a command that changes a volume reaches it (docs/architecture.md, "Ownership and fencing"): one
// store opened from the URI, seen through two RetryingStores: the lease's own (unguarded: the lease is what the guard
// checks) and the owner's (every put, delete and superblock rewrite checks the lease first, retries included).
// Every command that changes a volume takes the lease through here: serve (open_volume.ts), gc, mkdisk, fsck --repair.

import { openBackend, type BackendOptions } from "../backend/backend_uri.ts";
import { GuardedStore } from "../backend/guarded_store.ts";
import { MeteredStore, type StoreMeter } from "../backend/metered_store.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { RetryingStore } from "../backend/retrying_store.ts";
import { LEASE_DURATION_MS_DEFAULT, LEASE_DURATION_MS_MIN, LEASE_RENEW_DIVISOR } from "../constants.ts";
import { InvalidArgumentError } from "../errors.ts";
import { LEASE_DURATION_MS_MAX } from "../format/lease_object.ts";
import type { Fence } from "../volume/lease.ts";
import type { LogFn } from "../util/log.ts";
import { stringOption, type OptionSpec, type Parsed } from "./args.ts";

export const LEASE_OPTIONS: OptionSpec = { "lease-seconds": { type: "string", default: String(LEASE_DURATION_MS_DEFAULT / 1000) } };

export const LEASE_HELP = `  --lease-seconds S      (advanced) how long the volume's lease holds without renewal (default
                         ${LEASE_DURATION_MS_DEFAULT / 1000}); the holder renews it every S/3 and stops writing when it cannot`;

/** --lease-seconds, in ms (default LEASE_DURATION_MS_DEFAULT). */
export function leaseDurationFrom(parsed: Parsed): number {
  const text = stringOption(parsed, "lease-seconds");
  if (text === undefined) return LEASE_DURATION_MS_DEFAULT;
  const ms = Math.round(Number(text) * 1000);
  if (!(Number.isFinite(ms) && ms >= LEASE_DURATION_MS_MIN && ms <= LEASE_DURATION_MS_MAX)) {
    throw new InvalidArgumentError(`Invalid --lease-seconds '${text}': expected ${LEASE_DURATION_MS_MIN / 1000}..${LEASE_DURATION_MS_MAX / 1000}`);
  }
  return ms;
}

export interface OwnedBackend {
  /** For the lease itself (and reads): retries, no guard. */
  leaseStore: RetryingStore;
  prefix: string;
  uri: string;
  /** The owner's view: every change checks `fence` first (set it once the lease is taken). */
  ownerStore(fence: () => Fence): RetryingStore;
  /** Closes the owner's view (if made), then the lease's, which closes the store. */
  close(): Promise<void>;
}

/** Where each store's operations are reported (lsvd serve's metrics), every attempt under the retries. */
export interface BackendMeters {
  lease: StoreMeter;
  volume: StoreMeter;
}

export async function openOwnedBackend(
  volumeUri: string,
  backendOptions: BackendOptions & { createDirectory?: boolean },
  log: LogFn,
  leaseDurationMs: number,
  meters?: BackendMeters,
): Promise<OwnedBackend> {
  const backend = await openBackend(volumeUri, backendOptions);
  const raw: ObjectStore = backend.store;
  const metered = (meter: StoreMeter | undefined): ObjectStore => (meter === undefined ? raw : new MeteredStore(raw, meter));
  // A lease attempt that hangs must not hold a renewal past the holder's deadline: the deadline fences regardless.
  const leaseStore = new RetryingStore(metered(meters?.lease), {
    requestTimeoutMs: Math.max(500, Math.floor(leaseDurationMs / LEASE_RENEW_DIVISOR)),
    log: (line, fields) => log(`warning: backend (lease): ${line}`, fields),
  });
  let owned: RetryingStore | null = null;
  return {
    leaseStore,
    prefix: backend.prefix,
    uri: backend.uri,
    ownerStore(fence) {
      owned ??= new RetryingStore(new GuardedStore(metered(meters?.volume), () => fence().check()), { log: (line, fields) => log(`warning: backend: ${line}`, fields) });
      return owned;
    },
    async close() {
      await owned?.close();
      await leaseStore.close();
    },
  };
}
