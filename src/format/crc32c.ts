// CRC-32C (Castagnoli): the checksum of every lsvd-specific structure (journal records, cache superblock, the
// extension block of backend objects). Spec: docs/format.md, "Checksums".
//
// Reflected polynomial 0x82f63b78, init and final xor 0xffffffff, so crc32c("123456789") = 0xe3069283 (the check
// value of RFC 3720 / iSCSI). `seed` is a previous result, which continues the CRC over several buffers:
// crc32c(b, crc32c(a)) === crc32c(a ++ b). The journal uses this to checksum a record's data pages in place, without
// first copying them into one buffer.
//
// crc32cCombine(crc32c(a), crc32c(b), b.length) === crc32c(a ++ b) without reading a or b: the batch's running
// checksum of an object's data area takes each journal record's data checksum that way, so a record's bytes are
// checksummed once, not once for the journal and again for the object (docs/format.md, "Checksums").
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

/**
 * Polynomials modulo the CRC-32C polynomial, reflected (bit 31 is x^0, bit 0 is x^31), as crc32c keeps its state.
 * Their product, by shift and add: `b` times each power of x that `a` holds.
 */
function multiplyModP(a: number, b: number): number {
  let product = 0;
  // `rest` walks a's powers of x from x^0 up: its sign bit is the current one; it is 0 once none is left.
  for (let rest = a | 0; rest !== 0; rest <<= 1) {
    if (rest < 0) product ^= b;
    b = (b & 1) !== 0 ? (b >>> 1) ^ POLYNOMIAL_REFLECTED : b >>> 1;
  }
  return product >>> 0;
}

/** X_POW_2K[k] = x^(2^k) mod P, for k up to 63: enough for any byte count below 2^53 (x^(8n) needs k up to 55). */
const X_POW_2K: Uint32Array = (() => {
  const table = new Uint32Array(64);
  table[0] = 0x40000000; // x^1
  for (let k = 1; k < table.length; k++) table[k] = multiplyModP(table[k - 1]!, table[k - 1]!);
  return table;
})();

/**
 * x^(8 * bytes) mod P for recent byte counts: journal records come in a few sizes, so the write path mostly pays one
 * multiplication per combine. Bounded: cleared when full.
 */
const shiftByBytes = new Map<number, number>();
const SHIFTS_CACHED_MAX = 256;

/** x^(8 * bytes) mod P: what appending `bytes` bytes multiplies a CRC state by. */
function xPow8nModP(bytes: number): number {
  const cached = shiftByBytes.get(bytes);
  if (cached !== undefined) return cached;
  let power = 0x80000000; // x^0
  let k = 3; // 8 * 2^j = 2^(j + 3)
  for (let rest = bytes; rest > 0; rest = Math.floor(rest / 2), k++) {
    if (rest % 2 === 1) power = multiplyModP(X_POW_2K[k]!, power);
  }
  if (shiftByBytes.size >= SHIFTS_CACHED_MAX) shiftByBytes.clear();
  shiftByBytes.set(bytes, power);
  return power;
}

/**
 * The CRC-32C of a ++ b from crcA = crc32c(a), crcB = crc32c(b) and b's length in bytes, without the data:
 * crcA's state shifted over b's bits, plus crcB. The initial and final inversions cancel in between, as in zlib's
 * crc32_combine.
 */
export function crc32cCombine(crcA: number, crcB: number, bytesB: number): number {
  assert(Number.isInteger(crcA) && crcA >= 0 && crcA <= 0xffffffff, "crc32cCombine: crcA is a uint32");
  assert(Number.isInteger(crcB) && crcB >= 0 && crcB <= 0xffffffff, "crc32cCombine: crcB is a uint32");
  assert(Number.isSafeInteger(bytesB) && bytesB >= 0, "crc32cCombine: a byte count");
  if (bytesB === 0) return crcA;
  return (multiplyModP(xPow8nModP(bytesB), crcA) ^ crcB) >>> 0;
}
