// NBD wire format: magics, flag and type values, and pure encoders/decoders for the handshake options,
// transmission requests, and simple and structured replies. Shared by handshake.ts, session.ts and the tests.
// Spec: NetworkBlockDevice/nbd doc/proto.md (fixed newstyle; INFO, STRUCTURED_REPLY, BLOCK_STATUS, WRITE_ZEROES,
// FAST_ZERO extensions). Extended headers are not spoken. Every integer on the wire is big-endian.
// No I/O here (cf. nbdkit common/protocol/nbd-protocol.h).

import { CorruptionError, assert } from "../errors.ts";

// ---- Handshake ----------------------------------------------------------------------------------------------

/** 'NBDMAGIC', first 8 bytes the server sends. */
export const NBD_MAGIC_INIT = 0x4e42444d41474943n;
/** 'IHAVEOPT': the newstyle magic, and the prefix of every client option. */
export const NBD_MAGIC_OPTS = 0x49484156454f5054n;
/** Prefix of every fixed-newstyle option reply. */
export const NBD_MAGIC_OPTION_REPLY = 0x3e889045565a9n;

/** Server handshake flags (16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits); any other bit set closes the connection (spec: "the server MUST drop"). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const NBD_CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/** Server greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export const NBD_GREETING_BYTES = 18;
export const NBD_CLIENT_FLAGS_BYTES = 4;
/** Option header: IHAVEOPT (8), option (4), length (4). */
export const NBD_OPTION_HEADER_BYTES = 16;
/** Option reply header: magic (8), option (4), reply type (4), length (4). */
export const NBD_OPTION_REPLY_HEADER_BYTES = 20;
/** NBD_OPT_EXPORT_NAME reply: size (8), transmission flags (2), then 124 zeroes unless NO_ZEROES. */
export const NBD_EXPORT_NAME_REPLY_BYTES = 10;
export const NBD_EXPORT_NAME_ZEROES_BYTES = 124;
/** Spec: a string MUST be no longer than 4096 bytes (export names, queries, messages). */
export const NBD_STRING_BYTES_MAX = 4096;

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 2 ** 31;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** The one metadata context served; its id in NBD_REP_META_CONTEXT and BLOCK_STATUS chunks. */
export const NBD_META_CONTEXT_BASE_ALLOCATION = "base:allocation";
export const NBD_META_CONTEXT_BASE_ALLOCATION_ID = 1;
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---- Transmission -------------------------------------------------------------------------------------------

/** Transmission flags (16 bits), sent in the EXPORT_NAME reply or NBD_INFO_EXPORT. */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Request: magic (4), flags (2), type (2), cookie (8), offset (8), length (4). */
export const NBD_REQUEST_BYTES = 28;
/** Simple reply: magic (4), error (4), cookie (8). */
export const NBD_SIMPLE_REPLY_BYTES = 16;
/** Structured reply chunk header: magic (4), flags (2), type (2), cookie (8), payload length (4). */
export const NBD_STRUCTURED_REPLY_HEADER_BYTES = 20;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAGS_KNOWN =
  NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO;

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 2 ** 15 + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 2 ** 15 + 2;

/** Error values allowed on the wire (spec "Error values"; ENOTSUP is the FAST_ZERO refusal). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

const COMMAND_NAMES = new Map<number, string>([
  [NBD_CMD_READ, "READ"],
  [NBD_CMD_WRITE, "WRITE"],
  [NBD_CMD_DISC, "DISC"],
  [NBD_CMD_FLUSH, "FLUSH"],
  [NBD_CMD_TRIM, "TRIM"],
  [NBD_CMD_CACHE, "CACHE"],
  [NBD_CMD_WRITE_ZEROES, "WRITE_ZEROES"],
  [NBD_CMD_BLOCK_STATUS, "BLOCK_STATUS"],
]);
const ERRNO_NAMES = new Map<number, string>([
  [NBD_EPERM, "EPERM"],
  [NBD_EIO, "EIO"],
  [NBD_ENOMEM, "ENOMEM"],
  [NBD_EINVAL, "EINVAL"],
  [NBD_ENOSPC, "ENOSPC"],
  [NBD_EOVERFLOW, "EOVERFLOW"],
  [NBD_ENOTSUP, "ENOTSUP"],
  [NBD_ESHUTDOWN, "ESHUTDOWN"],
]);

/** "WRITE", or "command 9" for a number the spec does not define (for logs). */
export function commandName(type: number): string {
  return COMMAND_NAMES.get(type) ?? `command ${type}`;
}

