// NBD transmission phase for one connection: parse requests straight from the received chunks, validate each
// (magic, command, flags, range, length), call the BlockDevice, and send replies out of order as they complete.
// Spec: NetworkBlockDevice/nbd doc/proto.md, "Transmission", "Request types", "Error values"
// (cf. nbdkit server/protocol.c: validate_request, handle_request, nbd_errno). Errors become NBD errno here only.
//
// Hot path choices, and why:
// - Headers are decoded in place from the chunk Bun hands us; only a header split across two chunks is copied.
// - A WRITE payload that lies whole in one chunk Bun hands us goes to the device as a subarray view, no copy: Bun
//   gives every `data` event a fresh buffer, and this session never writes into received memory. In a transient
//   chunk (io_uring's receive buffers, valid only while feed() runs) it is a view too when the transport lets the
//   session keep the chunk's buffer until the WRITE completes (ChunkKeeper: bounded, so the ring keeps buffers to
//   receive into). A payload that starts a chunk (its header ended the one before) counts as whole in it. A payload
//   split across chunks, or in a transient chunk that cannot be kept, is copied into
//   a buffer of the session's (payload_buffers.ts: size classes up to NBD_ASSEMBLY_BUFFER_BYTES, reused once the WRITE
//   is answered, so no allocation, zeroing or page faults per payload; larger ones in a new buffer).
//   So THE DEVICE MAY KEEP THE BUFFER it is given UNTIL THE WRITE COMPLETES (and must never modify it); what it
//   needs after that it copies (the volume copies payloads into its batch when their record forms). (A kept view
//   pins its whole chunk, up to a few hundred KiB.)
// - Each connection has at most NBD_INFLIGHT_PER_CONNECTION_MAX request slots, made once with their completion
//   callbacks bound: no closure per request. A WRITE goes to BlockDevice.writeThen when the device has it, with
//   its slot as the listener: no promise per WRITE either (the volume's whole-sector writes keep none down to the
//   journal record). Reaching the limit (or too many unsent reply bytes, or too many WRITE
//   payload bytes in flight) pauses the socket and keeps the unparsed rest; completions resume it.
// - Replies are encoded into the OutputQueue batch, which writes once per event-loop turn.
//
// Every error reply is logged (command, offset, length, errno and cause) through `logFailure`, which the server
// rate-limits: the operator sees why clients get errors, and a client cannot flood the log.
//
// Bounds (checkInvariants() asserts them; the NBD stream fuzzer runs it after every step):
// - requests in flight <= NBD_INFLIGHT_PER_CONNECTION_MAX, each in one of at most that many slots;
// - payload bytes of WRITEs in flight < NBD_INFLIGHT_WRITE_BYTES_MAX + NBD_REQUEST_BYTES_MAX (a request is admitted
//   below the limit, and may be one largest WRITE);
// - unsent reply bytes + data of READs in flight < NBD_OUTPUT_QUEUED_BYTES_MAX + NBD_REQUEST_BYTES_MAX + one largest
//   non-READ reply per slot + the handshake's replies (admitted below the limit: one largest READ, and replies not
//   reserved at admission);
// - received bytes held here: a header (< 28 bytes), one WRITE payload being assembled (<= NBD_REQUEST_BYTES_MAX),
//   and the backlog, which only holds what arrived after the socket was paused (the transport's chunks).
//
// Bad input: a request the spec lets us answer (bad range, length, flags, unknown command) gets an error reply and
// the connection goes on. A bad request magic or a WRITE payload above NBD_REQUEST_BYTES_MAX leaves no safe way to
// find the next request: the connection is closed. Either way, device calls already made run to completion and
// their replies are dropped.

import {
  NBD_BLOCK_STATUS_EXTENTS_MAX,
  NBD_HANDSHAKE_OPTIONS_MAX,
  NBD_INFLIGHT_PER_CONNECTION_MAX,
  NBD_INFLIGHT_WRITE_BYTES_MAX,
  NBD_OUTPUT_QUEUED_BYTES_MAX,
  NBD_REQUEST_BYTES_MAX,
  NBD_ZERO_WRITE_BYTES_MAX,
} from "../constants.ts";
import { LsvdError, assert } from "../errors.ts";
import type { BlockDevice, BlockStatusExtent } from "./block_device.ts";
import type { Negotiated } from "./handshake.ts";
import type { OutputQueue, Transport } from "./output_queue.ts";
import { PayloadBuffers } from "./payload_buffers.ts";
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAGS_KNOWN,
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
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EPERM,
  NBD_ERROR_MESSAGE_BYTES_MAX,
  NBD_OPTION_REPLY_HEADER_BYTES,
  NBD_STRING_BYTES_MAX,
  NBD_META_CONTEXT_BASE_ALLOCATION_ID,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REQUEST_BYTES,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_BYTES,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_HEADER_BYTES,
  commandName,
  encodeErrorChunkPayload,
  errnoName,
  readU16,
  readU32,
  readU64,
  writeSimpleReply,
  writeStructuredReplyHeader,
  writeU32,
  writeU64,
} from "./wire.ts";

