// Decodes a struct sockaddr (the bytes getsockname(2) returns) into what a listener is: a unix socket path, or a
// TCP host and port. Pure: no I/O. Layouts (x86-64 Linux, man 7 unix / ip / ipv6), family as a little-endian u16:
//   AF_UNIX  (1):  sun_path at 2 (NUL-terminated; an abstract name starts with NUL, shown as "@name")
//   AF_INET  (2):  port (big-endian u16) at 2, address (4 bytes) at 4
//   AF_INET6 (10): port (big-endian u16) at 2, flowinfo at 4, address (16 bytes) at 8

import { InvalidArgumentError } from "../errors.ts";

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
