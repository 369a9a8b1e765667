// NBD transmission on io_uring (lsvd serve --nbd-io uring): listening sockets of our own, whose accepts, receives
// and sends are ops on the ring the journal uses, so one io_uring_enter per event-loop turn submits network and disk
// work together and one eventfd wake reaps both. The protocol layer above (Connection, Handshake, NbdSession) is
// the same as on Bun's sockets; this module only moves bytes. Rules in docs/architecture.md, "NBD on io_uring".
//
// One connection's ops: at most one receive, one send and one cancel (of the receive) in flight
// (NBD_URING_SOCKET_SLOTS counts three per connection, and two per listener: its accept, and the cancel that stops it).
// - Receive: one multishot receive per connection into the server's provided-buffer ring (ffi/uring_buffers.ts); each
//   chunk is handed to the owner as a view of its buffer, valid only during the call (the session parses it in
//   place and copies what it keeps: an unparsed rest, payloads split across chunks), and the buffer goes back to
//   the ring then, unless a WRITE whose payload lies whole in it keeps it until that WRITE completes. A
//   receive that ended (-ENOBUFS: every buffer was out) is started again; pause() cancels it and resume() starts a
//   new one.
// - Send: write() copies replies into the filling one of two buffers and sends it at once with one send(2)
//   (OutputQueue writes once per turn, so one send carries every reply of a turn). A socket with room takes it whole
//   and nothing completes later: a send on the ring would cost a completion, and so a wake, per turn. What the socket
//   did not take goes out as a ring send, which completes when there is room; meanwhile the other buffer fills, and
//   when write() could not take everything, `drain` follows once a buffer is free again (Bun's semantics, which
//   OutputQueue relies on).
// - Close: end() sends what is queued, then shuts the socket down; terminate() and a peer that hung up (receive
//   returned 0 or an error) shut it down at once. The descriptor is closed, and `close` told, once no op of the
//   connection is in flight: the kernel never completes an op on a reused descriptor number.

