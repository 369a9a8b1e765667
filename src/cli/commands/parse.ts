// lsvd parse: print any backend object (superblock, data, checkpoint) or a cache device's superblock, with the
// field names of the reference tool, or as JSON. Decoding is format/'s job; this file only prints.

import { writeOut } from "../output.ts";
import { openSync, readSync, closeSync } from "node:fs";
import { CACHE_SUPERBLOCK_BYTES, decodeCacheSuperblock, type CacheSuperblock } from "../../format/cache_superblock.ts";
import { decodeReadCacheDeviceSuperblock, isReadCacheDevicePage, type ReadCacheDeviceSuperblock } from "../../format/read_cache_superblock.ts";
import { decodeCheckpoint, unpackCheckpointMapEntry, CKPT_MAP_ENTRY_BYTES } from "../../format/checkpoint_object.ts";
import { decodeDataObjectHeader, verifyDataArea } from "../../format/data_object.ts";
import { decodeCommonHeader, ObjectType } from "../../format/object_header.ts";
import { decodeSuperblock } from "../../format/superblock_object.ts";
import { decodeLease, LeaseState } from "../../format/lease_object.ts";
import { CorruptionError, InvalidArgumentError } from "../../errors.ts";
import { openBackend } from "../../backend/backend_uri.ts";
import { SECTOR_BYTES } from "../../constants.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, requirePositional, type OptionSpec } from "../args.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd parse [--json] [--map-limit N] OBJECT";
const OPTIONS: OptionSpec = { json: { type: "boolean" }, "map-limit": { type: "string", default: "64" }, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Prints a backend object (a volume's superblock PREFIX, a data or checkpoint object PREFIX.%08x, its lease
PREFIX.lease) or the superblock of a cache file. OBJECT is a path or URI: /dir/obj.0000002a, rados://POOL/obj, s3://BUCKET/obj.00000001.
A truncated, corrupted or foreign object is reported with the reason (exit 1).

Options:
  --json          print JSON (every field, the whole map)
  --map-limit N   print at most N map entries in text mode (default 64; 0 = all)
${BACKEND_HELP}
`;

const TYPE_NAMES: Record<number, string> = { [ObjectType.Super]: "SUPER", [ObjectType.Data]: "DATA", [ObjectType.Checkpoint]: "CKPT" };

function isLocalPath(target: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:\/\//i.test(target) || target.startsWith("file://");
}

function localPath(target: string): string {
  return target.startsWith("file://") ? decodeURIComponent(target.slice("file://".length)) : target;
}

/** A local file's first bytes, to tell a cache device (possibly huge) from an object before reading it all. */
function readLocalPrefix(path: string, bytes: number): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    throw new InvalidArgumentError(`Cannot open ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    const buffer = new Uint8Array(bytes);
    const read = readSync(fd, buffer, 0, bytes, 0);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

const CACHE_MAGIC = [0x4c, 0x53, 0x56, 0x43]; // "LSVC"
const LEASE_MAGIC_BYTES = [0x4c, 0x53, 0x56, 0x4c]; // "LSVL": a volume's lease object, PREFIX.lease

/** A lease object (docs/format.md, "Lease object"). */
function describeLease(name: string, bytes: Uint8Array): { text: string; json: unknown } {
  const lease = decodeLease(bytes);
  const state = { [LeaseState.Held]: "held", [LeaseState.Released]: "released", [LeaseState.Broken]: "broken" }[lease.state];
  const lines = [
    `name:      ${name}`,
    `kind:      lease`,
    `state:     ${state}`,
    `epoch:     ${lease.epoch}`,
    `holder:    ${lease.command} pid ${lease.pid} (start ticks ${lease.processStartTicks}) on host ${lease.host}, boot ${lease.bootId}`,
    `addresses: ${lease.addresses.join(", ") || "(none)"}`,
    `acquired:  ${new Date(lease.acquiredAtMs).toISOString()}`,
    `renewed:   ${new Date(lease.renewedAtMs).toISOString()}`,
    `duration:  ${lease.durationMs} ms`,
    `cookie:    ${lease.cookie}`,
  ];
  return { text: lines.join("\n"), json: { name, kind: "lease", ...lease, state } };
}

export function printCacheSuperblock(name: string, superblock: CacheSuperblock, json: boolean): void {
  if (json) {
    writeOut(`${JSON.stringify({ name, kind: "cache", ...superblock }, null, 2)}\n`);
    return;
  }
  const rows: Array<[string, string | number]> = [
    ["name", name],
    ["magic", "OK"],
    ["kind", "CACHE"],
    ["cache UUID", superblock.cacheUuid],
    ["volume UUID", superblock.volUuid],
    ["size", superblock.sizeBytes],
    ["journal", `${superblock.journalStartBytes}+${superblock.journalBytes}`],
    ["read cache", `${superblock.readCacheStartBytes}+${superblock.readCacheBytes}`],
    ["start seq", superblock.startSeq],
    ["replay offset", superblock.replayOffsetBytes],
    ["replay seq", superblock.replaySeq],
    ["generation", superblock.generation],
  ];
  for (const [key, value] of rows) writeOut(`${`${key}:`.padEnd(16)}${value}\n`);
}

/** A shared read-cache device's page 0 (`lsvd mkcache --read-cache-only`). */
export function printReadCacheDeviceSuperblock(name: string, superblock: ReadCacheDeviceSuperblock, json: boolean): void {
  if (json) {
    writeOut(`${JSON.stringify({ name, kind: "read-cache", ...superblock }, null, 2)}\n`);
    return;
  }
  const rows: Array<[string, string | number]> = [
    ["name", name],
    ["magic", "OK"],
    ["kind", "READ-CACHE (shared)"],
    ["cache UUID", superblock.cacheUuid],
    ["size", superblock.sizeBytes],
    ["read cache", `${superblock.readCacheStartBytes}+${superblock.readCacheBytes}`],
  ];
  for (const [key, value] of rows) writeOut(`${`${key}:`.padEnd(16)}${value}\n`);
}

type Described = { text: string; json: unknown };
type CommonJson = { volUuid: string; seq: number; hdrSectors: number; dataSectors: number };

/** Cuts long lists to `mapLimit` items (0 means all) and says how many were left out. */
class ListLimit {
  constructor(private readonly mapLimit: number) {}
  limited<T>(items: T[]): T[] {
    return this.mapLimit > 0 ? items.slice(0, this.mapLimit) : items;
  }
  more(total: number): string[] {
    return this.mapLimit > 0 && total > this.mapLimit ? [`  ... ${total - this.mapLimit} more`] : [];
  }
}

export function describeObject(name: string, bytes: Uint8Array, mapLimit: number): Described {
  if (bytes.byteLength >= 4 && LEASE_MAGIC_BYTES.every((byte, index) => bytes[index] === byte)) return describeLease(name, bytes);
  const common = decodeCommonHeader(bytes);
  // Every kind's JSON carries the common header fields the text mode prints (seq, n_hdr, n_data).
  const commonJson = { volUuid: common.volUuid, seq: common.seq, hdrSectors: common.hdrSectors, dataSectors: common.dataSectors };
  const lines: string[] = [
    `name:      ${name}`,
    `magic:     OK`,
    `UUID:      ${common.volUuid}`,
    `version:   1`,
    `type:      ${TYPE_NAMES[common.type] ?? common.type}`,
    `seq:       ${common.seq}`,
    `n_hdr:     ${common.hdrSectors}`,
    `n_data:    ${common.dataSectors}`,
  ];
  const limit = new ListLimit(mapLimit);
  if (common.type === ObjectType.Super) return describeSuperObject(name, bytes, lines, commonJson);
  if (common.type === ObjectType.Data) return describeDataObject(name, bytes, common.hdrSectors, lines, limit);
  return describeCheckpointObject(name, bytes, lines, commonJson, limit);
}

function describeSuperObject(name: string, bytes: Uint8Array, lines: string[], commonJson: CommonJson): Described {
  const superblock = decodeSuperblock(bytes);
  lines.push(
    `vol_size:       ${superblock.volSectors}`,
    `ckpts:          [${superblock.checkpoints.join(", ")}]`,
    `clones:         ${superblock.clone ? JSON.stringify(superblock.clone) : "[]"}`,
    `snaps:          ${JSON.stringify(superblock.snapshots)}`,
    `next_seq:       ${superblock.nextSeq}`,
    `owner_epoch:    ${superblock.ownerEpoch}`,
    `skipped:        [${superblock.skipped.map((range) => `${range.first}..${range.last}`).join(", ")}]`,
    `snapx:          ${JSON.stringify(superblock.snapshotTimes)}`,
    `clone_refs:     ${JSON.stringify(superblock.cloneRefs)}`,
    `rollback_seq:   ${superblock.rollbackSeq}`,
  );
  return { text: lines.join("\n"), json: { name, type: "SUPER", ...commonJson, ...superblock } };
}

function describeDataObject(name: string, bytes: Uint8Array, hdrSectors: number, lines: string[], limit: ListLimit): Described {
  const header = decodeDataObjectHeader(bytes.subarray(0, hdrSectors * SECTOR_BYTES));
  const dataArea = bytes.subarray(header.hdrSectors * SECTOR_BYTES, (header.hdrSectors + header.dataSectors) * SECTOR_BYTES);
  if (dataArea.byteLength !== header.dataSectors * SECTOR_BYTES) throw new CorruptionError(`${name} is truncated: its data area is ${dataArea.byteLength} of ${header.dataSectors * SECTOR_BYTES} bytes`);
  verifyDataArea(header, dataArea);
  lines.push(
    `cache_seq:      ${header.cacheSeq}`,
    `cache_seq_last: ${header.cacheSeqLast}`,
    `cache_uuid:     ${header.cacheUuid}`,
    `write_continues: ${header.writeContinues ? "yes (a client write goes on in the next object)" : "no"}`,
    `data_crc32c:    ${header.dataCrc32c.toString(16).padStart(8, "0")} (OK)`,
    `objs_cleaned:   ${JSON.stringify(header.objsCleaned)}`,
    `data_map:       ${header.extents.length} extents (lba len, sectors)`,
    ...limit.limited(header.extents).map((extent) => `  ${extent.lba} ${extent.sectors}`),
    ...limit.more(header.extents.length),
    `trims:          ${header.trims.length}`,
    ...limit.limited(header.trims).map((trim) => `  ${trim.lba} ${trim.sectors} (before extent ${trim.beforeIndex})`),
    ...limit.more(header.trims.length),
  );
  return { text: lines.join("\n"), json: { name, type: "DATA", ...header } };
}

function describeCheckpointObject(name: string, bytes: Uint8Array, lines: string[], commonJson: CommonJson, limit: ListLimit): Described {
  const checkpoint = decodeCheckpoint(bytes);
  const view = new DataView(checkpoint.mapEntries.buffer, checkpoint.mapEntries.byteOffset, checkpoint.mapEntries.byteLength);
  const count = checkpoint.mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES;
  const entries = Array.from({ length: count }, (_, index) => unpackCheckpointMapEntry(view, index));
  lines.push(
    `cache_seq:      ${checkpoint.cacheSeq}`,
    `cache_seq_last: ${checkpoint.cacheSeqLast}`,
    `ckpts:          [${checkpoint.checkpoints.join(", ")}]`,
    `objects:        ${checkpoint.objects.length} (seq hdr data live)`,
    ...limit.limited(checkpoint.objects).map((o) => `  ${o.seq} ${o.hdrSectors} ${o.dataSectors} ${o.liveSectors}`),
    ...limit.more(checkpoint.objects.length),
    `deletes:        ${JSON.stringify(checkpoint.deferredDeletes)}`,
    `map:            ${count} entries (lba len obj offset)`,
    ...limit.limited(entries).map((e) => `  ${e.lba} ${e.sectors} ${e.obj} ${e.offsetSectors}`),
    ...limit.more(count),
  );
  const { mapEntries: _omit, ...rest } = checkpoint;
  return { text: lines.join("\n"), json: { name, type: "CKPT", ...commonJson, ...rest, map: entries } };
}

export const parseCommand: Command = {
  name: "parse",
  summary: "print a backend object or a cache superblock",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const [target] = requirePositional(parsed, 1, USAGE);
    const json = parsed.values.json === true;
    const mapLimit = Number(parsed.values["map-limit"]);
    if (!Number.isInteger(mapLimit) || mapLimit < 0) throw new InvalidArgumentError(`Invalid --map-limit '${parsed.values["map-limit"]}'`);
    let bytes: Uint8Array;
    if (isLocalPath(target!)) {
      const path = localPath(target!);
      const first = readLocalPrefix(path, CACHE_SUPERBLOCK_BYTES);
      if (isReadCacheDevicePage(first)) {
        try {
          printReadCacheDeviceSuperblock(path, decodeReadCacheDeviceSuperblock(first), json);
        } catch (error) {
          if (error instanceof CorruptionError) throw new CorruptionError(`Cannot parse ${path}: ${error.message}`);
          throw error;
        }
        return 0;
      }
      if (first.byteLength >= 4 && CACHE_MAGIC.every((byte, index) => first[index] === byte)) {
        try {
          printCacheSuperblock(path, decodeCacheSuperblock(first), json);
        } catch (error) {
          if (error instanceof CorruptionError) throw new CorruptionError(`Cannot parse ${path}: ${error.message}`);
          throw error;
        }
        return 0;
      }
      bytes = new Uint8Array(await Bun.file(path).arrayBuffer());
    } else {
      const { store, prefix } = await openBackend(target!, backendOptionsFrom(parsed));
      try {
        bytes = await store.get(prefix);
      } finally {
        await store.close();
      }
    }
    try {
      const described = describeObject(target!, bytes, mapLimit);
      writeOut(json ? `${JSON.stringify(described.json, null, 2)}\n` : `${described.text}\n`);
    } catch (error) {
      if (error instanceof CorruptionError) throw new CorruptionError(`Cannot parse ${target}: ${error.message}`);
      throw error;
    }
    return 0;
  },
};
