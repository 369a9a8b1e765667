// The admin protocol's codec: one JSON request per line in, one JSON reply per line out, in request order. Pure: no
// I/O (src/admin/server.ts frames and serves it, src/admin/client.ts asks). Spec: docs/operations.md, "Admin socket".
//
//   request := {"version": 1, "op": NAME, "args": {...}?, "id": STRING|NUMBER?} "\n"      (version may be left out)
//   reply   := {"version": 1, "id": ID?, "ok": true, "result": VALUE} "\n"
//            | {"version": 1, "id": ID?, "ok": false, "error": {"code": CODE, "message": TEXT}} "\n"
//
// A request line is at most ADMIN_REQUEST_BYTES_MAX bytes (newline excluded). Error codes are few and fixed
// (ADMIN_ERROR_CODES); the message says what was wrong in words.

export const ADMIN_PROTOCOL_VERSION = 1;
/** Longest request line: generous for any op's arguments, small enough that a client cannot make us hold much. */
export const ADMIN_REQUEST_BYTES_MAX = 64 * 1024;
const ID_TEXT_MAX = 128;
const OP_NAME = /^[a-z][a-z0-9-]{0,63}$/;

export const ADMIN_ERROR_CODES = [
  /** The line is not JSON. */
  "bad-json",
  /** JSON, but not a request: not an object, no op, wrong field types. */
  "bad-request",
  /** A version this server does not speak. */
  "unsupported-version",
  /** No such op (the message lists the ops there are). */
  "unknown-op",
  /** The line is longer than ADMIN_REQUEST_BYTES_MAX: the connection is closed after this reply. */
  "too-long",
  /** Too many connections or too many requests queued on one: the connection is closed after this reply. */
  "busy",
  /** The op ran and failed (the message says why). */
  "failed",
] as const;
export type AdminErrorCode = (typeof ADMIN_ERROR_CODES)[number];

export type AdminId = string | number | null;

export interface AdminRequest {
  op: string;
  args: Record<string, unknown>;
  id: AdminId;
}

export type AdminReply =
  | { version: number; id: AdminId; ok: true; result: unknown }
  | { version: number; id: AdminId; ok: false; error: { code: AdminErrorCode; message: string } };

export type Decoded = { ok: true; request: AdminRequest } | { ok: false; id: AdminId; code: AdminErrorCode; message: string };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function decodeId(value: unknown): AdminId | undefined {
  if (value === undefined || value === null) return null;
  if (typeof value === "number" && Number.isSafeInteger(value)) return value;
  if (typeof value === "string" && value.length <= ID_TEXT_MAX) return value;
  return undefined;
}

/** Decodes one request line (without its newline). Never throws: bad input becomes an error to reply with. */
export function decodeRequest(line: string): Decoded {
  if (line.length > ADMIN_REQUEST_BYTES_MAX) {
    return { ok: false, id: null, code: "too-long", message: `request longer than ${ADMIN_REQUEST_BYTES_MAX} bytes` };
  }
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    return { ok: false, id: null, code: "bad-json", message: `request is not JSON: ${(error as Error).message}` };
  }
  if (!isRecord(value)) return { ok: false, id: null, code: "bad-request", message: "request must be a JSON object with an \"op\"" };
  const id = decodeId(value.id);
  if (id === undefined) return { ok: false, id: null, code: "bad-request", message: `"id" must be a string of at most ${ID_TEXT_MAX} characters or an integer` };
  const version = value.version ?? ADMIN_PROTOCOL_VERSION;
  if (version !== ADMIN_PROTOCOL_VERSION) {
    return { ok: false, id, code: "unsupported-version", message: `protocol version ${JSON.stringify(version)} is not supported (this server speaks ${ADMIN_PROTOCOL_VERSION})` };
  }
  if (typeof value.op !== "string" || !OP_NAME.test(value.op)) {
    return { ok: false, id, code: "bad-request", message: "\"op\" must be an op name (lower case, e.g. \"status\")" };
  }
  const args = value.args ?? {};
  if (!isRecord(args)) return { ok: false, id, code: "bad-request", message: "\"args\" must be a JSON object" };
  return { ok: true, request: { op: value.op, args, id } };
}

export function encodeRequest(op: string, args: Record<string, unknown> = {}, id: AdminId = null): string {
  return `${JSON.stringify({ version: ADMIN_PROTOCOL_VERSION, op, args, ...(id === null ? {} : { id }) })}\n`;
}

export function encodeResult(id: AdminId, result: unknown): string {
  return `${JSON.stringify({ version: ADMIN_PROTOCOL_VERSION, id, ok: true, result })}\n`;
}

export function encodeError(id: AdminId, code: AdminErrorCode, message: string): string {
  return `${JSON.stringify({ version: ADMIN_PROTOCOL_VERSION, id, ok: false, error: { code, message } })}\n`;
}

/** Decodes a reply line (the client's side). Throws Error with a plain message on anything that is not a reply. */
export function decodeReply(line: string): AdminReply {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw new Error(`the admin socket's reply is not JSON: ${(error as Error).message}`);
  }
  if (!isRecord(value) || typeof value.ok !== "boolean") throw new Error("the admin socket's reply is not an admin reply");
  if (value.version !== ADMIN_PROTOCOL_VERSION) throw new Error(`the admin socket speaks protocol version ${JSON.stringify(value.version)}, not ${ADMIN_PROTOCOL_VERSION}`);
  const id = decodeId(value.id) ?? null;
  if (value.ok) return { version: ADMIN_PROTOCOL_VERSION, id, ok: true, result: value.result };
  const error = value.error;
  if (!isRecord(error) || typeof error.code !== "string" || typeof error.message !== "string") throw new Error("the admin socket's error reply has no code and message");
  const code = (ADMIN_ERROR_CODES as readonly string[]).includes(error.code) ? (error.code as AdminErrorCode) : "failed";
  return { version: ADMIN_PROTOCOL_VERSION, id, ok: false, error: { code, message: error.message } };
}
