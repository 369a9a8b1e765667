// Tests for ffi/uring.ts's socket ops (accept, receive, send, cancel) on real loopback and unix sockets bound by
// ffi/socket.ts's listenStream, with Bun's sockets as the peers; and for the socket address encoder they bind with.

import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { allocAligned, freeAligned, viewMemory } from "../../ffi/libc.ts";
import { IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER, IORING_CQE_F_MORE, IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND } from "../../ffi/liburing.ts";
import { ProvidedBuffers } from "../../ffi/uring_buffers.ts";
import { closeSocket, listenStream } from "../../ffi/socket.ts";
import { Uring, type SocketOpListener } from "../../ffi/uring.ts";
import { decodeSocketAddress, encodeSocketAddress } from "../../src/ops/socket_address.ts";

const ECANCELED = 125;
const SOCK_CLOEXEC = 0o2000000;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A listener that settles a promise with the op's result. */
function once(): { listener: SocketOpListener; result: Promise<number> } {
  const settled = Promise.withResolvers<number>();
  return { listener: { onSocketOp: (result) => settled.resolve(result) }, result: settled.promise };
}

function nativeBuffer(bytes: number): { address: number; view: Uint8Array } {
  const address = allocAligned(bytes, 64);
  cleanups.push(() => freeAligned(address));
  return { address, view: new Uint8Array(viewMemory(address, bytes)) };
}

test("accept, receive and send on the ring, over TCP on 127.0.0.1", async () => {
  const ring = Uring.open(4, 0, 8);
  cleanups.push(() => ring.close());
  const bound = listenStream({ kind: "tcp", host: "127.0.0.1", port: 0 });
  cleanups.push(() => closeSocket(bound.fd));
  expect(bound.address.kind).toBe("tcp");
  const port = (bound.address as { port: number }).port;
  expect(port).toBeGreaterThan(0);

  const peerAddress = nativeBuffer(136);
  const accept = once();
  new Uint32Array(viewMemory(peerAddress.address + 128, 4))[0] = 128; // socklen_t: the room for the address
  ring.socketOp(IORING_OP_ACCEPT, bound.fd, peerAddress.address, 0, peerAddress.address + 128, SOCK_CLOEXEC, accept.listener, "accept");
  const received: Uint8Array[] = [];
  const client = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: (_socket, chunk) => void received.push(new Uint8Array(chunk)) } });
  cleanups.push(() => void client.end());
  const fd = await accept.result;
  expect(fd).toBeGreaterThanOrEqual(0);
  cleanups.push(() => closeSocket(fd));
  const peer = decodeSocketAddress(peerAddress.view.subarray(0, new Uint32Array(viewMemory(peerAddress.address + 128, 4))[0]!));
  expect(peer).toEqual({ kind: "tcp", host: "127.0.0.1", port: client.localPort });

  const incoming = nativeBuffer(4096);
  const receive = once();
  ring.socketOp(IORING_OP_RECV, fd, incoming.address, 4096, 0, 0, receive.listener, "receive");
  client.write("hello ring");
  const bytes = await receive.result;
  expect(new TextDecoder().decode(incoming.view.subarray(0, bytes))).toBe("hello ring");

  const outgoing = nativeBuffer(4096);
  outgoing.view.set(new TextEncoder().encode("hello bun"));
  const send = once();
  ring.socketOp(IORING_OP_SEND, fd, outgoing.address, 9, 0, 0, send.listener, "send");
  expect(await send.result).toBe(9);
  for (let turn = 0; turn < 200 && received.length === 0; turn++) await Bun.sleep(5);
  expect(new TextDecoder().decode(received[0])).toBe("hello bun");
  expect(ring.socketInflight).toBe(0);
});

test("a receive sees the peer hang up (0), and a cancelled accept completes with ECANCELED", async () => {
  const directory = mkdtempSync(join(tmpdir(), "lsvd-uring-sockets-"));
  cleanups.push(() => rmSync(directory, { recursive: true, force: true }));
  const ring = Uring.open(4, 0, 8);
  cleanups.push(() => ring.close());
  const path = join(directory, "s.sock");
  const bound = listenStream({ kind: "unix", path });
  cleanups.push(() => closeSocket(bound.fd));
  expect(bound.address).toEqual({ kind: "unix", path });

  const accept = once();
  ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, SOCK_CLOEXEC, accept.listener, "accept");
  const client = await Bun.connect({ unix: path, socket: { data: () => {} } });
  const fd = await accept.result;
  expect(fd).toBeGreaterThanOrEqual(0);
  cleanups.push(() => closeSocket(fd));
  const incoming = nativeBuffer(64);
  const receive = once();
  ring.socketOp(IORING_OP_RECV, fd, incoming.address, 64, 0, 0, receive.listener, "receive");
  client.end();
  expect(await receive.result).toBe(0);

  const waiting = once();
  const slot = ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, SOCK_CLOEXEC, waiting.listener, "accept");
  expect(ring.socketInflight).toBe(1);
  ring.cancelSocketOp(slot, "accept");
  expect(await waiting.result).toBe(-ECANCELED);
  for (let turn = 0; turn < 200 && ring.socketInflight > 0; turn++) await Bun.sleep(5);
  expect(ring.socketInflight).toBe(0);
});

