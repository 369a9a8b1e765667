// CRC-32 (IEEE 802.3 / zlib): only for the `crc` field of the LSVD v1 common header, which the reference
// implementation computes with zlib's crc32(). Spec: docs/format.md, "Checksums".
//
// Bun.hash.crc32 is zlib's CRC-32 (native, ~10 GB/s); its seed continues a previous result exactly like zlib's
// crc32(crc, buf, len), which lets a header be checksummed with its crc field treated as zero without copying it.
// test/format/crc32_test.ts checks both against node:zlib.

import { assert } from "../errors.ts";

export function crc32(data: Uint8Array, seed = 0): number {
  assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, "crc32: seed is a uint32");
  return Bun.hash.crc32(data, seed) >>> 0;
}
