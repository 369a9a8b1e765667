// NBD server: Bun.listen on TCP and/or a unix socket (or on sockets systemd passed), one Connection per client
// (handshake, then a session), and the connection lifecycle: accept (bounded), close on protocol errors and
// handshake timeouts, clean close().
// Spec: NetworkBlockDevice/nbd doc/proto.md; URIs per the NBD URI spec (nbd://host:port/name,
// nbd+unix:///name?socket=PATH). Wire details live in wire.ts, negotiation in handshake.ts, requests in session.ts.
// Rules in docs/architecture.md, "Connections".
//
// Two steps, so that a command can bind before it does anything irreversible: listenNbd() binds every listener (a
// unix socket path where a server answers is refused, a stale one replaced; a port in use fails) and holds the
// clients that connect; serve() attaches the device and greets them. startNbdServer() does both.
//
// Exports: serve() offers one device; serveExports() several, each under its own name (lsvd serve --export). The
// handshake picks one per connection (NBD_OPT_LIST lists them all); each export counts its own requests.
//
// Limits: NBD_CONNECTIONS_MAX connections at once, of which at most NBD_NEGOTIATING_MAX have not finished
// negotiating (clients held before serve() count as negotiating); a client must finish negotiating within the
// handshake timeout of its greeting. So clients that connect and say nothing cannot lock anyone out (qemu learnt
// this as CVE-2024-7409 and drops them after 10 s too).
//
// TLS (--tls on|require): the handshake answers NBD_OPT_STARTTLS with an ACK; the connection sends it in the clear,
// then upgrades its socket in place (Bun's socket.upgradeTLS, server side) and goes on negotiating over TLS. The
// handshake timeout keeps running through the TLS handshake, so a client that stalls or sends garbage there is
// dropped like one that stalls in the clear. Rules in docs/architecture.md, "TLS".
//
// NBD on io_uring (`ring` given, lsvd serve --nbd-io uring): the listeners are sockets of our own whose accepts,
// receives and sends are ops on that ring (uring_socket.ts); everything above the bytes is the same. TLS needs
// Bun's sockets, so a server with `ring` offers no TLS.
//
// A connection is counted from accept until its socket is closed AND none of its device calls is in flight, so
// connectionCount() returning to 0 means nothing of it is left, and close() resolves only when the device is no
// longer being called on anyone's behalf.

import { lstatSync, unlinkSync } from "node:fs";
import {
  NBD_CLOSE_DRAIN_MS_MAX,
  NBD_CONNECTIONS_MAX,
  NBD_ERROR_LOG_LINES_PER_SECOND,
  NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT,
  NBD_NEGOTIATING_MAX,
  NBD_URING_LISTENERS_MAX,
  NBD_URING_RECEIVE_BUFFERS,
  NBD_URING_RECEIVE_BYTES,
} from "../constants.ts";
import { IOError, InvalidArgumentError, assert } from "../errors.ts";
import type { BlockDevice } from "./block_device.ts";
import { Handshake, type ExportInfo, type TlsMode } from "./handshake.ts";
import { LogLimiter } from "./log_limiter.ts";
import { OutputQueue } from "./output_queue.ts";
import { NbdSession, newNbdStats, type ChunkKeeper, type NbdRequestObserver, type NbdStats } from "./session.ts";
import type { TlsServerOptions } from "./tls_credentials.ts";
import { UringListener, type UringSocket } from "./uring_socket.ts";
import { listenStream } from "../../ffi/socket.ts";
import { ADDRESS_IN_USE, describeSocketAddress, type SocketAddress } from "../ops/socket_address.ts";
import type { Uring } from "../../ffi/uring.ts";
import { ProvidedBuffers } from "../../ffi/uring_buffers.ts";

export interface NbdListenOptions {
  socketPath?: string;
  listen?: { host: string; port: number };
  /**
   * Listening sockets bound by someone else (systemd socket activation), with their addresses. They are served
   * as they are; close() stops serving them but never unlinks a unix socket path of theirs.
   */
  inherited?: Array<{ fd: number; address: { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number } }>;
  log?: (line: string) => void;
  /**
   * Failures clients cause (failed requests, protocol errors, refused and timed-out connections), rate-limited;
   * default `log`. `lsvd serve --quiet` keeps these.
   */
  errorLog?: (line: string) => void;
  /** A client must finish negotiating this long after its greeting (default NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT). */
  handshakeTimeoutMs?: number;
  /** TLS offered (`on`) or required (`require`) with these credentials; absent: NOTLS, STARTTLS is unsupported. */
  tls?: { mode: Exclude<TlsMode, "off">; options: TlsServerOptions };
  /**
   * NBD on io_uring: accept, receive and send as ops on this ring (opened with at least NBD_URING_SOCKET_SLOTS socket
   * slots, and closed by the caller after close()). Not with `tls`.
   */
  ring?: Uring;
}

