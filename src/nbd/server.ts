// NBD server: Bun.listen on TCP and/or a unix socket, one Connection per client (handshake, then a session),
// and the connection lifecycle: accept (bounded by NBD_CONNECTIONS_MAX), close on protocol errors, clean close().
// Spec: NetworkBlockDevice/nbd doc/proto.md; URIs per the NBD URI spec (nbd://host:port/name,
// nbd+unix:///name?socket=PATH). Wire details live in wire.ts, negotiation in handshake.ts, requests in session.ts.
//
// A connection is counted from accept until its socket is closed AND none of its device calls is in flight, so
// connectionCount() returning to 0 means nothing of it is left, and close() resolves only when the device is no
// longer being called on anyone's behalf.

import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { NBD_CLOSE_DRAIN_MS_MAX, NBD_CONNECTIONS_MAX } from "../constants.ts";
import { InvalidArgumentError, assert } from "../errors.ts";
import type { BlockDevice } from "./block_device.ts";
import { Handshake, type ExportInfo } from "./handshake.ts";
import { OutputQueue } from "./output_queue.ts";
import { NbdSession, newNbdStats, type NbdStats } from "./session.ts";

export interface NbdServerOptions {
  device: BlockDevice;
  /** Default "". The empty name always selects the export too (the spec's default export). */
  exportName?: string;
  description?: string;
  socketPath?: string;
  listen?: { host: string; port: number };
  log?: (line: string) => void;
}

export interface NbdServer {
  /** One URI per listener: nbd://127.0.0.1:10809 (port resolved when 0 was asked), nbd+unix:///?socket=PATH. */
  readonly addresses: string[];
  /** Connections accepted and not finished (socket open, or device calls still in flight for it). */
  connectionCount(): number;
  /** Stops accepting, lets in-flight requests finish and their replies go out, ends connections. */
  close(): Promise<void>;
  stats(): NbdStats & { connections: number };
}

type BunSocket = import("bun").Socket<Connection | undefined>;
type BunListener = import("bun").TCPSocketListener<Connection | undefined> | import("bun").UnixSocketListener<Connection | undefined>;

class Connection {
  readonly output: OutputQueue;
  handshake: Handshake | null;
  session: NbdSession | null = null;
  socketClosed = false;
  ending = false;

  constructor(
    readonly server: Server,
    readonly socket: BunSocket,
    readonly name: string,
  ) {
    this.output = new OutputQueue(socket);
    this.handshake = new Handshake(server.exportInfo, (bytes) => this.output.appendCopy(bytes));
    this.handshake.start();
  }

  onData(chunk: Uint8Array): void {
    if (this.session !== null) return this.session.feed(chunk);
    if (this.handshake === null || this.ending) return;
    const result = this.handshake.feed(chunk);
    if (result.kind === "continue") return;
    this.handshake = null;
    if (result.kind === "close") {
      if (result.reason !== "client sent NBD_OPT_ABORT") {
        this.server.counters.protocolErrors++;
        this.server.log(`nbd ${this.name}: closing connection during handshake: ${result.reason}`);
      }
      this.end();
      return;
    }
    if (this.server.closing) {
      // close() began while this client negotiated: it never starts transmission.
      this.end();
      return;
    }
    this.server.log(
      `nbd ${this.name}: connected (${result.negotiated.structuredReplies ? "structured" : "simple"} replies${result.negotiated.baseAllocation ? ", base:allocation" : ""})`,
    );
    this.session = new NbdSession({
      device: this.server.device,
      negotiated: result.negotiated,
      transport: this.socket,
      output: this.output,
      stats: this.server.counters,
      log: this.server.log,
      name: this.name,
      onProtocolError: () => this.end(),
      onDrainedForEnd: () => this.end(),
      onSettled: () => this.maybeGone(),
    });
    if (result.leftover.length > 0) this.session.feed(result.leftover);
  }

  /** Ends the socket after handing queued bytes to it (a graceful FIN; replies already dropped on errors). */
  end(): void {
    if (this.ending || this.socketClosed) return;
    this.ending = true;
    this.output.flush();
    this.socket.end();
  }

