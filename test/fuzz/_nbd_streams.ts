// Client byte streams for the NBD stream fuzzer (folder-private): valid ones (a fixed-newstyle negotiation, then
// requests, then usually DISC), built with src/nbd/wire.ts's encoders and seeded; the places of their fields, so
// mutations can aim at them; and NBD-aware mutations (big-endian fields of a request or option header).

import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_META_CONTEXT_BASE_ALLOCATION,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  readU16,
  readU32,
  writeU16,
  writeU32,
} from "../../src/nbd/wire.ts";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Prng } from "../sim/prng.ts";
import { DEVICE_BYTES, EXPORT } from "./_nbd_harness.ts";
import { mutate } from "./_mutate.ts";

export interface ValidRequest {
  type: number;
  cookieLow: number;
  length: number;
  /** Where its 28-byte header starts in the stream. */
  at: number;
}

export interface ValidStream {
  bytes: Uint8Array;
  /** Where each option header starts, and where transmission starts. */
  optionsAt: number[];
  transmissionAt: number;
  requests: ValidRequest[];
  structured: boolean;
  disc: boolean;
}

export const COOKIE_HIGH = 0x5eed;
/** Request sizes: "tiny" streams are fed in chunks down to one byte, so they stay a few KiB long. */
const SIZES = { tiny: [512, 1024, 4096], normal: [512, 4096, 4096, 8192, 65536, 131072] };
/** Stream shapes: a few small requests, many small ones, or few large ones (up to the whole device). */
export type StreamShape = "tiny" | "normal" | "bulk";
const U32_VALUES = [0, 1, 511, 512, 4096, 0x0200_0000, 0x0200_0001, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  writeU32(bytes, 0, value);
  return bytes;
}

function negotiation(prng: Prng, parts: Uint8Array[], optionsAt: number[], at: () => number): { structured: boolean; meta: boolean } {
  parts.push(u32(NBD_FLAG_C_FIXED_NEWSTYLE | (prng.chance(0.8) ? NBD_FLAG_C_NO_ZEROES : 0)));
  const option = (bytes: Uint8Array): void => {
    optionsAt.push(at());
    parts.push(bytes);
  };
  let structured = false;
  let meta = false;
  const name = prng.chance(0.5) ? EXPORT.name : "";
  if (prng.chance(0.3)) option(encodeOption(NBD_OPT_LIST));
  if (prng.chance(0.3)) option(encodeOption(NBD_OPT_INFO, encodeInfoRequest({ exportName: name, infoTypes: [NBD_INFO_NAME, NBD_INFO_DESCRIPTION] })));
  if (prng.chance(0.7)) {
    option(encodeOption(NBD_OPT_STRUCTURED_REPLY));
    structured = true;
    if (prng.chance(0.3)) option(encodeOption(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: name, queries: [] })));
    if (prng.chance(0.7)) {
      option(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: name, queries: [NBD_META_CONTEXT_BASE_ALLOCATION] })));
      meta = true;
    }
  }
  if (prng.chance(0.8)) option(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: name, infoTypes: [NBD_INFO_BLOCK_SIZE] })));
  else option(encodeOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode(name)));
  return { structured, meta };
}

