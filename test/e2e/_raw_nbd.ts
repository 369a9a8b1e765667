// A raw NBD client for the e2e protocol tests: a Bun socket with exact, time-bounded reads, a fixed-newstyle
// negotiation ending in NBD_OPT_GO (simple replies only), and request/reply helpers. It can send what no real
// client would (bad magic, unknown commands, oversize lengths, half a payload). Adapted from test/nbd/raw_client.ts
// (owned by the nbd tests); wire encodings come from src/nbd/wire.ts, whose own tests pin them.

import {
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

export const RAW_READ_TIMEOUT_MS = 10_000;
/** Option replies read before GO's final ACK; more means the server is looping. */
const OPTION_REPLIES_MAX = 64;

export type Endpoint = { unix: string } | { hostname: string; port: number };

/** The socket address in an lsvd URI: nbd+unix:///?socket=PATH or nbd://HOST:PORT. */
export function endpointOf(uri: string): Endpoint {
  const unix = /^nbd\+unix:\/\/\/[^?]*\?socket=(.+)$/.exec(uri);
  if (unix) return { unix: unix[1]! };
  const tcp = /^nbd:\/\/([^:/]+):(\d+)/.exec(uri);
  if (tcp) return { hostname: tcp[1]!, port: Number(tcp[2]) };
  throw new Error(`endpointOf: not an NBD URI: ${uri}`);
}

export interface SimpleReply {
  magic: number;
  error: number;
  cookie: number;
  data: Uint8Array;
}

export class RawNbdClient {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private wake: (() => void) | null = null;
  private socket!: import("bun").Socket<undefined>;
  closed = false;
  sizeBytes = 0;
  transmissionFlags = 0;

  static async connect(endpoint: Endpoint): Promise<RawNbdClient> {
    const client = new RawNbdClient();
    const handlers = {
      data: (_socket: unknown, data: Uint8Array) => {
        client.chunks.push(new Uint8Array(data));
        client.buffered += data.length;
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

  /** Connects and negotiates (GO on the default export). */
  static async open(uri: string): Promise<RawNbdClient> {
    const client = await RawNbdClient.connect(endpointOf(uri));
    await client.negotiate();
    return client;
  }

  /** Writes all bytes; a partial write is retried (bounded) until done. */
  async send(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    const deadline = Date.now() + RAW_READ_TIMEOUT_MS;
    while (offset < bytes.length) {
      const written = this.socket.write(bytes.subarray(offset));
      if (written < 0) throw new Error("RawNbdClient: socket closed while sending");
      offset += written;
      if (offset < bytes.length) {
        if (Date.now() > deadline) throw new Error("RawNbdClient: send timed out");
        await Bun.sleep(1);
      }
    }
  }

  /** Reads exactly `length` bytes, or throws on close or timeout. */
  async read(length: number, timeoutMs = RAW_READ_TIMEOUT_MS): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < length) {
      if (this.closed) throw new Error(`RawNbdClient: closed with ${this.buffered}/${length} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`RawNbdClient: timed out with ${this.buffered}/${length} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    const result = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const chunk = this.chunks[0]!;
      const take = Math.min(chunk.length, length - filled);
      result.set(chunk.subarray(0, take), filled);
      filled += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    this.buffered -= length;
    return result;
  }

  /** Waits for the server to close the connection; false on timeout. */
  async waitClosed(timeoutMs = RAW_READ_TIMEOUT_MS): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await Bun.sleep(5);
    return this.closed;
  }

  get pendingBytes(): number {
    return this.buffered;
  }

  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once (no FIN handshake niceties): a client crash. */
  terminate(): void {
    this.socket.terminate();
  }

  /** Greeting, client flags, then NBD_OPT_GO; records the export size and transmission flags. */
  async negotiate(): Promise<void> {
    await this.read(NBD_GREETING_BYTES);
    const flags = new Uint8Array(4);
    writeU32(flags, 0, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    await this.send(flags);
    await this.send(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "", infoTypes: [] })));
    for (let index = 0; index < OPTION_REPLIES_MAX; index++) {
      const header = await this.read(NBD_OPTION_REPLY_HEADER_BYTES);
      const length = readU32(header, 16);
      const data = length > 0 ? await this.read(length) : new Uint8Array(0);
      const replyType = readU32(header, 12);
      if (replyType === NBD_REP_INFO && readU16(data, 0) === NBD_INFO_EXPORT) {
        this.sizeBytes = readU64(data, 2);
        this.transmissionFlags = readU16(data, 10);
      }
      if (replyType === NBD_REP_ACK) return;
      if (replyType >= 2 ** 31) throw new Error(`RawNbdClient: GO refused (reply type 0x${replyType.toString(16)})`);
    }
    throw new Error("RawNbdClient: too many option replies");
  }

  /** Sends one request header (and a payload, if given) in a single write. */
  async request(type: number, offset: number, length: number, options: { flags?: number; cookie?: number; payload?: Uint8Array; magic?: number } = {}): Promise<void> {
    const header = encodeRequestHeader({ flags: options.flags ?? 0, type, cookieHigh: 0, cookieLow: options.cookie ?? 1, offset, length });
    if (options.magic !== undefined) writeU32(header, 0, options.magic);
    const bytes = new Uint8Array(header.length + (options.payload?.length ?? 0));
    bytes.set(header, 0);
    if (options.payload) bytes.set(options.payload, header.length);
    await this.send(bytes);
  }

  /** One simple reply; a successful READ carries `dataBytes` of data. */
  async readSimpleReply(dataBytes = 0): Promise<SimpleReply> {
    const header = await this.read(NBD_SIMPLE_REPLY_BYTES);
    const magic = readU32(header, 0);
    if (magic !== NBD_SIMPLE_REPLY_MAGIC) throw new Error(`RawNbdClient: reply magic 0x${magic.toString(16)}`);
    const error = readU32(header, 4);
    const data = error === 0 && dataBytes > 0 ? await this.read(dataBytes) : new Uint8Array(0);
    return { magic, error, cookie: readU32(header, 12), data };
  }
}
