import { describe, expect, test } from "bun:test";
import { JOURNAL_RECORD_EXTENTS_MAX } from "../../src/constants.ts";
import {
  JOURNAL_HEADER_BYTES,
  JournalRecordType,
  decodeJournalHeader,
  encodeJournalHeader,
  verifyJournalData,
  type JournalExtent,
  type JournalRecordHeader,
} from "../../src/format/journal_record.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import {
  ByteBuilder,
  CACHE_UUID,
  VOL_UUID,
  crc32cBitwise,
  crcWithZeroed,
  expectCorruption,
  expectEveryFlipDetected,
  expectEveryTruncationRejected,
  seededRandom,
  setU32,
} from "./_helpers.ts";

const SEQ = 2 ** 40 + 9;
const EXTENTS: JournalExtent[] = [
  { lba: 100, sectors: 8, zero: false },
  { lba: 5000, sectors: 1000, zero: true },
  { lba: 7, sectors: 1, zero: false },
];
/** 8 + 1 sectors of data, zero-padded to two pages. */
const DATA = (() => {
  const data = new Uint8Array(8192);
  for (let i = 0; i < 9 * 512; i++) data[i] = (i * 13 + 5) & 0xff;
  return data;
})();

const GENERATION = 7;

function reseal(page: Uint8Array): void {
  setU32(page, 8, crcWithZeroed(page, [8], crc32cBitwise));
}

function handMadeData(): Uint8Array {
  const page = new ByteBuilder()
    .ascii("LSVJ").u16(1).u16(1).u32(0).u32(crc32cBitwise(DATA))
    .u64(SEQ).uuid(VOL_UUID).uuid(CACHE_UUID).u32(2).u32(3)
    .u32(GENERATION).u32(0)
    .u64(100).u32(8).u32(0)
    .u64(5000).u32(1000).u32(1)
    .u64(7).u32(1).u32(0)
    .padTo(4096)
    .build();
  reseal(page);
  return page;
}

function handMadePad(): Uint8Array {
  const page = new ByteBuilder()
    .ascii("LSVJ").u16(1).u16(2).u32(0).u32(0)
    .u64(SEQ + 1).uuid(VOL_UUID).uuid(CACHE_UUID).u32(37).u32(0)
    .u32(GENERATION).u32(0)
    .padTo(4096)
    .build();
  reseal(page);
  return page;
}

const header: Omit<JournalRecordHeader, "dataCrc32c"> = {
  type: JournalRecordType.Data,
  seq: SEQ,
  volUuid: VOL_UUID,
  cacheUuid: CACHE_UUID,
  generation: GENERATION,
  dataPages: 2,
  extents: EXTENTS,
};

