// Opening a volume for a command that serves or changes it (serve, gc): the backend behind a RetryingStore, the
// cache device through io_uring, then recovery. Whatever was opened is closed again if a later step fails.

import { openBackend, type BackendOptions } from "../backend/backend_uri.ts";
import { RetryingStore } from "../backend/retrying_store.ts";
import { openUringDevice } from "../../ffi/uring_device.ts";
import { Volume, type VolumeOptions } from "../volume/volume.ts";

export interface OpenedVolume {
  volume: Volume;
  store: RetryingStore;
  /** The backend URI as parsed (for logs). */
  uri: string;
  prefix: string;
  /** Closes the volume (cleanly: drain, put, checkpoint), then the cache device and the store. */
  close(): Promise<void>;
}

export async function openVolumeForCommand(
  volumeUri: string,
  cachePath: string,
  backendOptions: BackendOptions,
  log: (line: string) => void,
  options: Omit<VolumeOptions, "store" | "prefix" | "cache" | "pool">,
): Promise<OpenedVolume> {
  const backend = await openBackend(volumeUri, backendOptions);
  const store = new RetryingStore(backend.store, { log: (line: string) => log(`backend: ${line}`) });
  let device: Awaited<ReturnType<typeof openUringDevice>>;
  try {
    device = await openUringDevice(cachePath, { exclusive: true });
  } catch (error) {
    await store.close();
    throw error;
  }
  let volume: Volume;
  try {
    volume = await Volume.open({ ...options, store, prefix: backend.prefix, cache: device, pool: device.pool });
  } catch (error) {
    await device.close();
    await store.close();
    throw error;
  }
  const close = async () => {
    await volume.close();
    await device.close();
    await store.close();
  };
  return { volume, store, uri: backend.uri, prefix: backend.prefix, close };
}
