// Raw-protocol tests of the NBD server (handshake.ts, session.ts, server.ts together) over real sockets:
// negotiation, every bad-input case, back-pressure, out-of-order completion, disconnects and clean close(). Each test
// runs on both transports, Bun's sockets and io_uring (nbd_io.ts).

import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NBD_INFLIGHT_PER_CONNECTION_MAX, NBD_INFLIGHT_WRITE_BYTES_MAX, NBD_REQUEST_BYTES_MAX } from "../../src/constants.ts";
import { IOError, NoSpaceError } from "../../src/errors.ts";
import type { BlockDevice } from "../../src/nbd/block_device.ts";
import type { Uring } from "../../ffi/uring.ts";
import { startNbdServer, type NbdServer } from "../../src/nbd/server.ts";
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EPERM,
  NBD_EXPORT_NAME_REPLY_BYTES,
  NBD_EXPORT_NAME_ZEROES_BYTES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_TRIM,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeRequestHeader,
  readU16,
  readU32,
  readU64,
  writeU32,
} from "../../src/nbd/wire.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";
import { RawClient, type Endpoint } from "./raw_client.ts";
import { waitFor } from "../_support/pipelined.ts";
import { NBD_IO_KINDS, nbdIoRing } from "./nbd_io.ts";

const SIZE_BYTES = 16 * 1024 * 1024;

let directory: string;
let device: MemoryBlockDevice;
let server: NbdServer;
let endpoint: Endpoint;
const clients: RawClient[] = [];
const logLines: string[] = [];
const nbdIo = nbdIoRing();
/** The server options of the transport under test (NBD_IO_KINDS): every server of a test is started with them. */
let serverIo: { ring?: Uring } = {};

async function connect(): Promise<RawClient> {
  const client = await RawClient.connect(endpoint);
  clients.push(client);
  return client;
}

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 7 + (index >> 9)) & 0xff;
  return bytes;
}

/** A device gate: calls wait until open() (for in-flight tests). */
/** Replaces the server with one over a 256 MiB device (room for several 32 MiB requests) and negotiates a client. */
async function reconnectToBigDevice(socketName: string): Promise<RawClient> {
  await server.close();
  device = new MemoryBlockDevice(256 * 1024 * 1024);
  server = await startNbdServer({ device, socketPath: join(directory, socketName), ...serverIo });
  endpoint = { unix: join(directory, socketName) };
  const client = await connect();
  await client.negotiate();
  return client;
}

function gate(target: MemoryBlockDevice): { open: () => void } {
  let open!: () => void;
  target.gate = new Promise<void>((resolve) => (open = resolve));
  return {
    open: () => {
      target.gate = null;
      open();
    },
  };
}

function encodeOptionBytes(option: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + data.length);
  bytes.set([0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54]);
  writeU32(bytes, 8, option);
  writeU32(bytes, 12, data.length);
  bytes.set(data, 16);
  return bytes;
}

function decodeDescriptors(payload: Uint8Array): [number, number][] {
  const result: [number, number][] = [];
  for (let offset = 4; offset < payload.length; offset += 8) result.push([readU32(payload, offset), readU32(payload, offset + 4)]);
  return result;
}

