import { describe, expect, test } from "bun:test";
import { NIL as NIL_UUID } from "uuid";
import {
  DATA_CRC_ABSENT,
  dataObjectHeaderBytes,
  decodeDataObjectHeader,
  encodeDataObjectHeader,
  verifyDataArea,
  type DataObjectHeader,
} from "../../src/format/data_object.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import {
  ByteBuilder,
  CACHE_UUID,
  VOL_UUID,
  crc32cBitwise,
  crcWithZeroed,
  expectCorruption,
  expectEachEditRejected,
  expectEveryFlipDetected,
  expectEveryTruncationRejected,
  resealObject,
  seededRandom,
  setU32,
  zlibCrc,
} from "./_helpers.ts";

const EXT_CRC_OFFSET = 68 + 12;
const LBA_LAST = 2 ** 36 - 16;

function dataArea(sectors: number, fill: number): Uint8Array {
  return Uint8Array.from({ length: sectors * 512 }, (_, i) => (i * 7 + fill) & 0xff);
}

const DATA = dataArea(24, 1);
const input: Omit<DataObjectHeader, "hdrSectors" | "dataSectors" | "dataCrc32c"> = {
  volUuid: VOL_UUID,
  seq: 0x2a,
  cacheSeq: 1000,
  cacheSeqLast: 1010,
  cacheUuid: CACHE_UUID,
  objsCleaned: [{ seq: 3, wasDeleted: true }],
  extents: [
    { lba: 100, sectors: 8 },
    { lba: LBA_LAST, sectors: 16 },
  ],
  trims: [{ lba: 50, sectors: 4, beforeIndex: 1 }],
  writeContinues: true,
};
const decoded: DataObjectHeader = { ...input, hdrSectors: 8, dataSectors: 24, dataCrc32c: crc32cBitwise(DATA) };

/** data_map entry: lba in the low 36 bits, length in the high 28. */
function packed(lba: number, sectors: number): bigint {
  return BigInt(lba) | (BigInt(sectors) << 36n);
}

