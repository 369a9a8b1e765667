// Opening a volume for a command that serves or changes it (serve, gc): the backend, the volume's lease (refused at
// once, naming the holder, when someone else owns it), the cache device through io_uring, then recovery. Whatever
// was opened is closed again if a later step fails; the lease is then given back (nothing was written that could
// land late), or left to expire when the volume may have started writing. ownVolume() stops after the lease (a
// server of several volumes takes every lease before any recovery); OwnedVolume.open() does the rest.

import type { BackendOptions } from "../backend/backend_uri.ts";
import type { RetryingStore } from "../backend/retrying_store.ts";
import { openUringDevice } from "../../ffi/uring_device.ts";
import type { Uring } from "../../ffi/uring.ts";
import type { Lease } from "../volume/lease.ts";
import { takeOwnership } from "../volume/ownership.ts";
import { Volume, type VolumeOptions } from "../volume/volume.ts";
import type { SharedReadCache } from "../cache/shared_read_cache.ts";
import { openOwnedBackend, type BackendMeters } from "./ownership.ts";
import type { LogFn } from "../util/log.ts";

export interface OpenedVolume {
  volume: Volume;
  store: RetryingStore;
  /** The volume's lease: closes (fences) when this process may no longer change the volume. */
  lease: Lease;
  /** The backend URI as parsed (for logs). */
  uri: string;
  prefix: string;
  /**
   * Closes the volume cleanly (drain, put, checkpoint), then the cache device; releases the lease only if all of that
   * succeeded (every put landed), and closes the store. Throws what the volume's close threw.
   */
  close(): Promise<void>;
}

/** What a command chooses of a volume's options (the rest comes from the backend, the lease and the cache). */
export type OpenOptions = Omit<VolumeOptions, "store" | "prefix" | "cache" | "pool" | "owner">;

export interface HolderInfo {
  /** What takes the lease: "serve", "gc". */
  command: string;
  /** Where the volume is served (NBD URIs), recorded in the lease for `lsvd lock show`. */
  addresses?: string[];
  leaseDurationMs: number;
}

/**
 * Resources one process shares among the volumes it serves (lsvd serve --export ...), made once at start-up and
 * handed to every volume's open: the shared read-cache device (--read-cache-device), or null; the ring the NBD
 * sockets use (--nbd-io uring), which the cache devices use too, or null.
 */
export interface SharedResources {
  readCache: SharedReadCache | null;
  ring: Uring | null;
}

export const NO_SHARED_RESOURCES: SharedResources = { readCache: null, ring: null };

/** A volume whose lease this process holds, not opened yet (serve takes every lease before any recovery). */
export interface OwnedVolume {
  uri: string;
  /** Opens the volume (cache device, recovery); gives the lease back and closes the backend if that fails. */
  open(cachePath: string, options: OpenOptions, shared: SharedResources): Promise<OpenedVolume>;
  /** Gives the lease back without opening (a later step of the start failed). */
  release(): Promise<void>;
}

/** The backend and the lease: refused at once, naming the holder, when someone else owns the volume. */
export async function ownVolume(volumeUri: string, backendOptions: BackendOptions, log: LogFn, holder: HolderInfo, meters?: BackendMeters): Promise<OwnedVolume> {
  const backend = await openOwnedBackend(volumeUri, backendOptions, log, holder.leaseDurationMs, meters);
  // The owner's store checks the lease before every change; nothing is written through it before the lease is taken.
  let lease: Lease | null = null;
  const store = backend.ownerStore(() => lease!);
  let taken: Awaited<ReturnType<typeof takeOwnership>>;
  try {
    taken = await takeOwnership({
      store: backend.leaseStore,
      prefix: backend.prefix,
      command: holder.command,
      addresses: holder.addresses,
      durationMs: holder.leaseDurationMs,
      log,
    }, store);
  } catch (error) {
    await backend.close();
    throw error;
  }
  lease = taken.lease;
  const release = async () => {
    await taken.lease.release();
    await backend.close();
  };
  return { uri: backend.uri, release, open: openOwned };

  // The shared read-cache device, if any, is used instead of the cache device's own read-cache region.
  async function openOwned(cachePath: string, options: OpenOptions, shared: SharedResources): Promise<OpenedVolume> {
    let device: Awaited<ReturnType<typeof openUringDevice>>;
    try {
      device = await openUringDevice(cachePath, { exclusive: true, ring: shared.ring ?? undefined });
    } catch (error) {
      await release();
      throw error;
    }
    return openOnDevice(shared.readCache === null ? options : { ...options, sharedReadCache: shared.readCache }, device);
  }

  async function openOnDevice(options: OpenOptions, device: Awaited<ReturnType<typeof openUringDevice>>): Promise<OpenedVolume> {
    let volume: Volume;
    try {
      volume = await Volume.open({ ...options, owner: taken.owner, store, prefix: backend.prefix, cache: device, pool: device.pool });
    } catch (error) {
      // Recovery may have started puts (a journal replay, a handover): the lease expires instead of being released.
      // The store first: closing it waits for the puts in flight, whose bytes may live in the device's buffer pool.
      taken.lease.abandon();
      await backend.close();
      await device.close();
      throw error;
    }
    const close = async () => {
      try {
        await volume.close();
      } catch (error) {
        // Not clean (fenced, or the backend failed): puts may still be in flight, from the device's buffers.
        taken.lease.abandon();
        await backend.close();
        await device.close();
        throw error;
      }
      await device.close();
      await store.close();
      await taken.lease.release();
      await backend.close();
    };
    return { volume, store, lease: taken.lease, uri: backend.uri, prefix: backend.prefix, close };
  }
}

export async function openVolumeForCommand(
  volumeUri: string,
  cachePath: string,
  backendOptions: BackendOptions,
  log: LogFn,
  holder: HolderInfo,
  options: OpenOptions,
  meters?: BackendMeters,
  shared: SharedResources = NO_SHARED_RESOURCES,
): Promise<OpenedVolume> {
  const owned = await ownVolume(volumeUri, backendOptions, log, holder, meters);
  return owned.open(cachePath, options, shared);
}