export interface NbdExportOptions {
  device: BlockDevice;
  /** Default "". The empty name always selects the export too (the spec's default export). */
  exportName?: string;
  description?: string;
  /** Told when each request ends (lsvd serve's latency histograms). */
  requestObserver?: NbdRequestObserver;
}

export type NbdServerOptions = NbdListenOptions & NbdExportOptions;

export interface NbdServerStats extends NbdStats {
  connections: number;
  /** Connections that have not finished negotiating (or wait for serve()). */
  negotiating: number;
  /** Requests parsed and not yet answered, over all connections. */
  requestsInFlight: number;
  /** TLS handshakes completed, and failed (bad certificate, not TLS, peer gone). */
  tlsHandshakes: number;
  tlsHandshakeFailures: number;
}

/** One export's share of the figures: its requests, and the connections that chose it. */
export interface NbdExportStats extends NbdStats {
  connections: number;
  requestsInFlight: number;
}

export interface NbdServer {
  /** One URI per listener: nbd://127.0.0.1:10809 (port resolved when 0 was asked), nbd+unix:///?socket=PATH. */
  readonly addresses: string[];
  /** The listeners' URIs naming export `name`. */
  addressesFor(name: string): string[];
  /** Starts serving `device`: clients held since listenNbd() get their greeting now. Once only (or serveExports). */
  serve(options: NbdExportOptions): void;
  /** Starts serving several exports, by unique names. Once only (or serve). */
  serveExports(exports: readonly NbdExportOptions[]): void;
  /** The figures of export `name` (zeroes before serve). */
  exportStats(name: string): NbdExportStats;
  /**
   * Resolves once no connection of export `name` is left (socket closed, no device call in flight). After close()
   * began none comes back: a server of several exports closes each export's device as soon as its own clients are
   * gone, not when every export's are.
   */
  exportIdle(name: string): Promise<void>;
  /** Connections accepted and not finished (socket open, or device calls still in flight for it). */
  connectionCount(): number;
  /** Stops accepting, lets in-flight requests finish and their replies go out, ends connections. */
  close(): Promise<void>;
  stats(): NbdServerStats;
}

type BunSocket = import("bun").Socket<Connection | undefined>;
type BunListener = import("bun").TCPSocketListener<Connection | undefined> | import("bun").UnixSocketListener<Connection | undefined>;
/** What a connection writes to and ends: a Bun socket, or one on io_uring. */
type NbdSocket = BunSocket | UringSocket;
/** How a transport binds its listeners (Server.listen): Bun's sockets, or the server's own on io_uring. */
interface Binder {
  unix(path: string): BunListener | UringListener;
  tcp(host: string, port: number): BunListener | UringListener;
  inherited(fd: number, address: SocketAddress): BunListener | UringListener;
}

