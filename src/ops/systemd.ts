// systemd integration of `lsvd serve`, without libsystemd: the two protocols are small and stable.
//
// Socket activation (man 3 sd_listen_fds): the service manager passes listening sockets as descriptors 3, 4, ...
// with LISTEN_FDS=<count> and LISTEN_PID=<our pid> (LISTEN_FDNAMES optional). Variables meant for another process
// (LISTEN_PID differs: we inherited them from a parent) are ignored. Like sd_listen_fds(1), the variables are removed
// from our environment once read, so nothing we might start inherits them. Each descriptor must be a listening
// stream socket (unix or TCP); anything else is refused, naming the descriptor. Bun.listen({ fd }) serves on an
// inherited descriptor (measured with Bun 1.4.5 under systemd-socket-activate, unix and TCP; node:net
// server.listen({ fd }) works too).
//
// Readiness (man 3 sd_notify, "Notes"): one datagram of newline-separated KEY=VALUE lines to the AF_UNIX socket
// $NOTIFY_SOCKET ("@name": abstract namespace). serve sends STATUS= while it recovers, READY=1 once recovery is
// done and clients are served, STOPPING=1 when a shutdown begins, and STATUS= lines while that waits. Without
// $NOTIFY_SOCKET nothing is sent. A failed send is logged once and never stops the server.

import { SOCK_STREAM, sendUnixDatagram, socketKind, socketNameBytes } from "../../ffi/socket.ts";
import { InvalidArgumentError, assert } from "../errors.ts";
import { decodeSocketAddress, type SocketAddress } from "./socket_address.ts";

/** sd_listen_fds' SD_LISTEN_FDS_START: the first passed descriptor. */
export const LISTEN_FDS_START = 3;
/** More would be a misconfigured unit; serve has at most a handful of listeners. */
export const LISTEN_FDS_MAX = 16;

export interface ListenFdsEnvironment {
  LISTEN_FDS?: string;
  LISTEN_PID?: string;
  LISTEN_FDNAMES?: string;
}

/**
 * The descriptors the environment passes to process `pid` (pure). [] when LISTEN_FDS is unset or LISTEN_PID names
 * another process; throws InvalidArgumentError when the variables are malformed.
 */
export function parseListenFds(env: ListenFdsEnvironment, pid: number): number[] {
  if (env.LISTEN_FDS === undefined) return [];
  if (env.LISTEN_PID === undefined || !/^\d+$/.test(env.LISTEN_PID)) {
    throw new InvalidArgumentError(`LISTEN_FDS is set but LISTEN_PID '${env.LISTEN_PID ?? ""}' is not a process id`);
  }
  if (Number(env.LISTEN_PID) !== pid) return [];
  if (!/^\d+$/.test(env.LISTEN_FDS)) throw new InvalidArgumentError(`Invalid LISTEN_FDS '${env.LISTEN_FDS}': expected a count`);
  const count = Number(env.LISTEN_FDS);
  if (count > LISTEN_FDS_MAX) throw new InvalidArgumentError(`LISTEN_FDS=${count}: at most ${LISTEN_FDS_MAX} sockets can be passed`);
  return Array.from({ length: count }, (_, i) => LISTEN_FDS_START + i);
}

export interface InheritedListener {
  fd: number;
  address: SocketAddress;
}

/**
 * The listening sockets the service manager passed to this process (socket activation), each checked to be a
 * listening stream socket and described by its address; [] when not socket-activated. Unsets LISTEN_* in `env`.
 */
export function inheritedListeners(env: Record<string, string | undefined> = process.env, pid = process.pid): InheritedListener[] {
  const fds = parseListenFds(env, pid);
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  return fds.map((fd) => {
    const refuse = (why: string) => new InvalidArgumentError(`Socket activation: descriptor ${fd} is not a listening stream socket (unix or TCP): ${why}`);
    let kind: { type: number; listening: boolean };
    try {
      kind = socketKind(fd);
    } catch (error) {
      throw refuse((error as Error).message);
    }
    if (kind.type !== SOCK_STREAM) throw refuse(`socket type ${kind.type}`);
    if (!kind.listening) throw refuse("listen() was not called on it");
    return { fd, address: decodeSocketAddress(socketNameBytes(fd)) };
  });
}

/** One sd_notify message: KEY=VALUE lines; a value never holds a newline (it would start another assignment). */
export function notifyMessage(assignments: Array<[string, string]>): string {
  return assignments
    .map(([key, value]) => {
      assert(/^[A-Z_]+$/.test(key), "sd_notify keys are upper case");
      return `${key}=${value.replace(/[\r\n]+/g, " ")}`;
    })
    .join("\n");
}

/** Tells the service manager (if any) how serve is doing; see the protocol at the top of this file. */
export class ServiceNotifier {
  private failed = false;

  constructor(
    readonly socketPath: string | null,
    private readonly log: (line: string) => void,
  ) {}

  static fromEnvironment(log: (line: string) => void, env: Record<string, string | undefined> = process.env): ServiceNotifier {
    const path = env.NOTIFY_SOCKET;
    return new ServiceNotifier(path === undefined || path === "" ? null : path, log);
  }

  status(text: string): void {
    this.send([["STATUS", text]]);
  }

  ready(status: string): void {
    this.send([["READY", "1"], ["STATUS", status]]);
  }

  stopping(status: string): void {
    this.send([["STOPPING", "1"], ["STATUS", status]]);
  }

  private send(assignments: Array<[string, string]>): void {
    if (this.socketPath === null) return;
    try {
      sendUnixDatagram(this.socketPath, new TextEncoder().encode(notifyMessage(assignments)));
    } catch (error) {
      if (this.failed) return;
      this.failed = true;
      this.log(`warning: cannot notify the service manager at NOTIFY_SOCKET=${this.socketPath}: ${(error as Error).message} (further failures are not logged)`);
    }
  }
}
