// A shared read-cache device (`lsvd mkcache --read-cache-only`): one read cache for every volume a process serves,
// with one clock over all of them and one bound on fills in flight (docs/architecture.md, "The read path"). Entries
// are keyed by object location (read_cache.ts), so volumes, and clones of one base, never see each other's data
// wrongly and share what they have in common. The process opens it once, gives it to each Volume it opens
// (VolumeOptions.sharedReadCache), and closes it after the last volume.

import { PAGE_BYTES } from "../constants.ts";
import { CorruptionError } from "../errors.ts";
import { decodeReadCacheDeviceSuperblock, type ReadCacheDeviceSuperblock } from "../format/read_cache_superblock.ts";
import { isCacheSuperblockPage } from "../format/cache_superblock.ts";
import type { Clock } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";
import { ReadCache, type LoadCounts } from "./read_cache.ts";

export class SharedReadCache {
  private closed = false;
  /** Log uuid -> where that log lives ("store prefix"), for every log a volume of this process reads through it. */
  private readonly logPlaces = new Map<string, string>();

  private constructor(
    readonly device: CacheDevice,
    readonly superblock: ReadCacheDeviceSuperblock,
    readonly cache: ReadCache,
    /** What the open found in the persisted index. */
    readonly loaded: LoadCounts,
  ) {}

  /** Reads page 0 (refusing anything but a read-cache device, with the reason) and the persisted index. */
  static async open(device: CacheDevice, pool: AlignedPool, options: { log?: LogFn; clock?: Clock } = {}): Promise<SharedReadCache> {
    const page = pool.acquire(PAGE_BYTES);
    let superblock: ReadCacheDeviceSuperblock;
    try {
      await device.read(0, page.subarray(0, PAGE_BYTES));
      if (isCacheSuperblockPage(page.subarray(0, PAGE_BYTES))) {
        throw new CorruptionError(`${device.path} is a volume's cache (made by lsvd mkcache --volume), not a shared read-cache device: make one with lsvd mkcache --read-cache-only`);
      }
      try {
        superblock = decodeReadCacheDeviceSuperblock(page.subarray(0, PAGE_BYTES));
      } catch (error) {
        throw new CorruptionError(`${device.path} is not a shared read-cache device (${(error as Error).message}): make one with lsvd mkcache --read-cache-only`);
      }
    } finally {
      pool.release(page);
    }
    if (superblock.sizeBytes > device.sizeBytes) {
      throw new CorruptionError(`${device.path} holds ${device.sizeBytes} bytes, less than the ${superblock.sizeBytes} its superblock names`);
    }
    const cache = new ReadCache(device, pool, superblock.readCacheStartBytes, superblock.readCacheBytes, { cacheUuid: superblock.cacheUuid, ...options });
    const loaded = await cache.load();
    return new SharedReadCache(device, superblock, cache, loaded);
  }

  /**
   * A volume about to read through this cache names the logs it reads (its own and its bases') and where each lives.
   * Entries are keyed by log uuid, so two different logs under one uuid (a byte copy of a volume under another
   * prefix) must not share it: the first place seen for a uuid keeps it, and a volume naming another place for it
   * gets a description of the clash (and must not use the cache) instead of null.
   */
  claimLogs(logs: ReadonlyArray<{ uuid: string; place: string }>): string | null {
    for (const { uuid, place } of logs) {
      const known = this.logPlaces.get(uuid);
      if (known !== undefined && known !== place) return `log ${uuid} is at ${known} for another volume of this process, not at ${place}`;
    }
    for (const { uuid, place } of logs) this.logPlaces.set(uuid, place);
    return null;
  }

  /** After the last volume closed: the index is persisted whole, then the device closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.cache.close();
    } finally {
      await this.device.close();
    }
  }
}