describe("journal records", () => {
  test("encoder output equals the hand-made page (data split over buffers), and decodes back", () => {
    expect(JOURNAL_HEADER_BYTES).toBe(4096);
    const page = new Uint8Array(4096).fill(0xee); // stale contents must not leak
    encodeJournalHeader(page, header, [DATA.subarray(0, 4096), DATA.subarray(4096)]);
    expect<Uint8Array>(page).toEqual(handMadeData());
    const other = new Uint8Array(4096);
    encodeJournalHeader(other, header, [DATA.subarray(0, 100), DATA.subarray(100, 5000), DATA.subarray(5000)]);
    expect(other).toEqual(page);
    const decoded = decodeJournalHeader(page);
    expect(decoded).toEqual({ ...header, dataCrc32c: crc32cBitwise(DATA) });
    verifyJournalData(decoded, DATA);
  });

  test("a data checksum the caller already has is written as given, the data is not read for it, and the length still counts", () => {
    const page = new Uint8Array(4096);
    encodeJournalHeader(page, header, [DATA], crc32cBitwise(DATA));
    expect<Uint8Array>(page).toEqual(handMadeData());
    // Not recomputed: a different value goes in as given (the journal's debug check is what catches a wrong one).
    encodeJournalHeader(page, header, [DATA], 0x1234abcd);
    expect(decodeJournalHeader(page).dataCrc32c).toBe(0x1234abcd);
    expect(() => encodeJournalHeader(page, header, [DATA.subarray(0, 4096)], crc32cBitwise(DATA))).toThrow(/dataPages/);
  });

  test("pad records", () => {
    const pad = { type: JournalRecordType.Pad, seq: SEQ + 1, volUuid: VOL_UUID, cacheUuid: CACHE_UUID, generation: GENERATION, dataPages: 37, extents: [] };
    const page = new Uint8Array(4096);
    encodeJournalHeader(page, pad, []);
    expect<Uint8Array>(page).toEqual(handMadePad());
    const decoded = decodeJournalHeader(page);
    expect(decoded).toEqual({ ...pad, dataCrc32c: 0 });
    verifyJournalData(decoded, new Uint8Array(0)); // nothing to check
  });

  test("randomized round trips", () => {
    const random = seededRandom("journal round trips");
    for (let round = 0; round < 100; round++) {
      const extents: JournalExtent[] = Array.from({ length: 1 + random.int(JOURNAL_RECORD_EXTENTS_MAX) }, () => {
        const zero = random.int(4) === 0;
        return { lba: random.int(2 ** 35), sectors: 1 + (zero ? random.int(2 ** 24) : random.int(16)), zero };
      });
      const dataBytes = extents.reduce((sum, e) => sum + (e.zero ? 0 : e.sectors * 512), 0);
      const dataPages = Math.ceil(dataBytes / 4096);
      const data = new Uint8Array(dataPages * 4096);
      const salt = random.int(256);
      for (let i = 0; i < dataBytes; i++) data[i] = (i * 31 + salt) & 0xff;
      const h = { type: JournalRecordType.Data, seq: random.int(2 ** 53), volUuid: VOL_UUID, cacheUuid: CACHE_UUID, generation: random.int(2 ** 32), dataPages, extents };
      const page = new Uint8Array(4096);
      const cut = random.int(data.length + 1);
      encodeJournalHeader(page, h, [data.subarray(0, cut), data.subarray(cut)]);
      const decoded = decodeJournalHeader(page);
      expect(decoded).toEqual({ ...h, dataCrc32c: crc32c(data) });
      verifyJournalData(decoded, data);
    }
  });

  test("every single-byte corruption and every truncation of a header page is detected", () => {
    expectEveryFlipDetected(handMadeData(), decodeJournalHeader);
    expectEveryFlipDetected(handMadePad(), decodeJournalHeader);
    expectEveryTruncationRejected(handMadeData(), decodeJournalHeader);
    expectCorruption(() => decodeJournalHeader(new Uint8Array(4096))); // never-written space
    expectCorruption(() => decodeJournalHeader(new Uint8Array(8192)));
  });

  test("data corruption and short data are detected, naming the record", () => {
    const decoded = decodeJournalHeader(handMadeData());
    const corrupted = DATA.slice();
    for (const i of [0, 4095, 4096, 4607, 8191]) {
      corrupted[i]! ^= 0x80;
      expect(expectCorruption(() => verifyJournalData(decoded, corrupted)).message).toContain(`journal record ${SEQ}`);
      corrupted[i]! ^= 0x80;
    }
    expectCorruption(() => verifyJournalData(decoded, DATA.subarray(0, 4096)));
  });

  test("inconsistent headers are rejected (header CRC made valid again)", () => {
    const edits: [string, (page: Uint8Array) => void][] = [
      ["extent count 253", (p) => setU32(p, 60, JOURNAL_RECORD_EXTENTS_MAX + 1)],
      ["extent count huge", (p) => setU32(p, 60, 0xffffffff)],
      ["extent count beyond the written ones", (p) => setU32(p, 60, 4)],
      ["fewer extents than written", (p) => setU32(p, 60, 2)],
      ["data pages too few", (p) => setU32(p, 56, 1)],
      ["data pages too many", (p) => setU32(p, 56, 3)],
      ["data pages huge", (p) => setU32(p, 56, 0xffffffff)],
      ["unknown flag", (p) => setU32(p, 72 + 12, 2)],
      ["extent length 0", (p) => setU32(p, 72 + 8, 0)],
      ["extent past 2^36", (p) => setU32(p, 72 + 4, 16)],
      ["seq past 2^53", (p) => (p[23] = 0x80)],
      ["unknown type", (p) => (p[6] = 3)],
      ["pad with extents", (p) => (p[6] = 2)],
      ["no extents", (p) => (setU32(p, 60, 0), p.fill(0, 72, 120))],
      ["cache uuid invalid", (p) => (p[40 + 8] = 0)],
      ["version 2", (p) => (p[4] = 2)],
    ];
    for (const [name, edit] of edits) {
      const page = handMadeData();
      edit(page);
      reseal(page);
      let error: Error;
      try {
        error = expectCorruption(() => decodeJournalHeader(page));
      } catch (failure) {
        throw new Error(`${name}: ${(failure as Error).message}`);
      }
      expect(error.message).toStartWith("Cannot decode journal record");
    }
    const pad = handMadePad();
    setU32(pad, 12, 1); // a pad record with a data CRC
    reseal(pad);
    expectCorruption(() => decodeJournalHeader(pad));
  });

  test("encode refuses inconsistent records", () => {
    const page = new Uint8Array(4096);
    expect(() => encodeJournalHeader(page, { ...header, dataPages: 3 }, [DATA, new Uint8Array(4096)])).toThrow();
    expect(() => encodeJournalHeader(page, header, [DATA.subarray(0, 4096)])).toThrow();
    expect(() => encodeJournalHeader(new Uint8Array(512), header, [DATA])).toThrow();
    const tooMany = Array.from({ length: JOURNAL_RECORD_EXTENTS_MAX + 1 }, (_, i) => ({ lba: i, sectors: 1, zero: true }));
    expect(() => encodeJournalHeader(page, { ...header, dataPages: 0, extents: tooMany }, [])).toThrow();
    const justEnough = tooMany.slice(1);
    encodeJournalHeader(page, { ...header, dataPages: 0, extents: justEnough }, []);
    expect(decodeJournalHeader(page).extents).toEqual(justEnough);
  });
});

