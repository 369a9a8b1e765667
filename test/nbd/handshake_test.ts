// Handshake without sockets: bytes in through feed(), replies collected from `send`.

import { expect, test } from "bun:test";
import { NBD_HANDSHAKE_OPTIONS_MAX } from "../../src/constants.ts";
import { Handshake, type ExportInfo } from "../../src/nbd/handshake.ts";
import {
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_OPT_GO,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNSUP,
  decodeOptionReply,
  encodeInfoRequest,
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

function start(info = exportInfo): { handshake: Handshake; replies: () => OptionReply[] } {
  const sent: Uint8Array[] = [];
  const handshake = new Handshake(info, (bytes) => sent.push(bytes));
  handshake.start();
  handshake.feed(new Uint8Array([0, 0, 0, 3]));
  const replies = () => {
    const all = new Uint8Array(Buffer.concat(sent.splice(0)));
    const result: OptionReply[] = [];
    let offset = all[0] === 0x4e ? 18 : 0; // skip the greeting once
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

test("GO hands over the bytes that followed it and the negotiated flags", () => {
  const { handshake, replies } = start();
  const stream = new Uint8Array([
    ...encodeOption(NBD_OPT_STRUCTURED_REPLY),
    ...encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "disk", infoTypes: [] })),
    1, 2, 3,
  ]);
  const result = handshake.feed(stream);
  expect(result.kind).toBe("transmission");
  if (result.kind !== "transmission") return;
  expect([...result.leftover]).toEqual([1, 2, 3]);
  expect(result.negotiated.structuredReplies).toBe(true);
  expect(result.negotiated.baseAllocation).toBe(false);
  expect(result.negotiated.transmissionFlags & NBD_FLAG_SEND_DF).toBeTruthy();
  expect(replies().map((reply) => reply.replyType).at(-1)).toBe(NBD_REP_ACK);
});

test("STRUCTURED_REPLY twice or with data is ERR_INVALID", () => {
  const { handshake, replies } = start();
  handshake.feed(encodeOption(NBD_OPT_STRUCTURED_REPLY, new Uint8Array(1)));
  handshake.feed(encodeOption(NBD_OPT_STRUCTURED_REPLY));
  handshake.feed(encodeOption(NBD_OPT_STRUCTURED_REPLY));
  expect(replies().map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_INVALID, NBD_REP_ACK, NBD_REP_ERR_INVALID]);
});

test("a client looping in negotiation is cut off after the option limit", () => {
  const { handshake, replies } = start();
  let result = handshake.feed(encodeOption(77));
  for (let index = 1; index < NBD_HANDSHAKE_OPTIONS_MAX; index++) result = handshake.feed(encodeOption(77));
  expect(result.kind).toBe("continue");
  expect(replies().every((reply) => reply.replyType === NBD_REP_ERR_UNSUP)).toBe(true);
  expect(handshake.feed(encodeOption(77)).kind).toBe("close");
});

test("read-only exports advertise READ_ONLY and no write commands", () => {
  const { handshake } = start({ ...exportInfo, readOnly: true });
  const result = handshake.feed(encodeOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "", infoTypes: [] })));
  expect(result.kind).toBe("transmission");
  if (result.kind !== "transmission") return;
  expect(result.negotiated.transmissionFlags & NBD_FLAG_READ_ONLY).toBeTruthy();
  expect(result.negotiated.transmissionFlags & NBD_FLAG_SEND_WRITE_ZEROES).toBe(0);
});
