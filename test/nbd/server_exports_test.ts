// An NBD server of several exports (serveExports): each connection gets the device of the export it named, each
// export counts its own requests, a stalled device holds up only its own export's requests, and at close each
// export is idle as soon as its own connections are gone (exportIdle).

import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenNbd, type NbdServer } from "../../src/nbd/server.ts";
import { NBD_CMD_READ, NBD_CMD_WRITE } from "../../src/nbd/wire.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";
import { RawClient } from "./raw_client.ts";

const MIB = 1024 * 1024;
let dir: string;
let server: NbdServer | null = null;

afterEach(async () => {
  await server?.close();
  server = null;
  rmSync(dir, { recursive: true, force: true });
});

async function serveTwo(): Promise<{ a: MemoryBlockDevice; b: MemoryBlockDevice; socket: string }> {
  dir = mkdtempSync(join(tmpdir(), "lsvd-nbd-exports-"));
  const socket = join(dir, "sock");
  const a = new MemoryBlockDevice(MIB);
  const b = new MemoryBlockDevice(2 * MIB);
  server = await listenNbd({ socketPath: socket });
  server.serveExports([{ device: a, exportName: "a" }, { device: b, exportName: "b" }]);
  return { a, b, socket };
}

test("each connection reaches the device of the export it named; each export counts its own requests", async () => {
  const { a, b, socket } = await serveTwo();
  const toA = await RawClient.connect({ unix: socket });
  expect((await toA.negotiate({ exportName: "a" })).sizeBytes).toBe(MIB);
  const toB = await RawClient.connect({ unix: socket });
  expect((await toB.negotiate({ exportName: "b" })).sizeBytes).toBe(2 * MIB);
  // The handshake's last replies may leave in the session's first socket write: count from here.
  const replyWritesBefore = server!.stats().replyWrites;
  await toB.request(NBD_CMD_WRITE, 4096, 4096, { payload: new Uint8Array(4096).fill(0xb), cookie: 7 });
  expect((await toB.readSimpleReply()).error).toBe(0);
  expect((await b.read(4096, 4096))[0]).toBe(0xb);
  expect((await a.read(4096, 4096))[0]).toBe(0);
  expect(server!.exportStats("b")).toMatchObject({ writes: 1, bytesWritten: 4096, connections: 1 });
  expect(server!.exportStats("a")).toMatchObject({ writes: 0, connections: 1 });
  expect(server!.stats().writes).toBe(1);
  // One reply in one socket write; the request came in one read or more (the batching counters, summed per server).
  expect(server!.stats().replyWrites - replyWritesBefore).toBe(1);
  expect(server!.exportStats("b").receives).toBeGreaterThanOrEqual(1);
  expect(server!.exportStats("a").receives).toBe(0);
  expect(server!.stats().receives).toBe(server!.exportStats("b").receives);
  toA.terminate();
  toB.terminate();
});

test("a stalled device holds up only its own export; at close the other export is idle at once", async () => {
  const { a, socket } = await serveTwo();
  let release!: () => void;
  a.gate = new Promise<void>((resolve) => (release = resolve));
  const toA = await RawClient.connect({ unix: socket });
  await toA.negotiate({ exportName: "a" });
  await toA.request(NBD_CMD_READ, 0, 4096, { cookie: 1 });
  const toB = await RawClient.connect({ unix: socket });
  await toB.negotiate({ exportName: "b" });
  await toB.request(NBD_CMD_READ, 0, 4096, { cookie: 2 });
  expect((await toB.readSimpleReply(4096)).error).toBe(0);
  expect(server!.exportStats("a").requestsInFlight).toBe(1);
  // Close: b's client goes, so b is idle while a's read is still held by its device.
  const closed = server!.close();
  toB.terminate();
  let aIdle = false;
  const idleA = server!.exportIdle("a").then(() => (aIdle = true));
  await server!.exportIdle("b");
  expect(aIdle).toBe(false);
  release();
  expect((await toA.readSimpleReply(4096)).error).toBe(0);
  await idleA;
  await closed;
  server = null;
});
