// The admin socket server (src/admin/server.ts) on a real unix socket: ops answered in request order, hostile input
// (garbage, a huge line, too many connections, too many pipelined requests) answered with clear errors while the
// server keeps answering others, and the socket path rule shared with the NBD socket (a live socket is not taken
// over, a stale one is replaced, the path is removed at close only while it is ours).

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adminRequest } from "../../src/admin/client.ts";
import { decodeReply } from "../../src/admin/protocol.ts";
import { ADMIN_CONNECTIONS_MAX, ADMIN_QUEUED_REQUESTS_MAX, AdminOps, listenAdmin, type AdminServer } from "../../src/admin/server.ts";

const dir = mkdtempSync(join(tmpdir(), "lsvd-admin-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
function socketPath(): string {
  return join(dir, `admin.${++counter}.sock`);
}

/** A raw client: sends what it is given and collects reply lines until the server closes or `count` arrive. */
async function exchange(path: string, payload: string | Uint8Array, count: number): Promise<{ lines: string[]; closed: boolean }> {
  const lines: string[] = [];
  let text = "";
  let closed = false;
  const done = Promise.withResolvers<void>();
  const socket = await Bun.connect({
    unix: path,
    socket: {
      data(_socket, chunk) {
        text += new TextDecoder().decode(chunk);
        let newline: number;
        while ((newline = text.indexOf("\n")) >= 0) {
          lines.push(text.slice(0, newline));
          text = text.slice(newline + 1);
        }
        if (lines.length >= count) done.resolve();
      },
      close() {
        closed = true;
        done.resolve();
      },
    },
  });
  socket.write(payload);
  await done.promise;
  if (!closed) socket.end();
  return { lines, closed };
}

function codes(lines: string[]): string[] {
  return lines.map((line) => {
    const reply = decodeReply(line);
    return reply.ok ? "ok" : reply.error.code;
  });
}

async function withServer(run: (server: AdminServer, ops: AdminOps) => Promise<void>): Promise<void> {
  const ops = new AdminOps();
  let calls = 0;
  ops.register("status", "test status", () => ({ calls: ++calls }));
  ops.register("slow", "answers after a while", async (args) => {
    await Bun.sleep(Number(args.ms ?? 20));
    return { slept: args.ms ?? 20 };
  });
  ops.register("boom", "fails", () => {
    throw new Error("it broke");
  });
  const server = await listenAdmin(socketPath(), ops, () => {});
  try {
    await run(server, ops);
  } finally {
    server.close();
  }
}

describe("admin socket server", () => {
  test("answers ops in request order, also when an earlier one takes longer", async () => {
    await withServer(async (server) => {
      const payload = ['{"op":"slow","args":{"ms":50},"id":1}', '{"op":"status","id":2}', '{"op":"ops","id":3}', ""].join("\n");
      const { lines } = await exchange(server.path, payload, 3);
      const replies = lines.map(decodeReply);
      expect(replies.map((reply) => reply.id)).toEqual([1, 2, 3]);
      expect(replies[0]).toMatchObject({ ok: true, result: { slept: 50 } });
      expect(replies[1]).toMatchObject({ ok: true, result: { calls: 1 } });
      expect((replies[2] as { result: Array<{ op: string }> }).result.map((entry) => entry.op)).toEqual(["ops", "status", "slow", "boom"]);
    });
  });

  test("garbage, unknown ops and failing ops get clear errors and the connection goes on", async () => {
    await withServer(async (server) => {
      const payload = ["garbage", "[1]", '{"op":"nope"}', '{"version":3,"op":"status"}', '{"op":"boom"}', '{"op":"status"}', ""].join("\r\n");
      const { lines } = await exchange(server.path, payload, 6);
      expect(codes(lines)).toEqual(["bad-json", "bad-request", "unknown-op", "unsupported-version", "failed", "ok"]);
      expect(decodeReply(lines[2]!)).toMatchObject({ error: { message: "unknown op 'nope' (ops: ops, status, slow, boom)" } });
      expect(decodeReply(lines[4]!)).toMatchObject({ error: { message: "boom failed: it broke" } });
    });
  });

  test("a line longer than the limit is answered too-long and its connection closed; others are still served", async () => {
    await withServer(async (server) => {
      const huge = await exchange(server.path, "x".repeat(200 * 1024), 1);
      expect(codes(huge.lines)).toEqual(["too-long"]);
      expect(huge.closed).toBe(true);
      expect((await adminRequest(server.path, "status")).ok).toBe(true);
    });
  });

  test("more pipelined requests than the queue holds: busy, closed; the server goes on", async () => {
    await withServer(async (server) => {
      const requests = Array.from({ length: ADMIN_QUEUED_REQUESTS_MAX + 5 }, () => '{"op":"slow","args":{"ms":5}}').join("\n") + "\n";
      const { lines, closed } = await exchange(server.path, requests, ADMIN_QUEUED_REQUESTS_MAX + 5);
      expect(closed).toBe(true);
      expect(codes(lines)).toContain("busy");
      expect((await adminRequest(server.path, "status")).ok).toBe(true);
    });
  });

  test("connections beyond the limit are told busy and closed; once they go, requests are answered again", async () => {
    await withServer(async (server) => {
      const held = await Promise.all(
        Array.from({ length: ADMIN_CONNECTIONS_MAX }, () => Bun.connect({ unix: server.path, socket: { data() {} } })),
      );
      // Every held connection is accepted before the extra one is tried.
      while (server.connectionCount() < ADMIN_CONNECTIONS_MAX) await Bun.sleep(5);
      const extra = await exchange(server.path, "", 1);
      expect(codes(extra.lines)).toEqual(["busy"]);
      expect(extra.closed).toBe(true);
      for (const socket of held) socket.end();
      while (server.connectionCount() > 0) await Bun.sleep(5);
      expect((await adminRequest(server.path, "status")).ok).toBe(true);
    });
  });

  test("a live socket path is not taken over; a stale one is replaced; a file that is not a socket is refused", async () => {
    await withServer(async (server) => {
      await expect(listenAdmin(server.path, new AdminOps(), () => {})).rejects.toThrow(/in use by a running server/);
      expect((await adminRequest(server.path, "status")).ok).toBe(true);
    });
    // A stale socket: bound by a listener that stopped without removing it.
    const stalePath = socketPath();
    const stale = Bun.listen({ unix: stalePath, socket: { data() {} } });
    stale.stop(true);
    if (!existsSync(stalePath)) {
      // Bun removed it: make one with a process that dies, as a kill -9 leaves it.
      const child = Bun.spawnSync({ cmd: ["python3", "-c", `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(stalePath)})`] });
      expect(child.exitCode).toBe(0);
    }
    const replacing = await listenAdmin(stalePath, new AdminOps(), () => {});
    expect((await adminRequest(stalePath, "ops")).ok).toBe(true);
    replacing.close();
    expect(existsSync(stalePath)).toBe(false);
    const filePath = socketPath();
    writeFileSync(filePath, "not a socket");
    await expect(listenAdmin(filePath, new AdminOps(), () => {})).rejects.toThrow(/not a socket/);
    expect(existsSync(filePath)).toBe(true);
  });

  test("the client says when nothing answers", async () => {
    await expect(adminRequest(join(dir, "nobody.sock"), "status")).rejects.toThrow(/nothing answers on admin socket .* \(ENOENT\)/);
  });
});
