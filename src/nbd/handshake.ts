// NBD fixed newstyle negotiation (server side): greeting, client flags, then option haggling until GO or
// EXPORT_NAME starts the transmission phase, ABORT ends the session, or the client misbehaves.
// Spec: NetworkBlockDevice/nbd doc/proto.md, "Fixed newstyle negotiation", "Option types", "Metadata querying"
// (cf. nbdkit server/protocol-handshake-newstyle.c). No sockets here: bytes come in through feed(), replies go out
// through the `send` callback, so the whole negotiation is testable without a network.
//
// Options served: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT, SET_META_CONTEXT
// (`base:allocation` only), and STARTTLS when TLS is on (see TLS_BEFORE_UPGRADE). Every other option
// (EXTENDED_HEADERS, unknown numbers) gets ERR_UNSUP and haggling goes on: its payload is skipped thanks to the
// length in the option header.
//
// TLS (spec "TLS support"): STARTTLS is answered here with an ACK and the result "starttls"; the caller then upgrades
// the transport (server.ts) and keeps feeding, now decrypted bytes. The client flags are not sent again; the
// negotiation state (structured replies, meta contexts) starts over, as the spec asks.

import { NBD_HANDSHAKE_OPTIONS_MAX, NBD_OPTION_BYTES_MAX, NBD_REQUEST_BYTES_MAX } from "../constants.ts";
import { CorruptionError, assert } from "../errors.ts";
import {
  NBD_CLIENT_FLAGS_BYTES,
  NBD_CLIENT_FLAGS_KNOWN,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_META_CONTEXT_BASE_ALLOCATION,
  NBD_META_CONTEXT_BASE_ALLOCATION_ID,
  NBD_OPTION_HEADER_BYTES,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeString,
  readU32,
} from "./wire.ts";

/**
 * One export a server offers. A server offers one or several (lsvd serve --export); the empty name selects the
 * export named "" or, when there is only one, that one (the spec's "default" export): see findExport.
 */
export interface ExportInfo {
  name: string;
  description: string;
  sizeBytes: number;
  readOnly: boolean;
  blockSizeMinBytes: number;
  blockSizePreferredBytes: number;
}

/** What the client and server agreed on; the transmission phase (session.ts) runs by it. */
export interface Negotiated {
  structuredReplies: boolean;
  /** base:allocation was selected with SET_META_CONTEXT: BLOCK_STATUS is allowed. */
  baseAllocation: boolean;
  transmissionFlags: number;
}

/** `lsvd serve --tls`: off is the spec's NOTLS mode, on is SELECTIVETLS (no export is TLS-only), require FORCEDTLS. */
export type TlsMode = "off" | "on" | "require";

/** What an option gets while TLS has not been initiated. */
type TlsGate = "serve" | "upgrade" | "unsupported" | "tlsRequired" | "hangUp";

/**
 * Before TLS, per mode (spec "TLS support", "Server-side requirements"). FORCEDTLS answers every option but STARTTLS
 * and ABORT with ERR_TLS_REQD, and hangs up on EXPORT_NAME, which cannot carry an error. Once TLS runs every option is
 * served as usual, and STARTTLS again is ERR_INVALID.
 */
const TLS_BEFORE_UPGRADE: Record<TlsMode, { starttls: TlsGate; abort: TlsGate; exportName: TlsGate; other: TlsGate }> = {
  off: { starttls: "unsupported", abort: "serve", exportName: "serve", other: "serve" },
  on: { starttls: "upgrade", abort: "serve", exportName: "serve", other: "serve" },
  require: { starttls: "upgrade", abort: "serve", exportName: "hangUp", other: "tlsRequired" },
};

function tlsGate(mode: TlsMode, tlsActive: boolean, option: number): TlsGate {
  if (tlsActive) return "serve";
  const row = TLS_BEFORE_UPGRADE[mode];
  if (option === NBD_OPT_STARTTLS) return row.starttls;
  if (option === NBD_OPT_ABORT) return row.abort;
  if (option === NBD_OPT_EXPORT_NAME) return row.exportName;
  return row.other;
}

export type HandshakeResult =
  | { kind: "continue" }
  /** STARTTLS was acknowledged: upgrade the transport to TLS, then feed() what it decrypts. */
  | { kind: "starttls" }
  /** Hang up: an ABORT (after its ACK), or a client that broke a MUST; `reason` is for the log. */
  | { kind: "close"; reason: string }
  /** Negotiation finished; `leftover` is what the client sent after it (already the transmission phase). */
  | { kind: "transmission"; negotiated: Negotiated; leftover: Uint8Array; exportName: string };