test("socket slots are apart from file slots; a closing ring refuses socket ops but takes cancels", async () => {
  const ring = Uring.open(2, 0, 2);
  expect(ring.queueDepth).toBe(2);
  expect(ring.socketSlots).toBe(2);
  const bound = listenStream({ kind: "tcp", host: "127.0.0.1", port: 0 });
  cleanups.push(() => closeSocket(bound.fd));
  const waiting = once();
  const slot = ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, SOCK_CLOEXEC, waiting.listener, "accept");
  expect(slot).toBeGreaterThanOrEqual(2); // after the file ops' slots
  expect(ring.fileInflight).toBe(0);
  expect(ring.socketInflight).toBe(1);
  const closed = ring.close(); // waits for the accept
  expect(() => ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, 0, null, "accept")).toThrow(/io_uring is closed/);
  ring.cancelSocketOp(slot, "accept");
  expect(await waiting.result).toBe(-ECANCELED);
  await closed;
  expect(ring.inflight).toBe(0);
});

test("a ring with every socket slot taken refuses one more (the caller's bound is wrong)", async () => {
  const ring = Uring.open(1, 0, 1);
  cleanups.push(() => ring.close());
  const bound = listenStream({ kind: "tcp", host: "127.0.0.1", port: 0 });
  cleanups.push(() => closeSocket(bound.fd));
  const accept = once();
  const slot = ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, SOCK_CLOEXEC, accept.listener, "accept");
  expect(() => ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, 0, null, "accept")).toThrow(/socket slot/);
  // A cancel would need a slot too: the accept ends by a client connecting instead.
  const client = await Bun.connect({ hostname: "127.0.0.1", port: (bound.address as { port: number }).port, socket: { data: () => {} } });
  cleanups.push(() => void client.end());
  const fd = await accept.result;
  expect(fd).toBeGreaterThanOrEqual(0);
  closeSocket(fd);
  expect(ring.socketInflight).toBe(0);
  expect(slot).toBe(1);
});

test("socket addresses: encode for bind, decode back", () => {
  const cases = [
    { kind: "tcp" as const, host: "127.0.0.1", port: 10809 },
    { kind: "tcp" as const, host: "0.0.0.0", port: 0 },
    { kind: "tcp" as const, host: "::1", port: 65535 },
    { kind: "tcp" as const, host: "fe80::1:2", port: 1 },
    { kind: "tcp" as const, host: "2001:db8::", port: 2 },
    { kind: "unix" as const, path: "/run/lsvd/a.sock" },
  ];
  for (const address of cases) expect(decodeSocketAddress(encodeSocketAddress(address))).toEqual(address);
  expect(decodeSocketAddress(encodeSocketAddress({ kind: "tcp", host: "localhost", port: 7 }))).toEqual({ kind: "tcp", host: "127.0.0.1", port: 7 });
  for (const host of ["example.org", "1.2.3", "256.1.1.1", "1::2::3", "1:2:3:4:5:6:7:8:9", "::g"]) {
    expect(() => encodeSocketAddress({ kind: "tcp", host, port: 1 })).toThrow(/not an IPv4 or IPv6 address/);
  }
  expect(() => encodeSocketAddress({ kind: "unix", path: "x".repeat(108) })).toThrow(/unix socket path/);
  expect(encodeSocketAddress({ kind: "tcp", host: "::1", port: 1 }).length).toBe(28); // sizeof(struct sockaddr_in6)
  expect(encodeSocketAddress({ kind: "tcp", host: "127.0.0.1", port: 1 }).length).toBe(16); // sizeof(struct sockaddr_in)
});

/** A TCP connection on 127.0.0.1 accepted through `ring`: the Bun client and the accepted descriptor. */
async function acceptedOnRing(ring: Uring): Promise<{ client: Awaited<ReturnType<typeof Bun.connect>>; fd: number }> {
  const bound = listenStream({ kind: "tcp", host: "127.0.0.1", port: 0 });
  cleanups.push(() => closeSocket(bound.fd));
  const accept = once();
  ring.socketOp(IORING_OP_ACCEPT, bound.fd, 0, 0, 0, SOCK_CLOEXEC, accept.listener, "accept");
  const client = await Bun.connect({ hostname: "127.0.0.1", port: (bound.address as { port: number }).port, socket: { data: () => {} } });
  const fd = await accept.result;
  cleanups.push(() => closeSocket(fd));
  return { client, fd };
}

