// The NBD server's connection lifecycle against clients that misbehave (issue 12): clients that send DISC and hang
// up with replies pending, clients that connect and say nothing (handshake timeout, bound on negotiating clients),
// clients held while the device is not ready, and the listeners' claim on a socket path or port. Real sockets,
// a memory device; test/e2e/serve_connections_test.ts does the same against the real `lsvd serve`. Each test runs on
// both transports, Bun's sockets and io_uring (nbd_io.ts).

import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NBD_CONNECTIONS_MAX, NBD_NEGOTIATING_MAX } from "../../src/constants.ts";
import { listenNbd, startNbdServer, type NbdServer } from "../../src/nbd/server.ts";
import {
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EPERM,
  NBD_GREETING_BYTES,
  NBD_OPT_LIST,
} from "../../src/nbd/wire.ts";
import type { Uring } from "../../ffi/uring.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";
import { RawClient, type Endpoint } from "./raw_client.ts";
import { concat, requestHeader, waitFor } from "../_support/pipelined.ts";
import { NBD_IO_KINDS, nbdIoRing } from "./nbd_io.ts";

const SIZE_BYTES = 16 * 1024 * 1024;

let directory: string;
const servers: NbdServer[] = [];
const clients: RawClient[] = [];
const logLines: string[] = [];
const nbdIo = nbdIoRing();
/** The server options of the transport under test (NBD_IO_KINDS): every server of a test is started with them. */
let serverIo: { ring?: Uring } = {};

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), "lsvd-nbd-connections-"));
  logLines.length = 0;
});

afterEach(async () => {
  for (const client of clients.splice(0)) if (!client.closed) client.terminate();
  for (const server of servers.splice(0)) {
    await server.close();
    expect(server.connectionCount()).toBe(0);
  }
  nbdIo.expectIdle();
  rmSync(directory, { recursive: true, force: true });
});

async function start(options: { readOnly?: boolean; tcp?: boolean; handshakeTimeoutMs?: number; device?: MemoryBlockDevice } = {}) {
  const device = options.device ?? new MemoryBlockDevice(SIZE_BYTES, options.readOnly ?? false);
  const socketPath = join(directory, "nbd.sock");
  const server = await startNbdServer({
    device,
    ...(options.tcp ? { listen: { host: "127.0.0.1", port: 0 } } : { socketPath }),
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    log: (line) => logLines.push(line),
    ...serverIo,
  });
  servers.push(server);
  const endpoint: Endpoint = options.tcp ? { hostname: "127.0.0.1", port: Number(/:(\d+)$/.exec(server.addresses[0]!)![1]) } : { unix: socketPath };
  return { server, device, endpoint };
}

async function connect(endpoint: Endpoint): Promise<RawClient> {
  const client = await RawClient.connect(endpoint);
  clients.push(client);
  return client;
}

/**
 * A connection the server refuses: closed without a byte. On io_uring the server shuts the refused socket down and
 * closes it at once, which on a unix socket can beat Bun's non-blocking connect: that connect then fails with
 * ECONNRESET, refused all the same (a blocking connect, as NBD clients make, succeeds and reads the end).
 */
async function expectRefused(endpoint: Endpoint): Promise<void> {
  let refused: RawClient;
  try {
    refused = await connect(endpoint);
  } catch (error) {
    expect((error as NodeJS.ErrnoException).code).toBe("ECONNRESET");
    return;
  }
  expect(await refused.waitClosed()).toBe(true);
  expect(refused.pendingBytes).toBe(0);
}

/** Pipelined reads (small and 1 MiB), writes and a flush, then DISC: all in one send. */
function burstThenDisc(): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let index = 0; index < 16; index++) {
    if (index % 2 === 0) parts.push(requestHeader(NBD_CMD_WRITE, index, index * 4096, 4096), new Uint8Array(4096).fill(index));
    else parts.push(requestHeader(NBD_CMD_READ, index, index * 4096, index % 5 === 0 ? 1 << 20 : 4096));
  }
  parts.push(requestHeader(NBD_CMD_FLUSH, 100, 0, 0), requestHeader(NBD_CMD_DISC, 101, 0, 0));
  return concat(parts);
}

