// Opening a volume for a command that serves or changes it (serve, gc): the backend, the volume's lease (refused at
// once, naming the holder, when someone else owns it), the cache device through io_uring, then recovery. Whatever
// was opened is closed again if a later step fails; the lease is then given back (nothing was written that could
// land late), or left to expire when the volume may have started writing.

import type { BackendOptions } from "../backend/backend_uri.ts";
import type { RetryingStore } from "../backend/retrying_store.ts";
import { openUringDevice } from "../../ffi/uring_device.ts";
import type { Lease } from "../volume/lease.ts";
import { takeOwnership } from "../volume/ownership.ts";
import { Volume, type VolumeOptions } from "../volume/volume.ts";
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

export interface HolderInfo {
  /** What takes the lease: "serve", "gc". */
  command: string;
  /** Where the volume is served (NBD URIs), recorded in the lease for `lsvd lock show`. */
  addresses?: string[];
  leaseDurationMs: number;
}

export async function openVolumeForCommand(
  volumeUri: string,
  cachePath: string,
  backendOptions: BackendOptions,
  log: LogFn,
  holder: HolderInfo,
  options: Omit<VolumeOptions, "store" | "prefix" | "cache" | "pool" | "owner">,
  meters?: BackendMeters,
): Promise<OpenedVolume> {
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
  let device: Awaited<ReturnType<typeof openUringDevice>>;
  try {
    device = await openUringDevice(cachePath, { exclusive: true });
  } catch (error) {
    await taken.lease.release();
    await backend.close();
    throw error;
  }
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
