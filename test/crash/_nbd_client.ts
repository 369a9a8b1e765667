// A small pipelining NBD client for the crash harness (folder-private): fixed newstyle handshake with NBD_OPT_GO,
// then READ / WRITE / FLUSH / TRIM / WRITE_ZEROES / DISC with many requests in flight, matched to simple replies by
// cookie. Protocol: NetworkBlockDevice/nbd doc/proto.md (as src/nbd/ cites it); codecs from src/nbd/wire.ts.
//
// When the server dies (SIGKILL), every request still in flight is rejected with NbdClosedError: the harness counts
// exactly those as unacknowledged.

import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_GREETING_BYTES,
  NBD_INFO_EXPORT,
  NBD_OPT_GO,
  NBD_OPTION_REPLY_HEADER_BYTES,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_SIMPLE_REPLY_BYTES,
  NBD_SIMPLE_REPLY_MAGIC,
  encodeInfoRequest,
  encodeOption,
  encodeRequestHeader,
  readU16,
  readU32,
  readU64,
  writeU32,
} from "../../src/nbd/wire.ts";
import { ByteQueue } from "../nbd/byte_queue.ts";

/** Handshake reads give up after this long (the server is local; a hang is a bug). */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Option replies read before GO must have finished. */
const OPTION_REPLIES_MAX = 64;
/** Requests in flight per client; callers stay below it (the server's own bound is 128). */
export const NBD_CLIENT_INFLIGHT_MAX = 64;

export class NbdClosedError extends Error {
  constructor(message = "NBD connection closed") {
    super(message);
    this.name = "NbdClosedError";
  }
}

export class NbdReplyError extends Error {
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super(`NBD ${what} failed with error ${errno}`);
    this.name = "NbdReplyError";
  }
}

interface Pending {
  what: string;
  readBytes: number;
  resolve: (data: Uint8Array) => void;
  reject: (error: Error) => void;
}