describe("docs/format.md worked example", () => {
  test("the journal header bytes shown in the spec", () => {
    const data = new Uint8Array(8192);
    data.fill(0xab, 0, 4096);
    data.fill(0xcd, 4096, 4608);
    const page = new Uint8Array(4096);
    encodeJournalHeader(
      page,
      {
        type: JournalRecordType.Data,
        seq: 1000,
        volUuid: VOL_UUID,
        cacheUuid: CACHE_UUID,
        generation: GENERATION,
        dataPages: 2,
        extents: [
          { lba: 0, sectors: 8, zero: false },
          { lba: 4096, sectors: 2048, zero: true },
          { lba: 2048, sectors: 1, zero: false },
        ],
      },
      [data],
    );
    const shown = `
      4c 53 56 4a 01 00 01 00 f2 56 3c 96 da 31 6d 58 e8 03 00 00 00 00 00 00 6f 1c 2b 3a 4d 5e 4f 60
      8a 7b 9c 0d 1e 2f 3a 4b 0a 1b 2c 3d 4e 5f 4a 6b bc 7d 8e 9f a0 b1 c2 d3 02 00 00 00 03 00 00 00
      07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00 00 10 00 00 00 00 00 00
      00 08 00 00 01 00 00 00 00 08 00 00 00 00 00 00 01 00 00 00 00 00 00 00`;
    const bytes = shown.trim().split(/\s+/).map((hex) => Number.parseInt(hex, 16));
    expect(Array.from(page.subarray(0, bytes.length))).toEqual(bytes);
    expect(page.subarray(bytes.length).every((byte) => byte === 0)).toBe(true);
  });
});