class Connection {
  /** Both change once, when STARTTLS upgrades the connection to TLS. */
  socket: NbdSocket;
  output: OutputQueue;
  handshake: Handshake | null = null;
  session: NbdSession | null = null;
  /** The export the handshake chose (set with the session). */
  exportName: string | null = null;
  socketClosed = false;
  ending = false;
  /** "handshaking" from the STARTTLS ACK until the TLS handshake completes: no byte may arrive in the clear then. */
  tls: "none" | "handshaking" | "established" = "none";
  private handshakeTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly server: Server,
    socket: NbdSocket,
    readonly name: string,
  ) {
    this.socket = socket;
    this.output = this.outputFor(socket);
  }

  private outputFor(socket: NbdSocket): OutputQueue {
    const output = new OutputQueue(socket);
    // A failed write means the peer is gone; Bun gives no close event for a paused socket, so close it ourselves.
    output.onFailed = () => this.onTransportFailed();
    return output;
  }

  get negotiating(): boolean {
    return this.session === null && !this.ending && !this.socketClosed;
  }

  /** Sends the greeting (once the server has a device) and starts the handshake clock. */
  greet(exports: readonly ExportInfo[]): void {
    assert(this.handshake === null && this.session === null, "a connection is greeted once");
    if (this.ending || this.socketClosed) return;
    this.handshake = new Handshake(exports, (bytes) => this.output.appendCopy(bytes), this.server.tls?.mode ?? "off");
    this.handshake.start();
    this.handshakeTimer = setTimeout(() => this.onHandshakeTimeout(), this.server.handshakeTimeoutMs);
  }

  /** Bytes from the socket; `transient`: `chunk` is valid only during this call, unless kept (NbdSession.feed). */
  onData(chunk: Uint8Array, transient = false, chunkId = -1): void {
    if (this.session !== null) return this.session.feed(chunk, transient, chunkId);
    // The handshake keeps what it has not parsed (and hands the rest over as `leftover`): give it a chunk of its own.
    if (transient) chunk = chunk.slice();
    // Not seen in tests (Bun hands handshake bytes to the TLS layer, not here): a guard, so that no byte that did not
    // come through TLS is ever parsed as an option once STARTTLS was acknowledged.
    if (this.tls === "handshaking") return this.failTls(`${chunk.length} bytes arrived outside TLS while it was being set up`);
    // Before the greeting a client has nothing to say; whatever it sends is dropped with the connection later.
    if (this.handshake === null || this.ending) return;
    const result = this.handshake.feed(chunk);
    if (result.kind === "continue") return;
    if (result.kind === "starttls") return this.startTls();
    const handshake = this.handshake;
    const tls = handshake.tlsActive;
    this.handshake = null;
    this.clearHandshakeTimer();
    if (result.kind === "close") {
      this.noteTlsRefusals(handshake);
      if (result.reason !== "client sent NBD_OPT_ABORT") {
        this.server.counters.protocolErrors++;
        this.server.limitedLog("handshake", `nbd ${this.name}: closing connection during handshake: ${result.reason}`);
      }
      this.end();
      return;
    }
    if (this.server.closing) {
      // close() began while this client negotiated: it never starts transmission.
      this.end();
      return;
    }
    const served = this.server.exportNamed(result.exportName);
    this.exportName = result.exportName;
    this.server.log(
      `nbd ${this.name}: connected${this.server.exportCount > 1 ? ` to export "${result.exportName}"` : ""} (${result.negotiated.structuredReplies ? "structured" : "simple"} replies${result.negotiated.baseAllocation ? ", base:allocation" : ""}${tls ? ", TLS" : ""})`,
    );
    this.session = new NbdSession({
      device: served.options.device,
      negotiated: result.negotiated,
      transport: this.socket,
      output: this.output,
      stats: served.counters,
      observer: served.options.requestObserver ?? null,
      logFailure: (kind, line) => this.server.limitedLog(kind, line),
      name: this.name,
      onProtocolError: () => this.end(),
      onDrainedForEnd: () => this.end(),
      onSettled: () => this.maybeGone(),
      chunkKeeper: this.server.chunkKeeper,
    });
    if (result.leftover.length > 0) this.session.feed(result.leftover);
  }

  /**
   * STARTTLS was acknowledged: the ACK goes out in the clear, then this socket becomes TLS. Bun hands back a new
   * socket object for the TLS side; the plain one keeps receiving the raw (encrypted) bytes, so it is detached from
   * this connection and every event comes from the TLS socket from now on.
   */
  private startTls(): void {
    const tls = this.server.tls;
    assert(tls !== undefined, "STARTTLS is acknowledged only when TLS is on");
    this.output.flush();
    if (!this.output.isEmpty) {
      // A socket that cannot take a few bytes at once is not worth an upgrade in the middle of a reply.
      this.server.limitedLog("tls", `nbd ${this.name}: closing connection: the STARTTLS reply did not go out at once`);
      this.handshake = null;
      this.end();
      return;
    }
    const plain = this.socket as BunSocket;
    assert(this.server.ring === undefined, "a server on io_uring offers no TLS");
    this.tls = "handshaking";
    let raw: BunSocket;
    let upgraded: BunSocket;
    try {
      [raw, upgraded] = plain.upgradeTLS<Connection | undefined>({ data: this, tls: tls.options, socket: this.server.tlsHandlers });
    } catch (error) {
      return this.failTls(`cannot start TLS: ${(error as Error).message}`);
    }
    plain.data = undefined;
    raw.data = undefined;
    this.socket = upgraded;
    this.output = this.outputFor(upgraded);
  }

  /** TLS could not be set up (handshake failed or refused, credentials refused, bytes in the clear): count, log, end. */
  failTls(reason: string): void {
    if (this.ending || this.socketClosed) return;
    this.server.counters.tlsHandshakeFailures++;
    this.server.limitedLog("tls", `nbd ${this.name}: closing connection: TLS handshake failed: ${reason}`);
    this.handshake = null;
    this.end();
  }

  /** A client that would not start TLS under --tls require is worth a line: it is probably misconfigured. */
  private noteTlsRefusals(handshake: Handshake): void {
    if (handshake.tlsRefusals === 0) return;
    this.server.limitedLog("tls required", `nbd ${this.name}: client did not start TLS, which this server requires: ${handshake.tlsRefusals} option(s) refused`);
  }

  /**
   * Bun's `handshake` event on the TLS socket. `success` says the TLS handshake completed, `error` why the peer's
   * certificate did not verify: with client certificates required (rejectUnauthorized) a completed handshake with an
   * error (a revoked certificate) is a refusal too. Without them, `error` only says the client sent none. A failed or
   * refused handshake ends the connection.
   */
  onTlsHandshake(success: boolean, error: Error | null): void {
    const refused = !success || (this.server.tls!.options.rejectUnauthorized && error !== null);
    if (!refused) {
      this.tls = "established";
      this.server.counters.tlsHandshakes++;
      return;
    }
    // Bun closes the socket itself after a failed handshake (end() is then a no-op); not after every refusal.
    this.failTls(error?.message ?? "no reason given");
  }

  private onHandshakeTimeout(): void {
    this.handshakeTimer = null;
    if (this.session !== null || this.ending || this.socketClosed) return;
    this.server.counters.handshakeTimeouts++;
    this.server.limitedLog("handshake timeout", `nbd ${this.name}: closing connection: no transmission within ${this.server.handshakeTimeoutMs} ms of the greeting`);
    this.handshake = null;
    this.end();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  /** Ends the socket after handing queued bytes to it (a graceful FIN; replies already dropped on errors). */
  end(): void {
    if (this.ending || this.socketClosed) return;
    this.ending = true;
    this.clearHandshakeTimer();
    this.output.flush();
    this.socket.end();
  }

  /** The output queue could not write: the peer is gone. Same as a close, but we must close the socket too. */
  private onTransportFailed(): void {
    this.session?.onTransportClosed();
    this.terminate();
  }

  onClose(): void {
    if (this.handshake !== null) this.noteTlsRefusals(this.handshake);
    this.socketClosed = true;
    this.clearHandshakeTimer();
    this.output.close();
    this.session?.onTransportClosed();
    this.maybeGone();
  }

  /** Server close(): handshakes end now; sessions finish what they parsed, then end. */
  beginEnd(): void {
    if (this.session === null) this.end();
    else this.session.beginEnd();
  }

  terminate(): void {
    if (!this.socketClosed) this.socket.terminate();
  }

  private maybeGone(): void {
    if (!this.socketClosed) return;
    if (this.session !== null && !this.session.isSettled) return;
    this.server.remove(this);
  }
}

