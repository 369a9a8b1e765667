// Small helpers for tests that write raw, pipelined NBD bytes and wait for a server to react.

import { encodeRequestHeader } from "../../src/nbd/wire.ts";

/** Polls `condition` until it holds or `timeoutMs` passes; returns its last value. */
export async function waitFor(condition: () => boolean, timeoutMs = 10_000, pollMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await Bun.sleep(pollMs);
  return condition();
}

/** The parts joined into one buffer, so that they go out in one send. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** A transmission request header with no flags and a cookie that fits in its low word. */
export function requestHeader(type: number, cookie: number, offset: number, length: number): Uint8Array {
  return encodeRequestHeader({ flags: 0, type, cookieHigh: 0, cookieLow: cookie, offset, length });
}