/**
 * The export a client's name selects, or null (the spec: unknown names are refused, ERR_UNKNOWN or a hang-up for
 * EXPORT_NAME). A name matches exactly; "" is the default export: the one named "", else the only one.
 */
export function findExport(exports: readonly ExportInfo[], name: string): ExportInfo | null {
  const exact = exports.find((candidate) => candidate.name === name);
  if (exact !== undefined) return exact;
  return name === "" && exports.length === 1 ? exports[0]! : null;
}

export function transmissionFlagsFor(exportInfo: ExportInfo, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
  // CAN_MULTI_CONN: BlockDevice.flush() covers writes acknowledged on every connection (see block_device.ts).
  flags |= NBD_FLAG_CAN_MULTI_CONN;
  if (exportInfo.readOnly) {
    flags |= NBD_FLAG_READ_ONLY;
  } else {
    flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  }
  // The spec forbids SEND_DF unless structured replies were negotiated; READ always replies in one chunk anyway.
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  return flags;
}

type Phase = "clientFlags" | "options" | "done";

/** One connection's negotiation. Call start() once, then feed() with every received chunk until not "continue". */
export class Handshake {
  private phase: Phase = "clientFlags";
  /** Received bytes not yet parsed: at most one partial option, since complete ones are handled at once. */
  private buffer: Uint8Array = new Uint8Array(0);
  private noZeroes = false;
  private structuredReplies = false;
  private baseAllocation = false;
  private optionCount = 0;
  private tls = false;
  /** Options answered ERR_TLS_REQD (or refused by hanging up) because the client had not started TLS. */
  tlsRefusals = 0;

  private readonly exports: readonly ExportInfo[];

  constructor(
    exports: ExportInfo | readonly ExportInfo[],
    private readonly send: (bytes: Uint8Array) => void,
    private readonly tlsMode: TlsMode = "off",
  ) {
    this.exports = Array.isArray(exports) ? exports : [exports as ExportInfo];
    assert(this.exports.length >= 1, "a server offers at least one export");
    assert(new Set(this.exports.map((info) => info.name)).size === this.exports.length, "export names are unique");
    for (const exportInfo of this.exports) {
      // The spec wants both sizes to be powers of two, the minimum at most 64 KiB (1: any offset and length).
      assert(isPowerOfTwo(exportInfo.blockSizeMinBytes) && exportInfo.blockSizeMinBytes >= 1, "minimum block size");
      assert(exportInfo.blockSizeMinBytes <= 64 * 1024, "minimum block size is at most 64 KiB");
      assert(isPowerOfTwo(exportInfo.blockSizePreferredBytes), "preferred block size is a power of two");
      assert(exportInfo.blockSizePreferredBytes >= exportInfo.blockSizeMinBytes, "preferred >= minimum");
      assert(exportInfo.blockSizePreferredBytes <= NBD_REQUEST_BYTES_MAX, "preferred <= maximum");
    }
  }

  /** Received bytes not parsed yet: after each feed(), at most one partial option (header + NBD_OPTION_BYTES_MAX). */
  get bufferedBytes(): number {
    return this.buffer.length;
  }

  /** STARTTLS was acknowledged: everything after it travels over TLS. */
  get tlsActive(): boolean {
    return this.tls;
  }

  start(): void {
    this.send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
  }

