// Codec tests for src/nbd/wire.ts: byte layouts pinned against the spec, round trips, and rejected input.

import { describe, expect, test } from "bun:test";
import { CorruptionError } from "../../src/errors.ts";
import {
  NBD_CMD_WRITE,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_ACK,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReply,
  decodeReplyHeader,
  decodeRequestHeader,
  decodeString,
  encodeErrorChunkPayload,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeOptionReply,
  encodeRequestHeader,
  readU64,
  writeSimpleReply,
  writeStructuredReplyHeader,
  writeU32,
  writeU64,
} from "../../src/nbd/wire.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("fixed layouts", () => {
  test("greeting is NBDMAGIC, IHAVEOPT, flags", () => {
    expect(hex(encodeGreeting(3))).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
  });

  test("option and option reply headers", () => {
    expect(hex(encodeOption(NBD_OPT_GO, new Uint8Array([9])))).toBe("49484156454f5054" + "00000007" + "00000001" + "09");
    expect(hex(encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK))).toBe("0003e889045565a9" + "00000007" + "00000001" + "00000000");
    const header = decodeOptionHeader(encodeOption(NBD_OPT_GO, new Uint8Array(5)), 0);
    expect(header).toEqual({ option: NBD_OPT_GO, length: 5 });
  });

  test("export name reply with and without zeroes; INFO_EXPORT and INFO_BLOCK_SIZE", () => {
    expect(hex(encodeExportNameReply(0x1_0000_0200, 0x0d6d, true))).toBe("0000000100000200" + "0d6d");
    expect(encodeExportNameReply(4096, 1, false).length).toBe(10 + 124);
    expect(hex(encodeInfoExport(4096, 1))).toBe("0000" + "0000000000001000" + "0001");
    expect(hex(encodeInfoBlockSize(512, 4096, 32 << 20))).toBe("0003" + "00000200" + "00001000" + "02000000");
  });

  test("request header round trip, cookie halves kept exactly", () => {
    const header = { flags: 1, type: NBD_CMD_WRITE, cookieHigh: 0xdeadbeef, cookieLow: 0xfeedface, offset: 2 ** 40 + 512, length: 4096 };
    const bytes = encodeRequestHeader(header);
    expect(hex(bytes)).toBe("25609513" + "0001" + "0001" + "deadbeeffeedface" + "0000010000000200" + "00001000");
    expect(decodeRequestHeader(bytes, 0)).toEqual(header);
    bytes[0] = 0;
    expect(decodeRequestHeader(bytes, 0)).toBeNull();
  });

  test("u64 offsets past 2^53 decode to numbers beyond any export", () => {
    const bytes = new Uint8Array(8).fill(0xff);
    expect(readU64(bytes, 0)).toBeGreaterThan(2 ** 63);
    expect(() => writeU64(bytes, 0, 2 ** 60)).toThrow();
  });

  test("simple and structured reply headers decode back", () => {
    const bytes = new Uint8Array(36);
    writeSimpleReply(bytes, 0, 22, 1, 2);
    writeStructuredReplyHeader(bytes, 16, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 3, 4, 4104);
    expect(hex(bytes.subarray(0, 16))).toBe("67446698" + "00000016" + "0000000100000002");
    expect(decodeReplyHeader(bytes, 0)).toEqual({ kind: "simple", error: 22, cookieHigh: 1, cookieLow: 2, headerBytes: 16 });
    expect(decodeReplyHeader(bytes, 16)).toEqual({
      kind: "structured",
      flags: NBD_REPLY_FLAG_DONE,
      type: NBD_REPLY_TYPE_OFFSET_DATA,
      cookieHigh: 3,
      cookieLow: 4,
      payloadBytes: 4104,
      headerBytes: 20,
    });
    expect(decodeReplyHeader(bytes.subarray(0, 10), 0)).toBeNull();
    writeU32(bytes, 0, 0x12345678);
    expect(() => decodeReplyHeader(bytes, 0)).toThrow(CorruptionError);
  });

  test("error chunk payload: errno, message length, message", () => {
    expect(hex(encodeErrorChunkPayload(5, "no"))).toBe("00000005" + "0002" + "6e6f");
    expect(encodeErrorChunkPayload(5, "x".repeat(1000)).length).toBe(6 + 256);
  });
});

describe("option payloads", () => {
  test("INFO/GO request round trip and malformed lengths", () => {
    const request = { exportName: "disk", infoTypes: [NBD_INFO_BLOCK_SIZE, 1] };
    expect(decodeInfoRequest(encodeInfoRequest(request))).toEqual(request);
    const bytes = encodeInfoRequest(request);
    expect(() => decodeInfoRequest(bytes.subarray(0, bytes.length - 1))).toThrow(CorruptionError);
    expect(() => decodeInfoRequest(new Uint8Array([0, 0, 0, 1]))).toThrow(CorruptionError);
    const long = new Uint8Array([...bytes, 0, 0]);
    expect(() => decodeInfoRequest(long)).toThrow(CorruptionError);
  });

  test("meta context request round trip and malformed input", () => {
    const request = { exportName: "", queries: ["base:allocation", "x-a:b"] };
    expect(decodeMetaContextRequest(encodeMetaContextRequest(request))).toEqual(request);
    const bytes = encodeMetaContextRequest(request);
    expect(() => decodeMetaContextRequest(bytes.subarray(0, bytes.length - 2))).toThrow(CorruptionError);
    const lying = bytes.slice();
    writeU32(lying, 4, 1000); // claims 1000 queries
    expect(() => decodeMetaContextRequest(lying)).toThrow(CorruptionError);
    expect(() => decodeMetaContextRequest(new Uint8Array([...bytes, 1]))).toThrow(CorruptionError);
  });

  test("strings: NUL and bad UTF-8 are refused", () => {
    expect(decodeString(new TextEncoder().encode("dïsk"))).toBe("dïsk");
    expect(() => decodeString(new Uint8Array([0x61, 0]))).toThrow(CorruptionError);
    expect(() => decodeString(new Uint8Array([0xff, 0xfe]))).toThrow(CorruptionError);
  });

  test("option replies decode incrementally", () => {
    const bytes = encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK, new Uint8Array([1, 2]));
    expect(decodeOptionReply(bytes.subarray(0, 21), 0)).toBeNull();
    expect(decodeOptionReply(bytes, 0)).toEqual({
      reply: { option: NBD_OPT_GO, replyType: NBD_REP_ACK, data: new Uint8Array([1, 2]) },
      next: bytes.length,
    });
  });
});