/** "EPERM", or "errno 7" for a value the spec does not define (for logs). */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** A structured error chunk carries a u16 message length; we keep messages short and ASCII. */
export const NBD_ERROR_MESSAGE_BYTES_MAX = 256;

// ---- Primitive access (hot path: no DataView allocation per request) ---------------------------------------

export function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

export function readU32(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0;
}

/**
 * A u64 as a JS number. Values past 2^53 lose precision, which is harmless where this is used: every such value
 * is far beyond any export size (VOLUME_BYTES_MAX is 2^45) and is rejected by the range check anyway.
 */
export function readU64(bytes: Uint8Array, offset: number): number {
  return readU32(bytes, offset) * 0x1_0000_0000 + readU32(bytes, offset + 4);
}

export function writeU16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value >>> 8;
  bytes[offset + 1] = value;
}

export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value >>> 24;
  bytes[offset + 1] = value >>> 16;
  bytes[offset + 2] = value >>> 8;
  bytes[offset + 3] = value;
}

/** Exact for safe integers only; callers pass sizes and offsets, which are. */
export function writeU64(bytes: Uint8Array, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `u64 out of range: ${value}`);
  writeU32(bytes, offset, Math.floor(value / 0x1_0000_0000));
  writeU32(bytes, offset + 4, value >>> 0);
}

function writeBigU64(bytes: Uint8Array, offset: number, value: bigint): void {
  writeU32(bytes, offset, Number(value >> 32n));
  writeU32(bytes, offset + 4, Number(value & 0xffff_ffffn));
}

function readBigU64(bytes: Uint8Array, offset: number): bigint {
  return (BigInt(readU32(bytes, offset)) << 32n) | BigInt(readU32(bytes, offset + 4));
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function encodeString(text: string): Uint8Array {
  return textEncoder.encode(text);
}

/** Decodes a wire string; NUL bytes and bad UTF-8 are rejected (spec: strings MUST NOT contain NUL). */
export function decodeString(bytes: Uint8Array): string {
  if (bytes.includes(0)) throw new CorruptionError("Cannot decode NBD string: contains NUL");
  try {
    return textDecoder.decode(bytes);
  } catch (error) {
    throw new CorruptionError("Cannot decode NBD string: bad UTF-8", { cause: error });
  }
}

// ---- Handshake encoders/decoders ----------------------------------------------------------------------------

export function encodeGreeting(handshakeFlags: number): Uint8Array {
  const bytes = new Uint8Array(NBD_GREETING_BYTES);
  writeBigU64(bytes, 0, NBD_MAGIC_INIT);
  writeBigU64(bytes, 8, NBD_MAGIC_OPTS);
  writeU16(bytes, 16, handshakeFlags);
  return bytes;
}

export interface OptionHeader {
  option: number;
  length: number;
}

/** Decodes the 16-byte option header; a wrong IHAVEOPT magic is a broken client. */
export function decodeOptionHeader(bytes: Uint8Array, offset: number): OptionHeader {
  assert(bytes.length - offset >= NBD_OPTION_HEADER_BYTES, "option header is complete");
  if (readBigU64(bytes, offset) !== NBD_MAGIC_OPTS) {
    throw new CorruptionError("Cannot parse NBD option: bad IHAVEOPT magic");
  }
  return { option: readU32(bytes, offset + 8), length: readU32(bytes, offset + 12) };
}

export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const bytes = new Uint8Array(NBD_OPTION_HEADER_BYTES + data.length);
  writeBigU64(bytes, 0, NBD_MAGIC_OPTS);
  writeU32(bytes, 8, option);
  writeU32(bytes, 12, data.length);
  bytes.set(data, NBD_OPTION_HEADER_BYTES);
  return bytes;
}