import { NBD_URING_ACCEPT_RETRY_MS, NBD_URING_SEND_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { allocAligned, describeErrno, EAGAIN, ECANCELED, ENOBUFS, freeAligned, viewMemory } from "../../ffi/libc.ts";
import { IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER, IORING_CQE_F_MORE, IORING_OP_ACCEPT, IORING_OP_SEND } from "../../ffi/liburing.ts";
import type { ProvidedBuffers } from "../../ffi/uring_buffers.ts";
import { closeSocket, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCKADDR_STORAGE_BYTES, sendNow, setNoDelay, shutdownSocket } from "../../ffi/socket.ts";
import type { SocketOpListener, Uring } from "../../ffi/uring.ts";
import { decodeSocketAddress, describeSocketAddress, type SocketAddress } from "../ops/socket_address.ts";
import type { Transport } from "./output_queue.ts";


/** What a connection's socket tells its owner (the server's Connection). */
export interface UringSocketEvents {
  /**
   * `chunk` is a view of receive buffer `bufferId`, valid only during the call unless the owner keeps the buffer
   * (`ProvidedBuffers.keep`, then `give` when done): else it copies what it keeps.
   */
  onData(chunk: Uint8Array, bufferId: number): void;
  onDrain(): void;
  onClose(): void;
}

/** The send side: a buffer being sent (`sendingBytes` from `sentBytes` on) and one filling (`fillingBytes`). */
interface SendBuffers {
  readonly addresses: [number, number];
  readonly views: [Uint8Array, Uint8Array];
  /** Index of the filling buffer; the other one is being sent while `sendSlot >= 0`. */
  filling: 0 | 1;
  fillingBytes: number;
  sendingBytes: number;
  sentBytes: number;
}

export class UringSocket implements Transport {
  events: UringSocketEvents | null = null;
  private receiveSlot = -1;
  /** The cancel of the receive (pause), while in flight. */
  private cancelSlot = -1;
  private sendSlot = -1;
  private readonly send: SendBuffers;
  private paused = false;
  /** write() could not take everything: tell `drain` once the sent buffer is free. */
  private owesDrain = false;
  /** "ending": send what is queued, then shut down; "shut": shut down, waiting for ops; "closed": fd closed. */
  private state: "open" | "ending" | "shut" | "closed" = "open";
  private readonly onReceived: SocketOpListener = { onSocketOp: (result, flags) => this.received(result, flags) };
  private readonly onSent: SocketOpListener = { onSocketOp: (result) => this.sent(result) };
  private readonly onCancelled: SocketOpListener = {
    onSocketOp: () => {
      this.cancelSlot = -1;
      this.closeWhenIdle();
    },
  };

  constructor(
    private readonly ring: Uring,
    private readonly buffers: ProvidedBuffers,
    readonly fd: number,
    readonly label: string,
  ) {
    const first = allocAligned(2 * NBD_URING_SEND_BYTES, 4096);
    const second = first + NBD_URING_SEND_BYTES;
    this.send = {
      addresses: [first, second],
      views: [new Uint8Array(viewMemory(first, NBD_URING_SEND_BYTES)), new Uint8Array(viewMemory(second, NBD_URING_SEND_BYTES))],
      filling: 0,
      fillingBytes: 0,
      sendingBytes: 0,
      sentBytes: 0,
    };
  }

  /** Starts receiving; events go to `events` from now on. */
  start(events: UringSocketEvents): void {
    assert(this.events === null, "a socket is started once");
    this.events = events;
    this.armReceive();
  }

  /**
   * Takes as many of the bytes as the buffers hold while the socket takes what is sent at once; -1 once the socket is
   * shutting down (or the peer turned out to be gone).
   */
  write(data: Uint8Array, byteOffset = 0, byteLength = data.length - byteOffset): number {
    if (this.state !== "open") return -1;
    const send = this.send;
    let taken = 0;
    while (taken < byteLength && send.fillingBytes < NBD_URING_SEND_BYTES) {
      const part = Math.min(NBD_URING_SEND_BYTES - send.fillingBytes, byteLength - taken);
      send.views[send.filling].set(data.subarray(byteOffset + taken, byteOffset + taken + part), send.fillingBytes);
      send.fillingBytes += part;
      taken += part;
      // While the other buffer is on the ring, this one fills; else it goes now (and is free again if it all went).
      if (this.sendSlot >= 0) break;
      this.sendFilling();
      if (this.state !== "open") return -1;
    }
    if (taken < byteLength) this.owesDrain = true;
    return taken;
  }

  /**
   * Stops receiving: a multishot receive goes on by itself, so it is cancelled, and the peer's bytes wait in the
   * kernel (its window closes) as they do for a paused Bun socket. Chunks posted before the cancel still arrive;
   * the session keeps them in its backlog, as it keeps what a Bun socket delivers after pause().
   */
  pause(): void {
    this.paused = true;
    if (this.receiveSlot >= 0 && this.cancelSlot < 0) this.cancelSlot = this.ring.cancelSocketOp(this.receiveSlot, this.label, this.onCancelled);
  }

  resume(): void {
    this.paused = false;
    this.armReceive();
  }

  /** Sends what is queued, then shuts the socket down (a FIN after the last reply). */
  end(): void {
    if (this.state !== "open") return;
    this.state = "ending";
    if (this.sendSlot < 0) this.shutDown();
  }

  /** Shuts the socket down now; queued replies are dropped. */
  terminate(): void {
    if (this.state === "shut" || this.state === "closed") return;
    this.send.fillingBytes = 0;
    this.shutDown();
  }

  private armReceive(): void {
    if (this.state === "shut" || this.state === "closed" || this.paused || this.receiveSlot >= 0 || this.events === null) return;
    this.receiveSlot = this.ring.receiveMultishot(this.fd, this.buffers.groupId, this.onReceived, this.label);
  }

  /**
   * One CQE of the multishot receive: a chunk (handed over as a view of its buffer, which is given back once the
   * owner returns: it copies what it keeps), or its end.
   */
  private received(result: number, flags: number): void {
    const more = (flags & IORING_CQE_F_MORE) !== 0;
    if (!more) this.receiveSlot = -1;
    if (result > 0) {
      assert((flags & IORING_CQE_F_BUFFER) !== 0, "a received chunk names its buffer");
      const bid = flags >>> IORING_CQE_BUFFER_SHIFT;
      this.buffers.take(bid);
      try {
        if (this.state === "open" || this.state === "ending") this.events!.onData(this.buffers.view(bid, result), bid);
      } finally {
        this.buffers.give(bid);
      }
      if (!more) this.armReceive();
      return;
    }
    if (more) return;
    if (result === -ENOBUFS || result === -ECANCELED) {
      // Every buffer was out for a moment, or pause() cancelled it (and resume() may have come since): go on if allowed.
      this.armReceive();
      this.closeWhenIdle();
      return;
    }
    // 0: the peer hung up (or our shutdown ended the receive); < 0: the connection failed. Either way it is over.
    this.shutDown();
  }

  /**
   * Swaps the buffers and sends the one that filled: first with one send(2) at once, which a socket with room takes
   * whole, so no completion (and no wake) follows; what it did not take goes out as a ring op, which completes when
   * the socket has room.
   */
  private sendFilling(): void {
    const send = this.send;
    if (send.fillingBytes === 0 || this.sendSlot >= 0) return;
    const sending = send.filling;
    send.filling = sending === 0 ? 1 : 0;
    send.sendingBytes = send.fillingBytes;
    send.fillingBytes = 0;
    const result = sendNow(this.fd, send.addresses[sending], send.sendingBytes);
    if (result < 0 && result !== -EAGAIN) {
      // The peer is gone (EPIPE, ECONNRESET). Closed after this turn: the caller is in the middle of a write.
      this.state = "shut";
      shutdownSocket(this.fd);
      queueMicrotask(() => this.closeWhenIdle());
      return;
    }
    send.sentBytes = Math.max(result, 0);
    if (send.sentBytes === send.sendingBytes) send.sendingBytes = 0;
    else this.sendRest(sending);
  }

  private sendRest(sending: 0 | 1): void {
    const send = this.send;
    const address = send.addresses[sending] + send.sentBytes;
    this.sendSlot = this.ring.socketOp(IORING_OP_SEND, this.fd, address, send.sendingBytes - send.sentBytes, 0, MSG_NOSIGNAL, this.onSent, this.label);
  }

  private sent(result: number): void {
    this.sendSlot = -1;
    const send = this.send;
    if (result <= 0 || this.state === "shut" || this.state === "closed") {
      // The peer is gone (EPIPE, ECONNRESET), or we are shutting down: nothing more goes out.
      this.shutDown();
      return;
    }
    send.sentBytes += result;
    if (send.sentBytes < send.sendingBytes) return this.sendRest(send.filling === 0 ? 1 : 0);
    send.sendingBytes = 0;
    // The filling buffer goes out now (or was empty): either way the next one starts empty.
    this.sendFilling();
    if (this.owesDrain) this.drain();
    if (this.state === "ending" && this.sendSlot < 0) this.shutDown();
  }

  /** The filling buffer has room again: the owner's queue may write the rest. */
  private drain(): void {
    this.owesDrain = false;
    this.events?.onDrain();
  }

  /** Shuts the socket down (receive returns 0, a send fails); the descriptor closes once no op is in flight. */
  private shutDown(): void {
    if (this.state !== "shut" && this.state !== "closed") {
      this.state = "shut";
      shutdownSocket(this.fd);
    }
    this.closeWhenIdle();
  }

  private closeWhenIdle(): void {
    if (this.state !== "shut" || this.receiveSlot >= 0 || this.sendSlot >= 0 || this.cancelSlot >= 0) return;
    this.state = "closed";
    closeSocket(this.fd);
    freeAligned(this.send.addresses[0]);
    this.events?.onClose();
  }
}

/** Told each accepted connection: its socket (not started yet) and the peer's address for logs ("" on a unix socket). */
export type AcceptListener = (socket: UringSocket, name: string) => void;

/**
 * A listening socket whose accepts are ring ops: one accept in flight at a time, the next submitted as soon as one
 * completes. stop() cancels the accept in flight; the descriptor is closed when both the accept and its cancel have
 * completed (an inherited one too: serving it stops there, as Bun's listener.stop() does), and stop()'s promise
 * resolves then: after it, the listener has no op on the ring and its address is free to bind again.
 */
export class UringListener {
  private readonly bufferAddress: number;
  private readonly addressBytes: Uint8Array;
  private readonly addressLength: Uint32Array;
  private acceptSlot = -1;
  private cancelSlot = -1;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopping = false;
  private closed = false;
  private readonly closedSignal = Promise.withResolvers<void>();
  private readonly onAccepted: SocketOpListener = { onSocketOp: (result) => this.accepted(result) };
  private readonly onCancelled: SocketOpListener = { onSocketOp: () => this.cancelled() };

  constructor(
    private readonly ring: Uring,
    private readonly buffers: ProvidedBuffers,
    readonly fd: number,
    readonly address: SocketAddress,
    private readonly onAccept: AcceptListener,
    private readonly log: (line: string) => void,
  ) {
    this.bufferAddress = allocAligned(SOCKADDR_STORAGE_BYTES + 8, 64); // the peer address, then its socklen_t
    this.addressBytes = new Uint8Array(viewMemory(this.bufferAddress, SOCKADDR_STORAGE_BYTES));
    this.addressLength = new Uint32Array(viewMemory(this.bufferAddress + SOCKADDR_STORAGE_BYTES, 4));
    this.armAccept();
  }

  get port(): number | null {
    return this.address.kind === "tcp" ? this.address.port : null;
  }

  /** Stops accepting; resolves once the descriptor is closed (the accept in flight and its cancel completed). */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
      // The descriptor is closed only once the cancel's own slot is free too.
      if (this.acceptSlot >= 0) this.cancelSlot = this.ring.cancelSocketOp(this.acceptSlot, `accept on ${this.where}`, this.onCancelled);
      this.closeWhenIdle();
    }
    return this.closedSignal.promise;
  }

  private get where(): string {
    return describeSocketAddress(this.address);
  }

  private armAccept(): void {
    this.retryTimer = undefined;
    if (this.stopping) return;
    this.addressLength[0] = SOCKADDR_STORAGE_BYTES;
    this.acceptSlot = this.ring.socketOp(IORING_OP_ACCEPT, this.fd, this.bufferAddress, 0, this.bufferAddress + SOCKADDR_STORAGE_BYTES, SOCK_CLOEXEC, this.onAccepted, `accept on ${this.where}`);
  }

  private accepted(result: number): void {
    this.acceptSlot = -1;
    if (this.stopping) {
      if (result >= 0) closeSocket(result);
      return this.closeWhenIdle();
    }
    if (result < 0) {
      // Out of descriptors or memory, or a connection reset before it was accepted: say so, try again a bit later.
      if (-result !== ECANCELED) this.log(`nbd: cannot accept on ${this.where}: ${describeErrno(-result)}`);
      this.retryTimer = setTimeout(() => this.armAccept(), NBD_URING_ACCEPT_RETRY_MS);
      return;
    }
    this.armAccept();
    this.onAccept(new UringSocket(this.ring, this.buffers, result, `connection ${result}`), this.peerName(result));
  }

  private peerName(fd: number): string {
    if (this.address.kind === "unix") return "";
    try {
      setNoDelay(fd);
    } catch {
      // A peer that reset the connection already: its first receive fails and closes it.
    }
    const peer = decodeSocketAddress(this.addressBytes.subarray(0, Math.min(this.addressLength[0]!, SOCKADDR_STORAGE_BYTES)));
    return peer.kind === "tcp" ? `${peer.host}:${peer.port}` : peer.path;
  }

  private cancelled(): void {
    this.cancelSlot = -1;
    this.closeWhenIdle();
  }

  private closeWhenIdle(): void {
    if (this.closed || this.acceptSlot >= 0 || this.cancelSlot >= 0) return;
    this.closed = true;
    closeSocket(this.fd);
    freeAligned(this.bufferAddress);
    this.closedSignal.resolve();
  }
}