  feed(chunk: Uint8Array): HandshakeResult {
    assert(this.phase !== "done", "no input after the handshake finished");
    this.buffer = this.buffer.length === 0 ? chunk : concat(this.buffer, chunk);
    let offset = 0;
    if (this.phase === "clientFlags") {
      if (this.buffer.length < NBD_CLIENT_FLAGS_BYTES) return { kind: "continue" };
      const clientFlags = readU32(this.buffer, 0);
      offset = NBD_CLIENT_FLAGS_BYTES;
      if ((clientFlags & ~NBD_CLIENT_FLAGS_KNOWN) !== 0) {
        return this.finish({ kind: "close", reason: `unknown client flags 0x${clientFlags.toString(16)}` });
      }
      this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
      this.phase = "options";
    }
    while (this.buffer.length - offset >= NBD_OPTION_HEADER_BYTES) {
      let header;
      try {
        header = decodeOptionHeader(this.buffer, offset);
      } catch (error) {
        return this.finish({ kind: "close", reason: (error as Error).message });
      }
      if (header.length > NBD_OPTION_BYTES_MAX) {
        return this.finish({ kind: "close", reason: `option ${header.option} payload of ${header.length} bytes` });
      }
      const end = offset + NBD_OPTION_HEADER_BYTES + header.length;
      if (this.buffer.length < end) break;
      this.optionCount++;
      if (this.optionCount > NBD_HANDSHAKE_OPTIONS_MAX) {
        return this.finish({ kind: "close", reason: `more than ${NBD_HANDSHAKE_OPTIONS_MAX} options` });
      }
      const data = this.buffer.subarray(offset + NBD_OPTION_HEADER_BYTES, end);
      offset = end;
      const result = this.handleOption(header.option, data);
      if (result.kind === "close") return this.finish(result);
      if (result.kind === "starttls") {
        // The client must wait for the ACK before its TLS handshake: plain bytes after STARTTLS break the protocol.
        if (offset < this.buffer.length) {
          return this.finish({ kind: "close", reason: `${this.buffer.length - offset} bytes after NBD_OPT_STARTTLS, before its reply` });
        }
        this.buffer = new Uint8Array(0);
        return result;
      }
      if (result.kind === "transmission") {
        return this.finish({ ...result, leftover: this.buffer.subarray(offset) });
      }
    }
    // Keep only the unparsed tail (copied, so a large chunk is not retained for a few bytes).
    this.buffer = this.buffer.slice(offset);
    return { kind: "continue" };
  }

  private finish(result: HandshakeResult): HandshakeResult {
    this.phase = "done";
    this.buffer = new Uint8Array(0);
    return result;
  }

  private reply(option: number, replyType: number, data?: Uint8Array): void {
    this.send(encodeOptionReply(option, replyType, data));
  }

  private replyError(option: number, replyType: number, message: string): void {
    this.reply(option, replyType, encodeString(message));
  }


  private handleOption(option: number, data: Uint8Array): HandshakeResult {
    const gate = tlsGate(this.tlsMode, this.tls, option);
    if (gate === "hangUp" || gate === "tlsRequired") this.tlsRefusals++;
    if (gate === "hangUp") return { kind: "close", reason: `option ${option} before STARTTLS, and TLS is required` };
    if (gate === "tlsRequired") {
      this.replyError(option, NBD_REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first");
      return { kind: "continue" };
    }
    if (option === NBD_OPT_STARTTLS) return this.handleStartTls(gate, data);
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.handleExportName(data);
      case NBD_OPT_ABORT:
        // The spec asks for an ACK; the client may already be gone, which the transport tolerates.
        this.reply(option, NBD_REP_ACK);
        return { kind: "close", reason: "client sent NBD_OPT_ABORT" };
      case NBD_OPT_LIST:
        if (data.length !== 0) {
          this.replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        } else {
          for (const info of this.exports) this.reply(option, NBD_REP_SERVER, encodeRepServer(info.name, info.description));
          this.reply(option, NBD_REP_ACK);
        }
        return { kind: "continue" };
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.handleInfoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else if (this.structuredReplies) {
          this.replyError(option, NBD_REP_ERR_INVALID, "structured replies already negotiated");
        } else {
          this.structuredReplies = true;
          this.reply(option, NBD_REP_ACK);
        }
        return { kind: "continue" };
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        this.handleMetaContext(option, data);
        return { kind: "continue" };
      default:
        // EXTENDED_HEADERS and anything unknown: the payload was already skipped.
        this.replyError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return { kind: "continue" };
    }
  }

  private handleStartTls(gate: TlsGate, data: Uint8Array): HandshakeResult {
    if (gate === "unsupported") {
      this.replyError(NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, "TLS is off on this server");
    } else if (this.tls) {
      this.replyError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already active");
    } else if (data.length !== 0) {
      this.replyError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
    } else {
      assert(gate === "upgrade", "STARTTLS is upgraded, refused as unsupported, or served after TLS");
      // Nothing negotiated in the clear survives the upgrade (spec, NBD_OPT_STARTTLS).
      this.structuredReplies = false;
      this.baseAllocation = false;
      this.tls = true;
      this.reply(NBD_OPT_STARTTLS, NBD_REP_ACK);
      return { kind: "starttls" };
    }
    return { kind: "continue" };
  }

