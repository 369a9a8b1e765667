// The lease object (`<prefix>.lease`): who owns a volume, since when, and until when its ownership holds unless
// renewed. Spec: docs/format.md, "Lease object"; the rules that use it: docs/architecture.md, "Ownership and
// fencing". Pure codec: the record is rewritten whole with a conditional put (compare-and-swap) by its holder.
//
// Layout: a 96-byte fixed part, then three length-prefixed strings (host, command) and the holder's listen
// addresses, and nothing after them (record_bytes is exact). One CRC-32C covers the whole record, so a torn or
// foreign object is refused as a whole; a lease is small (at most LEASE_RECORD_BYTES_MAX) and read whole.
//
// Invariants (checked by decode, asserted by encode, so a bad lease is never written):
// - epoch >= 1; renewed_at_ms >= acquired_at_ms; 1 <= duration_ms <= LEASE_DURATION_MS_MAX;
// - host 1..255 UTF-8 bytes, command 1..LEASE_COMMAND_BYTES_MAX, at most LEASE_ADDRESSES_MAX addresses of 1..255;
// - cookie is a UUID (random per acquisition), boot_id a UUID or nil (unknown).

import { assert } from "../errors.ts";
import {
  SHORT_NAME_BYTES_MAX,
  corrupt,
  checkCrc32c,
  checkMagicAndVersion,
  crc32cWithZeroedFields,
  decodeUtf8,
  encodeUtf8,
  getU64,
  getUuid,
  isSafeU64,
  isU32,
  isUuid,
  layout,
  setU64,
  setUuid,
  viewOf,
} from "./_codec.ts";

/** "LSVL" as bytes 4c 53 56 4c, read as a little-endian u32. */
export const LEASE_MAGIC = 0x4c56534c;
export const LEASE_VERSION = 1;
/** A lease is never longer than this (a larger object is not a lease we wrote). */
export const LEASE_RECORD_BYTES_MAX = 4096;
/** Longest lease duration a record may carry: a day (decoders reject more; `--lease-seconds` stays far below). */
export const LEASE_DURATION_MS_MAX = 24 * 3600 * 1000;
export const LEASE_ADDRESSES_MAX = 8;
export const LEASE_COMMAND_BYTES_MAX = 64;

export enum LeaseState {
  /** Owned: the holder renews it; nobody else may change the volume until it expires. */
  Held = 1,
  /** Given back by a clean exit: everything its holder wrote had landed; free to take, no stale writer. */
  Released = 2,
  /** Broken by `lsvd lock break`: free to take once the old holder has certainly stopped writing. */
  Broken = 3,
}

export interface LeaseRecord {
  state: LeaseState;
  /** +1 per ownership; the superblock records the epoch of the owner that last wrote it. */
  epoch: number;
  durationMs: number;
  /** Wall clock (ms since 1970) when this ownership began, on the holder's clock. */
  acquiredAtMs: number;
  /** Wall clock when the holder sent its latest renewal; the lease expires at renewedAtMs + durationMs. */
  renewedAtMs: number;
  /** Random per acquisition: tells a holder its own record from a successor's. */
  cookie: string;
  /** The holder host's boot id (/proc/sys/kernel/random/boot_id), nil when unknown: another boot = a dead holder. */
  bootId: string;
  /** The holder's pid and its start time (field 22 of /proc/PID/stat, clock ticks after boot; 0 = unknown). */
  pid: number;
  processStartTicks: number;
  host: string;
  /** What holds it: "serve", "gc", "mkdisk", "fsck --repair", "lock break". */
  command: string;
  /** Where the holder serves the volume (NBD URIs), if it does. */
  addresses: string[];
}