/** Counters shared by all connections of a server (plain numbers: bumping them costs nothing). */
export interface NbdStats {
  connectionsAccepted: number;
  connectionsRefused: number;
  /** Connections closed because the client broke the protocol (bad magic, oversize payload, bad handshake). */
  protocolErrors: number;
  /** Connections closed because the client did not finish negotiating in time. */
  handshakeTimeouts: number;
  reads: number;
  writes: number;
  flushes: number;
  trims: number;
  writeZeroes: number;
  blockStatuses: number;
  caches: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests answered with an error. */
  errorReplies: number;
  /**
   * Socket reads handed to sessions (one per `data` event) and socket writes of their replies (one per batch sent,
   * plus one per retry after a partial write; a session's first may carry the handshake's last replies): requests /
   * receives and replies / replyWrites say how well both sides batch.
   */
  receives: number;
  replyWrites: number;
  /**
   * WRITE payloads copied into the session's payload buffers: split across received chunks, or in a transient chunk
   * the transport could not let the session keep (a payload taken whole from the backlog is not counted).
   */
  payloadCopies: number;
}

export function newNbdStats(): NbdStats {
  return {
    connectionsAccepted: 0,
    connectionsRefused: 0,
    protocolErrors: 0,
    handshakeTimeouts: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    trims: 0,
    writeZeroes: 0,
    blockStatuses: 0,
    caches: 0,
    bytesRead: 0,
    bytesWritten: 0,
    errorReplies: 0,
    receives: 0,
    replyWrites: 0,
    payloadCopies: 0,
  };
}

/**
 * Told when a request ends (lsvd serve's latency histograms): the command, seconds from dispatch to reply (-1 for a
 * request refused before dispatch), and whether it failed. Called on the completion path with plain numbers.
 */
export interface NbdRequestObserver {
  requestDone(command: number, seconds: number, failed: boolean): void;
}

/** The one place lsvd errors become NBD errno values. */
export function nbdErrnoFor(error: unknown): number {
  if (error instanceof LsvdError) {
    switch (error.kind) {
      case "InvalidArgument":
        return NBD_EINVAL;
      case "NoSpace":
        return NBD_ENOSPC;
      case "NotSupported":
        return NBD_ENOTSUP;
      case "IO":
        return NBD_EIO;
      default:
        return NBD_EIO;
    }
  }
  return NBD_EIO;
}

/** The largest reply to anything but a READ: a full BLOCK_STATUS, or an error chunk with its message. */
const NON_READ_REPLY_BYTES_MAX =
  NBD_STRUCTURED_REPLY_HEADER_BYTES + Math.max(4 + 8 * NBD_BLOCK_STATUS_EXTENTS_MAX, 6 + NBD_ERROR_MESSAGE_BYTES_MAX);
/** What the handshake may leave queued: each option is answered with a few replies of at most a few strings. */
const HANDSHAKE_REPLY_BYTES_MAX = NBD_HANDSHAKE_OPTIONS_MAX * 6 * (NBD_OPTION_REPLY_HEADER_BYTES + 8 + 2 * NBD_STRING_BYTES_MAX);
/** Bound on unsent reply bytes plus the data of READs in flight (see "Bounds" at the top). */
export const NBD_SESSION_OUTPUT_BYTES_BOUND =
  NBD_OUTPUT_QUEUED_BYTES_MAX +
  NBD_REQUEST_BYTES_MAX +
  NBD_INFLIGHT_PER_CONNECTION_MAX * (NON_READ_REPLY_BYTES_MAX + NBD_STRUCTURED_REPLY_HEADER_BYTES + 8) +
  HANDSHAKE_REPLY_BYTES_MAX;
/** Bound on payload bytes of WRITEs in flight (see "Bounds" at the top). */
export const NBD_SESSION_WRITE_BYTES_BOUND = NBD_INFLIGHT_WRITE_BYTES_MAX + NBD_REQUEST_BYTES_MAX;
/** What a receive-path step returns instead of an offset when the session stops reading (protocol error, DISC). */
const PARSE_STOP = -1;

/** Shared, never written: NO_HOLE zeroing writes it, and the device may keep it like any write payload. */
let zeroBuffer: Uint8Array | null = null;

/** One request in flight. Pooled per session; the bound callbacks are made once per slot, not per request. */
class RequestSlot {
  type = 0;
  flags = 0;
  cookieHigh = 0;
  cookieLow = 0;
  offset = 0;
  length = 0;
  /** WRITE payload (the device may keep it until the WRITE completes; the slot only drops its reference). */
  payload: Uint8Array | null = null;
  /** The session's pooled buffer `payload` lies in, given back when the slot is released (null: none). */
  pooled: Uint8Array | null = null;
  /** The transport's receive buffer `payload` lies in (ChunkKeeper), given back when the slot is released (-1: none). */
  keptChunk = -1;
  /** Set when validation failed: the reply is this errno once the payload (if any) is consumed. */
  errno = 0;
  errorMessage = "";
  /** performance.now() at dispatch (0: not dispatched); `failed` once an error reply went out (for the observer). */
  startedMs = 0;
  failed = false;

  readonly onDone = (): void => this.session.completeOk(this);
  readonly onData = (data: Uint8Array): void => this.session.completeRead(this, data);
  readonly onExtents = (extents: BlockStatusExtent[]): void => this.session.completeBlockStatus(this, extents);
  readonly onError = (error: unknown): void => this.session.completeError(this, error);

  constructor(private readonly session: NbdSession) {}

  /** WriteListener: a WRITE given to BlockDevice.writeThen ended (no promise, no closure per request). */
  writeDone(): void {
    this.session.completeOk(this);
  }

  writeFailed(error: unknown): void {
    this.session.completeError(this, error);
  }
}