/** Our layout, byte by byte: the 56-byte extension block, flags WRITE_CONTINUES. */
function ourHeader(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(2).u32(0x2a).u32(8).u32(24).u32(0)
    .u64(1000) // cache_seq
    .u32(124).u32(8) // objs_cleaned
    .u32(132).u32(16) // data_map
    .ascii("LSVX").u32(1).u32(56).u32(0).u32(crc32cBitwise(DATA))
    .u64(1010).uuid(CACHE_UUID).u32(148).u32(16)
    .u32(1); // flags: WRITE_CONTINUES
  expect(b.length).toBe(124);
  b.u32(3).u32(1);
  b.u64(packed(100, 8)).u64(packed(LBA_LAST, 16));
  b.u64(50).u32(4).u32(1);
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As lsvd wrote it before the extension had flags: a 52-byte block, the parts from 120. */
function legacyHeader(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(2).u32(0x2a).u32(8).u32(24).u32(0)
    .u64(1000)
    .u32(120).u32(8)
    .u32(128).u32(16)
    .ascii("LSVX").u32(1).u32(52).u32(0).u32(crc32cBitwise(DATA))
    .u64(1010).uuid(CACHE_UUID).u32(144).u32(16);
  expect(b.length).toBe(120);
  b.u32(3).u32(1);
  b.u64(packed(100, 8)).u64(packed(LBA_LAST, 16));
  b.u64(50).u32(4).u32(1);
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As the v1 reference writes it: one header sector, arrays right after the sub-header, no extension. */
function plainV1Header(subHeaderPad = 0): Uint8Array {
  const arrays = 68 + subHeaderPad;
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(2).u32(0x2a).u32(1).u32(24).u32(0)
    .u64(1000)
    .u32(arrays).u32(8)
    .u32(arrays + 8).u32(16)
    .zeros(subHeaderPad);
  b.u32(3).u32(1);
  b.u64(packed(100, 8)).u64(packed(LBA_LAST, 16));
  const bytes = b.padTo(512).build();
  setU32(bytes, 40, crcWithZeroed(bytes, [40], zlibCrc));
  return bytes;
}

describe("data object", () => {
  test("encoder output equals the hand-made bytes, and decodes back", () => {
    const expected = ourHeader();
    const header = encodeDataObjectHeader(input, DATA);
    expect(header).toEqual(expected);
    expect(dataObjectHeaderBytes(2, 1, 1)).toBe(4096);
    expect(decodeDataObjectHeader(expected)).toEqual(decoded);
    verifyDataArea(decoded, DATA);
    // The whole object decodes too (only the header area is read).
    const object = new Uint8Array(4096 + DATA.length);
    object.set(expected);
    object.set(DATA, 4096);
    expect(decodeDataObjectHeader(object)).toEqual(decoded);
  });

  test("decodes plain v1 headers: extension fields default, data CRC unchecked", () => {
    const plain: DataObjectHeader = {
      ...decoded,
      hdrSectors: 1,
      cacheSeqLast: 0,
      cacheUuid: NIL_UUID,
      trims: [],
      writeContinues: false,
      dataCrc32c: DATA_CRC_ABSENT,
    };
    expect(decodeDataObjectHeader(plainV1Header())).toEqual(plain);
    // A sub-header with a trailing field of a later reference version (e.g. is_gc) still decodes.
    expect(decodeDataObjectHeader(plainV1Header(4))).toEqual(plain);
    verifyDataArea(plain, dataArea(24, 99)); // no checksum to check...
    expectCorruption(() => verifyDataArea(plain, dataArea(23, 1))); // ...but the length still is
  });

  test("decodes the 52-byte extension block written before flags existed: every field, writeContinues false", () => {
    expect(decodeDataObjectHeader(legacyHeader())).toEqual({ ...decoded, writeContinues: false });
    expectEveryFlipDetected(legacyHeader(), decodeDataObjectHeader);
    expectEveryTruncationRejected(legacyHeader(), decodeDataObjectHeader);
  });

  test("the WRITE_CONTINUES flag round-trips both ways and is bit 0 of flags at offset 120", () => {
    for (const writeContinues of [false, true]) {
      const header = encodeDataObjectHeader({ ...input, writeContinues }, DATA);
      expect(new DataView(header.buffer).getUint32(120, true)).toBe(writeContinues ? 1 : 0);
      expect(decodeDataObjectHeader(header).writeContinues).toBe(writeContinues);
    }
  });

  test("verifyDataArea detects any corrupt or short data area, naming the object", () => {
    const corrupted = DATA.slice();
    for (const i of [0, 511, 512, 6000, DATA.length - 1]) {
      corrupted[i]! ^= 0x01;
      expect(expectCorruption(() => verifyDataArea(decoded, corrupted)).message).toContain("data object 42");
      corrupted[i]! ^= 0x01;
    }
    expectCorruption(() => verifyDataArea(decoded, DATA.subarray(0, DATA.length - 512)));
    expectCorruption(() => verifyDataArea(decoded, new Uint8Array(DATA.length + 512)));
  });

  test("randomized round trips", () => {
    const random = seededRandom("data object round trips");
    for (let round = 0; round < 100; round++) {
      const extents = Array.from({ length: random.int(300) }, () => ({ lba: random.int(2 ** 36 - 64), sectors: 1 + random.int(4) }));
      const sectors = extents.reduce((sum, e) => sum + e.sectors, 0);
      const trimIndexes = Array.from({ length: random.int(20) }, () => random.int(extents.length + 1)).sort((a, b) => a - b);
      const h = {
        volUuid: VOL_UUID,
        seq: 1 + random.int(2 ** 32 - 1),
        cacheSeq: random.int(2 ** 40),
        cacheSeqLast: 0,
        cacheUuid: random.int(2) ? CACHE_UUID : NIL_UUID,
        objsCleaned: Array.from({ length: random.int(10) }, () => ({ seq: 1 + random.int(1000), wasDeleted: random.int(2) === 1 })),
        extents,
        trims: trimIndexes.map((beforeIndex) => ({ lba: random.int(2 ** 35), sectors: 1 + random.int(2 ** 32 - 1), beforeIndex })),
        writeContinues: random.int(2) === 1,
      };
      h.cacheSeqLast = h.cacheSeq + random.int(1000);
      const data = dataArea(sectors, round);
      const header = encodeDataObjectHeader(h, data);
      expect(header.byteLength).toBe(dataObjectHeaderBytes(extents.length, h.trims.length, h.objsCleaned.length));
      const back = decodeDataObjectHeader(header);
      expect(back).toEqual({ ...h, hdrSectors: header.byteLength / 512, dataSectors: sectors, dataCrc32c: crc32c(data) });
      verifyDataArea(back, data);
    }
  });

  test("every single-byte corruption of the header area is detected", () => {
    expectEveryFlipDetected(ourHeader(), decodeDataObjectHeader);
    expectEveryFlipDetected(plainV1Header(), decodeDataObjectHeader);
  });

  test("each header CRC is checked on its own", () => {
    const badCrc32c = ourHeader();
    badCrc32c[EXT_CRC_OFFSET]! ^= 1;
    resealObject(badCrc32c, null); // a v1 CRC that matches: only header_crc32c is wrong
    expect(expectCorruption(() => decodeDataObjectHeader(badCrc32c)).message).toContain("bad header CRC32C");
    const badV1 = ourHeader();
    badV1[40]! ^= 1; // outside what header_crc32c covers
    expect(expectCorruption(() => decodeDataObjectHeader(badV1)).message).toContain("bad v1 header CRC-32");
  });

  test("every truncation is rejected", () => {
    expectEveryTruncationRejected(ourHeader(), decodeDataObjectHeader);
    expectEveryTruncationRejected(plainV1Header(), decodeDataObjectHeader);
  });

  test("absurd offsets, lengths and values are rejected (CRCs made valid again)", () => {
    const edits: [string, (b: Uint8Array) => void][] = [
      ["data_map offset past the end", (b) => setU32(b, 60, 0xfffffff8)],
      ["data_map length past the end", (b) => setU32(b, 64, 0xfffffff8)],
      ["data_map length not a multiple of 8", (b) => setU32(b, 64, 12)],
      ["data_map over the sub-header", (b) => setU32(b, 60, 40)],
      ["objs_cleaned past the end", (b) => setU32(b, 52, 4095)],
      ["trims offset into the extension block", (b) => setU32(b, 112, 100)],
      ["trims length huge", (b) => setU32(b, 116, 0x7ffffff0)],
      ["was_deleted 2", (b) => setU32(b, 128, 2)],
      ["cleaned seq 0", (b) => setU32(b, 124, 0)],
      ["extent length 0", (b) => setU32(b, 136, 0)],
      ["extent past 2^36", (b) => (setU32(b, 132, 0xffffffff), setU32(b, 136, 8 * 16 + 15))],
      ["extents disagree with data_sectors", (b) => setU32(b, 36, 25)],
      ["trim length 0", (b) => setU32(b, 156, 0)],
      ["trim before_index past the extents", (b) => setU32(b, 160, 3)],
      ["trim lba huge", (b) => setU32(b, 152, 0x00100000)],
      ["unknown flag bit", (b) => setU32(b, 120, 3)],
      ["extension length neither 52 nor 56", (b) => setU32(b, 76, 60)],
      ["a 52-byte block overlapping the parts", (b) => (setU32(b, 76, 52), setU32(b, 52, 118))],
      ["cache_seq_last < cache_seq", (b) => b.fill(0, 88, 96)],
      ["cache_seq past 2^53", (b) => (b[51] = 0x80)],
      ["cache uuid invalid", (b) => (b[96 + 8] = 0)],
      ["data object type mismatch", (b) => setU32(b, 24, 3)],
      ["hdr_sectors larger than the buffer", (b) => setU32(b, 32, 16)],
    ];
    expectEachEditRejected(edits, ourHeader, EXT_CRC_OFFSET, decodeDataObjectHeader);
  });

  test("encode refuses inconsistent input", () => {
    expect(() => encodeDataObjectHeader(input, dataArea(23, 1))).toThrow();
    expect(() => encodeDataObjectHeader({ ...input, extents: [{ lba: 0, sectors: 0 }] }, new Uint8Array(0))).toThrow();
    expect(() => encodeDataObjectHeader({ ...input, cacheSeqLast: 999 }, DATA)).toThrow();
    expect(() => encodeDataObjectHeader({ ...input, trims: [{ lba: 0, sectors: 1, beforeIndex: 3 }] }, DATA)).toThrow();
    expect(() =>
      encodeDataObjectHeader({ ...input, trims: [{ lba: 0, sectors: 1, beforeIndex: 2 }, { lba: 0, sectors: 1, beforeIndex: 1 }] }, DATA),
    ).toThrow();
    expect(() => encodeDataObjectHeader({ ...input, seq: 0 }, DATA)).toThrow();
  });
});

describe("docs/format.md worked example", () => {
  test("the data object header bytes shown in the spec", () => {
    const header = encodeDataObjectHeader(
      {
        volUuid: VOL_UUID,
        seq: 0x2a,
        cacheSeq: 1000,
        cacheSeqLast: 1001,
        cacheUuid: CACHE_UUID,
        objsCleaned: [],
        extents: [{ lba: 0, sectors: 8 }, { lba: 2048, sectors: 8 }],
        trims: [{ lba: 4096, sectors: 2048, beforeIndex: 1 }],
        writeContinues: false,
      },
      new Uint8Array(16 * 512).fill(0xab),
    );
    const shown = `
      4c 53 56 44 01 00 00 00 6f 1c 2b 3a 4d 5e 4f 60 8a 7b 9c 0d 1e 2f 3a 4b 02 00 00 00 2a 00 00 00
      08 00 00 00 10 00 00 00 ee a1 eb d5 e8 03 00 00 00 00 00 00 7c 00 00 00 00 00 00 00 7c 00 00 00
      10 00 00 00 4c 53 56 58 01 00 00 00 38 00 00 00 6b 41 38 89 d9 7b da 8e e9 03 00 00 00 00 00 00
      0a 1b 2c 3d 4e 5f 4a 6b bc 7d 8e 9f a0 b1 c2 d3 8c 00 00 00 10 00 00 00 00 00 00 00 00 00 00 00
      80 00 00 00 00 08 00 00 80 00 00 00 00 10 00 00 00 00 00 00 00 08 00 00 01 00 00 00`;
    const bytes = shown.trim().split(/\s+/).map((hex) => Number.parseInt(hex, 16));
    expect(header.byteLength).toBe(4096);
    expect(Array.from(header.subarray(0, bytes.length))).toEqual(bytes);
    expect(header.subarray(bytes.length).every((byte) => byte === 0)).toBe(true);
  });
});
