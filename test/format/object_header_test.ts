import { describe, expect, test } from "bun:test";
import {
  COMMON_HEADER_BYTES,
  OBJECT_MAGIC,
  OBJECT_VERSION,
  ObjectType,
  decodeCommonHeader,
  headerBytesOf,
} from "../../src/format/object_header.ts";
import { ByteBuilder, VOL_UUID, expectCorruption, expectEveryTruncationRejected, setU32 } from "./_helpers.ts";

function commonHeader(type: number, seq: number, hdrSectors: number, dataSectors: number): Uint8Array {
  return new ByteBuilder()
    .ascii("LSVD")
    .u32(1)
    .uuid(VOL_UUID)
    .u32(type)
    .u32(seq)
    .u32(hdrSectors)
    .u32(dataSectors)
    .u32(0x12345678)
    .build();
}

describe("common header", () => {
  test("constants", () => {
    expect(COMMON_HEADER_BYTES).toBe(44);
    expect(OBJECT_MAGIC).toBe(0x4456534c);
    expect(OBJECT_VERSION).toBe(1);
    expect(ObjectType).toEqual({ Super: 1, Data: 2, Checkpoint: 3 });
  });

  test("decodes hand-made bytes without checking the CRC", () => {
    const bytes = commonHeader(2, 0x2a, 16, 2048);
    expect(bytes.length).toBe(44);
    expect(decodeCommonHeader(bytes)).toEqual({ volUuid: VOL_UUID, type: 2, seq: 0x2a, hdrSectors: 16, dataSectors: 2048 });
    expect(headerBytesOf(bytes)).toBe(16 * 512);
    // A longer buffer (the first page of an object) reads the same.
    const page = new Uint8Array(4096);
    page.set(bytes);
    expect(headerBytesOf(page)).toBe(8192);
  });

  test("every truncation is rejected", () => {
    expectEveryTruncationRejected(commonHeader(1, 0, 8, 0), decodeCommonHeader);
  });

  test("bad magic, version, type, seq, sizes, uuid", () => {
    const cases: [string, (b: Uint8Array) => void][] = [
      ["magic", (b) => (b[3] = 0x45)],
      ["version 0", (b) => setU32(b, 4, 0)],
      ["version 2", (b) => setU32(b, 4, 2)],
      ["type 0", (b) => setU32(b, 24, 0)],
      ["type 4", (b) => setU32(b, 24, 4)],
      ["data object with seq 0", (b) => setU32(b, 28, 0)],
      ["hdr_sectors 0", (b) => setU32(b, 32, 0)],
      ["hdr_sectors absurd", (b) => setU32(b, 32, 0xffffffff)],
      ["data_sectors absurd", (b) => setU32(b, 36, 0xffffffff)],
      ["uuid version nibble 0", (b) => (b[8 + 6] = 0x0f)],
    ];
    for (const [name, edit] of cases) {
      const bytes = commonHeader(2, 7, 8, 8);
      decodeCommonHeader(bytes);
      edit(bytes);
      const error = expectCorruption(() => decodeCommonHeader(bytes));
      expect(error.message).toStartWith("Cannot decode");
      void name;
    }
    expectCorruption(() => decodeCommonHeader(commonHeader(1, 3, 8, 0))); // superblock with seq != 0
  });
});