/** One export being served: what serve() was given, its handshake facts, its request counters. */
interface ServedExport {
  options: NbdExportOptions;
  info: ExportInfo;
  counters: NbdStats;
}

/** The request counters a session bumps (the connection counters are the server's). */
const REQUEST_STATS = ["reads", "writes", "flushes", "trims", "writeZeroes", "blockStatuses", "caches", "bytesRead", "bytesWritten", "errorReplies", "protocolErrors", "receives", "replyWrites", "payloadCopies"] as const;

class Server implements NbdServer {
  /** The connection counters; the request counters live per export (stats() sums them). */
  readonly counters = { ...newNbdStats(), tlsHandshakes: 0, tlsHandshakeFailures: 0 };
  readonly tls: NbdListenOptions["tls"];
  readonly log: (line: string) => void;
  private readonly errorLog: (line: string) => void;
  /** Lines clients can cause in bulk go through here (failed requests, refusals, timeouts). */
  private readonly limiter: LogLimiter;
  readonly handshakeTimeoutMs: number;
  readonly ring: Uring | undefined;
  /** NBD on io_uring: the receive buffers of every connection; given back once the last connection is gone. */
  private receiveBuffers: ProvidedBuffers | null = null;

  private readonly listeners: Array<{ listener: BunListener | UringListener; unixPath: string | null; host: string | null; port: number | null; owned: boolean }> = [];
  private readonly connections = new Set<Connection>();
  private connectionsGone: (() => void) | null = null;
  private served: Map<string, ServedExport> | null = null;
  /** exportIdle() callers, by export name. */
  private readonly idleWaiters = new Map<string, Array<() => void>>();
  private exportInfos: ExportInfo[] | null = null;
  closing = false;
  private closed: Promise<void> | null = null;
  /** The inode of the socket file we bound: close() unlinks the path only while it is still ours. */
  private socketInode: number | null = null;