/**
 * A transport whose transient chunks a session may keep past feed(): NBD on io_uring's receive buffers
 * (ffi/uring_buffers.ts ProvidedBuffers). The ids are the ones feed() was given.
 */
export interface ChunkKeeper {
  /** Keeps chunk `chunkId`'s buffer until give(chunkId); false when the transport needs it back (then copy). */
  keep(chunkId: number): boolean;
  give(chunkId: number): void;
}

export interface NbdSessionOptions {
  device: BlockDevice;
  negotiated: Negotiated;
  transport: Transport;
  /** The connection's queue (the handshake's replies may still be in it: they go out first). */
  output: OutputQueue;
  stats: NbdStats;
  /** Told when each request ends (optional). */
  observer?: NbdRequestObserver | null;
  /** Logs a failed request or a protocol error; `kind` groups similar lines for rate limiting (the server's LogLimiter). */
  logFailure: (kind: string, line: string) => void;
  /** Label for log lines (e.g. the peer address). */
  name: string;
  /** Called once, when the connection must be closed at once (protocol error). */
  onProtocolError: (reason: string) => void;
  /** Called once, after DISC or close(), when nothing is in flight and all replies are handed to the socket. */
  onDrainedForEnd: () => void;
  /** Called once, when the session is dead and no device call is in flight any more (nothing refers to it). */
  onSettled: () => void;
  /** Lets WRITE payloads keep transient chunks (optional: without it they are copied). */
  chunkKeeper?: ChunkKeeper | null;
}

type SessionState =
  /** Reading and serving requests. */
  | "open"
  /** DISC received or server closing: no more parsing; finish in-flight requests, send replies, then end. */
  | "ending"
  /** The socket is gone (or must go): replies are dropped, in-flight calls only release their slots. */
  | "dead";

export class NbdSession {
  private state: SessionState = "open";
  private readonly device: BlockDevice;
  private readonly sizeBytes: number;
  private readonly readOnly: boolean;
  private readonly structuredReplies: boolean;
  private readonly baseAllocation: boolean;
  private readonly output: OutputQueue;
  private readonly stats: NbdStats;
  private readonly observer: NbdRequestObserver | null;

  private readonly freeSlots: RequestSlot[] = [];
  private slotsMade = 0;
  inflight = 0;
  /** Data bytes of READs dispatched and not completed (they become queued reply bytes). */
  private inflightReadBytes = 0;
  /** Payload bytes of valid WRITEs from their header until their completion (received, or being received). */
  private inflightWriteBytes = 0;

  /** A request header split across chunks is gathered here. */
  private readonly headerBuffer = new Uint8Array(NBD_REQUEST_BYTES);
  private headerFilled = 0;
  /**
   * A WRITE whose payload spans chunks: the buffer being filled (none yet while no byte of it came) and how much of
   * it is.
   */
  private payloadSlot: RequestSlot | null = null;
  private payloadFilled = 0;
  /** Bytes of a rejected WRITE's payload still to skip; `discardSlot` gets its error reply after. */
  private discardBytes = 0;
  private discardSlot: RequestSlot | null = null;
  /** Reused buffers for payloads that are assembled or copied out of a transient chunk. */
  private readonly payloadBuffers = new PayloadBuffers();
  /** The chunk being parsed is only valid during feed() (a transport's receive buffer): keep nothing of it ... */
  private chunkTransient = false;
  /** ... unless chunkKeeper keeps it: its id (-1: the chunk cannot be kept). */
  private chunkId = -1;
  private readonly chunkKeeper: ChunkKeeper | null;
  /** Chunks (or their unparsed tails) received while reading was blocked; parsed in order later. */
  private backlog: Uint8Array[] = [];
  private paused = false;
  /** parse() is running: a slot released synchronously inside it must not start a nested parse. */
  private parsing = false;

  constructor(private readonly options: NbdSessionOptions) {
    this.device = options.device;
    this.sizeBytes = options.device.sizeBytes;
    this.readOnly = options.device.readOnly;
    this.structuredReplies = options.negotiated.structuredReplies;
    this.baseAllocation = options.negotiated.baseAllocation;
    this.stats = options.stats;
    this.observer = options.observer ?? null;
    this.chunkKeeper = options.chunkKeeper ?? null;
    this.output = options.output;
    this.output.onDrained = () => this.onOutputDrained();
    this.output.counters = options.stats;
    assert(Number.isSafeInteger(this.sizeBytes) && this.sizeBytes >= 0, "export size is a safe integer");
  }

  /**
   * Bytes from the socket. `transient`: the chunk is the transport's receive buffer, valid only during this call, so
   * what the session keeps of it (payloads, the unparsed rest) is copied, unless chunkKeeper keeps chunk `chunkId`
   * for a payload; else the session may keep views of it.
   */
  feed(chunk: Uint8Array, transient = false, chunkId = -1): void {
    if (this.state !== "open" || chunk.length === 0) return;
    this.stats.receives++;
    if (this.backlog.length > 0) {
      this.backlog.push(transient ? chunk.slice() : chunk);
      return;
    }
    this.chunkTransient = transient;
    this.chunkId = transient && this.chunkKeeper !== null ? chunkId : -1;
    try {
      const consumed = this.parse(chunk, 0);
      if (consumed < chunk.length && this.state === "open") this.backlog.push(transient ? chunk.slice(consumed) : chunk.subarray(consumed));
    } finally {
      this.chunkTransient = false;
      this.chunkId = -1;
    }
  }

  /** Socket `drain`. */
  onDrain(): void {
    this.output.onDrain();
  }

