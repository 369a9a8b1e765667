// A raw NBD client for tests: a Bun socket with exact reads (bounded by a timeout), plus the handshake and
// request helpers the protocol tests need. It speaks through src/nbd/wire.ts codecs, whose own tests pin them.

import {
  NBD_CMD_READ,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_GREETING_BYTES,
  NBD_INFO_EXPORT,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_REPLY_HEADER_BYTES,
  NBD_REP_ACK,
  NBD_REP_INFO,
  type OptionReply,
  type ReplyHeader,
  decodeReplyHeader,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  readU16,
  readU32,
  readU64,
  writeU32,
} from "../../src/nbd/wire.ts";
import { ByteQueue } from "./byte_queue.ts";

export const READ_TIMEOUT_MS = 5000;

export type Endpoint = { unix: string } | { hostname: string; port: number };

export class RawClient {
  private readonly received = new ByteQueue();
  private wake: (() => void) | null = null;
  closed = false;
  private socket!: import("bun").Socket<undefined>;

  static async connect(endpoint: Endpoint): Promise<RawClient> {
    const client = new RawClient();
    const handlers = {
      data: (_socket: unknown, data: Uint8Array) => {
        client.received.push(new Uint8Array(data));
        client.wake?.();
      },
      close: () => {
        client.closed = true;
        client.wake?.();
      },
      error: () => {
        client.closed = true;
        client.wake?.();
      },
    };
    client.socket =
      "unix" in endpoint
        ? await Bun.connect({ unix: endpoint.unix, socket: handlers })
        : await Bun.connect({ hostname: endpoint.hostname, port: endpoint.port, socket: handlers });
    return client;
  }

  /** Writes all bytes (tests send little; a partial write is retried until done). */
  async send(bytes: Uint8Array, timeoutMs = READ_TIMEOUT_MS): Promise<void> {
    let offset = 0;
    const deadline = Date.now() + timeoutMs;
    while (offset < bytes.length) {
      const written = this.socket.write(bytes.subarray(offset));
      if (written < 0) throw new Error("RawClient: socket closed while sending");
      offset += written;
      if (offset < bytes.length) {
        if (Date.now() > deadline) throw new Error("RawClient: send timed out");
        await Bun.sleep(1);
      }
    }
  }