  constructor(options: NbdListenOptions) {
    this.log = options.log ?? (() => {});
    this.errorLog = options.errorLog ?? this.log;
    this.limiter = new LogLimiter({ log: this.errorLog, linesPerWindow: NBD_ERROR_LOG_LINES_PER_SECOND, windowMs: 1000 });
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT;
    this.tls = options.tls;
    this.ring = options.ring;
    if (this.ring !== undefined && this.tls !== undefined) throw new InvalidArgumentError("NBD on io_uring offers no TLS: serve TLS on Bun's sockets");
    assert(Number.isSafeInteger(this.handshakeTimeoutMs) && this.handshakeTimeoutMs > 0, "handshake timeout is a positive integer");
  }

  limitedLog(kind: string, line: string): void {
    this.limiter.line(kind, line);
  }

  get addresses(): string[] {
    return this.addressesFor(this.exportInfos?.length === 1 ? this.exportInfos[0]!.name : "");
  }

  addressesFor(name: string): string[] {
    const nameSuffix = name === "" ? "" : encodeURIComponent(name);
    return this.listeners.map(({ listener, unixPath, host, port }) => {
      if (unixPath !== null) return `nbd+unix:///${nameSuffix}?socket=${unixPath}`;
      const hostPart = host!.includes(":") ? `[${host}]` : host!;
      const boundPort = listener instanceof UringListener ? listener.port : (listener as import("bun").TCPSocketListener<Connection | undefined>).port;
      return `nbd://${hostPart}:${port ?? boundPort}${nameSuffix === "" ? "" : `/${nameSuffix}`}`;
    });
  }

  /** The socket events of every listener (and, but for `open`, of the TLS sockets STARTTLS makes). */
  readonly handlers = {
    // Plain Uint8Array chunks: no Buffer wrapper per data event.
    binaryType: "uint8array" as const,
    open: (socket: BunSocket) => this.onOpen(socket),
    data: (socket: BunSocket, chunk: Uint8Array) => socket.data?.onData(chunk),
    drain: (socket: BunSocket) => socket.data?.output.onDrain(),
    close: (socket: BunSocket) => socket.data?.onClose(),
    error: (socket: BunSocket, error: Error) => this.limitedLog("socket error", `nbd ${socket.data?.name ?? "?"}: socket error: ${error.message}`),
    handshake: (socket: BunSocket, success: boolean, error: Error | null) => socket.data?.onTlsHandshake(success, error),
  };

  /** The TLS side of an upgraded connection: the same events, but its `open` is not a new client. */
  readonly tlsHandlers = { ...this.handlers, open: () => {} };

  async listen(options: NbdListenOptions): Promise<void> {
    const bind = this.ring === undefined ? this.bunBinder() : this.ringBinder(this.ring, options);
    if (options.socketPath !== undefined) {
      const path = options.socketPath;
      await claimUnixSocketPath(path);
      this.listeners.push({ listener: bind.unix(path), unixPath: path, host: null, port: null, owned: true });
      this.socketInode = lstatSync(path).ino;
    }
    if (options.listen !== undefined) {
      const { host, port } = options.listen;
      this.listeners.push({ listener: bind.tcp(host, port), unixPath: null, host, port: null, owned: true });
    }
    for (const { fd, address } of options.inherited ?? []) {
      const listener = bind.inherited(fd, address);
      if (address.kind === "unix") this.listeners.push({ listener, unixPath: address.path, host: null, port: null, owned: false });
      else this.listeners.push({ listener, unixPath: null, host: address.host, port: address.port, owned: false });
    }
  }

