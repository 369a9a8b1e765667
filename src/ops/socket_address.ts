// Decodes a struct sockaddr (the bytes getsockname(2) returns) into what a listener is: a unix socket path, or a
// TCP host and port; and encodes one for bind(2) (NBD on io_uring binds its own listeners). Pure: no I/O. Layouts (x86-64 Linux, man 7 unix / ip / ipv6), family as a little-endian u16:
//   AF_UNIX  (1):  sun_path at 2 (NUL-terminated; an abstract name starts with NUL, shown as "@name")
//   AF_INET  (2):  port (big-endian u16) at 2, address (4 bytes) at 4
//   AF_INET6 (10): port (big-endian u16) at 2, flowinfo at 4, address (16 bytes) at 8

import { InvalidArgumentError, assert } from "../errors.ts";

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;

export type SocketAddress = { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

const INET_BYTES = 8;
const INET6_BYTES = 24;

function ipv6Text(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // The URL parser prints IPv6 addresses in their canonical short form (RFC 5952), e.g. "::1".
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

function unixPath(bytes: Uint8Array): string {
  const path = bytes.subarray(2);
  if (path.length === 0) throw new InvalidArgumentError("unix socket without a name (unnamed socket)");
  if (path[0] === 0) return `@${new TextDecoder().decode(path.subarray(1))}`;
  const end = path.indexOf(0);
  return new TextDecoder().decode(end < 0 ? path : path.subarray(0, end));
}

/** How an address reads in messages: the unix path, or HOST:PORT. */
/** An address in use, in the words Bun's sockets use: the message is the same whichever transport binds. */
export const ADDRESS_IN_USE = "EADDRINUSE (address in use)";

export function describeSocketAddress(address: SocketAddress): string {
  return address.kind === "unix" ? address.path : `${address.host}:${address.port}`;
}

/** The address in `bytes`; throws InvalidArgumentError for a family other than unix, IPv4 and IPv6, or a short one. */
export function decodeSocketAddress(bytes: Uint8Array): SocketAddress {
  if (bytes.length < 2) throw new InvalidArgumentError(`socket address of ${bytes.length} bytes: too short for a family`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const family = view.getUint16(0, true);
  if (family === AF_UNIX) return { kind: "unix", path: unixPath(bytes) };
  if (family === AF_INET) {
    if (bytes.length < INET_BYTES) throw new InvalidArgumentError(`AF_INET address of ${bytes.length} bytes (expected ${INET_BYTES}+)`);
    return { kind: "tcp", host: Array.from(bytes.subarray(4, 8)).join("."), port: view.getUint16(2, false) };
  }
  if (family === AF_INET6) {
    if (bytes.length < INET6_BYTES) throw new InvalidArgumentError(`AF_INET6 address of ${bytes.length} bytes (expected ${INET6_BYTES}+)`);
    return { kind: "tcp", host: ipv6Text(bytes.subarray(8, 24)), port: view.getUint16(2, false) };
  }
  throw new InvalidArgumentError(`socket address family ${family} is not unix, IPv4 or IPv6`);
}

/** struct sockaddr_un's sun_path: 108 bytes, the NUL included. */
const SUN_PATH_BYTES = 108;

/** The 16 bytes of an IPv6 literal ("::1", "fe80::1:2"), or null if `text` is not one (no embedded IPv4 form). */
/** An IPv4 or IPv6 literal (what lsvd's own listeners bind; a host name needs a resolver, which Bun's sockets have). */
export function isIpLiteral(host: string): boolean {
  const literal = host === "localhost" ? "127.0.0.1" : host;
  return ipv4Bytes(literal) !== null || ipv6Bytes(literal) !== null;
}

function ipv6Bytes(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (part: string) => (part === "" ? [] : part.split(":"));
  const head = groupsOf(halves[0]!);
  const tail = halves.length === 2 ? groupsOf(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) return null;
  const groups = [...head, ...new Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  const bytes = new Uint8Array(16);
  for (let index = 0; index < 8; index++) {
    if (!/^[0-9a-f]{1,4}$/i.test(groups[index]!)) return null;
    const value = parseInt(groups[index]!, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  }
  return bytes;
}

/** The 4 bytes of a dotted IPv4 literal, or null. */
function ipv4Bytes(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255)) return null;
  return Uint8Array.from(parts.map(Number));
}

/**
 * The struct sockaddr bytes of `address`, for bind(2). A TCP host must be an IPv4 or IPv6 literal, or "localhost"
 * (127.0.0.1): names are not resolved here. Throws InvalidArgumentError otherwise, or for a unix path too long.
 */
export function encodeSocketAddress(address: SocketAddress): Uint8Array {
  if (address.kind === "unix") {
    const path = new TextEncoder().encode(address.path);
    if (path.length === 0 || path.length + 1 > SUN_PATH_BYTES) throw new InvalidArgumentError(`unix socket path of ${path.length} bytes: expected 1..${SUN_PATH_BYTES - 1}`);
    const bytes = new Uint8Array(2 + path.length + 1);
    new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
    bytes.set(path, 2);
    return bytes;
  }
  assert(Number.isSafeInteger(address.port) && address.port >= 0 && address.port <= 65535, "a TCP port");
  const host = address.host === "localhost" ? "127.0.0.1" : address.host;
  const v4 = ipv4Bytes(host);
  const v6 = v4 === null ? ipv6Bytes(host) : null;
  if (v4 === null && v6 === null) throw new InvalidArgumentError(`'${address.host}' is not an IPv4 or IPv6 address`);
  const bytes = new Uint8Array(v4 !== null ? INET_BYTES * 2 : INET6_BYTES + 4);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, v4 !== null ? AF_INET : AF_INET6, true);
  view.setUint16(2, address.port, false);
  if (v4 !== null) bytes.set(v4, 4);
  else bytes.set(v6!, 8);
  return bytes;
}