  /** The socket closed (peer hung up, or we ended it): drop replies; in-flight calls just release their slots. */
  onTransportClosed(): void {
    this.kill();
  }

  /** Server shutdown: stop reading, let in-flight requests finish and their replies go out, then end. */
  beginEnd(): void {
    if (this.state !== "open") return;
    this.state = "ending";
    this.backlog = [];
    this.pause();
    this.dropPartialRequest();
    this.maybeEnded();
  }

  /** Received bytes held by the session: a partial header, a WRITE payload being assembled, the backlog. */
  get bufferedBytes(): number {
    let bytes = this.headerFilled + (this.payloadSlot?.payload?.length ?? 0);
    for (const chunk of this.backlog) bytes += chunk.length;
    return bytes;
  }

  /** Data bytes of READs and payload bytes of WRITEs in flight (what the byte limits count). */
  get inflightBytes(): { reads: number; writes: number } {
    return { reads: this.inflightReadBytes, writes: this.inflightWriteBytes };
  }

  /** "open", "ending" (finishing in-flight requests) or "dead". */
  get phase(): SessionState {
    return this.state;
  }

  /** A WRITE's payload is still being received (or skipped): its slot counts as in flight until it is whole. */
  get receivingPayload(): boolean {
    return this.payloadSlot !== null || this.discardSlot !== null;
  }

  /** The socket is paused by this session (it waits for room, not for bytes). */
  get readingPaused(): boolean {
    return this.paused;
  }

  /** Checks the bounds at the top of this file and the receive state's consistency; throws on the first violation. */
  checkInvariants(): void {
    assert(this.inflight >= 0 && this.inflight <= NBD_INFLIGHT_PER_CONNECTION_MAX, "nbd session: requests in flight bounded");
    assert(this.slotsMade <= NBD_INFLIGHT_PER_CONNECTION_MAX && this.freeSlots.length + this.inflight === this.slotsMade, "nbd session: every slot is free or in flight");
    assert(this.inflightReadBytes >= 0 && this.inflightWriteBytes >= 0, "nbd session: in-flight byte counts balance");
    assert(this.inflightWriteBytes < NBD_SESSION_WRITE_BYTES_BOUND, "nbd session: WRITE payload bytes in flight bounded");
    assert(this.output.queuedBytes + this.inflightReadBytes < NBD_SESSION_OUTPUT_BYTES_BOUND, "nbd session: reply bytes bounded");
    assert(this.headerFilled < NBD_REQUEST_BYTES, "nbd session: a partial header is less than a header");
    assert(this.payloadBuffers.idleBytes <= PayloadBuffers.IDLE_BYTES_MAX, "nbd session: idle payload buffers bounded");
    const assembling = this.payloadSlot?.payload ?? null;
    assert(this.payloadSlot === null || (assembling === null ? this.payloadFilled === 0 : this.payloadFilled < assembling.length), "nbd session: a payload being assembled is not complete");
    assert(this.payloadSlot === null || this.discardSlot === null, "nbd session: one partial request at a time");
    assert((this.discardBytes > 0) === (this.discardSlot !== null), "nbd session: bytes to skip belong to a refused WRITE");
    assert(this.state === "open" || (this.backlog.length === 0 && this.payloadSlot === null && this.headerFilled === 0), "nbd session: an ended session holds no input");
    assert(this.backlog.length === 0 || this.paused || this.parsing, "nbd session: a backlog only while paused");
    assert(this.state !== "dead" || this.output.isEmpty, "nbd session: a dead session queues nothing");
  }

  // ---- Receive path -----------------------------------------------------------------------------------------

  /** Parses requests from `chunk[start..]`; returns how far it got (less than the end when reading is blocked). */
  private parse(chunk: Uint8Array, start: number): number {
    assert(!this.parsing, "parse is not re-entered");
    this.parsing = true;
    try {
      return this.parseRequests(chunk, start);
    } finally {
      this.parsing = false;
    }
  }

  private parseRequests(chunk: Uint8Array, start: number): number {
    let offset = start;
    const end = chunk.length;
    while (offset < end) {
      if (this.state !== "open") return end;
      if (this.payloadSlot !== null) {
        offset = this.receivePayload(chunk, offset);
        continue;
      }
      if (this.discardBytes > 0) {
        offset = this.skipRefusedPayload(chunk, offset);
        continue;
      }
      // A new request starts here: only take it if there is room for it.
      if (this.readBlocked()) {
        this.pause();
        return offset;
      }
      if (this.headerFilled > 0 || end - offset < NBD_REQUEST_BYTES) {
        offset = this.assembleHeader(chunk, offset);
        if (this.headerFilled > 0) return offset;
        offset = this.startRequest(this.headerBuffer, 0, chunk, offset);
      } else {
        offset = this.startRequest(chunk, offset, chunk, offset + NBD_REQUEST_BYTES);
      }
      if (offset === PARSE_STOP) return end;
    }
    return offset;
  }

  /** Copies bytes of the WRITE payload being assembled; dispatches the WRITE once it is whole. Returns the new offset. */
  private receivePayload(chunk: Uint8Array, offset: number): number {
    const slot = this.payloadSlot!;
    if (slot.payload === null) {
      // None of it had come: take it from this chunk as if it had followed its header here.
      this.payloadSlot = null;
      return this.takePayload(slot, chunk, offset);
    }
    const payload = slot.payload;
    const take = Math.min(payload.length - this.payloadFilled, chunk.length - offset);
    payload.set(chunk.subarray(offset, offset + take), this.payloadFilled);
    this.payloadFilled += take;
    if (this.payloadFilled === payload.length) {
      this.payloadSlot = null;
      this.payloadFilled = 0;
      this.dispatch(slot);
    }
    return offset + take;
  }