  /** Listeners on Bun's sockets: Bun.listen, whose `open` event admits each connection (onOpen). */
  private bunBinder(): Binder {
    const handlers = this.handlers;
    // Bun.listen({ fd }) serves a descriptor that is already listening (bun-types lack the overload).
    const listenFd = Bun.listen as unknown as (options: { fd: number; data: undefined; socket: typeof handlers }) => BunListener;
    return {
      unix: (path) => bindOrExplain(path, () => Bun.listen<Connection | undefined>({ unix: path, data: undefined, socket: handlers })),
      tcp: (host, port) => bindOrExplain(`${host}:${port}`, () => Bun.listen<Connection | undefined>({ hostname: host, port, data: undefined, socket: handlers })),
      inherited: (fd, address) => bindOrExplain(`inherited descriptor ${fd} (${describeSocketAddress(address)})`, () => listenFd({ fd, data: undefined, socket: handlers })),
    };
  }

  /** What lets sessions on io_uring keep a receive buffer for a WRITE's payload (null: not on io_uring). */
  get chunkKeeper(): ChunkKeeper | null {
    return this.receiveBuffers;
  }

  /** Listeners of NBD on io_uring: bound here (or inherited), accepting through the ring; one receive-buffer ring. */
  private ringBinder(ring: Uring, options: NbdListenOptions): Binder {
    const wanted = (options.socketPath !== undefined ? 1 : 0) + (options.listen !== undefined ? 1 : 0) + (options.inherited ?? []).length;
    if (wanted > NBD_URING_LISTENERS_MAX) throw new InvalidArgumentError(`NBD on io_uring serves at most ${NBD_URING_LISTENERS_MAX} listeners, not ${wanted}`);
    const onAccept = (socket: UringSocket, name: string) => this.onUringAccept(socket, name);
    const buffers = new ProvidedBuffers(ring, ring.allocateBufferGroup(), NBD_URING_RECEIVE_BUFFERS, NBD_URING_RECEIVE_BYTES);
    this.receiveBuffers = buffers;
    const log = (line: string) => this.limitedLog("accept", line);
    const accepting = (fd: number, address: SocketAddress) => new UringListener(ring, buffers, fd, address, onAccept, log);
    const bound = (address: SocketAddress) => {
      const socket = bindOrExplainOnRing(address, () => listenStream(address));
      return accepting(socket.fd, socket.address);
    };
    return {
      unix: (path) => bound({ kind: "unix", path }),
      tcp: (host, port) => bound({ kind: "tcp", host, port }),
      inherited: accepting,
    };
  }

  serve(options: NbdExportOptions): void {
    this.serveExports([options]);
  }

  serveExports(exports: readonly NbdExportOptions[]): void {
    assert(this.served === null, "serve() is called once");
    assert(exports.length >= 1, "at least one export");
    const served = new Map<string, ServedExport>();
    for (const options of exports) {
      const device = options.device;
      const info: ExportInfo = {
        name: options.exportName ?? "",
        description: options.description ?? "",
        sizeBytes: device.sizeBytes,
        readOnly: device.readOnly,
        blockSizeMinBytes: device.blockSizeMinBytes,
        blockSizePreferredBytes: device.blockSizePreferredBytes,
      };
      assert(!served.has(info.name), "export names are unique");
      served.set(info.name, { options, info, counters: newNbdStats() });
    }
    this.served = served;
    if (this.closing) return;
    this.exportInfos = [...served.values()].map(({ info }) => info);
    for (const connection of this.connections) connection.greet(this.exportInfos);
  }

  get exportCount(): number {
    return this.served?.size ?? 0;
  }

  /** The export a finished handshake chose (it only chooses among those offered). */
  exportNamed(name: string): ServedExport {
    const served = this.served?.get(name);
    assert(served !== undefined, "the handshake chooses an offered export");
    return served;
  }

  exportStats(name: string): NbdExportStats {
    let connections = 0;
    let requestsInFlight = 0;
    for (const connection of this.connections) {
      if (connection.exportName !== name) continue;
      connections++;
      requestsInFlight += connection.session?.inflight ?? 0;
    }
    return { ...(this.served?.get(name)?.counters ?? newNbdStats()), connections, requestsInFlight };
  }