/** One valid request (type, flags, range) for what was negotiated; payload for a WRITE. */
function request(prng: Prng, structured: boolean, meta: boolean, readOnly: boolean, shape: StreamShape): { type: number; flags: number; offset: number; length: number } {
  const types = [NBD_CMD_READ, NBD_CMD_READ, NBD_CMD_FLUSH, NBD_CMD_CACHE];
  if (!readOnly) types.push(NBD_CMD_WRITE, NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES);
  if (meta) types.push(NBD_CMD_BLOCK_STATUS);
  // Bulk: READs on a read-only export (replies pile up), WRITEs otherwise (payloads pile up).
  if (shape === "bulk") types.splice(0, types.length, readOnly ? NBD_CMD_READ : NBD_CMD_WRITE);
  const type = types[prng.int(types.length)]!;
  if (type === NBD_CMD_FLUSH) return { type, flags: prng.chance(0.2) ? NBD_CMD_FLAG_FUA : 0, offset: 0, length: 0 };
  const sizes = shape === "tiny" ? SIZES.tiny : SIZES.normal;
  // The export's minimum block size is 1: a third of the requests have an unaligned length, a third an unaligned
  // offset (sub-sector ones among them).
  const unalignedLength = prng.chance(0.33);
  const bulkLength = prng.chance(0.5) ? DEVICE_BYTES : 512 * (1 + prng.int(DEVICE_BYTES / 512));
  let length = shape === "bulk" ? bulkLength : sizes[prng.int(sizes.length)]!;
  if (unalignedLength) length = prng.chance(0.5) ? 1 + prng.int(511) : Math.max(1, length - 1 - prng.int(511));
  const offset = prng.chance(0.33) ? prng.int(DEVICE_BYTES - length + 1) : 512 * prng.int(Math.floor((DEVICE_BYTES - length) / 512) + 1);
  let flags = prng.chance(0.2) ? NBD_CMD_FLAG_FUA : 0;
  if (type === NBD_CMD_READ && structured && prng.chance(0.3)) flags |= NBD_CMD_FLAG_DF;
  if (type === NBD_CMD_WRITE_ZEROES && prng.chance(0.3)) flags |= NBD_CMD_FLAG_NO_HOLE;
  if (type === NBD_CMD_WRITE_ZEROES && prng.chance(0.2)) flags |= NBD_CMD_FLAG_FAST_ZERO;
  if (type === NBD_CMD_BLOCK_STATUS && prng.chance(0.3)) flags |= NBD_CMD_FLAG_REQ_ONE;
  return { type, flags, offset, length };
}

/**
 * A valid client stream of `shape`; "bulk" (large READs on a read-only export, else large WRITEs) reaches the byte limits on replies and
 * WRITE payloads.
 */
export function validStream(prng: Prng, readOnly: boolean, shape: StreamShape): ValidStream {
  const parts: Uint8Array[] = [];
  let length = 0;
  const push = (bytes: Uint8Array): void => {
    parts.push(bytes);
    length += bytes.length;
  };
  const optionsAt: number[] = [];
  const optionParts: Uint8Array[] = [];
  const { structured, meta } = negotiation(prng, optionParts, optionsAt, () => optionParts.reduce((sum, part) => sum + part.length, 0));
  for (const part of optionParts) push(part);
  const transmissionAt = length;
  const requests: ValidRequest[] = [];
  // Sometimes more requests than a connection may have in flight (NBD_INFLIGHT_PER_CONNECTION_MAX = 128).
  const normalCount = prng.chance(0.25) ? 129 + prng.int(200) : 1 + prng.int(60);
  const count = shape === "bulk" ? 24 + prng.int(24) : shape === "tiny" ? 1 + prng.int(8) : normalCount;
  for (let index = 0; index < count; index++) {
    const { type, flags, offset, length: bytes } = request(prng, structured, meta, readOnly, shape);
    const cookieLow = index + 1;
    requests.push({ type, cookieLow, length: bytes, at: length });
    push(encodeRequestHeader({ flags, type, cookieHigh: COOKIE_HIGH, cookieLow, offset, length: bytes }));
    if (type === NBD_CMD_WRITE) {
      const payload = new Uint8Array(bytes);
      if (shape !== "bulk") prng.fill(payload);
      push(payload);
    }
  }
  const disc = prng.chance(0.8);
  if (disc) push(encodeRequestHeader({ flags: 0, type: NBD_CMD_DISC, cookieHigh: COOKIE_HIGH, cookieLow: 0, offset: 0, length: 0 }));
  return { bytes: new Uint8Array(Buffer.concat(parts)), optionsAt, transmissionAt, requests, structured, disc };
}

