// The admin socket: a unix socket where `lsvd serve` answers requests about itself (src/admin/protocol.ts; spec in
// docs/operations.md, "Admin socket"). Ops are registered in an AdminOps table, one line each, and run one at a time
// per connection, so replies come in request order.
//
// Bounds, so that a client can neither make the server hold much nor lock operators out:
// - ADMIN_CONNECTIONS_MAX connections; one more is told "busy" and closed (once its client sends or after a moment);
// - a request line of at most ADMIN_REQUEST_BYTES_MAX characters: a longer one is answered "too-long" and its
//   connection closed (nothing after it can be framed safely);
// - ADMIN_QUEUED_REQUESTS_MAX requests queued per connection (a client that pipelines more is told "busy", closed);
// - ADMIN_OUTPUT_BYTES_MAX reply bytes waiting for a client that does not read: beyond, the connection is closed;
// - a connection with nothing to do for ADMIN_IDLE_SECONDS is closed.
// The socket path follows the NBD socket's rule (nbd/server.ts, claimUnixSocketPath): a path where a server answers
// is refused, a stale socket replaced, anything else never touched; close() unlinks it only while it is still ours.

import { lstatSync, unlinkSync } from "node:fs";
import { IOError, assert } from "../errors.ts";
import { claimUnixSocketPath } from "../nbd/server.ts";
import { ADMIN_REQUEST_BYTES_MAX, decodeRequest, encodeError, encodeResult, type AdminRequest } from "./protocol.ts";

export const ADMIN_CONNECTIONS_MAX = 8;
export const ADMIN_QUEUED_REQUESTS_MAX = 16;
export const ADMIN_OUTPUT_BYTES_MAX = 1024 * 1024;
export const ADMIN_IDLE_SECONDS = 60;
export const ADMIN_REFUSED_LINGER_SECONDS = 2;

/** An op: takes the request's args, returns what goes into "result" (JSON-serialisable); throwing answers "failed". */
export type AdminHandler = (args: Record<string, unknown>) => unknown;

/** The ops a server answers. Adding one is one register() call. */
export class AdminOps {
  private readonly handlers = new Map<string, { handler: AdminHandler; summary: string }>();

  constructor() {
    this.register("ops", "lists the ops this server answers", () => this.list());
  }

  register(name: string, summary: string, handler: AdminHandler): void {
    assert(/^[a-z][a-z0-9-]{0,63}$/.test(name), `admin op name '${name}'`);
    assert(!this.handlers.has(name), `admin op ${name} registered twice`);
    this.handlers.set(name, { handler, summary });
  }

  list(): Array<{ op: string; summary: string }> {
    return [...this.handlers].map(([op, { summary }]) => ({ op, summary }));
  }

  /** The reply line to one request line. */
  async answer(line: string): Promise<string> {
    const decoded = decodeRequest(line);
    if (!decoded.ok) return encodeError(decoded.id, decoded.code, decoded.message);
    const { op, args, id }: AdminRequest = decoded.request;
    const entry = this.handlers.get(op);
    if (entry === undefined) return encodeError(id, "unknown-op", `unknown op '${op}' (ops: ${[...this.handlers.keys()].join(", ")})`);
    try {
      return encodeResult(id, await entry.handler(args));
    } catch (error) {
      return encodeError(id, "failed", `${op} failed: ${(error as Error)?.message ?? String(error)}`);
    }
  }
}

const EMPTY = new Uint8Array(0);

type AdminSocket = import("bun").Socket<AdminConnection | undefined>;

class AdminConnection {
  private readonly decoder = new TextDecoder();
  private partial = "";
  private readonly queue: string[] = [];
  private running = false;
  private outbox: Uint8Array = EMPTY;
  private ending = false;

  constructor(
    private readonly socket: AdminSocket,
    private readonly ops: AdminOps,
  ) {}

