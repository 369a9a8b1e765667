// The socket calls Bun does not offer (glibc 2.36, x86-64 Linux), bound with koffi: what a descriptor inherited from
// the service manager is (getsockname, getsockopt SO_ACCEPTCONN/SO_TYPE), one AF_UNIX datagram to $NOTIFY_SOCKET
// (Bun and node:dgram have no unix datagram sockets), and the listening sockets of NBD on io_uring, whose
// descriptors the ring accepts on, receives and sends through (Bun's sockets do not give theirs away).
// Spec: man 2 socket / bind / listen / shutdown / sendto / getsockname / getsockopt / setsockopt, man 7 unix / tcp,
// man 3 sd_notify (its "Notes": the protocol).
//
// Socket addresses cross this module as raw bytes; src/ops/socket_address.ts decodes them (pure).

import { assert, IOError } from "../src/errors.ts";
import { ADDRESS_IN_USE, decodeSocketAddress, describeSocketAddress, encodeSocketAddress, type SocketAddress } from "../src/ops/socket_address.ts";
import { describeErrno, EADDRINUSE } from "./libc.ts";
import { koffi } from "./koffi.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;
const SO_REUSEADDR = 2;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SHUT_RDWR = 2;
/** listen(2)'s backlog; the kernel caps it at net.core.somaxconn. */
const LISTEN_BACKLOG = 511;
/** No SIGPIPE if the receiver is gone: an error instead. */
export const MSG_NOSIGNAL = 0x4000;
export const SOCK_STREAM = 1;
/** struct sockaddr_storage: large enough for every family. */
export const SOCKADDR_STORAGE_BYTES = 128;
/** struct sockaddr_un: sun_family (u16) then sun_path[108]. */
const SUN_PATH_OFFSET = 2;
const SUN_PATH_BYTES = 108;

const lib = koffi.load("libc.so.6");
const socketNative = lib.func("int socket(int domain, int type, int protocol)");
const closeNative = lib.func("int close(int fd)");
const sendtoNative = lib.func("intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)");
const getsocknameNative = lib.func("int getsockname(int fd, void *addr, void *addrlen)");
const getsockoptNative = lib.func("int getsockopt(int fd, int level, int name, void *value, void *valuelen)");
const setsockoptNative = lib.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t valuelen)");
const bindNative = lib.func("int bind(int fd, const void *addr, uint32_t addrlen)");
const listenNative = lib.func("int listen(int fd, int backlog)");
const shutdownNative = lib.func("int shutdown(int fd, int how)");
const sendNative = lib.func("intptr_t send(int fd, const void *buf, size_t len, int flags)");
const MSG_DONTWAIT = 0x40;

/** A port or path in use says so as Bun's sockets do (ADDRESS_IN_USE). */
function fail(what: string): never {
  const errno = koffi.errno();
  const reason = errno === EADDRINUSE ? ADDRESS_IN_USE : describeErrno(errno);
  throw new IOError(`Cannot ${what}: ${reason}`, false, { errno });
}

/** getsockname(2): the raw address bytes (sockaddr_storage cut to the length the kernel reports). */
export function socketNameBytes(fd: number): Uint8Array {
  const address = new Uint8Array(SOCKADDR_STORAGE_BYTES);
  const length = new Uint32Array([SOCKADDR_STORAGE_BYTES]);
  if ((getsocknameNative(fd, address, length) as number) < 0) fail(`get the address of descriptor ${fd}`);
  assert(length[0]! <= SOCKADDR_STORAGE_BYTES, "getsockname fits sockaddr_storage");
  return address.subarray(0, length[0]!);
}

function intOption(fd: number, name: number, what: string): number {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  if ((getsockoptNative(fd, SOL_SOCKET, name, value, length) as number) < 0) fail(`read ${what} of descriptor ${fd}`);
  return value[0]!;
}

