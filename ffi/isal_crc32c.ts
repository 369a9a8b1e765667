// Hardware CRC-32C through ISA-L (Debian's libisal2): crc32_iscsi picks an SSE4.2/PCLMUL implementation at load time.
// The journal checksums every write's data, so this is on the hot path: ~0.4 us per 4 KiB page including the FFI
// call, against ~3-4 us for the table loop in JS (measured under Bun on this machine kind).
//
// crc32_iscsi works on the raw CRC register: no initial or final inversion. Our crc32c(data, seed) takes and
// returns finished CRC values, so the register is ~seed on the way in and inverted on the way out.

import { koffi } from "./koffi.ts";

export const ISAL_LIBRARY = "libisal.so.2";

/** The native function, or null with the reason (library missing, symbol missing). */
export function loadIsalCrc32c(): { crc32c: ((data: Uint8Array, seed: number) => number) | null; reason: string } {
  try {
    const library = koffi.load(ISAL_LIBRARY);
    const crc32Iscsi = library.func("uint32_t crc32_iscsi(const uint8_t *buffer, int length, uint32_t initialCrc)") as (
      buffer: Uint8Array,
      length: number,
      initialCrc: number,
    ) => number;
    const crc32c = (data: Uint8Array, seed: number): number => ~crc32Iscsi(data, data.byteLength, ~seed >>> 0) >>> 0;
    return { crc32c, reason: "" };
  } catch (error) {
    return { crc32c: null, reason: (error as Error).message };
  }
}