  onClose(): void {
    this.socketClosed = true;
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

class Server implements NbdServer {
  readonly addresses: string[] = [];
  readonly counters = newNbdStats();
  readonly exportInfo: ExportInfo;
  readonly log: (line: string) => void;
  readonly listeners: BunListener[] = [];
  private readonly connections = new Set<Connection>();
  private connectionsGone: (() => void) | null = null;
  closing = false;
  private closed: Promise<void> | null = null;
  private socketPath: string | null = null;

  constructor(
    readonly device: BlockDevice,
    exportName: string,
    description: string,
    log: (line: string) => void,
  ) {
    this.log = log;
    this.exportInfo = {
      name: exportName,
      description,
      sizeBytes: device.sizeBytes,
      readOnly: device.readOnly,
      blockSizeMinBytes: device.blockSizeMinBytes,
      blockSizePreferredBytes: device.blockSizePreferredBytes,
    };
  }

  listen(options: NbdServerOptions): void {
    const handlers = {
      // Plain Uint8Array chunks: no Buffer wrapper per data event.
      binaryType: "uint8array" as const,
      open: (socket: BunSocket) => this.onOpen(socket),
      data: (socket: BunSocket, chunk: Uint8Array) => socket.data?.onData(chunk),
      drain: (socket: BunSocket) => socket.data?.output.onDrain(),
      close: (socket: BunSocket) => socket.data?.onClose(),
      error: (socket: BunSocket, error: Error) => this.log(`nbd ${socket.data?.name ?? "?"}: socket error: ${error.message}`),
    };
    const nameSuffix = this.exportInfo.name === "" ? "" : encodeURIComponent(this.exportInfo.name);
    if (options.socketPath !== undefined) {
      const path = options.socketPath;
      // A socket file left by a crashed server blocks bind(); replace it, but never a regular file.
      if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
      const listener = Bun.listen<Connection | undefined>({ unix: path, data: undefined, socket: handlers });
      this.listeners.push(listener);
      this.socketPath = path;
      this.addresses.push(`nbd+unix:///${nameSuffix}?socket=${path}`);
    }
    if (options.listen !== undefined) {
      const { host, port } = options.listen;
      const listener = Bun.listen<Connection | undefined>({ hostname: host, port, data: undefined, socket: handlers });
      this.listeners.push(listener);
      const hostPart = host.includes(":") ? `[${host}]` : host;
      this.addresses.push(`nbd://${hostPart}:${listener.port}${nameSuffix === "" ? "" : `/${nameSuffix}`}`);
    }
  }

  private onOpen(socket: BunSocket): void {
    if (this.closing || this.connections.size >= NBD_CONNECTIONS_MAX) {
      this.counters.connectionsRefused++;
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
    this.connections.add(connection);
  }

  remove(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    if (connection.session !== null) this.log(`nbd ${connection.name}: disconnected`);
    if (this.connections.size === 0) this.connectionsGone?.();
  }

  connectionCount(): number {
    return this.connections.size;
  }

  stats(): NbdStats & { connections: number } {
    return { ...this.counters, connections: this.connections.size };
  }

  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    for (const listener of this.listeners) listener.stop(false);
    if (this.socketPath !== null && existsSync(this.socketPath)) unlinkSync(this.socketPath);
    for (const connection of this.connections) connection.beginEnd();
    if (this.connections.size === 0) return;
    const gone = new Promise<void>((resolve) => (this.connectionsGone = resolve));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), NBD_CLOSE_DRAIN_MS_MAX)));
    const late = await Promise.race([gone.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      // Clients that do not read their replies do not hold the server hostage; device calls still finish.
      this.log(`nbd: ${this.connections.size} connection(s) did not finish in ${NBD_CLOSE_DRAIN_MS_MAX} ms`);
      for (const connection of this.connections) connection.terminate();
      await gone;
    }
    assert(this.connections.size === 0, "every connection is gone after close");
  }
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  if (options.socketPath === undefined && options.listen === undefined) {
    throw new InvalidArgumentError("Cannot start NBD server: neither socketPath nor listen given");
  }
  const server = new Server(options.device, options.exportName ?? "", options.description ?? "", options.log ?? (() => {}));
  try {
    server.listen(options);
  } catch (error) {
    await server.close();
    throw error;
  }
  return server;
}