const LEASE = layout([
  ["magic", 4], // LEASE_MAGIC
  ["version", 4], // LEASE_VERSION
  ["crc32c", 4], // CRC-32C of the record_bytes bytes with this field 0
  ["recordBytes", 4], // the whole record: fixed part and strings; the object is exactly this long
  ["state", 4], // LeaseState
  ["durationMs", 4], // 1 .. LEASE_DURATION_MS_MAX
  ["epoch", 8], // u64 >= 1
  ["acquiredAtMs", 8], // u64 wall clock ms
  ["renewedAtMs", 8], // u64 wall clock ms, >= acquired_at_ms
  ["cookie", 16], // UUID
  ["bootId", 16], // UUID or nil
  ["processStartTicks", 8], // u64
  ["pid", 4], // u32
  ["reserved", 4], // 0
]);
export const LEASE_FIXED_BYTES = 96;
assert(LEASE.BYTES === LEASE_FIXED_BYTES, "the lease's fixed part is 96 bytes");
// The largest record (every string at its longest) fits the bound decoders apply.
assert(LEASE_FIXED_BYTES + 2 * (1 + SHORT_NAME_BYTES_MAX) + 1 + LEASE_ADDRESSES_MAX * (1 + SHORT_NAME_BYTES_MAX) <= LEASE_RECORD_BYTES_MAX, "a lease fits its bound");

function checkLease(lease: LeaseRecord): void {
  assert(lease.state === LeaseState.Held || lease.state === LeaseState.Released || lease.state === LeaseState.Broken, "lease state");
  assert(isSafeU64(lease.epoch) && lease.epoch >= 1, "lease epoch >= 1");
  assert(Number.isInteger(lease.durationMs) && lease.durationMs >= 1 && lease.durationMs <= LEASE_DURATION_MS_MAX, "lease duration");
  assert(isSafeU64(lease.acquiredAtMs) && isSafeU64(lease.renewedAtMs) && lease.renewedAtMs >= lease.acquiredAtMs, "lease times");
  assert(isUuid(lease.cookie) && isUuid(lease.bootId), "lease cookie and boot id are UUIDs");
  assert(isU32(lease.pid) && isSafeU64(lease.processStartTicks), "lease pid and start ticks");
  assert(lease.addresses.length <= LEASE_ADDRESSES_MAX, "lease addresses");
}

/** The bytes of a lease string: the encoder asserts the bounds the decoder checks. */
function stringBytes(text: string, bytesMax: number, what: string): Uint8Array {
  const bytes = encodeUtf8(text);
  assert(bytes.byteLength >= 1 && bytes.byteLength <= bytesMax, `lease ${what} is 1..${bytesMax} UTF-8 bytes`);
  return bytes;
}

export function encodeLease(lease: LeaseRecord): Uint8Array {
  checkLease(lease);
  const strings = [
    stringBytes(lease.host, SHORT_NAME_BYTES_MAX, "host"),
    stringBytes(lease.command, LEASE_COMMAND_BYTES_MAX, "command"),
  ];
  const addresses = lease.addresses.map((address) => stringBytes(address, SHORT_NAME_BYTES_MAX, "address"));
  const recordBytes = LEASE_FIXED_BYTES + strings.reduce((sum, s) => sum + 1 + s.byteLength, 0) + 1 + addresses.reduce((sum, s) => sum + 1 + s.byteLength, 0);
  const bytes = new Uint8Array(recordBytes);
  const view = viewOf(bytes);
  view.setUint32(LEASE.magic, LEASE_MAGIC, true);
  view.setUint32(LEASE.version, LEASE_VERSION, true);
  view.setUint32(LEASE.recordBytes, recordBytes, true);
  view.setUint32(LEASE.state, lease.state, true);
  view.setUint32(LEASE.durationMs, lease.durationMs, true);
  setU64(view, LEASE.epoch, lease.epoch);
  setU64(view, LEASE.acquiredAtMs, lease.acquiredAtMs);
  setU64(view, LEASE.renewedAtMs, lease.renewedAtMs);
  setUuid(bytes, LEASE.cookie, lease.cookie);
  setUuid(bytes, LEASE.bootId, lease.bootId);
  setU64(view, LEASE.processStartTicks, lease.processStartTicks);
  view.setUint32(LEASE.pid, lease.pid, true);
  let position = LEASE_FIXED_BYTES;
  const put = (s: Uint8Array) => {
    bytes[position] = s.byteLength;
    bytes.set(s, position + 1);
    position += 1 + s.byteLength;
  };
  strings.forEach(put);
  bytes[position++] = addresses.length;
  addresses.forEach(put);
  assert(position === recordBytes, "the lease's strings fill record_bytes");
  view.setUint32(LEASE.crc32c, crc32cWithZeroedFields(bytes, [LEASE.crc32c]), true);
  return bytes;
}