  onData(chunk: Uint8Array): void {
    if (this.ending) return;
    this.partial += this.decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = this.partial.indexOf("\n")) >= 0) {
      const line = this.partial.slice(0, newline).replace(/\r$/, "");
      this.partial = this.partial.slice(newline + 1);
      if (line.trim() === "") continue;
      if (this.queue.length >= ADMIN_QUEUED_REQUESTS_MAX) {
        return this.refuse(encodeError(null, "busy", `more than ${ADMIN_QUEUED_REQUESTS_MAX} requests queued on one connection; closing it`));
      }
      this.queue.push(line);
    }
    if (this.partial.length > ADMIN_REQUEST_BYTES_MAX) {
      return this.refuse(encodeError(null, "too-long", `request longer than ${ADMIN_REQUEST_BYTES_MAX} bytes; closing the connection`));
    }
    void this.run();
  }

  /** Answers queued requests one at a time, in order. */
  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.ending) this.send(await this.ops.answer(this.queue.shift()!));
    } finally {
      this.running = false;
    }
  }

  /** One last reply, then the connection ends: what follows cannot be trusted or is too much. */
  refuse(reply: string): void {
    this.queue.length = 0;
    this.partial = "";
    this.send(reply);
    this.end();
  }

  private send(text: string): void {
    if (this.ending) return;
    const bytes = new TextEncoder().encode(text);
    if (this.outbox.length > 0) {
      if (this.outbox.length + bytes.length > ADMIN_OUTPUT_BYTES_MAX) return this.socket.terminate();
      this.outbox = Buffer.concat([this.outbox, bytes]);
      return;
    }
    this.write(bytes);
  }

  /** Hands bytes to the socket; what it does not take waits for the drain event. */
  private write(bytes: Uint8Array): void {
    const written = this.socket.write(bytes);
    this.outbox = written >= bytes.length ? EMPTY : bytes.subarray(Math.max(0, written));
  }

  onDrain(): void {
    if (this.outbox.length === 0) return;
    this.write(this.outbox);
    if (this.outbox.length === 0 && this.ending) this.socket.end();
  }

  end(): void {
    if (this.ending) return;
    this.ending = true;
    if (this.outbox.length === 0) this.socket.end();
  }

  /** Idle: nothing queued or running, no request half received. */
  get idle(): boolean {
    return !this.running && this.queue.length === 0;
  }
}

export interface AdminServer {
  readonly path: string;
  /** How the lease records it (docs/format.md, "Lease object"). */
  readonly address: string;
  connectionCount(): number;
  close(): void;
}

/** The lease address of an admin socket, and back. */
export function adminAddress(path: string): string {
  return `admin:unix:${path}`;
}

export function adminPathFromAddresses(addresses: readonly string[]): string | null {
  const found = addresses.find((address) => address.startsWith("admin:unix:"));
  return found === undefined ? null : found.slice("admin:unix:".length);
}

/** Binds the admin socket at `path` (refused if a server answers there) and answers `ops` on it. */
export async function listenAdmin(path: string, ops: AdminOps, log: (line: string) => void): Promise<AdminServer> {
  await claimUnixSocketPath(path);
  const connections = new Set<AdminConnection>();
  /** Refused connections waiting for their client to read the "busy" reply. */
  const lingering = new Set<AdminSocket>();
  let refusedLogged = 0;
  let listener: import("bun").UnixSocketListener<AdminConnection | undefined>;
  try {
    listener = Bun.listen<AdminConnection | undefined>({
      unix: path,
      data: undefined,
      socket: {
        binaryType: "uint8array",
        open(socket) {
          if (connections.size >= ADMIN_CONNECTIONS_MAX) {
            if (refusedLogged++ === 0) log(`admin: refusing connections: ${ADMIN_CONNECTIONS_MAX} are open`);
            socket.write(encodeError(null, "busy", `${ADMIN_CONNECTIONS_MAX} admin connections are open; try again`));
            // Closed at once, the client may see a reset before it reads the reply: it is closed when the client
            // sends (or goes) instead, or after ADMIN_REFUSED_LINGER_SECONDS; at most ADMIN_CONNECTIONS_MAX linger.
            if (lingering.size >= ADMIN_CONNECTIONS_MAX) return void socket.end();
            lingering.add(socket);
            socket.timeout(ADMIN_REFUSED_LINGER_SECONDS);
            return;
          }
          refusedLogged = 0;
          const connection = new AdminConnection(socket, ops);
          socket.data = connection;
          connections.add(connection);
          socket.timeout(ADMIN_IDLE_SECONDS);
        },
        data(socket, chunk) {
          if (socket.data === undefined) socket.end(); // a refused connection (below): its reply is out
          else socket.data.onData(chunk);
        },
        drain: (socket) => socket.data?.onDrain(),
        timeout(socket) {
          if (socket.data === undefined || socket.data.idle) socket.end();
          else socket.timeout(ADMIN_IDLE_SECONDS);
        },
        close(socket) {
          if (socket.data !== undefined) connections.delete(socket.data);
          lingering.delete(socket);
        },
        error: (_socket, error) => log(`admin: socket error: ${error.message}`),
      },
    });
  } catch (error) {
    throw new IOError(`Cannot listen on admin socket ${path}: ${(error as NodeJS.ErrnoException)?.code ?? (error as Error)?.message}`);
  }
  const inode = lstatSync(path).ino;
  return {
    path,
    address: adminAddress(path),
    connectionCount: () => connections.size,
    close() {
      listener.stop(true);
      connections.clear();
      lingering.clear();
      try {
        if (lstatSync(path).ino === inode) unlinkSync(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    },
  };
}
