// Whether bytes are all zero: import skips zero pages, export leaves holes for them.

/** Compared against in slices: no allocation per call, any length. */
const ZEROS = Buffer.alloc(4096);

export function isAllZero(bytes: Uint8Array): boolean {
  for (let at = 0; at < bytes.byteLength; at += ZEROS.byteLength) {
    const length = Math.min(ZEROS.byteLength, bytes.byteLength - at);
    if (!Buffer.from(bytes.buffer, bytes.byteOffset + at, length).equals(ZEROS.subarray(0, length))) return false;
  }
  return true;
}
