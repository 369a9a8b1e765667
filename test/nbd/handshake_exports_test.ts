// The handshake of a server with several exports (lsvd serve --export): LIST names every one, INFO/GO and
// EXPORT_NAME pick one by name (its own size and flags), unknown names are refused as the spec says (ERR_UNKNOWN,
// or a hang-up for EXPORT_NAME), and "" is the default export only where one is defined.

import { expect, test } from "bun:test";
import { Handshake, findExport, type ExportInfo } from "../../src/nbd/handshake.ts";
import {
  NBD_FLAG_READ_ONLY,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_INFO,
  NBD_REP_SERVER,
  decodeOptionReply,
  encodeInfoRequest,
  encodeOption,
  readU32,
  type OptionReply,
} from "../../src/nbd/wire.ts";

function info(name: string, sizeBytes: number, readOnly = false): ExportInfo {
  return { name, description: `volume ${name}`, sizeBytes, readOnly, blockSizeMinBytes: 1, blockSizePreferredBytes: 4096 };
}

const EXPORTS = [info("a", 1 << 20), info("b", 2 << 20), info("c", 3 << 20, true)];

function start(exports: readonly ExportInfo[] = EXPORTS) {
  const sent: Uint8Array[] = [];
  const handshake = new Handshake(exports, (bytes) => sent.push(bytes));
  handshake.start();
  sent.splice(0); // the greeting
  handshake.feed(new Uint8Array([0, 0, 0, 3]));
  const replies = (): OptionReply[] => {
    const all = new Uint8Array(Buffer.concat(sent.splice(0)));
    const result: OptionReply[] = [];
    for (let offset = 0; ; ) {
      const decoded = decodeOptionReply(all, offset);
      if (decoded === null) return result;
      result.push(decoded.reply);
      offset = decoded.next;
    }
  };
  return { handshake, replies, sent };
}

function serverName(reply: OptionReply): string {
  const length = readU32(reply.data, 0);
  return new TextDecoder().decode(reply.data.subarray(4, 4 + length));
}

test("LIST names every export, then ACK", () => {
  const { handshake, replies } = start();
  handshake.feed(encodeOption(NBD_OPT_LIST));
  const listed = replies();
  expect(listed.map((reply) => reply.replyType)).toEqual([NBD_REP_SERVER, NBD_REP_SERVER, NBD_REP_SERVER, NBD_REP_ACK]);
  expect(listed.slice(0, 3).map(serverName)).toEqual(["a", "b", "c"]);
});

test("INFO and GO answer for the export named, with its size and flags", () => {
  const { handshake, replies } = start();
  handshake.feed(encodeOption(NBD_OPT_INFO, encodeInfoRequest({ exportName: "b", infoTypes: [] })));
  const export_ = replies().find((reply) => reply.replyType === NBD_REP_INFO && readU32(reply.data, 0) >>> 16 === 0)!;
  // NBD_INFO_EXPORT: type (2), size (8), flags (2)
  expect(Number(Buffer.from(export_.data).readBigUInt64BE(2))).toBe(2 << 20);
  const result = handshake.feed(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "c", infoTypes: [] })));
  expect(result.kind).toBe("transmission");
  if (result.kind !== "transmission") return;
  expect(result.exportName).toBe("c");
  expect(result.negotiated.transmissionFlags & NBD_FLAG_READ_ONLY).toBe(NBD_FLAG_READ_ONLY);
});

test("an unknown name, and the default export where none is defined, get ERR_UNKNOWN; haggling goes on", () => {
  const { handshake, replies } = start();
  for (const name of ["zz", "", "A"]) {
    expect(handshake.feed(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: name, infoTypes: [] }))).kind).toBe("continue");
    expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNKNOWN]);
  }
  const result = handshake.feed(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "a", infoTypes: [] })));
  expect(result.kind === "transmission" && result.exportName).toBe("a");
});

test("EXPORT_NAME picks by name, and hangs up on an unknown one (it cannot carry an error)", () => {
  const picked = start();
  const result = picked.handshake.feed(encodeOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode("b")));
  expect(result.kind === "transmission" && result.exportName).toBe("b");
  expect(Number(Buffer.from(Buffer.concat(picked.sent)).readBigUInt64BE(0))).toBe(2 << 20);
  const unknown = start();
  expect(unknown.handshake.feed(encodeOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode("zz"))).kind).toBe("close");
});

test("the default export: the one named \"\", else the only one", () => {
  expect(findExport(EXPORTS, "")).toBeNull();
  expect(findExport([info("x", 4096)], "")?.name).toBe("x");
  expect(findExport([info("x", 4096), info("", 8192)], "")?.sizeBytes).toBe(8192);
  expect(findExport(EXPORTS, "b")?.sizeBytes).toBe(2 << 20);
});