export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const bytes = new Uint8Array(NBD_OPTION_REPLY_HEADER_BYTES + data.length);
  writeBigU64(bytes, 0, NBD_MAGIC_OPTION_REPLY);
  writeU32(bytes, 8, option);
  writeU32(bytes, 12, replyType);
  writeU32(bytes, 16, data.length);
  bytes.set(data, NBD_OPTION_REPLY_HEADER_BYTES);
  return bytes;
}

export interface OptionReply {
  option: number;
  replyType: number;
  data: Uint8Array;
}

/** For clients (tests): decodes one option reply at `offset`, or returns null if incomplete. */
export function decodeOptionReply(bytes: Uint8Array, offset: number): { reply: OptionReply; next: number } | null {
  if (bytes.length - offset < NBD_OPTION_REPLY_HEADER_BYTES) return null;
  if (readBigU64(bytes, offset) !== NBD_MAGIC_OPTION_REPLY) {
    throw new CorruptionError("Cannot parse NBD option reply: bad magic");
  }
  const length = readU32(bytes, offset + 16);
  const end = offset + NBD_OPTION_REPLY_HEADER_BYTES + length;
  if (bytes.length < end) return null;
  return {
    reply: {
      option: readU32(bytes, offset + 8),
      replyType: readU32(bytes, offset + 12),
      data: bytes.slice(offset + NBD_OPTION_REPLY_HEADER_BYTES, end),
    },
    next: end,
  };
}

export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Uint8Array {
  const bytes = new Uint8Array(NBD_EXPORT_NAME_REPLY_BYTES + (noZeroes ? 0 : NBD_EXPORT_NAME_ZEROES_BYTES));
  writeU64(bytes, 0, sizeBytes);
  writeU16(bytes, 8, transmissionFlags);
  return bytes;
}