  private handleExportName(data: Uint8Array): HandshakeResult {
    let name: string;
    try {
      name = decodeString(data);
    } catch (error) {
      return { kind: "close", reason: (error as Error).message };
    }
    // EXPORT_NAME cannot return an error: the spec says terminate the session.
    const info = findExport(this.exports, name);
    if (info === null) return { kind: "close", reason: `unknown export name "${name}"` };
    const negotiated = this.negotiated(info);
    this.send(encodeExportNameReply(info.sizeBytes, negotiated.transmissionFlags, this.noZeroes));
    return { kind: "transmission", negotiated, leftover: new Uint8Array(0), exportName: info.name };
  }

  private handleInfoOrGo(option: number, data: Uint8Array): HandshakeResult {
    let request;
    try {
      request = decodeInfoRequest(data);
    } catch (error) {
      assert(error instanceof CorruptionError, "decoders throw CorruptionError");
      this.replyError(option, NBD_REP_ERR_INVALID, error.message);
      return { kind: "continue" };
    }
    const info = findExport(this.exports, request.exportName);
    if (info === null) {
      this.replyError(option, NBD_REP_ERR_UNKNOWN, `unknown export name "${request.exportName}"`);
      return { kind: "continue" };
    }
    const negotiated = this.negotiated(info);
    this.reply(option, NBD_REP_INFO, encodeInfoExport(info.sizeBytes, negotiated.transmissionFlags));
    if (request.infoTypes.includes(NBD_INFO_NAME)) {
      this.reply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, info.name));
    }
    if (request.infoTypes.includes(NBD_INFO_DESCRIPTION) && info.description !== "") {
      this.reply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_DESCRIPTION, info.description));
    }
    // Sent even when not asked for: clients use it to align (qemu does read-modify-write below the minimum).
    this.reply(
      option,
      NBD_REP_INFO,
      encodeInfoBlockSize(info.blockSizeMinBytes, info.blockSizePreferredBytes, NBD_REQUEST_BYTES_MAX),
    );
    this.reply(option, NBD_REP_ACK);
    if (option === NBD_OPT_INFO) return { kind: "continue" };
    return { kind: "transmission", negotiated, leftover: new Uint8Array(0), exportName: info.name };
  }

  private handleMetaContext(option: number, data: Uint8Array): void {
    if (!this.structuredReplies) {
      this.replyError(option, NBD_REP_ERR_INVALID, "meta contexts need structured replies first");
      return;
    }
    let request;
    try {
      request = decodeMetaContextRequest(data);
    } catch (error) {
      assert(error instanceof CorruptionError, "decoders throw CorruptionError");
      this.replyError(option, NBD_REP_ERR_INVALID, error.message);
      return;
    }
    if (findExport(this.exports, request.exportName) === null) {
      this.replyError(option, NBD_REP_ERR_UNKNOWN, `unknown export name "${request.exportName}"`);
      return;
    }
    let selected: boolean;
    if (option === NBD_OPT_LIST_META_CONTEXT) {
      // LIST: no query lists everything; a bare namespace ("base:") lists that namespace. Ids are reserved (0).
      selected =
        request.queries.length === 0 ||
        request.queries.some((query) => query === "base:" || query === NBD_META_CONTEXT_BASE_ALLOCATION);
      if (selected) this.reply(option, NBD_REP_META_CONTEXT, encodeRepMetaContext(0, NBD_META_CONTEXT_BASE_ALLOCATION));
    } else {
      // SET replaces the previous selection; only an exact name selects a context.
      selected = request.queries.includes(NBD_META_CONTEXT_BASE_ALLOCATION);
      this.baseAllocation = selected;
      if (selected) {
        this.reply(
          option,
          NBD_REP_META_CONTEXT,
          encodeRepMetaContext(NBD_META_CONTEXT_BASE_ALLOCATION_ID, NBD_META_CONTEXT_BASE_ALLOCATION),
        );
      }
    }
    this.reply(option, NBD_REP_ACK);
  }

  private negotiated(info: ExportInfo): Negotiated {
    return {
      structuredReplies: this.structuredReplies,
      baseAllocation: this.baseAllocation,
      transmissionFlags: transmissionFlagsFor(info, this.structuredReplies),
    };
  }
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

function concat(first: Uint8Array, second: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(first.length + second.length);
  bytes.set(first, 0);
  bytes.set(second, first.length);
  return bytes;
}