  /** Why a new connection is refused now, or null. */
  private refusalNow(): string | null {
    return this.closing
      ? "the server is closing"
      : this.connections.size >= NBD_CONNECTIONS_MAX
        ? `${NBD_CONNECTIONS_MAX} connections are open`
        : this.negotiatingCount() >= NBD_NEGOTIATING_MAX
          ? `${NBD_NEGOTIATING_MAX} clients are still negotiating`
          : null;
  }

  private onOpen(socket: BunSocket): void {
    const refusal = this.refusalNow();
    if (refusal !== null) {
      this.counters.connectionsRefused++;
      this.limiter.line("refused", `nbd: refused a connection: ${refusal}`);
      socket.data = undefined;
      socket.end();
      return;
    }
    this.counters.connectionsAccepted++;
    const name =
      socket.remoteAddress !== undefined && socket.remoteAddress !== "" ? `${socket.remoteAddress}:${socket.remotePort}` : `unix#${this.counters.connectionsAccepted}`;
    socket.setNoDelay?.(true);
    const connection = new Connection(this, socket, name);
    socket.data = connection;
    this.admit(connection);
  }

  private admit(connection: Connection): void {
    this.connections.add(connection);
    if (this.exportInfos !== null) connection.greet(this.exportInfos);
  }

  /** An accept on io_uring: the same rules as onOpen; the socket starts receiving once the connection exists. */
  private onUringAccept(socket: UringSocket, name: string): void {
    const refusal = this.refusalNow();
    if (refusal !== null) {
      this.counters.connectionsRefused++;
      this.limiter.line("refused", `nbd: refused a connection: ${refusal}`);
      socket.terminate();
      return;
    }
    this.counters.connectionsAccepted++;
    const connection = new Connection(this, socket, name === "" ? `unix#${this.counters.connectionsAccepted}` : name);
    socket.start({ onData: (chunk, bufferId) => connection.onData(chunk, true, bufferId), onDrain: () => connection.output.onDrain(), onClose: () => connection.onClose() });
    this.admit(connection);
  }

  private negotiatingCount(): number {
    let count = 0;
    for (const connection of this.connections) if (connection.negotiating) count++;
    return count;
  }

  exportIdle(name: string): Promise<void> {
    if (![...this.connections].some((connection) => connection.exportName === name)) return Promise.resolve();
    const idle = Promise.withResolvers<void>();
    const waiters = this.idleWaiters.get(name) ?? [];
    waiters.push(idle.resolve);
    this.idleWaiters.set(name, waiters);
    return idle.promise;
  }

  remove(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    const name = connection.exportName;
    if (name !== null && this.idleWaiters.has(name) && ![...this.connections].some((other) => other.exportName === name)) {
      for (const resolve of this.idleWaiters.get(name)!) resolve();
      this.idleWaiters.delete(name);
    }
    if (connection.session !== null) this.log(`nbd ${connection.name}: disconnected`);
    if (this.connections.size === 0) this.connectionsGone?.();
  }

  connectionCount(): number {
    return this.connections.size;
  }