  /** Skips bytes of a refused WRITE's payload; replies with its error once all are skipped. Returns the new offset. */
  private skipRefusedPayload(chunk: Uint8Array, offset: number): number {
    const take = Math.min(this.discardBytes, chunk.length - offset);
    this.discardBytes -= take;
    if (this.discardBytes === 0) {
      const slot = this.discardSlot!;
      this.discardSlot = null;
      this.replyError(slot, slot.errno, slot.errorMessage);
    }
    return offset + take;
  }

  /**
   * Copies header bytes into headerBuffer (a header split across chunks). Returns the new offset; headerFilled is
   * back to 0 when the header is whole, so headerBuffer holds it.
   */
  private assembleHeader(chunk: Uint8Array, offset: number): number {
    const take = Math.min(NBD_REQUEST_BYTES - this.headerFilled, chunk.length - offset);
    this.headerBuffer.set(chunk.subarray(offset, offset + take), this.headerFilled);
    this.headerFilled += take;
    if (this.headerFilled === NBD_REQUEST_BYTES) this.headerFilled = 0;
    return offset + take;
  }

  /**
   * Takes the request whose header is `header[at..]`; its payload, if any, starts at `chunk[offset]`. Returns the
   * offset past what it consumed, or PARSE_STOP when the session stops reading (protocol error or DISC).
   */
  private startRequest(header: Uint8Array, at: number, chunk: Uint8Array, offset: number): number {
    if (readU32(header, at) !== NBD_REQUEST_MAGIC) {
      this.protocolError(`bad request magic 0x${readU32(header, at).toString(16)}`);
      return PARSE_STOP;
    }
    const type = readU16(header, at + 6);
    const length = readU32(header, at + 24);
    if (type === NBD_CMD_WRITE && length > NBD_REQUEST_BYTES_MAX) {
      // Skipping up to 4 GiB of payload from a client that ignored the advertised maximum is not worth it.
      this.protocolError(`WRITE payload of ${length} bytes is above ${NBD_REQUEST_BYTES_MAX}`);
      return PARSE_STOP;
    }
    const slot = this.acquireSlot();
    slot.type = type;
    slot.flags = readU16(header, at + 4);
    slot.cookieHigh = readU32(header, at + 8);
    slot.cookieLow = readU32(header, at + 12);
    slot.offset = readU64(header, at + 16);
    slot.length = length;
    this.validate(slot);
    if (type === NBD_CMD_DISC) {
      this.releaseSlot(slot);
      this.beginEnd();
      return PARSE_STOP;
    }
    if (type !== NBD_CMD_WRITE || length === 0) {
      this.dispatch(slot);
      return offset;
    }
    return this.startWritePayload(slot, chunk, offset);
  }

  /** A WRITE's payload: skipped if the WRITE is refused; else taken from `chunk` on (takePayload). */
  private startWritePayload(slot: RequestSlot, chunk: Uint8Array, offset: number): number {
    const length = slot.length;
    if (slot.errno !== 0) {
      this.discardBytes = length;
      this.discardSlot = slot;
      return offset;
    }
    this.inflightWriteBytes += length;
    if (offset === chunk.length) {
      // The header ended the chunk. Clients often send a large payload on its own, so it may come whole in the next
      // chunk: wait for it (payloadSlot with no payload yet) rather than start a copy.
      this.payloadSlot = slot;
      this.payloadFilled = 0;
      return offset;
    }
    return this.takePayload(slot, chunk, offset);
  }

  /**
   * The payload of `slot` from `chunk[offset..]`: dispatched at once if whole there (a view of it, also of a
   * transient chunk that chunkKeeper keeps; else a pooled copy); else assembled in a pooled buffer from here on.
   */
  private takePayload(slot: RequestSlot, chunk: Uint8Array, offset: number): number {
    const length = slot.length;
    const whole = chunk.length - offset >= length;
    if (whole && (!this.chunkTransient || this.keepChunk(slot))) {
      slot.payload = chunk.subarray(offset, offset + length);
      this.dispatch(slot);
      return offset + length;
    }
    this.stats.payloadCopies++;
    const buffer = this.payloadBuffers.take(length);
    slot.pooled = buffer;
    slot.payload = buffer.byteLength === length ? buffer : buffer.subarray(0, length);
    if (whole) {
      slot.payload.set(chunk.subarray(offset, offset + length));
      this.dispatch(slot);
      return offset + length;
    }
    this.payloadSlot = slot;
    this.payloadFilled = 0;
    return offset;
  }

  /** Whether the transient chunk being parsed is kept for `slot`'s payload (until the slot is released). */
  private keepChunk(slot: RequestSlot): boolean {
    if (this.chunkId < 0 || !this.chunkKeeper!.keep(this.chunkId)) return false;
    slot.keptChunk = this.chunkId;
    return true;
  }

  /**
   * Reading stops at the in-flight limit, when unsent reply bytes plus the data of READs in flight reach the
   * output limit, or when the payloads of WRITEs in flight reach theirs: without the byte limits, one pipelined
   * burst of 128 large READs or WRITEs would hold 4 GiB.
   */
  private readBlocked(): boolean {
    return (
      this.inflight >= NBD_INFLIGHT_PER_CONNECTION_MAX ||
      this.output.queuedBytes + this.inflightReadBytes >= NBD_OUTPUT_QUEUED_BYTES_MAX ||
      this.inflightWriteBytes >= NBD_INFLIGHT_WRITE_BYTES_MAX
    );
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.options.transport.pause();
  }

