// Asking a serving process over its admin socket (src/admin/protocol.ts): connect, send one request line, read one
// reply line. Used by `lsvd status`. Errors are worded for the operator: no socket or nobody listening means the
// volume is not served from here (NotFoundError), a silent server an IOError.

import { IOError, NotFoundError } from "../errors.ts";
import { ADMIN_REQUEST_BYTES_MAX, decodeReply, encodeRequest, type AdminReply } from "./protocol.ts";

/** A reply may be much longer than a request (a status); this bounds what a client holds. */
const ADMIN_REPLY_BYTES_MAX = 16 * ADMIN_REQUEST_BYTES_MAX;
export const ADMIN_CLIENT_TIMEOUT_MS = 10_000;

export async function adminRequest(path: string, op: string, args: Record<string, unknown> = {}, timeoutMs = ADMIN_CLIENT_TIMEOUT_MS): Promise<AdminReply> {
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const decoder = new TextDecoder();
  let received = "";
  let socket: import("bun").Socket<undefined>;
  try {
    socket = await Bun.connect({
      unix: path,
      socket: {
        data(_socket, chunk) {
          received += decoder.decode(chunk, { stream: true });
          const newline = received.indexOf("\n");
          if (newline >= 0) resolve(received.slice(0, newline));
          else if (received.length > ADMIN_REPLY_BYTES_MAX) reject(new IOError(`the admin socket ${path} sent more than ${ADMIN_REPLY_BYTES_MAX} bytes without a newline`));
        },
        close: () => reject(new IOError(`the admin socket ${path} closed the connection without a reply`)),
        error: (_socket, error) => reject(new IOError(`admin socket ${path}: ${error.message}`)),
      },
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException)?.code;
    if (code === "ENOENT" || code === "ECONNREFUSED") throw new NotFoundError(`nothing answers on admin socket ${path} (${code})`);
    throw new IOError(`Cannot connect to admin socket ${path}: ${code ?? (error as Error)?.message}`);
  }
  const timer = setTimeout(() => reject(new IOError(`the admin socket ${path} did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
  try {
    socket.write(encodeRequest(op, args));
    const line = await promise;
    try {
      return decodeReply(line);
    } catch (error) {
      throw new IOError((error as Error).message);
    }
  } finally {
    clearTimeout(timer);
    socket.end();
  }
}