  stats(): NbdServerStats {
    let requestsInFlight = 0;
    for (const connection of this.connections) requestsInFlight += connection.session?.inflight ?? 0;
    const total = { ...this.counters };
    for (const { counters } of this.served?.values() ?? []) for (const key of REQUEST_STATS) total[key] += counters[key];
    return { ...total, connections: this.connections.size, negotiating: this.negotiatingCount(), requestsInFlight };
  }

  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    // A listener on io_uring closes its descriptor once its accept and the cancel of it completed: waited for below.
    const listenersClosed: Promise<void>[] = [];
    for (const { listener } of this.listeners) {
      if (listener instanceof UringListener) listenersClosed.push(listener.stop());
      else listener.stop(false);
    }
    this.unlinkOwnSocket();
    for (const connection of this.connections) connection.beginEnd();
    if (this.connections.size > 0) {
      const gone = new Promise<void>((resolve) => (this.connectionsGone = resolve));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), NBD_CLOSE_DRAIN_MS_MAX)));
      const late = await Promise.race([gone.then(() => false), timedOut]);
      clearTimeout(timer);
      if (late) {
        // Clients that do not read their replies do not hold the server hostage; device calls still finish.
        this.errorLog(`nbd: ${this.connections.size} connection(s) did not finish in ${NBD_CLOSE_DRAIN_MS_MAX} ms`);
        for (const connection of this.connections) connection.terminate();
        await gone;
      }
    }
    assert(this.connections.size === 0, "every connection is gone after close");
    // No receive is left on the ring: a connection is gone only once its socket's ops completed.
    this.receiveBuffers?.close();
    await Promise.all(listenersClosed);
    this.limiter.flush();
  }

  /** Removes our socket file, but never one another server bound at the path since (Bun may have removed ours). */
  private unlinkOwnSocket(): void {
    const entry = this.listeners.find((candidate) => candidate.unixPath !== null && candidate.owned);
    if (entry === undefined || this.socketInode === null) return;
    try {
      if (lstatSync(entry.unixPath!).ino === this.socketInode) unlinkSync(entry.unixPath!);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
}

/**
 * Makes a unix socket path free to bind, or refuses: nothing there is fine; a socket where a server answers is in
 * use and is left alone; a socket nobody answers on (ECONNREFUSED: its server died without removing it) is stale
 * and removed; anything that is not a socket is never touched.
 */
export async function claimUnixSocketPath(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new IOError(`Cannot listen on ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  if (!isSocket) throw new InvalidArgumentError(`Cannot listen on ${path}: it exists and is not a socket`);
  if (await socketAnswers(path)) throw new IOError(`socket ${path} is in use by a running server; not replacing it`);
  unlinkSync(path);
}

/** How long a probe of an existing socket may take; a server too busy to accept in that time is still a server. */
const SOCKET_PROBE_TIMEOUT_MS = 2000;

/** True when something accepts connections on the unix socket `path`; false only when the connection is refused. */
async function socketAnswers(path: string): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), SOCKET_PROBE_TIMEOUT_MS)));
  const probe = Bun.connect({ unix: path, socket: { data() {} } }).then(
    (socket) => {
      socket.end();
      return "answered" as const;
    },
    (error: NodeJS.ErrnoException) => error,
  );
  const outcome = await Promise.race([probe, timedOut]);
  clearTimeout(timer);
  if (outcome === "answered" || outcome === "timeout") return true;
  // ECONNREFUSED: bound by nobody. ENOENT: removed meanwhile (its server stopped). Either way nothing is served.
  if (outcome.code === "ECONNREFUSED" || outcome.code === "ENOENT") return false;
  // EAGAIN: a listener whose backlog is full; EACCES and the rest: we cannot tell, so we do not take it.
  if (outcome.code === "EAGAIN") return true;
  throw new IOError(`Cannot listen on ${path}: cannot tell whether a server uses it: ${outcome.code ?? outcome.message}`);
}

/** Bun.listen throws a plain Error (EADDRINUSE, EACCES): one line naming the address instead. */
function bindOrExplain(where: string, bind: () => BunListener): BunListener {
  try {
    return bind();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException)?.code;
    const reason = code === "EADDRINUSE" ? ADDRESS_IN_USE : (code ?? (error as Error)?.message ?? String(error));
    throw new IOError(`Cannot listen on ${where}: ${reason}`);
  }
}

/**
 * listenStream with the address in the message of a refusal: a TCP host name (the ring's listeners bind IP
 * addresses), a unix path too long.
 */
function bindOrExplainOnRing<T>(address: SocketAddress, bind: () => T): T {
  try {
    return bind();
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    const hint = address.kind === "tcp" ? " (give an IP address)" : "";
    throw new InvalidArgumentError(`Cannot listen on ${describeSocketAddress(address)} with NBD on io_uring: ${error.message}${hint}`);
  }
}

/** Binds every listener; clients that connect are held (not greeted) until serve(). Closes what it bound on failure. */
export async function listenNbd(options: NbdListenOptions): Promise<NbdServer> {
  if (options.socketPath === undefined && options.listen === undefined && (options.inherited ?? []).length === 0) {
    throw new InvalidArgumentError("Cannot start NBD server: neither socketPath, listen nor inherited sockets given");
  }
  const server = new Server(options);
  try {
    await server.listen(options);
  } catch (error) {
    await server.close();
    throw error;
  }
  return server;
}

/** listenNbd() then serve(): for servers whose device is ready before they bind (tests, benchmarks). */
export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const server = await listenNbd(options);
  server.serve(options);
  return server;
}
