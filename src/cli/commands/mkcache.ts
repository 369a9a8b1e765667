// lsvd mkcache: format a cache file or block device for a volume (layout: docs/format.md, "Cache device layout"), or
// with --read-cache-only a shared read-cache device for every volume of a process (docs/format.md, "Shared read-cache
// device").

import { writeOut } from "../output.ts";
import { existsSync } from "node:fs";
import { randomInt } from "node:crypto";
import { v4 as uuidv4, validate as uuidValidate } from "uuid";
import { PAGE_BYTES } from "../../constants.ts";
import { CorruptionError, InvalidArgumentError } from "../../errors.ts";
import { openBackend } from "../../backend/backend_uri.ts";
import { computeCacheLayout, WRITE_FRACTION_DEFAULT } from "../../cache/cache_layout.ts";
import { JournalWalker } from "../../cache/journal_replay.ts";
import { encodeCacheSuperblock, newCacheSuperblock, type CacheSuperblock } from "../../format/cache_superblock.ts";
import { JournalRecordType } from "../../format/journal_record.ts";
import { decodeReadCacheDeviceSuperblock, encodeReadCacheDeviceSuperblock, isReadCacheDevicePage, readCacheDeviceLayout, type ReadCacheDeviceSuperblock } from "../../format/read_cache_superblock.ts";
import { openUringDevice } from "../../../ffi/uring_device.ts";
import { readSuperblock } from "../../volume/recovery/backend.ts";
import { readCacheSuperblock } from "../../volume/recovery/journal.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, requirePositional, stringOption, type OptionSpec, type Parsed } from "../args.ts";
import { Progress } from "../progress.ts";
import { logEnabled } from "../../util/log.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import { prepareParentDirectory } from "../paths.ts";
import type { Command } from "./command.ts";
import { printCacheSuperblock, printReadCacheDeviceSuperblock } from "./parse.ts";

const USAGE =
  "lsvd mkcache (--volume VOLUME | --uuid UUID) [--size SIZE] [--write-fraction F] [--force] CACHE\n       lsvd mkcache --read-cache-only [--size SIZE] [--force] CACHE\n       lsvd mkcache --show [--json] CACHE";
const OPTIONS: OptionSpec = {
  volume: { type: "string" },
  uuid: { type: "string" },
  size: { type: "string" },
  "write-fraction": { type: "string", default: String(WRITE_FRACTION_DEFAULT) },
  force: { type: "boolean" },
  "read-cache-only": { type: "boolean" },
  show: { type: "boolean" },
  json: { type: "boolean" },
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
};
const HELP = `Usage: ${USAGE}

Formats CACHE (a file, created with SIZE if missing, or an existing file or block device, whose size is used) as the
SSD cache of a volume: a superblock page, a write journal region and a read cache region. With --read-cache-only,
formats CACHE as a shared read-cache device: a superblock page and a read cache region only, which \`lsvd serve
--read-cache-device\` shares between every volume the process serves.

Options:
  --volume VOLUME       the volume this cache serves (its UUID is read from the superblock)
  --uuid UUID           the volume's UUID, instead of --volume
  --size SIZE           size of a new cache file (e.g. 1g); required when CACHE does not exist
  --write-fraction F    share of the cache for the write journal (default 0.5; at least 32 MiB)
  --force               format even if CACHE holds a live cache (unflushed writes are lost)
  --read-cache-only     format a shared read-cache device (no --volume or --uuid; no journal)
  --show                print the cache superblock instead of formatting
  --json                with --show: print JSON
${BACKEND_HELP}
${LOG_HELP}
`;

const ZERO_CHUNK_BYTES = 4 * 1024 * 1024;
/** The smallest shared read-cache device: page 0, an index page, a slot (anything smaller holds nothing). */
const READ_CACHE_DEVICE_BYTES_MIN = 1024 * 1024;
const ZERO_WRITES_INFLIGHT_MAX = 8;

/**
 * Writes zeros over a region of a cache file (the journal, the read cache). A sparse or fallocated region makes every
 * write there allocate or convert blocks, which io_uring must hand to a kernel worker thread, and every fdatasync
 * commit that metadata: measured here, 4 KiB random writes through `lsvd serve` ran ~25% slower on a sparse journal,
 * and read-cache fills into a sparse region slowed cold reads (bench/RESULTS.md). Block devices need nothing.
 */
async function zeroRegion(device: Awaited<ReturnType<typeof openUringDevice>>, startBytes: number, bytes: number, what: string): Promise<void> {
  const zeros = device.pool.acquire(ZERO_CHUNK_BYTES);
  zeros.fill(0);
  // On a terminal only (a script formatting caches wants no lines), as before.
  const progress = new Progress("mkcache", process.stderr.isTTY === true && logEnabled("info"));
  let done = 0;
  try {
    const inFlight = new Set<Promise<void>>();
    for (let offset = 0; offset < bytes; offset += ZERO_CHUNK_BYTES) {
      const length = Math.min(ZERO_CHUNK_BYTES, bytes - offset);
      const write: Promise<void> = device.write(startBytes + offset, [zeros.subarray(0, length)]).then(() => {
        done += length;
        inFlight.delete(write);
      });
      inFlight.add(write);
      if (inFlight.size >= ZERO_WRITES_INFLIGHT_MAX) await Promise.race(inFlight);
      progress.bytes(done, bytes, `writing the ${what} region`);
    }
    await Promise.all(inFlight);
    progress.bytes(bytes, bytes, `writing the ${what} region`);
    progress.clear();
  } finally {
    device.pool.release(zeros);
  }
}

