// `--read-cache-device PATH`: the process's shared read-cache device (made by `lsvd mkcache --read-cache-only`),
// opened once and given to every volume the process opens (VolumeOptions.sharedReadCache). `lsvd serve` uses it for
// its one volume; a server of several volumes passes the same object to each, and closes it after the last.

import { openUringDevice } from "../../ffi/uring_device.ts";
import { SharedReadCache } from "../cache/shared_read_cache.ts";
import { InvalidArgumentError } from "../errors.ts";
import { formatSize } from "../util/size.ts";
import type { LogFn } from "../util/log.ts";
import { stringOption, type Parsed } from "./args.ts";

export const READ_CACHE_DEVICE_HELP = `  --read-cache-device PATH
                         a shared read-cache device (made by 'lsvd mkcache --read-cache-only') used
                         instead of the cache's own read-cache region, kept across restarts`;

/**
 * The shared read-cache device --read-cache-device names, opened (exclusively: one process at a time) with its
 * persisted index loaded; undefined without the option. The caller closes it after every volume using it closed.
 */
export async function readCacheDeviceOption(parsed: Parsed, log: LogFn = () => {}): Promise<SharedReadCache | undefined> {
  const path = stringOption(parsed, "read-cache-device");
  if (path === undefined) return undefined;
  if (parsed.values["no-read-cache"] === true) throw new InvalidArgumentError("--read-cache-device and --no-read-cache contradict each other: give one");
  const device = await openUringDevice(path, { exclusive: true });
  try {
    const shared = await SharedReadCache.open(device, device.pool, { log });
    const { kept, oldFormatPages } = shared.loaded;
    log(`read cache device ${path}: ${formatSize(shared.superblock.readCacheBytes)}, ${kept} blocks kept from the persisted index${oldFormatPages > 0 ? ` (${oldFormatPages} page(s) of an older format dropped)` : ""}`);
    return shared;
  } catch (error) {
    await device.close();
    throw error;
  }
}