for (const io of NBD_IO_KINDS) {
  describe(`NBD over ${io}`, () => {
    beforeEach(async () => {
      directory = mkdtempSync(join(tmpdir(), "lsvd-nbd-test-"));
      device = new MemoryBlockDevice(SIZE_BYTES);
      logLines.length = 0;
      serverIo = nbdIo.options(io);
      server = await startNbdServer({
        device,
        exportName: "disk",
        description: "memory test disk",
        socketPath: join(directory, "nbd.sock"),
        log: (line) => logLines.push(line),
        ...serverIo,
      });
      endpoint = { unix: join(directory, "nbd.sock") };
    });

    afterEach(async () => {
      for (const client of clients.splice(0)) if (!client.closed) client.terminate();
      await server.close();
      expect(server.connectionCount()).toBe(0);
      nbdIo.expectIdle();
      rmSync(directory, { recursive: true, force: true });
    });

    describe("handshake", () => {
      test("greeting advertises fixed newstyle and no zeroes", async () => {
        const client = await connect();
        const flags = await client.greet();
        expect(flags).toBe(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
      });

      test("unknown client flags close the connection", async () => {
        const client = await connect();
        await client.greet(1 << 7);
        expect(await client.waitClosed()).toBe(true);
      });

      test("bad option magic closes that connection only", async () => {
        const client = await connect();
        await client.greet();
        const bytes = new Uint8Array(16);
        bytes.fill(0x41, 0, 8);
        writeU32(bytes, 8, NBD_OPT_GO);
        await client.send(bytes);
        expect(await client.waitClosed()).toBe(true);
        const other = await connect();
        expect((await other.negotiate({ exportName: "disk" })).sizeBytes).toBe(SIZE_BYTES);
        expect(server.stats().protocolErrors).toBe(1);
      });

      test("unknown option gets ERR_UNSUP and the next option still works", async () => {
        const client = await connect();
        await client.greet();
        await client.sendOption(999, new Uint8Array([1, 2, 3, 4, 5]));
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNSUP]);
        await client.sendOption(NBD_OPT_STARTTLS);
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNSUP]);
        await client.sendOption(NBD_OPT_LIST);
        const replies = await client.readOptionReplies();
        expect(replies.map((reply) => reply.replyType)).toEqual([NBD_REP_SERVER, NBD_REP_ACK]);
        const nameBytes = readU32(replies[0]!.data, 0);
        expect(new TextDecoder().decode(replies[0]!.data.subarray(4, 4 + nameBytes))).toBe("disk");
        expect(new TextDecoder().decode(replies[0]!.data.subarray(4 + nameBytes))).toBe("memory test disk");
      });

      test("an option payload above the limit closes the connection", async () => {
        const client = await connect();
        await client.greet();
        const header = new Uint8Array(16);
        header.set([0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54]);
        writeU32(header, 8, NBD_OPT_GO);
        writeU32(header, 12, 1024 * 1024);
        await client.send(header);
        expect(await client.waitClosed()).toBe(true);
      });

      test("INFO and GO: unknown export is ERR_UNKNOWN, bad payload ERR_INVALID, then GO works", async () => {
        const client = await connect();
        await client.greet();
        await client.sendOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "nope", infoTypes: [] }));
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNKNOWN]);
        await client.sendOption(NBD_OPT_GO, new Uint8Array([0, 0, 0, 9, 1]));
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_INVALID]);
        await client.sendOption(
          NBD_OPT_INFO,
          encodeInfoRequest({ exportName: "disk", infoTypes: [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE] }),
        );
        const infos = await client.readOptionReplies();
        expect(infos.map((reply) => reply.replyType)).toEqual([NBD_REP_INFO, NBD_REP_INFO, NBD_REP_INFO, NBD_REP_INFO, NBD_REP_ACK]);
        const byType = new Map(infos.slice(0, 4).map((reply) => [readU16(reply.data, 0), reply.data]));
        expect(new TextDecoder().decode(byType.get(NBD_INFO_NAME)!.subarray(2))).toBe("disk");
        expect(new TextDecoder().decode(byType.get(NBD_INFO_DESCRIPTION)!.subarray(2))).toBe("memory test disk");
        const blockSize = byType.get(NBD_INFO_BLOCK_SIZE)!;
        expect([readU32(blockSize, 2), readU32(blockSize, 6), readU32(blockSize, 10)]).toEqual([1, 4096, NBD_REQUEST_BYTES_MAX]);
        // The empty name selects the default (only) export.
        await client.sendOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "", infoTypes: [] }));
        const go = await client.readOptionReplies();
        expect(go[go.length - 1]!.replyType).toBe(NBD_REP_ACK);
        const flags = readU16(go.find((reply) => readU16(reply.data, 0) === 0)!.data, 10);
        expect(flags & NBD_FLAG_HAS_FLAGS).toBeTruthy();
        expect(flags & NBD_FLAG_CAN_MULTI_CONN).toBeTruthy();
        expect(flags & NBD_FLAG_SEND_DF).toBe(0); // no structured replies negotiated
        await client.request(NBD_CMD_READ, 0, 512);
        expect((await client.readSimpleReply(512)).error).toBe(0);
      });

      test("meta contexts need structured replies; LIST and SET base:allocation", async () => {
        const client = await connect();
        await client.greet();
        const query = encodeMetaContextRequest({ exportName: "disk", queries: ["base:allocation"] });
        await client.sendOption(NBD_OPT_SET_META_CONTEXT, query);
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_INVALID]);
        await client.sendOption(NBD_OPT_STRUCTURED_REPLY);
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ACK]);
        await client.sendOption(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: "disk", queries: [] }));
        const listed = await client.readOptionReplies();
        expect(listed.map((reply) => reply.replyType)).toEqual([NBD_REP_META_CONTEXT, NBD_REP_ACK]);
        expect(new TextDecoder().decode(listed[0]!.data.subarray(4))).toBe("base:allocation");
        await client.sendOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "disk", queries: ["x-other:thing"] }));
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ACK]);
        await client.sendOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "other", queries: ["base:allocation"] }));
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ERR_UNKNOWN]);
        await client.sendOption(NBD_OPT_SET_META_CONTEXT, query);
        const set = await client.readOptionReplies();
        expect(set.map((reply) => reply.replyType)).toEqual([NBD_REP_META_CONTEXT, NBD_REP_ACK]);
        expect(readU32(set[0]!.data, 0)).not.toBe(0);
      });

      test("EXPORT_NAME: reply with and without the 124 zeroes; unknown name closes", async () => {
        const quiet = await connect();
        await quiet.greet(NBD_FLAG_C_FIXED_NEWSTYLE);
        await quiet.sendOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode("disk"));
        const reply = await quiet.read(NBD_EXPORT_NAME_REPLY_BYTES + NBD_EXPORT_NAME_ZEROES_BYTES);
        expect(readU64(reply, 0)).toBe(SIZE_BYTES);
        expect(reply.subarray(NBD_EXPORT_NAME_REPLY_BYTES).every((byte) => byte === 0)).toBe(true);
        await quiet.request(NBD_CMD_READ, 4096, 512);
        expect((await quiet.readSimpleReply(512)).error).toBe(0);

        const terse = await connect();
        await terse.greet();
        await terse.sendOption(NBD_OPT_EXPORT_NAME);
        const short = await terse.read(NBD_EXPORT_NAME_REPLY_BYTES);
        expect(readU16(short, 8) & NBD_FLAG_SEND_TRIM).toBeTruthy();
        await terse.request(NBD_CMD_FLUSH, 0, 0);
        expect((await terse.readSimpleReply()).error).toBe(0);
        expect(terse.pendingBytes).toBe(0);

        const unknown = await connect();
        await unknown.greet();
        await unknown.sendOption(NBD_OPT_EXPORT_NAME, new TextEncoder().encode("nope"));
        expect(await unknown.waitClosed()).toBe(true);
      });

      test("ABORT is acknowledged and the connection closed", async () => {
        const client = await connect();
        await client.greet();
        await client.sendOption(NBD_OPT_ABORT);
        expect((await client.readOptionReplies()).map((reply) => reply.replyType)).toEqual([NBD_REP_ACK]);
        expect(await client.waitClosed()).toBe(true);
      });

      test("handshake bytes split one by one are parsed the same", async () => {
        const client = await connect();
        await client.read(18);
        const bytes = new Uint8Array([
          ...[0, 0, 0, 3],
          ...encodeOptionBytes(NBD_OPT_GO, encodeInfoRequest({ exportName: "disk", infoTypes: [] })),
        ]);
        for (const byte of bytes) await client.send(new Uint8Array([byte]));
        const replies = await client.readOptionReplies();
        expect(replies[replies.length - 1]!.replyType).toBe(NBD_REP_ACK);
      });
    });

    describe("transmission, simple replies", () => {
      test("write then read back, FUA and flush reach the device", async () => {
        const client = await connect();
        await client.negotiate();
        const data = pattern(8192, 1);
        await client.request(NBD_CMD_WRITE, 4096 * 3, data.length, { payload: data, flags: NBD_CMD_FLAG_FUA, cookie: 7 });
        expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie: 7 });
        await client.request(NBD_CMD_FLUSH, 0, 0, { cookie: 8 });
        expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie: 8 });
        await client.request(NBD_CMD_READ, 4096 * 3, data.length, { cookie: 9 });
        const reply = await client.readSimpleReply(data.length);
        expect(reply.cookie).toBe(9);
        expect(reply.data).toEqual(data);
        expect(device.fuaCount).toBe(1);
        expect(device.flushCount).toBe(1);
      });

      test("out-of-range read, write, trim, zero get errors and the connection lives on", async () => {
        const client = await connect();
        await client.negotiate();
        await client.request(NBD_CMD_READ, SIZE_BYTES - 512, 1024);
        expect((await client.readSimpleReply(1024)).error).toBe(NBD_EINVAL);
        const payload = pattern(4096, 2);
        await client.request(NBD_CMD_WRITE, SIZE_BYTES, 4096, { payload });
        expect((await client.readSimpleReply()).error).toBe(NBD_ENOSPC);
        await client.request(NBD_CMD_TRIM, SIZE_BYTES - 4096, 8192);
        expect((await client.readSimpleReply()).error).toBe(NBD_ENOSPC);
        // An offset far beyond 2^53 (not a safe integer) is still just past the end.
        const far = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE_ZEROES, cookieHigh: 0, cookieLow: 1, offset: 0, length: 4096 });
        far.fill(0xff, 16, 24);
        await client.send(far);
        expect((await client.readSimpleReply()).error).toBe(NBD_ENOSPC);
        await client.request(NBD_CMD_CACHE, SIZE_BYTES, 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        // Still usable, and the refused write's payload was consumed, not parsed as requests.
        await client.request(NBD_CMD_WRITE, 0, 4096, { payload });
        expect((await client.readSimpleReply()).error).toBe(0);
        await client.request(NBD_CMD_READ, 0, 4096);
        expect((await client.readSimpleReply(4096)).data).toEqual(payload);
        expect(server.stats().errorReplies).toBe(5);
      });

      test("bad lengths, unknown commands and flags get EINVAL", async () => {
        const client = await connect();
        await client.negotiate();
        await client.request(NBD_CMD_READ, 0, 0);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(NBD_CMD_READ, 0, NBD_REQUEST_BYTES_MAX + 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(NBD_CMD_FLUSH, 0, 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(42, 0, 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(NBD_CMD_READ, 0, 512, { flags: 1 << 9 });
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(NBD_CMD_READ, 0, 512, { flags: NBD_CMD_FLAG_NO_HOLE });
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        // DF without structured replies is not allowed either.
        await client.request(NBD_CMD_READ, 0, 512, { flags: NBD_CMD_FLAG_DF });
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        // BLOCK_STATUS without a negotiated meta context.
        await client.request(NBD_CMD_BLOCK_STATUS, 0, 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        // A write with a bad flag still has its payload consumed.
        await client.request(NBD_CMD_WRITE, 0, 512, { flags: NBD_CMD_FLAG_REQ_ONE, payload: pattern(512, 3) });
        expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await client.request(NBD_CMD_READ, 0, 512);
        expect((await client.readSimpleReply(512)).data).toEqual(new Uint8Array(512));
      });

      test("bad request magic closes that connection only", async () => {
        const client = await connect();
        await client.negotiate();
        const other = await connect();
        await other.negotiate();
        const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_READ, cookieHigh: 0, cookieLow: 1, offset: 0, length: 512 });
        header[0] = 0x99;
        await client.send(header);
        expect(await client.waitClosed()).toBe(true);
        await other.request(NBD_CMD_READ, 0, 512);
        expect((await other.readSimpleReply(512)).error).toBe(0);
        const fresh = await connect();
        await fresh.negotiate();
        await fresh.request(NBD_CMD_READ, 0, 512);
        expect((await fresh.readSimpleReply(512)).error).toBe(0);
      });

      test("an oversize write payload closes the connection", async () => {
        const client = await connect();
        await client.negotiate();
        await client.request(NBD_CMD_WRITE, 0, NBD_REQUEST_BYTES_MAX + 512);
        expect(await client.waitClosed()).toBe(true);
        expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
        expect(logLines.some((line) => line.includes("above"))).toBe(true);
      });

      test("a client that disconnects mid-payload leaks nothing", async () => {
        const client = await connect();
        await client.negotiate();
        expect(server.connectionCount()).toBe(1);
        const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: 1, offset: 0, length: 65536 });
        await client.send(header);
        await client.send(pattern(1000, 4));
        await Bun.sleep(20);
        client.end();
        expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
        expect(device.pages.size).toBe(0);
      });

      test("a client that disconnects with requests in flight: calls complete, replies are dropped", async () => {
        const client = await connect();
        await client.negotiate();
        const held = gate(device);
        for (let index = 0; index < 10; index++) {
          await client.request(NBD_CMD_WRITE, index * 4096, 4096, { payload: pattern(4096, index), cookie: index });
        }
        expect(await waitFor(() => device.gate !== null && server.stats().writes === 10)).toBe(true);
        client.terminate();
        await Bun.sleep(20);
        expect(server.connectionCount()).toBe(1); // the socket is gone, its device calls are not
        held.open();
        expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
        expect(device.pages.size).toBe(10);
      });

      test("read-only export: READ_ONLY flag, writes get EPERM", async () => {
        await server.close();
        device = new MemoryBlockDevice(SIZE_BYTES, true);
        server = await startNbdServer({ device, socketPath: join(directory, "ro.sock"), ...serverIo });
        endpoint = { unix: join(directory, "ro.sock") };
        const client = await connect();
        const { transmissionFlags } = await client.negotiate();
        expect(transmissionFlags & NBD_FLAG_READ_ONLY).toBeTruthy();
        expect(transmissionFlags & NBD_FLAG_SEND_TRIM).toBe(0);
        await client.request(NBD_CMD_WRITE, 0, 512, { payload: pattern(512, 5) });
        expect((await client.readSimpleReply()).error).toBe(NBD_EPERM);
        await client.request(NBD_CMD_TRIM, 0, 512);
        expect((await client.readSimpleReply()).error).toBe(NBD_EPERM);
        await client.request(NBD_CMD_READ, 0, 512);
        expect((await client.readSimpleReply(512)).error).toBe(0);
      });

      test("device errors map to NBD errno; other errors are EIO and logged", async () => {
        const client = await connect();
        await client.negotiate();
        const write = device.write.bind(device);
        device.write = async (offset, data, fua) => {
          if (offset === 0) throw new NoSpaceError("Cannot write: full");
          if (offset === 4096) throw new IOError("Cannot write: disk on fire");
          if (offset === 8192) throw new TypeError("bug");
          return write(offset, data, fua);
        };
        const expected = [NBD_ENOSPC, NBD_EIO, NBD_EIO, 0];
        for (let index = 0; index < expected.length; index++) {
          await client.request(NBD_CMD_WRITE, index * 4096, 512, { payload: pattern(512, index) });
          expect((await client.readSimpleReply()).error).toBe(expected[index]!);
        }
        // Every failure is logged with command, offset, length, errno and cause; a bug below says what it was.
        expect(logLines.filter((line) => line.includes("failed:"))).toEqual([
          "nbd unix#1: WRITE at 0 length 512 failed: ENOSPC (Cannot write: full)",
          "nbd unix#1: WRITE at 4096 length 512 failed: EIO (Cannot write: disk on fire)",
          "nbd unix#1: WRITE at 8192 length 512 failed: EIO (TypeError: bug)",
        ]);
      });

      test("a device with writeThen gets every WRITE there: done, failed, done at once, or thrown at once, each gets its reply", async () => {
        const client = await connect();
        await client.negotiate();
        const write = device.write.bind(device);
        device.write = () => Promise.reject(new Error("write() was called although the device has writeThen"));
        const offsets: number[] = [];
        const withListener: BlockDevice = device;
        withListener.writeThen = (offset, data, fua, listener) => {
          offsets.push(offset);
          if (offset === 0) throw new NoSpaceError("Cannot write: full");
          if (offset === 4096) return void write(offset, data, fua).then(() => listener.writeFailed(new IOError("Cannot write: disk on fire")));
          if (offset === 8192) return void write(offset, data, fua).then(() => listener.writeDone());
          void write(offset, data, fua);
          listener.writeDone(); // before returning: the session must take that too
        };
        const expected = [NBD_ENOSPC, NBD_EIO, 0, 0];
        for (let index = 0; index < expected.length; index++) {
          await client.request(NBD_CMD_WRITE, index * 4096, 512, { payload: pattern(512, index), cookie: 100 + index });
          expect(await client.readSimpleReply()).toMatchObject({ error: expected[index]!, cookie: 100 + index });
        }
        expect(offsets).toEqual([0, 4096, 8192, 12288]);
        for (const index of [2, 3]) {
          await client.request(NBD_CMD_READ, index * 4096, 512, { cookie: index });
          expect((await client.readSimpleReply(512)).data).toEqual(pattern(512, index));
        }
        expect(server.stats().requestsInFlight).toBe(0);
      });

      test("refused requests are logged too, and a flood of them is rate-limited with a count of what was left out", async () => {
        const client = await connect();
        await client.negotiate();
        const count = 500;
        for (let index = 0; index < count; index++) await client.request(NBD_CMD_READ, SIZE_BYTES, 4096, { cookie: index });
        for (let index = 0; index < count; index++) expect((await client.readSimpleReply()).error).toBe(NBD_EINVAL);
        await server.close(); // flushes the summaries of the window
        const failed = logLines.filter((line) => line.includes(" failed: "));
        const summaries = logLines.filter((line) => line.startsWith("nbd: suppressed "));
        expect(failed[0]).toBe(`nbd unix#1: READ at ${SIZE_BYTES} length 4096 failed: EINVAL (request is past the end of the export)`);
        expect(failed.length).toBeLessThan(count / 5);
        // Nothing is lost from the count: lines written plus lines summed up is every failure.
        const suppressed = summaries.reduce((sum, line) => sum + Number(/suppressed (\d+) similar/.exec(line)![1]), 0);
        expect(failed.length - summaries.length + suppressed).toBe(count);
      });

      test("pipelined requests beyond the in-flight limit: back-pressure, then every reply, out of order allowed", async () => {
        const client = await connect();
        await client.negotiate();
        const held = gate(device);
        const count = NBD_INFLIGHT_PER_CONNECTION_MAX * 2 + 17;
        const parts: Uint8Array[] = [];
        for (let index = 0; index < count; index++) {
          const payload = pattern(4096, index);
          const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 4096, length: 4096 });
          parts.push(header, payload);
        }
        // The server stops reading at the limit, so the send only completes once the gate opens.
        const sending = client.send(new Uint8Array(Buffer.concat(parts)));
        expect(await waitFor(() => server.stats().writes === NBD_INFLIGHT_PER_CONNECTION_MAX)).toBe(true);
        await Bun.sleep(30);
        expect(server.stats().writes).toBe(NBD_INFLIGHT_PER_CONNECTION_MAX); // stopped at the limit
        held.open();
        await sending;
        const cookies = new Set<number>();
        for (let index = 0; index < count; index++) {
          const reply = await client.readSimpleReply();
          expect(reply.error).toBe(0);
          cookies.add(reply.cookie);
        }
        expect(cookies.size).toBe(count);
        for (let index = 0; index < count; index += 37) {
          await client.request(NBD_CMD_READ, index * 4096, 4096);
          expect((await client.readSimpleReply(4096)).data).toEqual(pattern(4096, index));
        }
      });

      test("a client that does not read its replies: the server stops reading at the output limit", async () => {
        const client = await reconnectToBigDevice("big.sock");
        const count = 8;
        const parts: Uint8Array[] = [];
        for (let index = 0; index < count; index++) {
          await device.write(index * NBD_REQUEST_BYTES_MAX, new Uint8Array(4096).fill(index + 1), false);
          parts.push(encodeRequestHeader({ flags: 0, type: NBD_CMD_READ, cookieHigh: 0, cookieLow: index, offset: index * NBD_REQUEST_BYTES_MAX, length: NBD_REQUEST_BYTES_MAX }));
        }
        await client.send(new Uint8Array(Buffer.concat(parts)));
        expect(await waitFor(() => server.stats().reads >= 2)).toBe(true);
        await Bun.sleep(50);
        // Two 32 MiB replies fill the 64 MiB output budget; the socket buffers take a little of it at most.
        expect(server.stats().reads).toBeLessThan(4);
        for (let index = 0; index < count; index++) {
          const reply = await client.readSimpleReply(NBD_REQUEST_BYTES_MAX);
          expect(reply.cookie).toBe(index);
          expect(reply.data[4095]).toBe(index + 1);
          expect(reply.data[4096]).toBe(0);
        }
        expect(server.stats().reads).toBe(count);
      }, 60_000);

      test("pipelined large WRITEs while the device holds them: the server stops reading at the write-bytes limit", async () => {
        const client = await reconnectToBigDevice("bigw.sock");
        const held = gate(device);
        const count = 4;
        const parts: Uint8Array[] = [];
        for (let index = 0; index < count; index++) {
          parts.push(
            encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * NBD_REQUEST_BYTES_MAX, length: NBD_REQUEST_BYTES_MAX }),
            new Uint8Array(NBD_REQUEST_BYTES_MAX).fill(index + 1),
          );
        }
        // The send waits on the held device by design: give it the test's whole budget, not the default 5 s.
        const sending = client.send(new Uint8Array(Buffer.concat(parts)), 50_000);
        const limitWrites = NBD_INFLIGHT_WRITE_BYTES_MAX / NBD_REQUEST_BYTES_MAX;
        expect(await waitFor(() => server.stats().writes >= limitWrites, 30_000)).toBe(true);
        // Two 32 MiB payloads fill the 64 MiB budget: the rest stays in the socket until the device lets go. (Without
        // the limit, the other two arrive within a few hundred ms: the wait gives them a second.)
        expect(await waitFor(() => server.stats().writes > limitWrites, 1000)).toBe(false);
        held.open();
        await sending;
        for (let index = 0; index < count; index++) expect((await client.readSimpleReply()).error).toBe(0);
        expect(server.stats().writes).toBe(count);
        for (let index = 0; index < count; index++) {
          const data = await device.read(index * NBD_REQUEST_BYTES_MAX + NBD_REQUEST_BYTES_MAX - 4096, 4096);
          expect(data.every((byte) => byte === index + 1)).toBe(true);
        }
      }, 60_000);

      test("write payloads split across chunks arrive whole and unchanged until their writes complete, all in flight at once", async () => {
        const client = await connect();
        await client.negotiate();
        device.keepPayloads = true;
        const held = gate(device);
        const expected: Uint8Array[] = [];
        const parts: Uint8Array[] = [];
        for (let index = 0; index < 40; index++) {
          const payload = pattern(512 * (1 + (index % 9)), index + 100);
          expected.push(payload);
          parts.push(encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 8192, length: payload.length }), payload);
        }
        const stream = new Uint8Array(Buffer.concat(parts));
        // Odd-sized pieces split headers and payloads at every possible place over the run.
        for (let offset = 0; offset < stream.length; offset += 997) await client.send(stream.subarray(offset, offset + 997));
        // Every WRITE is held by the device while the rest arrive: no assembly buffer may be reused under a held one.
        await waitFor(() => server.stats().requestsInFlight === 40);
        held.open();
        for (let index = 0; index < 40; index++) expect((await client.readSimpleReply()).error).toBe(0);
        // Then one after another, so that assembly buffers are reused: each write still gets its own bytes.
        for (let index = 0; index < 40; index++) {
          const payload = pattern(512 * (1 + (index % 9)), index + 300);
          expected.push(payload);
          const header = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookieHigh: 0, cookieLow: index, offset: index * 8192, length: payload.length });
          const bytes = new Uint8Array(Buffer.concat([header, payload]));
          await client.send(bytes.subarray(0, 100));
          await client.send(bytes.subarray(100));
          expect((await client.readSimpleReply()).error).toBe(0);
        }
        device.keepPayloads = false;
        expect(device.keptPayloads.length).toBe(80);
        for (let index = 0; index < 80; index++) expect(device.keptPayloads[index]!.copy).toEqual(expected[index]!);
      });

      test("DISC: in-flight requests finish and are answered, then the server closes", async () => {
        const client = await connect();
        await client.negotiate();
        const held = gate(device);
        await client.request(NBD_CMD_WRITE, 0, 4096, { payload: pattern(4096, 9), cookie: 5 });
        await client.request(NBD_CMD_DISC, 0, 0);
        await Bun.sleep(20);
        held.open();
        expect(await client.readSimpleReply()).toMatchObject({ error: 0, cookie: 5 });
        expect(await client.waitClosed()).toBe(true);
        expect(await waitFor(() => server.connectionCount() === 0)).toBe(true);
      });

      test("close(): stops accepting, finishes in-flight requests, ends connections", async () => {
        const client = await connect();
        await client.negotiate();
        const handshaking = await connect();
        await handshaking.greet();
        const held = gate(device);
        await client.request(NBD_CMD_READ, 0, 4096, { cookie: 77 });
        expect(await waitFor(() => server.stats().reads === 1)).toBe(true);
        const closing = server.close();
        expect(await handshaking.waitClosed()).toBe(true);
        let closed = false;
        void closing.then(() => (closed = true));
        await Bun.sleep(20);
        expect(closed).toBe(false);
        held.open();
        const reply = await client.readSimpleReply(4096);
        expect(reply).toMatchObject({ error: 0, cookie: 77 });
        expect(await client.waitClosed()).toBe(true);
        await closing;
        expect(server.connectionCount()).toBe(0);
        await expect(RawClient.connect(endpoint)).rejects.toThrow();
      });
    });

    describe("transmission, structured replies", () => {
      test("READ is one OFFSET_DATA chunk; errors are ERROR chunks; DF is accepted", async () => {
        const client = await connect();
        const { transmissionFlags } = await client.negotiate({ structured: true });
        expect(transmissionFlags & NBD_FLAG_SEND_DF).toBeTruthy();
        const data = pattern(4096, 11);
        await client.request(NBD_CMD_WRITE, 8192, 4096, { payload: data });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_READ, 8192 + 512, 2048, { flags: NBD_CMD_FLAG_DF, cookie: 3 });
        const chunk = await client.readChunk();
        expect(chunk.type).toBe(NBD_REPLY_TYPE_OFFSET_DATA);
        expect(chunk.flags & NBD_REPLY_FLAG_DONE).toBeTruthy();
        expect(chunk.cookie).toBe(3);
        expect(readU64(chunk.payload, 0)).toBe(8192 + 512);
        expect(chunk.payload.subarray(8)).toEqual(data.subarray(512, 2560));
        await client.request(NBD_CMD_READ, SIZE_BYTES, 512, { cookie: 4 });
        const error = await client.readChunk();
        expect(error.type).toBe(NBD_REPLY_TYPE_ERROR);
        expect(error.flags & NBD_REPLY_FLAG_DONE).toBeTruthy();
        expect(error.error).toBe(NBD_EINVAL);
        const messageBytes = readU16(error.payload, 4);
        expect(new TextDecoder().decode(error.payload.subarray(6, 6 + messageBytes))).toContain("past the end");
      });

      test("a large READ is queued by reference and arrives intact", async () => {
        const client = await connect();
        await client.negotiate({ structured: true });
        const data = pattern(4 * 1024 * 1024, 12);
        await client.request(NBD_CMD_WRITE, 0, data.length, { payload: data });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_READ, 0, data.length);
        const chunk = await client.readChunk();
        expect(chunk.payload.length).toBe(8 + data.length);
        expect(Buffer.compare(chunk.payload.subarray(8), data)).toBe(0);
      });

      test("BLOCK_STATUS reports holes and data, honours REQ_ONE, and clamps to the request", async () => {
        const client = await connect();
        await client.negotiate({ structured: true, meta: true });
        await client.request(NBD_CMD_WRITE, 8192, 8192, { payload: pattern(8192, 13) });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_BLOCK_STATUS, 0, 65536, { cookie: 21 });
        const chunk = await client.readChunk();
        expect(chunk.type).toBe(NBD_REPLY_TYPE_BLOCK_STATUS);
        expect(chunk.cookie).toBe(21);
        const descriptors = decodeDescriptors(chunk.payload);
        expect(descriptors).toEqual([
          [8192, NBD_STATE_HOLE | NBD_STATE_ZERO],
          [8192, 0],
          [65536 - 16384, NBD_STATE_HOLE | NBD_STATE_ZERO],
        ]);
        await client.request(NBD_CMD_BLOCK_STATUS, 0, 65536, { flags: NBD_CMD_FLAG_REQ_ONE });
        expect(decodeDescriptors((await client.readChunk()).payload)).toEqual([[8192, NBD_STATE_HOLE | NBD_STATE_ZERO]]);
        await client.request(NBD_CMD_BLOCK_STATUS, 1000, 100);
        expect(decodeDescriptors((await client.readChunk()).payload)).toEqual([[100, NBD_STATE_HOLE | NBD_STATE_ZERO]]);
        await client.request(NBD_CMD_BLOCK_STATUS, SIZE_BYTES - 512, 1024);
        expect((await client.readChunk()).error).toBe(NBD_EINVAL);
      });

      test("WRITE_ZEROES: plain makes holes, NO_HOLE allocates, FAST_ZERO with NO_HOLE is ENOTSUP; CACHE", async () => {
        const client = await connect();
        await client.negotiate({ structured: true, meta: true });
        await client.request(NBD_CMD_WRITE, 0, 16384, { payload: pattern(16384, 14) });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_WRITE_ZEROES, 0, 8192, { flags: NBD_CMD_FLAG_FAST_ZERO });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_WRITE_ZEROES, 8192, 8192, { flags: NBD_CMD_FLAG_NO_HOLE });
        expect((await client.readChunk()).error).toBe(0);
        await client.request(NBD_CMD_WRITE_ZEROES, 0, 4096, { flags: NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO });
        expect((await client.readChunk()).error).toBe(NBD_ENOTSUP);
        await client.request(NBD_CMD_BLOCK_STATUS, 0, 16384);
        expect(decodeDescriptors((await client.readChunk()).payload)).toEqual([
          [8192, NBD_STATE_HOLE | NBD_STATE_ZERO],
          [8192, 0],
        ]);
        await client.request(NBD_CMD_READ, 0, 16384);
        expect((await client.readChunk()).payload.subarray(8)).toEqual(new Uint8Array(16384));
        await client.request(NBD_CMD_CACHE, 0, 16384);
        expect((await client.readChunk()).error).toBe(0);
        expect(device.cacheCount).toBe(1);
      });
    });
  });
}