function disconnectedLines(): number {
  return logLines.filter((line) => line.endsWith(": disconnected")).length;
}

for (const io of NBD_IO_KINDS) {
  describe(`NBD over ${io}`, () => {
    beforeEach(() => {
      serverIo = nbdIo.options(io);
    });

    describe("DISC with replies pending, then the client hangs up", () => {
      const CLIENTS = 208;
      const WAVE = 16;
      for (const readOnly of [true, false]) {
        for (const tcp of [false, true]) {
          const mode = `${readOnly ? "read-only (writes refused with EPERM)" : "writable"}, ${tcp ? "tcp" : "unix"}`;
          test(`${CLIENTS} clients, ${mode}: every connection ends and is logged`, async () => {
            const { server, device, endpoint } = await start({ readOnly, tcp });
            const burst = burstThenDisc();
            for (let wave = 0; wave < CLIENTS / WAVE; wave++) {
              // Every other wave holds the device until the clients are gone: replies are then written to dead sockets.
              let open = () => {};
              if (wave % 2 === 1) device.gate = new Promise<void>((resolve) => (open = resolve));
              await Promise.all(
                Array.from({ length: WAVE }, async (_, index) => {
                  const client = await connect(endpoint);
                  await client.negotiate({ structured: index % 2 === 0 });
                  await client.send(burst);
                  // Hang up at once: a close, or a FIN that the server's paused socket does not see.
                  if (index % 3 === 0) client.end();
                  else client.terminate();
                }),
              );
              if (wave % 2 === 1) {
                await Bun.sleep(20);
                device.gate = null;
                open();
              }
            }
            expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
            expect(disconnectedLines()).toBe(CLIENTS);
            const stats = server.stats();
            expect(stats.connectionsAccepted).toBe(CLIENTS);
            expect(stats.requestsInFlight).toBe(0);
            expect(stats.protocolErrors).toBe(0);
            if (readOnly) expect(stats.errorReplies).toBeGreaterThan(0);
          });
        }
      }

      test("DISC after pipelined requests: every reply arrives before the server closes (the spec's MUST)", async () => {
        const { endpoint } = await start({ readOnly: true });
        const client = await connect(endpoint);
        await client.negotiate();
        await client.send(concat([requestHeader(NBD_CMD_WRITE, 1, 0, 512), new Uint8Array(512), requestHeader(NBD_CMD_READ, 2, 0, 512), requestHeader(NBD_CMD_DISC, 3, 0, 0)]));
        const replies = [await client.readSimpleReply(), await client.readSimpleReply(512)];
        expect(replies.map((reply) => [reply.cookie, reply.error]).sort()).toEqual([
          [1, NBD_EPERM],
          [2, 0],
        ]);
        expect(await client.waitClosed()).toBe(true);
      });
    });

    describe("handshake timeout", () => {
      test("a client that takes the greeting and says nothing is disconnected after the timeout", async () => {
        const { server, endpoint } = await start({ handshakeTimeoutMs: 300 });
        const client = await connect(endpoint);
        await client.read(NBD_GREETING_BYTES);
        expect(await client.waitClosed(10_000)).toBe(true);
        expect(server.stats().handshakeTimeouts).toBe(1);
        expect(logLines.some((line) => line.includes("no transmission within 300 ms of the greeting"))).toBe(true);
        expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
      });

      test("the timeout bounds the whole negotiation, not the silence: a client that keeps sending options is cut off", async () => {
        const { server, endpoint } = await start({ handshakeTimeoutMs: 300 });
        const client = await connect(endpoint);
        await client.greet();
        let options = 0;
        while (!client.closed && options < 200) {
          await client.sendOption(NBD_OPT_LIST).catch(() => {});
          if (client.closed) break;
          await client.readOptionReplies().catch(() => {});
          options++;
          await Bun.sleep(20);
        }
        expect(client.closed).toBe(true);
        expect(options).toBeLessThan(200);
        expect(server.stats().handshakeTimeouts).toBe(1);
      });

      test("a client that finished negotiating is never timed out", async () => {
        const { server, endpoint } = await start({ handshakeTimeoutMs: 200 });
        const client = await connect(endpoint);
        await client.negotiate();
        await Bun.sleep(600);
        await client.request(NBD_CMD_READ, 0, 512, { cookie: 9 });
        expect(await client.readSimpleReply(512)).toMatchObject({ error: 0, cookie: 9 });
        expect(server.stats().handshakeTimeouts).toBe(0);
      });
    });

    describe("bounds on connections", () => {
      test("negotiating slots full: a new connection is closed without a greeting; established clients keep working", async () => {
        const { server, endpoint } = await start({ handshakeTimeoutMs: 60_000 });
        const established = await connect(endpoint);
        await established.negotiate();
        const idle: RawClient[] = [];
        for (let index = 0; index < NBD_NEGOTIATING_MAX; index++) {
          const client = await connect(endpoint);
          await client.read(NBD_GREETING_BYTES);
          idle.push(client);
        }
        expect(server.stats().negotiating).toBe(NBD_NEGOTIATING_MAX);
        await expectRefused(endpoint);
        expect(server.stats().connectionsRefused).toBe(1);
        expect(logLines.some((line) => line.includes(`refused a connection: ${NBD_NEGOTIATING_MAX} clients are still negotiating`))).toBe(true);
        // The established client is served as before.
        await established.request(NBD_CMD_WRITE, 4096, 4096, { cookie: 1, payload: new Uint8Array(4096).fill(0x5a) });
        expect((await established.readSimpleReply()).error).toBe(0);
        await established.request(NBD_CMD_READ, 4096, 4096, { cookie: 2 });
        expect((await established.readSimpleReply(4096)).data).toEqual(new Uint8Array(4096).fill(0x5a));
        // One idle client leaves: its slot is free again.
        idle[0]!.terminate();
        expect(await waitFor(() => server.stats().negotiating === NBD_NEGOTIATING_MAX - 1)).toBe(true);
        const late = await connect(endpoint);
        await late.negotiate();
      });

      test(`all ${NBD_CONNECTIONS_MAX} connection slots taken by established clients: the next one is refused`, async () => {
        const { server, endpoint } = await start();
        const established: RawClient[] = [];
        for (let index = 0; index < NBD_CONNECTIONS_MAX; index++) {
          const client = await connect(endpoint);
          await client.negotiate();
          established.push(client);
        }
        await expectRefused(endpoint);
        expect(server.stats().connectionsRefused).toBe(1);
        await established[17]!.request(NBD_CMD_READ, 0, 512, { cookie: 3 });
        expect((await established[17]!.readSimpleReply(512)).error).toBe(0);
      });

      test("200 idle sockets cannot lock a good client out: it gets in once the idle ones time out", async () => {
        const { server, endpoint } = await start({ handshakeTimeoutMs: 500 });
        for (let index = 0; index < 200; index++) await connect(endpoint);
        let served = false;
        for (let attempt = 0; attempt < 100 && !served; attempt++) {
          try {
            const client = await connect(endpoint);
            await client.negotiate();
            await client.request(NBD_CMD_READ, 0, 512);
            served = (await client.readSimpleReply(512)).error === 0;
          } catch {
            await Bun.sleep(100);
          }
        }
        expect(served).toBe(true);
        expect(server.stats().handshakeTimeouts).toBeGreaterThan(0);
        expect(server.stats().connectionsRefused).toBeGreaterThan(0);
      });
    });

    describe("listeners", () => {
      test("clients that connect before serve() wait for their greeting, then negotiate", async () => {
        const socketPath = join(directory, "held.sock");
        const server = await listenNbd({ socketPath, handshakeTimeoutMs: 200, log: (line) => logLines.push(line), ...serverIo });
        servers.push(server);
        const client = await connect({ unix: socketPath });
        // Longer than the handshake timeout: the clock starts at the greeting, not at the connect.
        await Bun.sleep(400);
        expect(client.pendingBytes).toBe(0);
        expect(client.closed).toBe(false);
        expect(server.stats().negotiating).toBe(1);
        server.serve({ device: new MemoryBlockDevice(SIZE_BYTES) });
        await client.negotiate();
        await client.request(NBD_CMD_READ, 0, 512);
        expect((await client.readSimpleReply(512)).error).toBe(0);
      });

      test("close() before serve(): held clients are closed and the socket file removed", async () => {
        const socketPath = join(directory, "held.sock");
        const server = await listenNbd({ socketPath, ...serverIo });
        const client = await connect({ unix: socketPath });
        expect(await waitFor(() => server.connectionCount() === 1)).toBe(true);
        await server.close();
        expect(await client.waitClosed()).toBe(true);
        expect(client.pendingBytes).toBe(0);
        expect(existsSync(socketPath)).toBe(false);
      });

      test("a socket path where a server answers is refused and left alone; that server keeps serving", async () => {
        const { device, endpoint } = await start();
        const socketPath = join(directory, "nbd.sock");
        await device.write(0, new Uint8Array(512).fill(0x11), false);
        await expect(listenNbd({ socketPath, ...serverIo })).rejects.toThrow(`socket ${socketPath} is in use by a running server`);
        expect(existsSync(socketPath)).toBe(true);
        const client = await connect(endpoint);
        await client.negotiate();
        await client.request(NBD_CMD_READ, 0, 512);
        expect((await client.readSimpleReply(512)).data).toEqual(new Uint8Array(512).fill(0x11));
      });

      test("a stale socket file (its server died) is replaced", async () => {
        const socketPath = join(directory, "stale.sock");
        // A socket bound by a process that exits without removing it: nothing listens, connect gets ECONNREFUSED.
        const made = Bun.spawnSync(["/usr/bin/python3", "-c", `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(socketPath)})`]);
        expect(made.exitCode).toBe(0);
        expect(existsSync(socketPath)).toBe(true);
        const server = await startNbdServer({ device: new MemoryBlockDevice(SIZE_BYTES), socketPath, ...serverIo });
        servers.push(server);
        const client = await connect({ unix: socketPath });
        await client.negotiate();
      });

      test("a path that is not a socket is refused and never touched", async () => {
        const socketPath = join(directory, "regular");
        writeFileSync(socketPath, "precious");
        await expect(listenNbd({ socketPath, ...serverIo })).rejects.toThrow("it exists and is not a socket");
        expect(readFileSync(socketPath, "utf8")).toBe("precious");
      });

      test("a port in use fails at once, and a socket bound before it is removed again", async () => {
        const busy = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
        try {
          const socketPath = join(directory, "both.sock");
          await expect(listenNbd({ socketPath, listen: { host: "127.0.0.1", port: busy.port }, ...serverIo })).rejects.toThrow(
            // Bun's listener says "EADDRINUSE (address in use)", the io_uring one "EADDRINUSE (errno 98)".
            new RegExp(`^Cannot listen on 127\\.0\\.0\\.1:${busy.port}: EADDRINUSE \\(`),
          );
          expect(existsSync(socketPath)).toBe(false);
        } finally {
          busy.stop(true);
        }
      });

      if (io === "uring") {
        test("a host name is refused with the address in the message (the ring's listeners bind IP addresses)", async () => {
          await expect(listenNbd({ listen: { host: "nbd.example.invalid", port: 0 }, ...serverIo })).rejects.toThrow(
            "Cannot listen on nbd.example.invalid:0 with NBD on io_uring: 'nbd.example.invalid' is not an IPv4 or IPv6 address (give an IP address)",
          );
        });
      }
    });
  });
}
