// STARTTLS in the handshake, without sockets: the decision table per --tls mode (spec "TLS support": off is NOTLS,
// on is SELECTIVETLS, require is FORCEDTLS), what survives the upgrade, and what may follow it.

import { describe, expect, test } from "bun:test";
import { Handshake, type ExportInfo, type HandshakeResult, type TlsMode } from "../../src/nbd/handshake.ts";
import {
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNSUP,
  decodeOptionReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  type OptionReply,
} from "../../src/nbd/wire.ts";

const exportInfo: ExportInfo = {
  name: "disk",
  description: "",
  sizeBytes: 1 << 20,
  readOnly: false,
  blockSizeMinBytes: 512,
  blockSizePreferredBytes: 4096,
};

function start(mode: TlsMode): { handshake: Handshake; replies: () => OptionReply[] } {
  const sent: Uint8Array[] = [];
  const handshake = new Handshake(exportInfo, (bytes) => sent.push(bytes), mode);
  handshake.start();
  sent.splice(0); // the greeting
  expect(handshake.feed(new Uint8Array([0, 0, 0, 3])).kind).toBe("continue");
  const replies = () => {
    const all = new Uint8Array(Buffer.concat(sent.splice(0)));
    const result: OptionReply[] = [];
    let offset = 0;
    for (;;) {
      const decoded = decodeOptionReply(all, offset);
      if (decoded === null) break;
      result.push(decoded.reply);
      offset = decoded.next;
    }
    return result;
  };
  return { handshake, replies };
}

const go = () => encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "", infoTypes: [] }));
const info = () => encodeOption(NBD_OPT_INFO, encodeInfoRequest({ exportName: "", infoTypes: [] }));

describe("before STARTTLS", () => {
  test("off: STARTTLS is ERR_UNSUP and everything else is served", () => {
    const { handshake, replies } = start("off");
    expect(handshake.feed(encodeOption(NBD_OPT_STARTTLS)).kind).toBe("continue");
    expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNSUP]);
    expect(handshake.tlsActive).toBe(false);
    expect(handshake.feed(go()).kind).toBe("transmission");
  });

  test("on: plain clients are served in full (no export is TLS-only)", () => {
    const { handshake, replies } = start("on");
    handshake.feed(encodeOption(NBD_OPT_LIST));
    handshake.feed(info());
    expect(replies().every((reply) => reply.replyType < 2 ** 31)).toBe(true);
    expect(handshake.feed(go()).kind).toBe("transmission");
  });

  test("on: NBD_OPT_EXPORT_NAME without TLS enters transmission", () => {
    const { handshake } = start("on");
    expect(handshake.feed(encodeOption(NBD_OPT_EXPORT_NAME, new Uint8Array(0))).kind).toBe("transmission");
  });

  test("require: every option but STARTTLS and ABORT is ERR_TLS_REQD, unknown ones too", () => {
    const { handshake, replies } = start("require");
    for (const option of [NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, 77]) handshake.feed(encodeOption(option));
    handshake.feed(info());
    expect(handshake.feed(go()).kind).toBe("continue");
    expect(replies().map((reply) => reply.replyType)).toEqual(Array(5).fill(NBD_REP_ERR_TLS_REQD));
    expect(handshake.tlsRefusals).toBe(5);
    expect(handshake.feed(encodeOption(NBD_OPT_ABORT)).kind).toBe("close");
    expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ACK]);
  });

  test("require: NBD_OPT_EXPORT_NAME hangs up (it cannot carry an error)", () => {
    const { handshake, replies } = start("require");
    const result = handshake.feed(encodeOption(NBD_OPT_EXPORT_NAME, new Uint8Array(0)));
    expect(result.kind).toBe("close");
    expect(replies()).toEqual([]);
  });
});

describe("STARTTLS", () => {
  for (const mode of ["on", "require"] as const) {
    test(`${mode}: ACK, then "starttls"; afterwards every option is served and STARTTLS again is ERR_INVALID`, () => {
      const { handshake, replies } = start(mode);
      expect(handshake.feed(encodeOption(NBD_OPT_STARTTLS)).kind).toBe("starttls");
      expect(replies().map((reply) => [reply.option, reply.replyType])).toEqual([[NBD_OPT_STARTTLS, NBD_REP_ACK]]);
      expect(handshake.tlsActive).toBe(true);
      handshake.feed(encodeOption(NBD_OPT_STARTTLS));
      handshake.feed(encodeOption(NBD_OPT_LIST));
      expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_INVALID, 2, NBD_REP_ACK]);
      expect(handshake.feed(go()).kind).toBe("transmission");
    });
  }

  test("with data: ERR_INVALID, no upgrade", () => {
    const { handshake, replies } = start("require");
    expect(handshake.feed(encodeOption(NBD_OPT_STARTTLS, new Uint8Array(4))).kind).toBe("continue");
    expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_INVALID]);
    expect(handshake.tlsActive).toBe(false);
  });

  test("nothing negotiated in the clear survives the upgrade (structured replies, meta contexts)", () => {
    const { handshake } = start("on");
    handshake.feed(encodeOption(NBD_OPT_STRUCTURED_REPLY));
    handshake.feed(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "", queries: ["base:allocation"] })));
    expect(handshake.feed(encodeOption(NBD_OPT_STARTTLS)).kind).toBe("starttls");
    const result: HandshakeResult = handshake.feed(go());
    expect(result.kind).toBe("transmission");
    if (result.kind !== "transmission") return;
    expect(result.negotiated.structuredReplies).toBe(false);
    expect(result.negotiated.baseAllocation).toBe(false);
  });

  test("plain bytes after STARTTLS, before its reply, close the connection", () => {
    const { handshake } = start("on");
    const result = handshake.feed(new Uint8Array([...encodeOption(NBD_OPT_STARTTLS), 0x16, 3, 1]));
    expect(result.kind).toBe("close");
    if (result.kind === "close") expect(result.reason).toContain("after NBD_OPT_STARTTLS");
  });
});
