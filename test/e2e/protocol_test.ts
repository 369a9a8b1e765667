// Raw NBD protocol against the real `lsvd serve` process, over a unix socket and TCP (spec: NBD doc/proto.md,
// "Request message", "Error values"): requests past the end get ENOSPC (writes, trims, zeroes) or EINVAL (reads)
// and the connection goes on; zero lengths and unknown commands get EINVAL (a WRITE refused before its payload still
// has the payload skipped correctly), while unaligned offsets and lengths are served (any-size I/O); a bad request
// magic or a WRITE above the 32 MiB maximum closes that connection only; a client dropping mid-payload leaves the server serving, and every
// write acknowledged before survives a crash (SIGKILL) and restart, while the half-sent write is nowhere.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { NBD_REQUEST_BYTES_MAX } from "../../src/constants.ts";
import {
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
} from "../../src/nbd/wire.ts";
import { LsvdServer, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, type VolumePaths } from "./_harness.ts";
import { RawNbdClient } from "./_raw_nbd.ts";

const MIB = 1024 * 1024;
const VOLUME_BYTES = 32 * MIB;
const TEST_TIMEOUT_MS = 60_000;

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 7 + (index >> 9)) & 0xff;
  return bytes;
}

/** WRITE that must succeed, then READ it back on the same connection. */
async function writeAndCheck(client: RawNbdClient, offset: number, data: Uint8Array, cookie: number): Promise<void> {
  await client.request(NBD_CMD_WRITE, offset, data.length, { payload: data, cookie });
  expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie });
  await expectRead(client, offset, data, cookie + 1);
}

async function expectRead(client: RawNbdClient, offset: number, data: Uint8Array, cookie: number): Promise<void> {
  await client.request(NBD_CMD_READ, offset, data.length, { cookie });
  const reply = await client.readSimpleReply(data.length);
  expect(reply.error).toBe(0);
  expect(reply.cookie).toBe(cookie);
  expect(Buffer.compare(Buffer.from(reply.data), Buffer.from(data))).toBe(0);
}

async function expectError(client: RawNbdClient, errno: number, type: number, offset: number, length: number, options: { payload?: Uint8Array; cookie: number }): Promise<void> {
  await client.request(type, offset, length, options);
  const reply = await client.readSimpleReply();
  expect({ type, offset, length, error: reply.error, cookie: reply.cookie }).toEqual({ type, offset, length, error: errno, cookie: options.cookie });
}

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