/** Damage aimed at one NBD header field (big-endian, as on the wire). Returns a description. */
export function mutateField(stream: ValidStream, bytes: Uint8Array, prng: Prng): string {
  const value = prng.chance(0.6) ? U32_VALUES[prng.int(U32_VALUES.length)]! : prng.nextU32();
  if (stream.requests.length > 0 && prng.chance(0.75)) {
    const target = stream.requests[prng.int(stream.requests.length)]!;
    const fields = [
      ["magic", 0, 4],
      ["flags", 4, 2],
      ["type", 6, 2],
      ["offset high", 16, 4],
      ["offset low", 20, 4],
      ["length", 24, 4],
    ] as const;
    const [name, offset, size] = fields[prng.int(fields.length)]!;
    if (size === 2) writeU16(bytes, target.at + offset, value & 0xffff);
    else writeU32(bytes, target.at + offset, value);
    return `request ${target.cookieLow} (at ${target.at}) ${name} set to 0x${(size === 2 ? value & 0xffff : value).toString(16)}`;
  }
  if (stream.optionsAt.length === 0 || prng.chance(0.1)) {
    writeU32(bytes, 0, value);
    return `client flags set to 0x${value.toString(16)}`;
  }
  const target = stream.optionsAt[prng.int(stream.optionsAt.length)]!;
  const fields = [
    ["magic", 0],
    ["option", 8],
    ["length", 12],
    ["name length", 16],
  ] as const;
  const [name, offset] = fields[prng.int(fields.length)]!;
  if (target + offset + 4 > bytes.length) return "nothing (field past the end)";
  writeU32(bytes, target + offset, value);
  return `option at ${target} ${name} set to 0x${value.toString(16)}`;
}

/**
 * `count` damages to `bytes` (a copy of `stream`'s bytes, or of a recorded stream's): a field (mutateField), a cut,
 * or bytes flipped and spliced (_mutate.ts). Returns the damaged bytes and what was done, for failure messages.
 */
export function damageStream(stream: ValidStream, bytes: Uint8Array, prng: Prng, count: number): { bytes: Uint8Array; damage: string[] } {
  const damage: string[] = [];
  for (; count > 0; count--) {
    if (prng.chance(0.5)) {
      damage.push(mutateField(stream, bytes, prng));
    } else if (prng.chance(0.3)) {
      const at = prng.int(bytes.length + 1);
      bytes = bytes.slice(0, at);
      damage.push(`truncated to ${at}`);
    } else {
      const mutation = mutate(bytes, prng, bytes.length, null);
      bytes = mutation.bytes;
      damage.push(mutation.description);
    }
  }
  return { bytes, damage };
}

/**
 * The options and requests of a client stream (a recorded one: test/fuzz/nbd_streams/, from record_nbd_streams.ts),
 * for aimed mutations. Walks option headers to GO/EXPORT_NAME (or ABORT), then request headers and WRITE payloads.
 */
export function parseClientStream(bytes: Uint8Array): ValidStream {
  const optionsAt: number[] = [];
  const requests: ValidRequest[] = [];
  let offset = 4;
  let transmissionAt = bytes.length;
  let structured = false;
  while (offset + 16 <= bytes.length) {
    optionsAt.push(offset);
    const option = readU32(bytes, offset + 8);
    offset += 16 + readU32(bytes, offset + 12);
    if (option === NBD_OPT_STRUCTURED_REPLY) structured = true;
    if (option === NBD_OPT_GO || option === NBD_OPT_EXPORT_NAME) {
      transmissionAt = offset;
      break;
    }
    if (option === NBD_OPT_ABORT) break;
  }
  let disc = false;
  for (offset = transmissionAt; offset + 28 <= bytes.length; ) {
    const type = readU16(bytes, offset + 6);
    const length = readU32(bytes, offset + 24);
    if (type === NBD_CMD_DISC) {
      disc = true;
      break;
    }
    requests.push({ type, cookieLow: readU32(bytes, offset + 12), length, at: offset });
    offset += 28 + (type === NBD_CMD_WRITE ? length : 0);
  }
  return { bytes, optionsAt, transmissionAt, requests, structured, disc };
}

/** The recorded client streams, by name. */
export function recordedStreams(): Array<{ name: string; stream: ValidStream }> {
  const directory = join(import.meta.dir, "nbd_streams");
  return readdirSync(directory)
    .filter((name) => name.endsWith(".bin"))
    .sort()
    .map((name) => ({ name, stream: parseClientStream(new Uint8Array(readFileSync(join(directory, name)))) }));
}
