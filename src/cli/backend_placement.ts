// Whether a volume's directory backend sits on the disk its cache is on (docs/operations.md, "Where the backend
// directory goes"). Every durable put ends with flushes of the disk under the backend's directory, and the journal's
// writes on the same disk wait behind each flush: on the machines measured, that set the tail latency of small writes
// (bench/RESULTS.md, stop 19). `lsvd serve` says so in one line at start; it changes nothing.
//
// "One disk" is decided from device numbers: the file system under the backend's directory (st_dev) and the cache's
// (st_dev of a cache file, st_rdev of a cache device), each taken to its whole disk through sysfs (a partition's
// parent). Devices without a sysfs block entry (tmpfs, overlay's anonymous devices) are no disk. Stacked devices
// (device-mapper, md) are compared as they are, not through the disks beneath them.

import { existsSync, readlinkSync, statSync } from "node:fs";
import * as path from "node:path";
import { parseBackendUri } from "../backend/backend_uri.ts";

/** Linux's dev_t split into major and minor (glibc's gnu_dev_major / gnu_dev_minor). */
export function deviceNumbers(dev: number): { major: number; minor: number } {
  const high = Math.floor(dev / 2 ** 32);
  const low = dev % 2 ** 32;
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00) | ((high & 0xfff) << 20);
  return { major: major >>> 0, minor: minor >>> 0 };
}

/** The whole disk that block device major:minor is or is a partition of ("vda" for vda1), or null if none. */
export function diskOf(major: number, minor: number, sysfsBlock = "/sys/dev/block"): string | null {
  const link = path.join(sysfsBlock, `${major}:${minor}`);
  let target: string;
  try {
    target = path.resolve(sysfsBlock, readlinkSync(link));
  } catch {
    return null;
  }
  if (existsSync(path.join(target, "partition"))) return path.basename(path.dirname(target));
  return path.basename(target);
}

/** The device a cache path lives on: a device's own number, a file's file system. */
function cacheDevice(cachePath: string): number {
  const stats = statSync(cachePath);
  return stats.isBlockDevice() ? stats.rdev : stats.dev;
}

/**
 * The note `lsvd serve` logs when `volumeUri`, served writable, is a directory backend on the disk `cachePath` is on;
 * null otherwise (read-only: it puts nothing; another backend, another disk, or something that could not be looked
 * at: the note is advice, never a failure).
 */
export function sharedDiskNote(volumeUri: string, cachePath: string, readOnly: boolean, sysfsBlock = "/sys/dev/block"): string | null {
  if (readOnly) return null;
  const backend = parseBackendUri(volumeUri);
  if (backend.scheme !== "file") return null;
  let backendDisk: string | null;
  let cacheDisk: string | null;
  try {
    const backendDev = deviceNumbers(statSync(backend.location).dev);
    const cacheDev = deviceNumbers(cacheDevice(cachePath));
    backendDisk = diskOf(backendDev.major, backendDev.minor, sysfsBlock);
    cacheDisk = diskOf(cacheDev.major, cacheDev.minor, sysfsBlock);
  } catch {
    return null;
  }
  if (backendDisk === null || backendDisk !== cacheDisk) return null;
  return (
    `note: the backend directory ${backend.location} and the cache ${cachePath} are on one disk (${backendDisk}): ` +
    `every object put ends with flushes of that disk, and journal writes wait behind them (tail latency of small ` +
    `writes; docs/operations.md, "Where the backend directory goes")`
  );
}