/** Whether the journal holds records that may not be in the backend yet. */
async function hasLiveRecords(device: Awaited<ReturnType<typeof openUringDevice>>, superblock: CacheSuperblock): Promise<boolean> {
  const walker = new JournalWalker(device, device.pool, superblock);
  try {
    for (;;) {
      const record = await walker.next();
      if (!record) return false;
      if (record.header.type === JournalRecordType.Data) return true;
    }
  } finally {
    walker.close();
  }
}

type CacheDevice = Awaited<ReturnType<typeof openUringDevice>>;

/** `--show`: prints the cache superblock of CACHE. */
async function showCacheSuperblock(cachePath: string, json: boolean): Promise<void> {
  const device = await openUringDevice(cachePath);
  try {
    const page = device.pool.acquire(PAGE_BYTES);
    try {
      await device.read(0, page.subarray(0, PAGE_BYTES));
      if (isReadCacheDevicePage(page.subarray(0, PAGE_BYTES))) {
        printReadCacheDeviceSuperblock(cachePath, decodeReadCacheDeviceSuperblock(page.subarray(0, PAGE_BYTES)), json);
        return;
      }
    } finally {
      device.pool.release(page);
    }
    printCacheSuperblock(cachePath, await readCacheSuperblock(device, device.pool), json);
  } finally {
    await device.close();
  }
}

/** The volume's UUID, from --uuid or from the superblock of --volume (exactly one of them). */
async function volumeUuidFrom(parsed: Parsed): Promise<string> {
  const volume = stringOption(parsed, "volume");
  let volUuid = stringOption(parsed, "uuid");
  if ((volume === undefined) === (volUuid === undefined)) throw new InvalidArgumentError(`give exactly one of --volume or --uuid. Usage: ${USAGE}`);
  if (volume !== undefined) {
    const { store, prefix } = await openBackend(volume, backendOptionsFrom(parsed));
    try {
      volUuid = (await readSuperblock(store, prefix)).volUuid;
    } finally {
      await store.close();
    }
  }
  if (!uuidValidate(volUuid!)) throw new InvalidArgumentError(`Invalid UUID '${volUuid}'`);
  return volUuid!;
}

/** The size to create CACHE with (undefined when it exists), checked with the fraction before anything is created. */
function createSizeFor(parsed: Parsed, cachePath: string, exists: boolean, writeFraction: number): number | undefined {
  const sizeText = stringOption(parsed, "size");
  if (!exists && sizeText === undefined) throw new InvalidArgumentError(`${cachePath} does not exist: give --size to create it`);
  const createSizeBytes = exists ? undefined : parseSize(sizeText!, "size");
  if (createSizeBytes !== undefined && createSizeBytes % PAGE_BYTES !== 0) {
    throw new InvalidArgumentError(`Invalid size ${sizeText}: not a multiple of 4 KiB`);
  }
  // Refuse a bad size or fraction before the file is created: a refused mkcache must not leave a file behind (a
  // later run would then take that file's size and ignore --size).
  if (createSizeBytes !== undefined) {
    computeCacheLayout(createSizeBytes, writeFraction);
    prepareParentDirectory(cachePath, "cache file");
  }
  return createSizeBytes;
}

/** Refuses to format over a cache whose journal holds records that may not be in the backend yet. */
async function refuseLiveCache(device: CacheDevice, cachePath: string, volUuid: string | null): Promise<void> {
  let old: CacheSuperblock | null = null;
  try {
    old = await readCacheSuperblock(device, device.pool);
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
  }
  if (old && (await hasLiveRecords(device, old))) {
    const whose = old.volUuid === volUuid ? "this volume" : `another volume (${old.volUuid})`;
    throw new InvalidArgumentError(
      `${cachePath} holds a live cache of ${whose} with journal records that may not be in its backend yet; serve that volume once to flush it, or use --force to discard them`,
    );
  }
}

/** Writes a new cache superblock (and zeros the journal's first page, and of a file the whole journal). */
async function formatCache(device: CacheDevice, volUuid: string, writeFraction: number): Promise<CacheSuperblock> {
  const layout = computeCacheLayout(device.sizeBytes, writeFraction);
  const startSeq = randomInt(1, 2 ** 40);
  const superblock = newCacheSuperblock({ cacheUuid: uuidv4(), volUuid }, layout, startSeq);
  if (!device.isBlockDevice) {
    await zeroRegion(device, layout.journalStartBytes, layout.journalBytes, "journal");
    await zeroRegion(device, layout.readCacheStartBytes, layout.readCacheBytes, "read cache");
  }
  const page = device.pool.acquire(PAGE_BYTES);
  try {
    page.set(encodeCacheSuperblock(superblock));
    await device.write(0, [page]);
    // The first journal page is zero (block devices are not zeroed whole), so no record of a previous format
    // can be taken for ours.
    page.fill(0);
    await device.write(layout.journalStartBytes, [page]);
    await device.fdatasync();
  } finally {
    device.pool.release(page);
  }
  return superblock;
}