/** NBD_REP_SERVER payload: name length, name, then a human-readable description. */
export function encodeRepServer(name: string, description: string): Uint8Array {
  const nameBytes = encodeString(name);
  const descriptionBytes = encodeString(description);
  const bytes = new Uint8Array(4 + nameBytes.length + descriptionBytes.length);
  writeU32(bytes, 0, nameBytes.length);
  bytes.set(nameBytes, 4);
  bytes.set(descriptionBytes, 4 + nameBytes.length);
  return bytes;
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Uint8Array {
  const bytes = new Uint8Array(12);
  writeU16(bytes, 0, NBD_INFO_EXPORT);
  writeU64(bytes, 2, sizeBytes);
  writeU16(bytes, 10, transmissionFlags);
  return bytes;
}

/** NBD_INFO_NAME and NBD_INFO_DESCRIPTION: the info type then the string. */
export function encodeInfoString(infoType: number, text: string): Uint8Array {
  const textBytes = encodeString(text);
  const bytes = new Uint8Array(2 + textBytes.length);
  writeU16(bytes, 0, infoType);
  bytes.set(textBytes, 2);
  return bytes;
}

export function encodeInfoBlockSize(minimumBytes: number, preferredBytes: number, maximumBytes: number): Uint8Array {
  const bytes = new Uint8Array(14);
  writeU16(bytes, 0, NBD_INFO_BLOCK_SIZE);
  writeU32(bytes, 2, minimumBytes);
  writeU32(bytes, 6, preferredBytes);
  writeU32(bytes, 10, maximumBytes);
  return bytes;
}

export function encodeRepMetaContext(contextId: number, name: string): Uint8Array {
  const nameBytes = encodeString(name);
  const bytes = new Uint8Array(4 + nameBytes.length);
  writeU32(bytes, 0, contextId);
  bytes.set(nameBytes, 4);
  return bytes;
}

/** NBD_OPT_INFO / NBD_OPT_GO payload. */
export interface InfoRequest {
  exportName: string;
  infoTypes: number[];
}

/** Throws CorruptionError when lengths are inconsistent (answered with NBD_REP_ERR_INVALID). */
export function decodeInfoRequest(data: Uint8Array): InfoRequest {
  if (data.length < 4) throw new CorruptionError("Cannot parse NBD_OPT_GO: too short for the name length");
  const nameBytes = readU32(data, 0);
  if (nameBytes > NBD_STRING_BYTES_MAX || 4 + nameBytes + 2 > data.length) {
    throw new CorruptionError("Cannot parse NBD_OPT_GO: bad export name length");
  }
  const exportName = decodeString(data.subarray(4, 4 + nameBytes));
  const count = readU16(data, 4 + nameBytes);
  const start = 4 + nameBytes + 2;
  if (data.length !== start + count * 2) {
    throw new CorruptionError("Cannot parse NBD_OPT_GO: information request count does not match the length");
  }
  const infoTypes: number[] = [];
  for (let index = 0; index < count; index++) infoTypes.push(readU16(data, start + index * 2));
  return { exportName, infoTypes };
}

export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  const nameBytes = encodeString(request.exportName);
  const bytes = new Uint8Array(4 + nameBytes.length + 2 + request.infoTypes.length * 2);
  writeU32(bytes, 0, nameBytes.length);
  bytes.set(nameBytes, 4);
  writeU16(bytes, 4 + nameBytes.length, request.infoTypes.length);
  request.infoTypes.forEach((infoType, index) => writeU16(bytes, 4 + nameBytes.length + 2 + index * 2, infoType));
  return bytes;
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function decodeMetaContextRequest(data: Uint8Array): MetaContextRequest {
  if (data.length < 8) throw new CorruptionError("Cannot parse meta context option: too short");
  const nameBytes = readU32(data, 0);
  if (nameBytes > NBD_STRING_BYTES_MAX || 4 + nameBytes + 4 > data.length) {
    throw new CorruptionError("Cannot parse meta context option: bad export name length");
  }
  const exportName = decodeString(data.subarray(4, 4 + nameBytes));
  const count = readU32(data, 4 + nameBytes);
  let offset = 4 + nameBytes + 4;
  const queries: string[] = [];
  for (let index = 0; index < count; index++) {
    // Each query needs at least its 4-byte length: this bounds the loop by the (bounded) option length.
    if (offset + 4 > data.length) throw new CorruptionError("Cannot parse meta context option: truncated query");
    const queryBytes = readU32(data, offset);
    if (queryBytes > NBD_STRING_BYTES_MAX || offset + 4 + queryBytes > data.length) {
      throw new CorruptionError("Cannot parse meta context option: bad query length");
    }
    queries.push(decodeString(data.subarray(offset + 4, offset + 4 + queryBytes)));
    offset += 4 + queryBytes;
  }
  if (offset !== data.length) throw new CorruptionError("Cannot parse meta context option: trailing bytes");
  return { exportName, queries };
}

export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  const parts = [request.exportName, ...request.queries].map(encodeString);
  const total = parts.reduce((sum, part) => sum + part.length, 0) + 4 + 4 + 4 * request.queries.length;
  const bytes = new Uint8Array(total);
  writeU32(bytes, 0, parts[0]!.length);
  bytes.set(parts[0]!, 4);
  let offset = 4 + parts[0]!.length;
  writeU32(bytes, offset, request.queries.length);
  offset += 4;
  for (const part of parts.slice(1)) {
    writeU32(bytes, offset, part.length);
    bytes.set(part, offset + 4);
    offset += 4 + part.length;
  }
  return bytes;
}

// ---- Transmission encoders/decoders -------------------------------------------------------------------------

/**
 * One decoded request header. The 64-bit cookie stays as two u32 halves: it is only echoed back, and BigInt
 * per request would cost more than the rest of the header.
 */
export interface RequestHeader {
  flags: number;
  type: number;
  cookieHigh: number;
  cookieLow: number;
  offset: number;
  length: number;
}

/** Returns null on a bad request magic (the caller closes the connection: the stream cannot be re-synced). */
export function decodeRequestHeader(bytes: Uint8Array, offset: number): RequestHeader | null {
  if (readU32(bytes, offset) !== NBD_REQUEST_MAGIC) return null;
  return {
    flags: readU16(bytes, offset + 4),
    type: readU16(bytes, offset + 6),
    cookieHigh: readU32(bytes, offset + 8),
    cookieLow: readU32(bytes, offset + 12),
    offset: readU64(bytes, offset + 16),
    length: readU32(bytes, offset + 24),
  };
}