/** SO_TYPE (SOCK_STREAM, SOCK_DGRAM, ...) and SO_ACCEPTCONN (listen() was called) of a socket descriptor. */
export function socketKind(fd: number): { type: number; listening: boolean } {
  return { type: intOption(fd, SO_TYPE, "SO_TYPE"), listening: intOption(fd, SO_ACCEPTCONN, "SO_ACCEPTCONN") !== 0 };
}

/**
 * Sends `message` as one datagram to the AF_UNIX socket `path`; a path starting with "@" names an abstract socket
 * (sd_notify's convention). Opens and closes its own socket.
 */
export function sendUnixDatagram(path: string, message: Uint8Array): void {
  const abstract = path.startsWith("@");
  const pathBytes = new TextEncoder().encode(abstract ? path.slice(1) : path);
  // A filesystem path needs its NUL inside sun_path; an abstract name starts with NUL and has none at the end.
  if (pathBytes.length + 1 > SUN_PATH_BYTES) throw new IOError(`Cannot notify ${path}: a unix socket path is at most ${SUN_PATH_BYTES - 1} bytes`);
  const address = new Uint8Array(SUN_PATH_OFFSET + SUN_PATH_BYTES);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(pathBytes, SUN_PATH_OFFSET + (abstract ? 1 : 0));
  const addressBytes = SUN_PATH_OFFSET + pathBytes.length + 1;
  const fd = socketNative(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail("create a unix datagram socket");
  try {
    const sent = Number(sendtoNative(fd, message, message.length, MSG_NOSIGNAL, address, addressBytes));
    if (sent < 0) fail(`send to ${path}`);
    assert(sent === message.length, "a datagram is sent whole");
  } finally {
    closeNative(fd);
  }
}

/**
 * A listening stream socket bound to `address` (SO_REUSEADDR for TCP, as Bun's listeners have), and the address it
 * got (the port the kernel chose for port 0). The caller owns the descriptor (closeSocket). A unix path must be
 * free: claiming a stale one is the caller's job.
 */
export function listenStream(address: SocketAddress): { fd: number; address: SocketAddress } {
  const where = describeSocketAddress(address);
  const bytes = encodeSocketAddress(address);
  const family = new DataView(bytes.buffer).getUint16(0, true);
  const fd = socketNative(family, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail(`create a socket for ${where}`);
  try {
    if (address.kind === "tcp" && (setsockoptNative(fd, SOL_SOCKET, SO_REUSEADDR, new Int32Array([1]), 4) as number) < 0) fail(`set SO_REUSEADDR on ${where}`);
    if ((bindNative(fd, bytes, bytes.length) as number) < 0) fail(`listen on ${where}`);
    if ((listenNative(fd, LISTEN_BACKLOG) as number) < 0) fail(`listen on ${where}`);
    return { fd, address: decodeSocketAddress(socketNameBytes(fd)) };
  } catch (error) {
    closeNative(fd);
    throw error;
  }
}

/** TCP_NODELAY on an accepted TCP socket: replies go out when written, not when the peer's ACK comes. */
export function setNoDelay(fd: number): void {
  if ((setsockoptNative(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4) as number) < 0) fail(`set TCP_NODELAY on descriptor ${fd}`);
}

/**
 * shutdown(SHUT_RDWR): a FIN after what is queued, and a receive waiting on the socket returns 0. An error (the peer
 * already gone: ENOTCONN) is ignored: the socket is being closed either way.
 */
export function shutdownSocket(fd: number): void {
  shutdownNative(fd, SHUT_RDWR);
}

/**
 * send(2) of `bytes` at native `address` without waiting (MSG_DONTWAIT, and MSG_NOSIGNAL: no SIGPIPE): the bytes
 * the socket took, or -errno (-EAGAIN: it has no room now).
 */
export function sendNow(fd: number, address: number, bytes: number): number {
  const sent = Number(sendNative(fd, address, bytes, MSG_DONTWAIT | MSG_NOSIGNAL));
  return sent < 0 ? -koffi.errno() : sent;
}

export function closeSocket(fd: number): void {
  closeNative(fd);
}