test("a kept provided buffer stays out of the ring, unread by the kernel, until its last hold is given back", async () => {
  const ENOBUFS = 105;
  const ring = Uring.open(2, 0, 4);
  cleanups.push(() => ring.close());
  const buffers = new ProvidedBuffers(ring, ring.allocateBufferGroup(), 2, 16);
  let kept = -1;
  cleanups.push(() => {
    if (buffers.heldBuffers > 0) buffers.give(kept); // the test failed with the buffer still kept
    buffers.close();
  });
  expect(buffers.keptBuffersMax).toBe(1);
  const { client, fd } = await acceptedOnRing(ring);

  // 40 bytes wait before the receive starts: the first CQE's buffer is kept, the second's cannot be (two out > 1).
  const message = new Uint8Array(40).map((_, index) => index + 1);
  client.write(message);
  await Bun.sleep(50);
  const seen: Array<{ bid: number; bytes: number[] }> = [];
  const ends: number[] = [];
  const listener = {
    onSocketOp: (result: number, flags: number) => {
      if (result > 0) {
        const bid = flags >>> IORING_CQE_BUFFER_SHIFT;
        buffers.take(bid);
        seen.push({ bid, bytes: [...buffers.view(bid, result)] });
        if (kept < 0) {
          expect(buffers.keep(bid)).toBe(true);
          kept = bid;
        } else {
          expect(buffers.keep(bid)).toBe(false);
        }
        buffers.give(bid);
        buffers.checkInvariants();
      }
      if ((flags & IORING_CQE_F_MORE) === 0) ends.push(result);
    },
  };
  const receiveUntilEnd = async (): Promise<void> => {
    const endsBefore = ends.length;
    ring.receiveMultishot(fd, buffers.groupId, listener, "receive");
    for (let turn = 0; turn < 200 && ends.length === endsBefore; turn++) await Bun.sleep(2);
  };
  await receiveUntilEnd();
  expect(ends.at(-1)).toBe(-ENOBUFS);
  expect(seen.map((chunk) => chunk.bytes.length)).toEqual([16, 16]);
  expect(buffers.heldBuffers).toBe(1);
  // Only the other buffer is in the ring: the rest arrives in it, and the kept one still holds the first 16 bytes.
  client.end();
  for (let attempt = 0; attempt < 20 && ends.at(-1) !== 0; attempt++) await receiveUntilEnd();
  expect(ends.at(-1)).toBe(0);
  expect(seen.slice(2).every((chunk) => chunk.bid !== kept)).toBe(true);
  expect(seen.flatMap((chunk) => chunk.bytes)).toEqual([...message]);
  expect([...buffers.view(kept, 16)]).toEqual([...message.subarray(0, 16)]);
  buffers.give(kept);
  expect(buffers.heldBuffers).toBe(0);
  buffers.checkInvariants();
});

test("a multishot receive into provided buffers: a CQE per chunk, -ENOBUFS when every buffer is out, then on again", async () => {
  const ENOBUFS = 105;
  const ring = Uring.open(2, 0, 4);
  cleanups.push(() => ring.close());
  const buffers = new ProvidedBuffers(ring, ring.allocateBufferGroup(), 2, 16);
  cleanups.push(() => buffers.close());
  const { client, fd } = await acceptedOnRing(ring);

  // The client's 100 bytes arrive before the receive starts: 2 buffers of 16 take 32 of them, then none is free.
  const message = new Uint8Array(100).map((_, index) => index);
  client.write(message);
  await Bun.sleep(50);
  const chunks: number[][] = [];
  const ends: number[] = [];
  const listener = {
    onSocketOp: (result: number, flags: number) => {
      if (result > 0) {
        expect(flags & IORING_CQE_F_BUFFER).toBe(IORING_CQE_F_BUFFER);
        const bid = flags >>> IORING_CQE_BUFFER_SHIFT;
        buffers.take(bid);
        chunks.push([...buffers.view(bid, result)]);
        buffers.give(bid);
      }
      if ((flags & IORING_CQE_F_MORE) === 0) ends.push(result);
    },
  };
  for (let attempt = 0; attempt < 20 && chunks.flat().length < 100; attempt++) {
    const endsBefore = ends.length;
    ring.receiveMultishot(fd, buffers.groupId, listener, "receive");
    for (let turn = 0; turn < 200 && ends.length === endsBefore; turn++) await Bun.sleep(2);
    expect(ends.at(-1)).toBe(-ENOBUFS); // it ran out of buffers (or of data: then it would still be going on)
    if (chunks.flat().length === 100) break;
  }
  expect(chunks.every((chunk) => chunk.length <= 16)).toBe(true);
  expect(chunks.flat()).toEqual([...message]);
  client.end();
});
