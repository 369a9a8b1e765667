// Seeded mutations for the fuzz tests (folder-private), in the spirit of leveldb's log_test.cc (SetByte, ShrinkSize,
// FixChecksum): most random damage is caught by a CRC, so half of the mutations re-seal the CRCs afterwards to reach
// the structural checks behind them (offsets, lengths, counts, ranges).

import { crc32 } from "../../src/format/crc32.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import { LsvdError } from "../../src/errors.ts";
import type { Prng } from "../sim/prng.ts";

/** Values that break length and offset arithmetic. */
const INTERESTING_U32 = [0, 1, 2, 7, 8, 16, 511, 512, 4095, 4096, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff, 0x10000, 0x0fff_ffff];

export interface Mutation {
  bytes: Uint8Array;
  description: string;
  /** The CRCs were recomputed after the damage (a structurally odd but checksummed input). */
  resealed: boolean;
}

// Backend objects: where each type's extension block sits (docs/format.md, "Extension block").
const OBJECT_EXT_PLACE: Record<number, { offset: number; bytes: number }> = {
  1: { offset: 76, bytes: 28 }, // SUPER
  2: { offset: 68, bytes: 56 }, // DATA (52 before flags; resealing needs only where the CRCs are)
  3: { offset: 84, bytes: 44 }, // CKPT
};
const EXT_MAGIC = 0x5856534c;
const V1_CRC_OFFSET = 40;

/** Recomputes an object's data CRC32C, header CRC32C and v1 CRC-32 where its header says they are. */
export function resealObject(bytes: Uint8Array): void {
  if (bytes.byteLength < 44) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hdrBytes = view.getUint32(32, true) * 512;
  if (hdrBytes < 44 || hdrBytes > bytes.byteLength) return;
  const header = bytes.subarray(0, hdrBytes);
  const place = OBJECT_EXT_PLACE[view.getUint32(24, true)];
  if (place && place.offset + place.bytes <= hdrBytes && view.getUint32(place.offset, true) === EXT_MAGIC) {
    const dataBytes = view.getUint32(36, true) * 512;
    const data = bytes.subarray(hdrBytes, Math.min(bytes.byteLength, hdrBytes + dataBytes));
    view.setUint32(place.offset + 16, crc32c(data), true);
    view.setUint32(place.offset + 12, 0, true);
    view.setUint32(V1_CRC_OFFSET, 0, true);
    view.setUint32(place.offset + 12, crc32c(header), true);
  }
  view.setUint32(V1_CRC_OFFSET, 0, true);
  view.setUint32(V1_CRC_OFFSET, crc32(header), true);
}

/** Recomputes a 4 KiB page's CRC32C field at `crcOffset` (journal record header, cache superblock). */
export function resealPage(page: Uint8Array, crcOffset: number): void {
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  view.setUint32(crcOffset, 0, true);
  view.setUint32(crcOffset, crc32c(page.subarray(0, 4096)), true);
}

/**
 * One random mutation of `original` (never returned unchanged). `hotBytes` bounds where field-level damage lands
 * (the fixed fields and first table entries); `reseal` recomputes the CRCs afterwards.
 */
export function mutate(original: Uint8Array, prng: Prng, hotBytes: number, reseal: ((bytes: Uint8Array) => void) | null): Mutation {
  for (;;) {
    let bytes = original.slice();
    let description: string;
    const view = () => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const hot = Math.min(hotBytes, bytes.byteLength);
    switch (prng.int(8)) {
      case 0: {
        const length = prng.int(bytes.byteLength);
        bytes = bytes.slice(0, length);
        description = `truncated to ${length} of ${original.byteLength} bytes`;
        break;
      }
      case 1: {
        const extra = 1 + prng.int(8192);
        const longer = new Uint8Array(bytes.byteLength + extra);
        longer.set(bytes);
        prng.fill(longer.subarray(bytes.byteLength));
        bytes = longer;
        description = `${extra} random bytes appended`;
        break;
      }
      case 2: {
        const flips = 1 + prng.int(4);
        const where: number[] = [];
        for (let index = 0; index < flips; index++) {
          const at = prng.int(bytes.byteLength);
          bytes[at]! ^= 1 << prng.int(8);
          where.push(at);
        }
        description = `bits flipped at ${where.join(",")}`;
        break;
      }
      case 3:
      case 4: {
        const at = 4 * prng.int(Math.max(1, Math.floor(hot / 4)));
        if (at + 4 > bytes.byteLength) continue;
        const value = prng.chance(0.7) ? INTERESTING_U32[prng.int(INTERESTING_U32.length)]! : prng.nextU32();
        view().setUint32(at, value, true);
        description = `u32 at ${at} set to 0x${value.toString(16)}`;
        break;
      }
      case 5: {
        const at = 8 * prng.int(Math.max(1, Math.floor(hot / 8)));
        if (at + 8 > bytes.byteLength) continue;
        view().setUint32(at, prng.nextU32(), true);
        view().setUint32(at + 4, prng.chance(0.5) ? 0 : prng.nextU32(), true);
        description = `u64 at ${at} randomized`;
        break;
      }
      case 6: {
        const start = prng.int(Math.max(1, hot));
        const length = Math.min(1 + prng.int(64), bytes.byteLength - start);
        prng.fill(bytes.subarray(start, start + length));
        description = `${length} random bytes at ${start}`;
        break;
      }
      default: {
        const start = prng.int(bytes.byteLength);
        const length = Math.min(1 + prng.int(4096), bytes.byteLength - start);
        bytes.fill(prng.chance(0.5) ? 0 : 0xff, start, start + length);
        description = `${length} bytes filled at ${start}`;
        break;
      }
    }
    let resealed = false;
    if (reseal && prng.chance(0.5)) {
      reseal(bytes);
      resealed = true;
      description += ", CRCs recomputed";
    }
    if (bytes.byteLength === original.byteLength && bytes.every((byte, index) => byte === original[index])) continue;
    return { bytes, description, resealed };
  }
}

/**
 * Runs `fn`; returns null if it succeeded or threw an LsvdError (a clear rejection), else a description of the
 * foreign error (TypeError, RangeError, a failed assertion...), which is a bug.
 */
export async function foreignError(fn: () => unknown): Promise<string | null> {
  try {
    await fn();
    return null;
  } catch (error) {
    if (error instanceof LsvdError) return null;
    return (error as Error)?.stack ?? String(error);
  }
}
