// CRC-32C (Castagnoli): the checksum of every lsvd-specific structure (journal records, cache superblock, the
// extension block of backend objects). Spec: docs/format.md, "Checksums".
//
// Reflected polynomial 0x82f63b78, init and final xor 0xffffffff, so crc32c("123456789") = 0xe3069283 (the check
// value of RFC 3720 / iSCSI). `seed` is a previous result, which continues the CRC over several buffers:
// crc32c(b, crc32c(a)) === crc32c(a ++ b). The journal uses this to checksum a record's data pages in place, without
// first copying them into one buffer.
//
// Speed: slicing-by-16 over 16 Int32Array tables (table k advances a byte through k further zero bytes), reading the
// buffer as aligned 32-bit words. Measured in bench/crc32c_bench.ts; it runs on every journal write, so it matters.

import { assert } from "../errors.ts";

const POLYNOMIAL_REFLECTED = 0x82f63b78;
const SLICES = 16;

function makeTables(): Int32Array[] {
  const tables: Int32Array[] = [];
  const first = new Int32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ POLYNOMIAL_REFLECTED : crc >>> 1;
    first[byte] = crc;
  }
  tables.push(first);
  for (let k = 1; k < SLICES; k++) {
    const previous = tables[k - 1]!;
    const table = new Int32Array(256);
    for (let byte = 0; byte < 256; byte++) table[byte] = (previous[byte]! >>> 8) ^ first[previous[byte]! & 0xff]!;
    tables.push(table);
  }
  return tables;
}

// Separate tables (not one 4096-entry array): measured ~1.5x faster under Bun's JIT, whose bounds checks then
// fold into the constant-size accesses.
const [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15] = makeTables() as [
  Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array,
  Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array,
];

// The word loop reads bytes through an Int32Array, i.e. in platform byte order; the tables assume little-endian.
assert(new Uint8Array(Uint32Array.of(0x01020304).buffer)[0] === 0x04, "crc32c: little-endian platform");

/** A native CRC-32C with the same contract as crc32c() (same seed chaining), or null. */
export type Crc32cFunction = (data: Uint8Array, seed: number) => number;
let accelerated: Crc32cFunction | null = null;
/** Below this many bytes the FFI call costs more than the table loop. */
const ACCELERATED_BYTES_MIN = 256;

/**
 * Installs a hardware CRC-32C (ffi/isal_crc32c.ts: ISA-L's crc32_iscsi, SSE4.2/PCLMUL: ~10x the table loop on
 * a 4 KiB page). format/ stays free of I/O and FFI: the caller that may load native code (the CLI) installs it.
 * The candidate must agree with the table implementation on a check vector, or it is refused.
 */
export function installCrc32cAccelerator(candidate: Crc32cFunction | null): boolean {
  if (candidate === null) {
    accelerated = null;
    return true;
  }
  const probe = new Uint8Array(1024);
  for (let index = 0; index < probe.length; index++) probe[index] = (index * 131 + 7) & 0xff;
  if (candidate(probe, 0) !== crc32cTable(probe, 0) || candidate(probe.subarray(3), 0x12345678) !== crc32cTable(probe.subarray(3), 0x12345678)) {
    return false;
  }
  accelerated = candidate;
  return true;
}

export function crc32cIsAccelerated(): boolean {
  return accelerated !== null;
}

export function crc32c(data: Uint8Array, seed = 0): number {
  assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, "crc32c: seed is a uint32");
  if (accelerated !== null && data.byteLength >= ACCELERATED_BYTES_MIN) return accelerated(data, seed);
  return crc32cTable(data, seed);
}

/** The portable table-driven CRC-32C. */
export function crc32cTable(data: Uint8Array, seed = 0): number {
  let crc = ~seed;
  const length = data.byteLength;
  let i = 0;
  // Bytes up to a 4-byte boundary of the underlying ArrayBuffer, so the Int32Array view below is legal.
  while (i < length && ((data.byteOffset + i) & 3) !== 0) crc = t0[(crc ^ data[i++]!) & 0xff]! ^ (crc >>> 8);
  const blocks = (length - i) >>> 4;
  if (blocks > 0) {
    const words = new Int32Array(data.buffer, data.byteOffset + i, blocks * 4);
    for (let w = 0; w < words.length; w += 4) {
      const a = crc ^ words[w]!;
      const b = words[w + 1]!;
      const c = words[w + 2]!;
      const d = words[w + 3]!;
      crc =
        t15[a & 0xff]! ^ t14[(a >>> 8) & 0xff]! ^ t13[(a >>> 16) & 0xff]! ^ t12[a >>> 24]! ^
        t11[b & 0xff]! ^ t10[(b >>> 8) & 0xff]! ^ t9[(b >>> 16) & 0xff]! ^ t8[b >>> 24]! ^
        t7[c & 0xff]! ^ t6[(c >>> 8) & 0xff]! ^ t5[(c >>> 16) & 0xff]! ^ t4[c >>> 24]! ^
        t3[d & 0xff]! ^ t2[(d >>> 8) & 0xff]! ^ t1[(d >>> 16) & 0xff]! ^ t0[d >>> 24]!;
    }
    i += blocks * 16;
  }
  while (i < length) crc = t0[(crc ^ data[i++]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