/** Reads one length-prefixed string at `position`; returns it and the position after it. */
function readString(bytes: Uint8Array, position: number, bytesMax: number, field: string): [string, number] {
  const context = "lease";
  if (position >= bytes.byteLength) throw corrupt(context, `${field} runs past the record`);
  const length = bytes[position]!;
  if (length === 0 || length > bytesMax) throw corrupt(context, `${field} length ${length} not in 1..${bytesMax}`);
  if (position + 1 + length > bytes.byteLength) throw corrupt(context, `${field} runs past the record`);
  return [decodeUtf8(bytes.subarray(position + 1, position + 1 + length), context, field), position + 1 + length];
}

export function decodeLease(bytes: Uint8Array): LeaseRecord {
  const context = "lease";
  if (bytes.byteLength < LEASE_FIXED_BYTES) throw corrupt(context, `length ${bytes.byteLength}, shorter than ${LEASE_FIXED_BYTES}`);
  if (bytes.byteLength > LEASE_RECORD_BYTES_MAX) throw corrupt(context, `length ${bytes.byteLength}, longer than ${LEASE_RECORD_BYTES_MAX}`);
  const view = viewOf(bytes);
  checkMagicAndVersion(view, context, { magicAt: LEASE.magic, magic: LEASE_MAGIC, versionAt: LEASE.version, version: LEASE_VERSION });
  const recordBytes = view.getUint32(LEASE.recordBytes, true);
  if (recordBytes !== bytes.byteLength) throw corrupt(context, `record_bytes ${recordBytes}, but the object is ${bytes.byteLength} bytes`);
  checkCrc32c(bytes, LEASE.crc32c, context);
  const state = view.getUint32(LEASE.state, true);
  if (state !== LeaseState.Held && state !== LeaseState.Released && state !== LeaseState.Broken) throw corrupt(context, `unknown state ${state}`);
  const durationMs = view.getUint32(LEASE.durationMs, true);
  if (durationMs === 0 || durationMs > LEASE_DURATION_MS_MAX) throw corrupt(context, `duration ${durationMs} ms out of range`);
  const epoch = getU64(view, LEASE.epoch, context, "epoch");
  if (epoch === 0) throw corrupt(context, "epoch 0");
  const acquiredAtMs = getU64(view, LEASE.acquiredAtMs, context, "acquired_at_ms");
  const renewedAtMs = getU64(view, LEASE.renewedAtMs, context, "renewed_at_ms");
  if (renewedAtMs < acquiredAtMs) throw corrupt(context, "renewed before it was acquired");
  if (view.getUint32(LEASE.reserved, true) !== 0) throw corrupt(context, "reserved field is not zero");
  const cookie = getUuid(bytes, LEASE.cookie, context, "cookie");
  const bootId = getUuid(bytes, LEASE.bootId, context, "boot_id");
  let position = LEASE_FIXED_BYTES;
  let host: string;
  let command: string;
  [host, position] = readString(bytes, position, SHORT_NAME_BYTES_MAX, "host");
  [command, position] = readString(bytes, position, LEASE_COMMAND_BYTES_MAX, "command");
  if (position >= bytes.byteLength) throw corrupt(context, "address count runs past the record");
  const count = bytes[position++]!;
  if (count > LEASE_ADDRESSES_MAX) throw corrupt(context, `${count} addresses, more than ${LEASE_ADDRESSES_MAX}`);
  const addresses: string[] = [];
  for (let index = 0; index < count; index++) {
    let address: string;
    [address, position] = readString(bytes, position, SHORT_NAME_BYTES_MAX, `address ${index}`);
    addresses.push(address);
  }
  if (position !== recordBytes) throw corrupt(context, `${recordBytes - position} bytes after the last address`);
  const lease: LeaseRecord = {
    state,
    epoch,
    durationMs,
    acquiredAtMs,
    renewedAtMs,
    cookie,
    bootId,
    pid: view.getUint32(LEASE.pid, true),
    processStartTicks: getU64(view, LEASE.processStartTicks, context, "process_start_ticks"),
    host,
    command,
    addresses,
  };
  checkLease(lease); // pair assertion: whatever decodes would encode again
  return lease;
}