  /** Reads exactly `length` bytes, or throws on close/timeout. */
  async read(length: number, timeoutMs = READ_TIMEOUT_MS): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < length) {
      if (this.closed) throw new Error(`RawClient: closed with ${this.received.length}/${length} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`RawClient: timed out with ${this.received.length}/${length} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.received.take(length);
  }

  /** Waits for the server to close the connection (nothing else may arrive); false on timeout. */
  async waitClosed(timeoutMs = READ_TIMEOUT_MS): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await Bun.sleep(5);
    return this.closed;
  }

  get pendingBytes(): number {
    return this.received.length;
  }

  end(): void {
    this.socket.end();
  }

  terminate(): void {
    this.socket.terminate();
  }

  // ---- Handshake --------------------------------------------------------------------------------------------

  /** Reads the greeting and sends client flags; returns the handshake flags. */
  async greet(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const greeting = await this.read(NBD_GREETING_BYTES);
    const flags = new Uint8Array(4);
    writeU32(flags, 0, clientFlags);
    await this.send(flags);
    return readU16(greeting, 16);
  }

  async sendOption(option: number, data?: Uint8Array): Promise<void> {
    await this.send(encodeOption(option, data));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(NBD_OPTION_REPLY_HEADER_BYTES);
    const length = readU32(header, 16);
    const data = length > 0 ? await this.read(length) : new Uint8Array(0);
    if (readU64(header, 0) !== 0x3e889045565a9) throw new Error("RawClient: bad option reply magic");
    return { option: readU32(header, 8), replyType: readU32(header, 12), data };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (let index = 0; index < 64; index++) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.replyType === NBD_REP_ACK || reply.replyType >= 2 ** 31) return replies;
    }
    throw new Error("RawClient: too many option replies");
  }

  /** Full fixed-newstyle negotiation ending in GO; returns size and transmission flags. */
  async negotiate(options: { structured?: boolean; meta?: boolean; exportName?: string } = {}): Promise<{
    sizeBytes: number;
    transmissionFlags: number;
  }> {
    await this.greet();
    if (options.structured) {
      await this.sendOption(NBD_OPT_STRUCTURED_REPLY);
      expectAck(await this.readOptionReplies());
    }
    if (options.meta) {
      await this.sendOption(
        NBD_OPT_SET_META_CONTEXT,
        encodeMetaContextRequest({ exportName: options.exportName ?? "", queries: ["base:allocation"] }),
      );
      expectAck(await this.readOptionReplies());
    }
    await this.sendOption(NBD_OPT_GO, encodeInfoRequest({ exportName: options.exportName ?? "", infoTypes: [] }));
    const replies = await this.readOptionReplies();
    expectAck(replies);
    const info = replies.find((reply) => reply.replyType === NBD_REP_INFO && readU16(reply.data, 0) === NBD_INFO_EXPORT);
    if (!info) throw new Error("RawClient: GO without NBD_INFO_EXPORT");
    return { sizeBytes: readU64(info.data, 2), transmissionFlags: readU16(info.data, 10) };
  }

  // ---- Transmission -----------------------------------------------------------------------------------------

  /** One request header (and payload) in a single write; `magic` overrides the request magic (hostile tests). */
  async request(
    type: number,
    offset: number,
    length: number,
    options: { flags?: number; cookie?: number; payload?: Uint8Array; magic?: number } = {},
  ): Promise<void> {
    const header = encodeRequestHeader({
      flags: options.flags ?? 0,
      type,
      cookieHigh: 0,
      cookieLow: options.cookie ?? 1,
      offset,
      length,
    });
    if (options.magic !== undefined) writeU32(header, 0, options.magic);
    if (options.payload === undefined) return this.send(header);
    const bytes = new Uint8Array(header.length + options.payload.length);
    bytes.set(header, 0);
    bytes.set(options.payload, header.length);
    await this.send(bytes);
  }

  async readReplyHeader(): Promise<ReplyHeader> {
    const magic = await this.read(4);
    const magicValue = readU32(magic, 0);
    const restBytes = magicValue === 0x67446698 ? 12 : 16;
    const rest = await this.read(restBytes);
    const whole = new Uint8Array(4 + restBytes);
    whole.set(magic, 0);
    whole.set(rest, 4);
    const header = decodeReplyHeader(whole, 0);
    if (header === null) throw new Error("RawClient: incomplete reply header");
    return header;
  }

  /** A simple reply; for a successful READ pass the length to read its data. */
  async readSimpleReply(dataBytes = 0): Promise<{ error: number; cookie: number; data: Uint8Array }> {
    const header = await this.readReplyHeader();
    if (header.kind !== "simple") throw new Error(`RawClient: expected a simple reply, got ${JSON.stringify(header)}`);
    const data = header.error === 0 && dataBytes > 0 ? await this.read(dataBytes) : new Uint8Array(0);
    return { error: header.error, cookie: header.cookieLow, data };
  }

  /** One structured chunk (or a simple reply, reported with type -1 and its error). */
  async readChunk(): Promise<{ flags: number; type: number; cookie: number; payload: Uint8Array; error: number }> {
    const header = await this.readReplyHeader();
    if (header.kind === "simple") return { flags: 1, type: -1, cookie: header.cookieLow, payload: new Uint8Array(0), error: header.error };
    const payload = header.payloadBytes > 0 ? await this.read(header.payloadBytes) : new Uint8Array(0);
    const error = header.type >= 2 ** 15 ? readU32(payload, 0) : 0;
    return { flags: header.flags, type: header.type, cookie: header.cookieLow, payload, error };
  }
}

export function expectAck(replies: OptionReply[]): void {
  const last = replies[replies.length - 1];
  if (!last || last.replyType !== NBD_REP_ACK) {
    throw new Error(`RawClient: expected ACK, got ${last ? last.replyType.toString(16) : "nothing"}`);
  }
}

export const READ = NBD_CMD_READ;