  /** A slot was released or the socket drained: parse the backlog and resume reading if there is room now. */
  private unblock(): void {
    if (this.state !== "open" || this.readBlocked()) return;
    while (this.backlog.length > 0) {
      const chunk = this.backlog[0]!;
      const consumed = this.parse(chunk, 0);
      if (this.state !== "open") return;
      if (consumed < chunk.length) {
        this.backlog[0] = chunk.subarray(consumed);
        return;
      }
      this.backlog.shift();
    }
    if (this.paused) {
      this.paused = false;
      this.options.transport.resume();
    }
  }

  /** Sets slot.errno (and a message) if the request must be refused; the order follows nbdkit's checks. */
  private validate(slot: RequestSlot): void {
    const { type, flags, offset, length } = slot;
    slot.errno = 0;
    if (type > NBD_CMD_BLOCK_STATUS) return this.refuse(slot, NBD_EINVAL, `unknown command ${type}`);
    if ((flags & ~NBD_CMD_FLAGS_KNOWN) !== 0) return this.refuse(slot, NBD_EINVAL, `unknown flags 0x${flags.toString(16)}`);
    // FUA is valid on every command (the spec: "existing clients are known to set this bit on other commands").
    if ((flags & (NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO)) !== 0 && type !== NBD_CMD_WRITE_ZEROES) {
      return this.refuse(slot, NBD_EINVAL, "NO_HOLE and FAST_ZERO apply to WRITE_ZEROES only");
    }
    if ((flags & NBD_CMD_FLAG_DF) !== 0 && (type !== NBD_CMD_READ || !this.structuredReplies)) {
      return this.refuse(slot, NBD_EINVAL, "DF applies to READ with structured replies only");
    }
    if ((flags & NBD_CMD_FLAG_REQ_ONE) !== 0 && type !== NBD_CMD_BLOCK_STATUS) {
      return this.refuse(slot, NBD_EINVAL, "REQ_ONE applies to BLOCK_STATUS only");
    }
    switch (type) {
      case NBD_CMD_DISC:
        return;
      case NBD_CMD_FLUSH:
        if (offset !== 0 || length !== 0) return this.refuse(slot, NBD_EINVAL, "FLUSH offset and length must be 0");
        return;
      case NBD_CMD_WRITE:
      case NBD_CMD_TRIM:
      case NBD_CMD_WRITE_ZEROES:
        if (this.readOnly) return this.refuse(slot, NBD_EPERM, "the export is read-only");
        break;
      case NBD_CMD_BLOCK_STATUS:
        if (!this.baseAllocation) return this.refuse(slot, NBD_EINVAL, "no meta context was negotiated");
        break;
    }
    if (length === 0) return this.refuse(slot, NBD_EINVAL, "zero length");
    if (type === NBD_CMD_READ && length > NBD_REQUEST_BYTES_MAX) {
      return this.refuse(slot, NBD_EINVAL, `READ of ${length} bytes is above ${NBD_REQUEST_BYTES_MAX}`);
    }
    if (offset > this.sizeBytes || length > this.sizeBytes - offset) {
      // The spec: ENOSPC for writes past the end, EINVAL for the rest.
      const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
      return this.refuse(slot, writes ? NBD_ENOSPC : NBD_EINVAL, "request is past the end of the export");
    }
  }

  private refuse(slot: RequestSlot, errno: number, message: string): void {
    slot.errno = errno;
    slot.errorMessage = message;
  }