export function encodeRequestHeader(header: RequestHeader): Uint8Array {
  const bytes = new Uint8Array(NBD_REQUEST_BYTES);
  writeU32(bytes, 0, NBD_REQUEST_MAGIC);
  writeU16(bytes, 4, header.flags);
  writeU16(bytes, 6, header.type);
  writeU32(bytes, 8, header.cookieHigh);
  writeU32(bytes, 12, header.cookieLow);
  writeU64(bytes, 16, header.offset);
  writeU32(bytes, 24, header.length);
  return bytes;
}

/** Writes a simple reply header into `bytes` at `offset` (the hot path encodes in place, no allocation). */
export function writeSimpleReply(bytes: Uint8Array, offset: number, error: number, cookieHigh: number, cookieLow: number): void {
  writeU32(bytes, offset, NBD_SIMPLE_REPLY_MAGIC);
  writeU32(bytes, offset + 4, error);
  writeU32(bytes, offset + 8, cookieHigh);
  writeU32(bytes, offset + 12, cookieLow);
}

/** Writes a structured reply chunk header; `payloadBytes` follow it. */
export function writeStructuredReplyHeader(
  bytes: Uint8Array,
  offset: number,
  flags: number,
  type: number,
  cookieHigh: number,
  cookieLow: number,
  payloadBytes: number,
): void {
  writeU32(bytes, offset, NBD_STRUCTURED_REPLY_MAGIC);
  writeU16(bytes, offset + 4, flags);
  writeU16(bytes, offset + 6, type);
  writeU32(bytes, offset + 8, cookieHigh);
  writeU32(bytes, offset + 12, cookieLow);
  writeU32(bytes, offset + 16, payloadBytes);
}

/** For clients (tests): a decoded simple reply or structured chunk header. */
export type ReplyHeader =
  | { kind: "simple"; error: number; cookieHigh: number; cookieLow: number; headerBytes: number }
  | {
      kind: "structured";
      flags: number;
      type: number;
      cookieHigh: number;
      cookieLow: number;
      payloadBytes: number;
      headerBytes: number;
    };

export function decodeReplyHeader(bytes: Uint8Array, offset: number): ReplyHeader | null {
  if (bytes.length - offset < 4) return null;
  const magic = readU32(bytes, offset);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    if (bytes.length - offset < NBD_SIMPLE_REPLY_BYTES) return null;
    return {
      kind: "simple",
      error: readU32(bytes, offset + 4),
      cookieHigh: readU32(bytes, offset + 8),
      cookieLow: readU32(bytes, offset + 12),
      headerBytes: NBD_SIMPLE_REPLY_BYTES,
    };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
    if (bytes.length - offset < NBD_STRUCTURED_REPLY_HEADER_BYTES) return null;
    return {
      kind: "structured",
      flags: readU16(bytes, offset + 4),
      type: readU16(bytes, offset + 6),
      cookieHigh: readU32(bytes, offset + 8),
      cookieLow: readU32(bytes, offset + 12),
      payloadBytes: readU32(bytes, offset + 16),
      headerBytes: NBD_STRUCTURED_REPLY_HEADER_BYTES,
    };
  }
  throw new CorruptionError(`Cannot parse NBD reply: bad magic 0x${magic.toString(16)}`);
}

/** Payload of NBD_REPLY_TYPE_ERROR: error (4), message length (2), message. */
export function encodeErrorChunkPayload(error: number, message: string): Uint8Array {
  const messageBytes = encodeString(message).subarray(0, NBD_ERROR_MESSAGE_BYTES_MAX);
  const bytes = new Uint8Array(6 + messageBytes.length);
  writeU32(bytes, 0, error);
  writeU16(bytes, 4, messageBytes.length);
  bytes.set(messageBytes, 6);
  return bytes;
}

// Layout checks at load time: the byte counts above are what the field tables add up to.
assert(NBD_REQUEST_BYTES === 4 + 2 + 2 + 8 + 8 + 4, "request header layout");
assert(NBD_SIMPLE_REPLY_BYTES === 4 + 4 + 8, "simple reply layout");
assert(NBD_STRUCTURED_REPLY_HEADER_BYTES === 4 + 2 + 2 + 8 + 4, "structured reply header layout");
assert(NBD_OPTION_REPLY_HEADER_BYTES === 8 + 4 + 4 + 4, "option reply header layout");
