// The admin protocol's codec (src/admin/protocol.ts): requests decode or become the error to reply with, never a
// throw; replies round-trip; the client refuses what is not a reply.

import { describe, expect, test } from "bun:test";
import { ADMIN_PROTOCOL_VERSION, ADMIN_REQUEST_BYTES_MAX, decodeReply, decodeRequest, encodeError, encodeRequest, encodeResult } from "../../src/admin/protocol.ts";

describe("admin protocol", () => {
  test("a request decodes with its op, args and id; version may be left out", () => {
    expect(decodeRequest('{"version":1,"op":"status","args":{"a":1},"id":"x"}')).toEqual({ ok: true, request: { op: "status", args: { a: 1 }, id: "x" } });
    expect(decodeRequest('{"op":"status"}')).toEqual({ ok: true, request: { op: "status", args: {}, id: null } });
    expect(decodeRequest(encodeRequest("snapshot-create", { name: "s1" }, 4).trimEnd())).toEqual({ ok: true, request: { op: "snapshot-create", args: { name: "s1" }, id: 4 } });
  });

  const bad: Array<[string, string, string]> = [
    ["not JSON", "garbage", "bad-json"],
    ["truncated JSON", '{"op":"sta', "bad-json"],
    ["an array", "[1,2]", "bad-request"],
    ["a string", '"status"', "bad-request"],
    ["null", "null", "bad-request"],
    ["no op", '{"version":1}', "bad-request"],
    ["op not a string", '{"op":7}', "bad-request"],
    ["op with odd characters", '{"op":"../etc"}', "bad-request"],
    ["args not an object", '{"op":"status","args":[1]}', "bad-request"],
    ["id an object", '{"op":"status","id":{}}', "bad-request"],
    ["id too long", `{"op":"status","id":"${"i".repeat(200)}"}`, "bad-request"],
    ["another version", '{"version":2,"op":"status"}', "unsupported-version"],
    ["version as text", '{"version":"1","op":"status"}', "unsupported-version"],
    ["too long", `{"op":"status","pad":"${"p".repeat(ADMIN_REQUEST_BYTES_MAX)}"}`, "too-long"],
  ];
  for (const [what, line, code] of bad) {
    test(`refused with ${code}: ${what}`, () => {
      const decoded = decodeRequest(line);
      expect(decoded.ok).toBe(false);
      if (!decoded.ok) {
        expect(decoded.code).toBe(code as typeof decoded.code);
        expect(decoded.message.length).toBeGreaterThan(10);
      }
    });
  }

  test("the id of a refused request is kept when it could be read", () => {
    const decoded = decodeRequest('{"version":9,"op":"status","id":12}');
    expect(decoded).toMatchObject({ ok: false, id: 12, code: "unsupported-version" });
  });

  test("replies are one line each and round-trip through the client's decoder", () => {
    const result = encodeResult(3, { state: "serving", text: "line\nbreak" });
    const error = encodeError(null, "unknown-op", "unknown op 'x'");
    for (const line of [result, error]) {
      expect(line.endsWith("\n")).toBe(true);
      expect(line.slice(0, -1).includes("\n")).toBe(false);
    }
    expect(decodeReply(result.trimEnd())).toEqual({ version: ADMIN_PROTOCOL_VERSION, id: 3, ok: true, result: { state: "serving", text: "line\nbreak" } });
    expect(decodeReply(error.trimEnd())).toEqual({ version: ADMIN_PROTOCOL_VERSION, id: null, ok: false, error: { code: "unknown-op", message: "unknown op 'x'" } });
  });

  test("the client refuses what is not a reply of its version", () => {
    expect(() => decodeReply("nope")).toThrow(/not JSON/);
    expect(() => decodeReply('{"x":1}')).toThrow(/not an admin reply/);
    expect(() => decodeReply('{"version":2,"ok":true}')).toThrow(/version 2/);
    expect(() => decodeReply('{"version":1,"ok":false}')).toThrow(/no code and message/);
  });
});