  /** Calls the device for a validated request (or replies with its validation error). */
  private dispatch(slot: RequestSlot): void {
    if (slot.errno !== 0) {
      this.replyError(slot, slot.errno, slot.errorMessage);
      return;
    }
    const device = this.device;
    const fua = (slot.flags & NBD_CMD_FLAG_FUA) !== 0;
    if (this.observer !== null) slot.startedMs = performance.now();
    try {
      switch (slot.type) {
        case NBD_CMD_READ:
          this.stats.reads++;
          this.inflightReadBytes += slot.length;
          device.read(slot.offset, slot.length).then(slot.onData, slot.onError);
          return;
        case NBD_CMD_WRITE:
          this.stats.writes++;
          this.stats.bytesWritten += slot.length;
          if (device.writeThen !== undefined) device.writeThen(slot.offset, slot.payload!, fua, slot);
          else device.write(slot.offset, slot.payload!, fua).then(slot.onDone, slot.onError);
          return;
        case NBD_CMD_FLUSH:
          this.stats.flushes++;
          device.flush().then(slot.onDone, slot.onError);
          return;
        case NBD_CMD_TRIM:
          this.stats.trims++;
          device.trim(slot.offset, slot.length, fua).then(slot.onDone, slot.onError);
          return;
        case NBD_CMD_WRITE_ZEROES:
          this.stats.writeZeroes++;
          if ((slot.flags & NBD_CMD_FLAG_NO_HOLE) === 0) {
            // FAST_ZERO: BlockDevice.writeZeroes records zeroes without writing data, which is what "fast" means.
            device.writeZeroes(slot.offset, slot.length, fua).then(slot.onDone, slot.onError);
          } else if ((slot.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0) {
            // NO_HOLE means writing real zeroes, which is not faster than the client writing them itself.
            this.replyError(slot, NBD_ENOTSUP, "zeroing without holes is not fast");
          } else {
            writeZeroesAllocated(device, slot.offset, slot.length, fua).then(slot.onDone, slot.onError);
          }
          return;
        case NBD_CMD_CACHE:
          this.stats.caches++;
          device.cache(slot.offset, slot.length).then(slot.onDone, slot.onError);
          return;
        case NBD_CMD_BLOCK_STATUS:
          this.stats.blockStatuses++;
          device.blockStatus(slot.offset, slot.length).then(slot.onExtents, slot.onError);
          return;
      }
    } catch (error) {
      // A device that throws instead of rejecting still gets a reply, not a broken connection.
      this.completeError(slot, error);
      return;
    }
    assert(false, `validated command ${slot.type} is dispatched`);
  }

  // ---- Completions and replies ------------------------------------------------------------------------------

  completeOk(slot: RequestSlot): void {
    if (this.state !== "dead") {
      const at = this.output.reserve(NBD_SIMPLE_REPLY_BYTES);
      writeSimpleReply(this.output.staging, at, 0, slot.cookieHigh, slot.cookieLow);
    }
    this.releaseSlot(slot);
  }

  completeRead(slot: RequestSlot, data: Uint8Array): void {
    if (data.length !== slot.length) {
      this.completeError(slot, new Error(`device read returned ${data.length} bytes, not ${slot.length}`));
      return;
    }
    if (this.state !== "dead") {
      this.stats.bytesRead += data.length;
      const output = this.output;
      if (this.structuredReplies) {
        // One OFFSET_DATA chunk marked DONE: the data is complete before the header goes out, and DF is satisfied.
        const at = output.reserve(NBD_STRUCTURED_REPLY_HEADER_BYTES + 8);
        writeStructuredReplyHeader(
          output.staging,
          at,
          NBD_REPLY_FLAG_DONE,
          NBD_REPLY_TYPE_OFFSET_DATA,
          slot.cookieHigh,
          slot.cookieLow,
          8 + data.length,
        );
        writeU64(output.staging, at + NBD_STRUCTURED_REPLY_HEADER_BYTES, slot.offset);
      } else {
        const at = output.reserve(NBD_SIMPLE_REPLY_BYTES);
        writeSimpleReply(output.staging, at, 0, slot.cookieHigh, slot.cookieLow);
      }
      output.appendPayload(data);
    }
    this.releaseSlot(slot);
  }

  completeBlockStatus(slot: RequestSlot, extents: BlockStatusExtent[]): void {
    if (this.state !== "dead") {
      // Descriptors must be non-empty, stay within the request, and SHOULD differ from their neighbour: clamp and
      // merge what the device returned; REQ_ONE keeps only the first.
      const limit = (slot.flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : NBD_BLOCK_STATUS_EXTENTS_MAX;
      const lengths: number[] = [];
      const states: number[] = [];
      let remaining = slot.length;
      for (const extent of extents) {
        if (remaining === 0) break;
        const length = Math.min(extent.length, remaining);
        if (!(length > 0)) break;
        const state = (extent.hole ? NBD_STATE_HOLE : 0) | (extent.zero ? NBD_STATE_ZERO : 0);
        if (states.length > 0 && states[states.length - 1] === state) {
          lengths[lengths.length - 1]! += length;
        } else {
          if (states.length === limit) break;
          lengths.push(length);
          states.push(state);
        }
        remaining -= length;
      }
      if (lengths.length === 0) {
        this.completeError(slot, new Error("device block status returned no extent"));
        return;
      }
      const payloadBytes = 4 + 8 * lengths.length;
      const output = this.output;
      const at = output.reserve(NBD_STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
      const staging = output.staging;
      writeStructuredReplyHeader(
        staging,
        at,
        NBD_REPLY_FLAG_DONE,
        NBD_REPLY_TYPE_BLOCK_STATUS,
        slot.cookieHigh,
        slot.cookieLow,
        payloadBytes,
      );
      let position = at + NBD_STRUCTURED_REPLY_HEADER_BYTES;
      writeU32(staging, position, NBD_META_CONTEXT_BASE_ALLOCATION_ID);
      position += 4;
      for (let index = 0; index < lengths.length; index++) {
        writeU32(staging, position, lengths[index]!);
        writeU32(staging, position + 4, states[index]!);
        position += 8;
      }
    }
    this.releaseSlot(slot);
  }

  completeError(slot: RequestSlot, error: unknown): void {
    const errno = nbdErrnoFor(error);
    // Anything but an LsvdError is a bug somewhere below: say what it was, not only its message.
    const message = error instanceof LsvdError ? error.message : error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    this.replyError(slot, errno, message);
  }

  /**
   * Error reply: a structured ERROR chunk (with a message) when negotiated, since READ must not get a simple one.
   * Logged even when the client is gone: the failure happened all the same.
   */
  private replyError(slot: RequestSlot, errno: number, message: string): void {
    assert(errno !== 0, "an error reply carries an error");
    slot.failed = true;
    const command = commandName(slot.type);
    this.options.logFailure(
      `${command} ${errno}`,
      `nbd ${this.options.name}: ${command} at ${slot.offset} length ${slot.length} failed: ${errnoName(errno)} (${message})`,
    );
    if (this.state !== "dead") {
      this.stats.errorReplies++;
      const output = this.output;
      if (this.structuredReplies) {
        const payload = encodeErrorChunkPayload(errno, message);
        const at = output.reserve(NBD_STRUCTURED_REPLY_HEADER_BYTES);
        writeStructuredReplyHeader(
          output.staging,
          at,
          NBD_REPLY_FLAG_DONE,
          NBD_REPLY_TYPE_ERROR,
          slot.cookieHigh,
          slot.cookieLow,
          payload.length,
        );
        output.appendPayload(payload);
      } else {
        const at = output.reserve(NBD_SIMPLE_REPLY_BYTES);
        writeSimpleReply(output.staging, at, errno, slot.cookieHigh, slot.cookieLow);
      }
    }
    this.releaseSlot(slot);
  }

  // ---- Slots and lifecycle ----------------------------------------------------------------------------------

  private acquireSlot(): RequestSlot {
    assert(this.inflight < NBD_INFLIGHT_PER_CONNECTION_MAX, "a slot is free when a request is parsed");
    this.inflight++;
    const slot = this.freeSlots.pop();
    if (slot !== undefined) return slot;
    this.slotsMade++;
    assert(this.slotsMade <= NBD_INFLIGHT_PER_CONNECTION_MAX, "slots are bounded");
    return new RequestSlot(this);
  }

  private releaseSlot(slot: RequestSlot): void {
    assert(this.inflight > 0, "released slot was in flight");
    if (slot.type === NBD_CMD_READ && slot.errno === 0) {
      this.inflightReadBytes -= slot.length;
      assert(this.inflightReadBytes >= 0, "in-flight read bytes balance");
    } else if (slot.type === NBD_CMD_WRITE && slot.errno === 0) {
      this.inflightWriteBytes -= slot.length;
      assert(this.inflightWriteBytes >= 0, "in-flight write bytes balance");
    }
    if (this.observer !== null && (slot.startedMs !== 0 || slot.failed)) {
      this.observer.requestDone(slot.type, slot.startedMs === 0 ? -1 : (performance.now() - slot.startedMs) / 1000, slot.failed);
    }
    slot.startedMs = 0;
    slot.failed = false;
    slot.payload = null;
    if (slot.pooled !== null) {
      this.payloadBuffers.give(slot.pooled);
      slot.pooled = null;
    }
    if (slot.keptChunk >= 0) {
      this.chunkKeeper!.give(slot.keptChunk);
      slot.keptChunk = -1;
    }
    slot.errorMessage = "";
    this.inflight--;
    this.freeSlots.push(slot);
    if (this.state === "open") {
      if (this.paused && !this.parsing) this.unblock();
    } else {
      this.maybeEnded();
      this.maybeSettled();
    }
  }

  private settled = false;
  get isSettled(): boolean {
    return this.settled;
  }

  private maybeSettled(): void {
    if (this.state !== "dead" || this.inflight > 0 || this.settled) return;
    this.settled = true;
    this.options.onSettled();
  }

  private maybeEnded(): void {
    if (this.state !== "ending" || this.inflight > 0) return;
    // Replies still queued go out first; if the socket is full, the drain callback brings us back here. A write that
    // fails closes the queue and, through the connection, kills this session: nothing is left to wait for then.
    this.output.flush();
    if (this.state !== "ending" || !this.output.isEmpty) return;
    this.state = "dead";
    this.options.onDrainedForEnd();
    this.maybeSettled();
  }

  /**
   * The OutputQueue sent bytes (after a drain, or in a flush that may run inside parse() when a batch fills up):
   * resume reading if the output limit was what held it.
   */
  private onOutputDrained(): void {
    if (this.state === "open") {
      if (this.paused && !this.parsing) this.unblock();
    } else {
      this.maybeEnded();
    }
  }

  private protocolError(reason: string): void {
    this.stats.protocolErrors++;
    this.options.logFailure("protocol error", `nbd ${this.options.name}: closing connection: ${reason}`);
    this.kill();
    this.options.onProtocolError(reason);
  }

  private kill(): void {
    if (this.state === "dead") return;
    this.state = "dead";
    this.backlog = [];
    this.output.close();
    this.dropPartialRequest();
    this.maybeSettled();
  }

  /** A WRITE still receiving (or skipping) its payload will never be dispatched: free its slot. */
  private dropPartialRequest(): void {
    const slots = [this.payloadSlot, this.discardSlot];
    this.payloadSlot = null;
    this.discardSlot = null;
    this.payloadFilled = 0;
    this.discardBytes = 0;
    this.headerFilled = 0;
    for (const slot of slots) if (slot !== null) this.releaseSlot(slot);
  }
}

/**
 * WRITE_ZEROES with NO_HOLE: real zero writes (allocated). Up to NBD_ZERO_WRITE_BYTES_MAX (the largest client WRITE)
 * it is one volume write, so after the cache is lost it is wholly present or wholly absent like any write; a longer
 * one (the spec puts no bound on WRITE_ZEROES) is written as such whole writes one after another.
 */
async function writeZeroesAllocated(device: BlockDevice, offset: number, length: number, fua: boolean): Promise<void> {
  zeroBuffer ??= new Uint8Array(NBD_ZERO_WRITE_BYTES_MAX);
  let done = 0;
  while (done < length) {
    const pieceBytes = Math.min(NBD_ZERO_WRITE_BYTES_MAX, length - done);
    await device.write(offset + done, zeroBuffer.subarray(0, pieceBytes), fua);
    done += pieceBytes;
  }
}