for (const transport of TRANSPORTS) {
  describe(`raw NBD protocol over ${transport}`, () => {
    let paths: VolumePaths;
    let server: LsvdServer;

    beforeAll(async () => {
      paths = await createVolume(`protocol-${transport}`, { size: "32m", cacheSize: "64m" });
      server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
    });

    afterAll(async () => {
      if (server?.running) await server.stop();
    });

    test("requests past the end: ENOSPC for writes, EINVAL for reads; the connection goes on", async () => {
      const client = await RawNbdClient.open(server.uri);
      expect(client.sizeBytes).toBe(VOLUME_BYTES);
      const page = pattern(4096, 1);
      await expectError(client, NBD_EINVAL, NBD_CMD_READ, VOLUME_BYTES - 4096, 8192, { cookie: 10 });
      await expectError(client, NBD_EINVAL, NBD_CMD_READ, VOLUME_BYTES, 512, { cookie: 11 });
      await expectError(client, NBD_EINVAL, NBD_CMD_READ, 2 ** 40, 512, { cookie: 12 });
      // The refused WRITE's payload is skipped: the next request parses.
      await expectError(client, NBD_ENOSPC, NBD_CMD_WRITE, VOLUME_BYTES - 2048, 4096, { payload: page, cookie: 13 });
      await expectError(client, NBD_ENOSPC, NBD_CMD_WRITE, VOLUME_BYTES, 4096, { payload: page, cookie: 14 });
      await expectError(client, NBD_ENOSPC, NBD_CMD_TRIM, VOLUME_BYTES - 4096, 8192, { cookie: 15 });
      await expectError(client, NBD_ENOSPC, NBD_CMD_WRITE_ZEROES, VOLUME_BYTES - 512, 1024, { cookie: 16 });
      // The last page itself is fine.
      await writeAndCheck(client, VOLUME_BYTES - 4096, page, 17);
      expect(client.closed).toBe(false);
      client.end();
    });

    test("zero lengths, unknown commands: EINVAL; unaligned offsets and lengths are served; the connection goes on", async () => {
      const client = await RawNbdClient.open(server.uri);
      const page = pattern(4096, 2);
      await expectError(client, NBD_EINVAL, NBD_CMD_READ, 0, 0, { cookie: 26 });
      await expectError(client, NBD_EINVAL, NBD_CMD_WRITE, 0, 0, { cookie: 20 });
      await expectError(client, NBD_EINVAL, 42, 0, 4096, { cookie: 27 });
      await expectError(client, NBD_EINVAL, 0xffff, 0, 0, { cookie: 28 });
      await expectError(client, NBD_EINVAL, NBD_CMD_FLUSH, 0, 4096, { cookie: 29 });
      // None of the refused requests wrote anything: the range still reads as zeroes.
      await expectRead(client, 0, new Uint8Array(3 * 4096), 30);
      // Unaligned: a WRITE at 4097, one of 1000 bytes, a TRIM and a WRITE_ZEROES of partial sectors; reads at odd places.
      const expected = new Uint8Array(4 * 4096);
      await writeAndCheck(client, 4097, page, 21);
      expected.set(page, 4097);
      await writeAndCheck(client, 8192 + 10, page.subarray(0, 1000), 23);
      expected.set(page.subarray(0, 1000), 8192 + 10);
      for (const [type, offset, length, cookie] of [[NBD_CMD_TRIM, 4100, 4096, 32], [NBD_CMD_WRITE_ZEROES, 8192 + 700, 100, 33]] as const) {
        await client.request(type, offset, length, { cookie });
        expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie });
        expected.fill(0, offset, offset + length);
      }
      await expectRead(client, 1, expected.subarray(1, 4 * 4096 - 3), 34);
      await expectRead(client, 4099, expected.subarray(4099, 4099 + 5), 35);
      await writeAndCheck(client, 4096 + 512, pattern(1536, 3), 31);
      expect(client.closed).toBe(false);
      client.end();
    });

    test("bad request magic closes that connection; the server serves a new one with the data intact", async () => {
      const first = await RawNbdClient.open(server.uri);
      const data = pattern(8192, 4);
      await first.request(NBD_CMD_WRITE, MIB, data.length, { payload: data, cookie: 40, flags: NBD_CMD_FLAG_FUA });
      expect((await first.readSimpleReply()).error).toBe(0);
      await first.request(NBD_CMD_READ, MIB, 4096, { cookie: 41, magic: 0x12345678 });
      expect(await first.waitClosed()).toBe(true);
      expect(first.pendingBytes).toBe(0);

      const second = await RawNbdClient.open(server.uri);
      await expectRead(second, MIB, data, 42);
      second.end();
      expect(server.running).toBe(true);
    });

    test("a WRITE above the 32 MiB maximum closes that connection; the server goes on", async () => {
      const first = await RawNbdClient.open(server.uri);
      // Only the header: the server must not wait for 32 MiB of payload before hanging up.
      await first.request(NBD_CMD_WRITE, 0, NBD_REQUEST_BYTES_MAX + 4096, { cookie: 50 });
      expect(await first.waitClosed()).toBe(true);
      expect(first.pendingBytes).toBe(0);

      const second = await RawNbdClient.open(server.uri);
      await writeAndCheck(second, 2 * MIB, pattern(4096, 5), 51);
      // A READ above the maximum is only refused (nothing to skip).
      await expectError(second, NBD_EINVAL, NBD_CMD_READ, 0, NBD_REQUEST_BYTES_MAX + 512, { cookie: 53 });
      expect(second.closed).toBe(false);
      second.end();
    });

    test(
      "a client dropping mid-payload: the server goes on; acknowledged writes survive SIGKILL and restart",
      async () => {
        const acknowledged: Array<[number, Uint8Array]> = [
          [4 * MIB, pattern(65536, 6)],
          [4 * MIB + 65536 + 512, pattern(512, 7)],
          [6 * MIB - 2048, pattern(4096, 8)],
        ];
        const client = await RawNbdClient.open(server.uri);
        let cookie = 60;
        // No FUA, no FLUSH: an acknowledged write is journaled, which is enough to survive a process crash.
        for (const [offset, data] of acknowledged) {
          await client.request(NBD_CMD_WRITE, offset, data.length, { payload: data, cookie });
          expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie });
          cookie++;
        }
        // Half of a 1 MiB write's payload, then the client is gone.
        const torn = pattern(MIB, 9);
        await client.request(NBD_CMD_WRITE, 8 * MIB, MIB, { payload: torn.subarray(0, MIB / 2), cookie: 99 });
        client.terminate();

        // The server is fine: a new connection reads and writes.
        const next = await RawNbdClient.open(server.uri);
        for (const [offset, data] of acknowledged) await expectRead(next, offset, data, cookie++);
        await expectRead(next, 8 * MIB, new Uint8Array(MIB), cookie++);
        next.end();
        expect(server.running).toBe(true);

        const killed = await server.kill();
        expect(killed.signalCode).toBe("SIGKILL");
        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });
        const after = await RawNbdClient.open(server.uri);
        for (const [offset, data] of acknowledged) await expectRead(after, offset, data, cookie++);
        await expectRead(after, 8 * MIB, new Uint8Array(MIB), cookie++);
        // What the earlier tests wrote with acknowledgement is there too.
        await expectRead(after, MIB, pattern(8192, 4), cookie++);
        await expectRead(after, VOLUME_BYTES - 4096, pattern(4096, 1), cookie++);
        after.end();
        const stopped = await server.stop();
        expect(stopped.exitCode).toBe(0);
        expect(stopped.log).not.toMatch(/internal error|assertion failed/);
      },
      TEST_TIMEOUT_MS,
    );
  });
}