function reportFormatted(cachePath: string, superblock: CacheSuperblock, json: boolean): void {
  if (json) {
    writeOut(`${JSON.stringify({ cache: cachePath, ...superblock })}\n`);
  } else {
    writeOut(
      `formatted cache ${cachePath} (${formatSize(superblock.sizeBytes)}) for volume ${superblock.volUuid}: journal ${formatSize(superblock.journalBytes)}, read cache ${formatSize(superblock.readCacheBytes)}, cache UUID ${superblock.cacheUuid}\n`,
    );
  }
}

/** `--read-cache-only`: page 0 of a shared read-cache device; its index pages start empty (a fresh cache uuid). */
async function formatReadCacheDevice(device: CacheDevice): Promise<ReadCacheDeviceSuperblock> {
  const superblock = readCacheDeviceLayout(uuidv4(), device.sizeBytes);
  if (!device.isBlockDevice) await zeroRegion(device, superblock.readCacheStartBytes, superblock.readCacheBytes, "read cache");
  const page = device.pool.acquire(PAGE_BYTES);
  try {
    page.set(encodeReadCacheDeviceSuperblock(superblock));
    await device.write(0, [page]);
    await device.fdatasync();
  } finally {
    device.pool.release(page);
  }
  return superblock;
}

async function runReadCacheOnly(parsed: Parsed, cachePath: string): Promise<number> {
  for (const name of ["volume", "uuid"]) {
    if (parsed.values[name] !== undefined) throw new InvalidArgumentError(`--${name} does not go with --read-cache-only: a shared read-cache device serves every volume. Usage: ${USAGE}`);
  }
  const exists = existsSync(cachePath);
  const sizeText = stringOption(parsed, "size");
  if (!exists && sizeText === undefined) throw new InvalidArgumentError(`${cachePath} does not exist: give --size to create it`);
  const createSizeBytes = exists ? undefined : parseSize(sizeText!, "size");
  if (createSizeBytes !== undefined && (createSizeBytes % PAGE_BYTES !== 0 || createSizeBytes < READ_CACHE_DEVICE_BYTES_MIN)) {
    throw new InvalidArgumentError(`Invalid size ${sizeText}: a shared read-cache device is a multiple of 4 KiB and at least ${formatSize(READ_CACHE_DEVICE_BYTES_MIN)}`);
  }
  if (createSizeBytes !== undefined) prepareParentDirectory(cachePath, "cache file");
  const device = await openUringDevice(cachePath, { createSizeBytes, exclusive: true });
  try {
    if (device.sizeBytes < READ_CACHE_DEVICE_BYTES_MIN) throw new InvalidArgumentError(`${cachePath} holds ${formatSize(device.sizeBytes)}: a shared read-cache device needs at least ${formatSize(READ_CACHE_DEVICE_BYTES_MIN)}`);
    if (exists && parsed.values.force !== true) await refuseLiveCache(device, cachePath, null);
    const superblock = await formatReadCacheDevice(device);
    if (parsed.values.json === true) writeOut(`${JSON.stringify({ cache: cachePath, kind: "read-cache", ...superblock })}\n`);
    else writeOut(`formatted shared read-cache device ${cachePath} (${formatSize(superblock.sizeBytes)}): read cache ${formatSize(superblock.readCacheBytes)}, cache UUID ${superblock.cacheUuid}\n`);
    return 0;
  } finally {
    await device.close();
  }
}

export const mkcacheCommand: Command = {
  name: "mkcache",
  summary: "format a cache file or device for a volume",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const [cachePath] = requirePositional(parsed, 1, USAGE);
    if (parsed.values.show === true) {
      await showCacheSuperblock(cachePath!, parsed.values.json === true);
      return 0;
    }
    if (parsed.values["read-cache-only"] === true) return await runReadCacheOnly(parsed, cachePath!);
    const volUuid = await volumeUuidFrom(parsed);
    const writeFraction = Number(stringOption(parsed, "write-fraction"));
    const exists = existsSync(cachePath!);
    const createSizeBytes = createSizeFor(parsed, cachePath!, exists, writeFraction);
    const device = await openUringDevice(cachePath!, { createSizeBytes, exclusive: true });
    try {
      if (exists && parsed.values.force !== true) await refuseLiveCache(device, cachePath!, volUuid);
      const superblock = await formatCache(device, volUuid, writeFraction);
      reportFormatted(cachePath!, superblock, parsed.values.json === true);
      return 0;
    } finally {
      await device.close();
    }
  },
};