export class NbdClient {
  private readonly received = new ByteQueue();
  private wake: (() => void) | null = null;
  private outgoing: Uint8Array[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private transmission = false;
  /** A parsed reply header whose READ payload has not fully arrived yet. */
  private partial: { cookie: number; error: number } | null = null;
  private socket!: import("bun").Socket<undefined>;
  closed = false;
  sizeBytes = 0;
  transmissionFlags = 0;

  /** Connects and negotiates export `exportName` ("" is the server's default export). */
  static async connect(socketPath: string, exportName = ""): Promise<NbdClient> {
    const client = new NbdClient();
    client.socket = await Bun.connect({
      unix: socketPath,
      socket: {
        data: (_socket, data) => client.onData(new Uint8Array(data)),
        drain: () => client.flushOutgoing(),
        close: () => client.onClose(),
        error: () => client.onClose(),
      },
    });
    try {
      await client.negotiate(exportName);
    } catch (error) {
      client.socket.terminate();
      throw error;
    }
    return client;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  // ---- Bytes in ------------------------------------------------------------------------------------------------

  private onData(data: Uint8Array): void {
    this.received.push(data);
    if (this.transmission) this.parseReplies();
    else this.wake?.();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const request of pending) request.reject(new NbdClosedError(`NBD connection closed during ${request.what}`));
  }

  /** Takes exactly n buffered bytes (the caller checked that they are there). */
  private take(n: number): Uint8Array {
    return this.received.take(n);
  }

  private async readExact(n: number): Promise<Uint8Array> {
    const deadline = Date.now() + HANDSHAKE_TIMEOUT_MS;
    while (this.received.length < n) {
      if (this.closed) throw new NbdClosedError(`NBD connection closed in the handshake`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("NBD handshake timed out");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.take(n);
  }

  private parseReplies(): void {
    for (;;) {
      if (this.partial) {
        const request = this.pending.get(this.partial.cookie)!;
        if (this.received.length < request.readBytes) return;
        const data = this.take(request.readBytes);
        this.pending.delete(this.partial.cookie);
        this.partial = null;
        request.resolve(data);
        continue;
      }
      if (this.received.length < NBD_SIMPLE_REPLY_BYTES) return;
      const header = this.take(NBD_SIMPLE_REPLY_BYTES);
      if (readU32(header, 0) !== NBD_SIMPLE_REPLY_MAGIC) {
        this.fatal(`unexpected reply magic 0x${readU32(header, 0).toString(16)}`);
        return;
      }
      const error = readU32(header, 4);
      const cookie = readU32(header, 12);
      const request = this.pending.get(cookie);
      if (!request) {
        this.fatal(`reply for unknown cookie ${cookie}`);
        return;
      }
      if (error !== 0) {
        this.pending.delete(cookie);
        request.reject(new NbdReplyError(error, request.what));
      } else if (request.readBytes > 0) {
        this.partial = { cookie, error };
      } else {
        this.pending.delete(cookie);
        request.resolve(new Uint8Array(0));
      }
    }
  }

  private fatal(message: string): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const request of pending) request.reject(new Error(`NBD protocol error: ${message}`));
    this.closed = true;
    this.socket.terminate();
  }

  // ---- Bytes out -----------------------------------------------------------------------------------------------

  private send(bytes: Uint8Array): void {
    this.outgoing.push(bytes);
    if (this.outgoing.length === 1) this.flushOutgoing();
  }

  private flushOutgoing(): void {
    while (this.outgoing.length > 0 && !this.closed) {
      const head = this.outgoing[0]!;
      const written = this.socket.write(head);
      if (written < 0) return this.onClose();
      if (written < head.byteLength) {
        this.outgoing[0] = head.subarray(written);
        return; // the drain handler continues
      }
      this.outgoing.shift();
    }
  }

  // ---- Handshake -----------------------------------------------------------------------------------------------

  private async negotiate(exportName: string): Promise<void> {
    const greeting = await this.readExact(NBD_GREETING_BYTES);
    if (readU32(greeting, 0) !== 0x4e42444d || readU32(greeting, 8) !== 0x49484156) throw new Error("NBD: not a newstyle server");
    const flags = new Uint8Array(4);
    writeU32(flags, 0, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    this.send(flags);
    this.send(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName, infoTypes: [] })));
    for (let index = 0; index < OPTION_REPLIES_MAX; index++) {
      const header = await this.readExact(NBD_OPTION_REPLY_HEADER_BYTES);
      const replyType = readU32(header, 12);
      const length = readU32(header, 16);
      const data = length > 0 ? await this.readExact(length) : new Uint8Array(0);
      if (replyType === NBD_REP_ACK) {
        if (this.sizeBytes === 0) throw new Error("NBD: GO acknowledged without NBD_INFO_EXPORT");
        this.transmission = true;
        if (this.received.length > 0) this.parseReplies();
        return;
      }
      if (replyType >= 2 ** 31) throw new Error(`NBD: NBD_OPT_GO refused (reply type 0x${replyType.toString(16)})`);
      if (replyType === NBD_REP_INFO && readU16(data, 0) === NBD_INFO_EXPORT) {
        this.sizeBytes = readU64(data, 2);
        this.transmissionFlags = readU16(data, 10);
      }
    }
    throw new Error("NBD: too many option replies");
  }

  // ---- Requests ------------------------------------------------------------------------------------------------

  private request(what: string, type: number, flags: number, offset: number, length: number, payload: Uint8Array | null, readBytes: number): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new NbdClosedError(`NBD connection closed before ${what}`));
    if (this.pending.size >= NBD_CLIENT_INFLIGHT_MAX) return Promise.reject(new Error(`NBD client: more than ${NBD_CLIENT_INFLIGHT_MAX} requests in flight`));
    const cookie = this.nextCookie;
    this.nextCookie = this.nextCookie >= 0xffff_ffff ? 1 : this.nextCookie + 1;
    const promise = new Promise<Uint8Array>((resolve, reject) => this.pending.set(cookie, { what, readBytes, resolve, reject }));
    this.send(encodeRequestHeader({ flags, type, cookieHigh: 0, cookieLow: cookie, offset, length }));
    if (payload) this.send(payload);
    return promise;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.request(`READ ${offset}+${length}`, NBD_CMD_READ, 0, offset, length, null, length);
  }

  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    await this.request(`WRITE ${offset}+${data.byteLength}`, NBD_CMD_WRITE, fua ? NBD_CMD_FLAG_FUA : 0, offset, data.byteLength, data, 0);
  }

  async flush(): Promise<void> {
    await this.request("FLUSH", NBD_CMD_FLUSH, 0, 0, 0, null, 0);
  }

  async trim(offset: number, length: number, fua = false): Promise<void> {
    await this.request(`TRIM ${offset}+${length}`, NBD_CMD_TRIM, fua ? NBD_CMD_FLAG_FUA : 0, offset, length, null, 0);
  }

  async writeZeroes(offset: number, length: number, fua = false): Promise<void> {
    await this.request(`WRITE_ZEROES ${offset}+${length}`, NBD_CMD_WRITE_ZEROES, fua ? NBD_CMD_FLAG_FUA : 0, offset, length, null, 0);
  }

  /** NBD_CMD_DISC (no reply), then close. */
  disconnect(): void {
    if (this.closed) return;
    this.send(encodeRequestHeader({ flags: 0, type: NBD_CMD_DISC, cookieHigh: 0, cookieLow: 0, offset: 0, length: 0 }));
    this.socket.end();
  }

  terminate(): void {
    if (!this.closed) this.socket.terminate();
    this.onClose();
  }
}
