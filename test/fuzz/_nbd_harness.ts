// A whole NBD connection without a socket, for the NBD stream fuzzer (folder-private): the real Handshake, NbdSession
// and OutputQueue wired as src/nbd/server.ts's Connection wires them, over a transport and a device whose every
// choice comes from one seeded PRNG (chunk sizes, partial socket writes, write failures, the order and failures of
// device completions). One seed = one run: a failure replays exactly. (A run may instead be served by a real volume,
// runStream's `served`: the order its calls are released in is still seeded, but they take real time, so when
// nothing else can happen the run waits for one to settle.)
//
// The run is a loop of steps; each step does one thing (feed a chunk, complete one device call, deliver a socket
// drain, close the socket after the connection ended) and then lets every microtask run. After each step the
// session's bounds are checked (NbdSession.checkInvariants, plus the bytes it buffers). The stream ends when nothing
// can happen any more: then the connection must be closed, or the session (or handshake) open and waiting for bytes
// with reading not paused. A peer hang-up follows, and the session must settle (no call in flight, nothing queued).
// Chunks may come as NBD on io_uring hands them over (Conditions.transientChunks): receive buffers the session may keep
// for a WRITE's payload (FuzzKeeper, modelled on ffi/uring_buffers.ts), whose bytes are overwritten the moment their
// last hold ends, as the kernel would; every payload must still be what it was when the device uses it, and every
// buffer must be given back once the session settled.

import { IOError } from "../../src/errors.ts";
import type { BlockDevice, BlockStatusExtent } from "../../src/nbd/block_device.ts";
import { Handshake, type ExportInfo } from "../../src/nbd/handshake.ts";
import { OutputQueue, type Transport } from "../../src/nbd/output_queue.ts";
import { NBD_SESSION_OUTPUT_BYTES_BOUND, NbdSession, newNbdStats, type ChunkKeeper, type NbdStats } from "../../src/nbd/session.ts";
import { NBD_OPTION_BYTES_MAX, NBD_REQUEST_BYTES_MAX } from "../../src/constants.ts";
import { NBD_OPTION_HEADER_BYTES } from "../../src/nbd/wire.ts";
import { MemoryBlockDevice } from "../nbd/memory_block_device.ts";
import type { Prng } from "../sim/prng.ts";

/** How hostile the world around the session is, per run. */
export interface Conditions {
  /** Largest chunk handed to feed() (chunks are 1..chunkMax bytes). */
  chunkMax: number;
  /** Share of socket writes that take only part of the bytes (then nothing until a drain). */
  partialWriteShare: number;
  /** Bytes one socket write takes at most (a slow reader); a write that takes less owes a drain. */
  takeMaxBytes: number;
  /** Chance that a step may complete device calls (a slow device lets requests pile up). */
  completionShare: number;
  /** Device calls one step completes at most, in the same turn (a device finishing a batch at once). */
  completionBurstMax: number;
  /** Share of socket writes that fail (the peer is gone). */
  failedWriteShare: number;
  /** Share of device calls that reject with an IOError, and that throw instead of returning a promise. */
  deviceFailShare: number;
  deviceThrowShare: number;
  /** Let one more chunk arrive after the session paused reading (data already in flight on a real socket). */
  chunkAfterPause: boolean;
  readOnly: boolean;
  /** Chunks are receive buffers valid only during feed() unless kept (NBD on io_uring); else fresh buffers (Bun). */
  transientChunks: boolean;
  /** Share of keep() calls the keeper refuses (a ring with too few buffers left to receive into). */
  keepRefuseShare: number;
}

export interface Outcome {
  /** How the connection ended: "waiting" (open, reading, all bytes consumed) or why it was closed. */
  end: string;
  steps: number;
  stats: NbdStats;
  deviceCalls: number;
  /** Every byte the transport accepted, and where the session's replies start in it (-1: no session). */
  sent: Uint8Array;
  sessionRepliesFrom: number;
  /** Peaks over the run: unsent reply bytes plus READ data in flight, and WRITE payload bytes in flight. */
  peakReplyBytes: number;
  peakWriteBytes: number;
}

/** A finding: the message says what broke; the caller adds the replay command. */
export class FuzzFinding extends Error {}

export const DEVICE_BYTES = 8 * 1024 * 1024;
export const EXPORT: ExportInfo = {
  name: "disk",
  description: "fuzzed",
  sizeBytes: DEVICE_BYTES,
  readOnly: false,
  blockSizeMinBytes: 1,
  blockSizePreferredBytes: 4096,
};
/** Steps after which a run counts as hung (far above any run: a step consumes a chunk, a call or a drain). */
const STEPS_MAX = 200_000;

class FuzzTransport implements Transport {
  paused = false;
  ended = false;
  drainOwed = false;
  private readonly sent: Uint8Array[] = [];
  sentBytes = 0;

  constructor(
    private readonly prng: Prng,
    private readonly conditions: Conditions,
    private readonly keepSent: boolean,
  ) {}

  write(data: Uint8Array, byteOffset = 0, byteLength = data.length - byteOffset): number {
    if (this.ended || this.prng.chance(this.conditions.failedWriteShare)) return -1;
    if (this.drainOwed) return 0;
    let take = Math.min(byteLength, this.conditions.takeMaxBytes);
    if (this.prng.chance(this.conditions.partialWriteShare)) take = this.prng.int(take);
    if (take < byteLength) this.drainOwed = true;
    if (this.keepSent) this.sent.push(data.slice(byteOffset, byteOffset + take));
    this.sentBytes += take;
    return take;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  end(): void {
    this.ended = true;
  }

  sentStream(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.sent));
  }
}

/**
 * Receive buffers as ffi/uring_buffers.ts hands them out: the receiver holds a buffer while feed() runs, the session
 * may keep it for payloads, and when the last hold ends the buffer goes back "to the kernel": its bytes are inverted,
 * so a payload read after that no longer matches what was received.
 */
class FuzzKeeper implements ChunkKeeper {
  private readonly holds = new Map<number, { count: number; buffer: Uint8Array }>();
  private nextId = 0;

  constructor(
    private readonly prng: Prng,
    private readonly conditions: Conditions,
  ) {}

  /** A receive buffer holding `bytes` (a copy), held by the receiver until give(id). */
  receive(bytes: Uint8Array): { id: number; buffer: Uint8Array } {
    const id = this.nextId++;
    const buffer = bytes.slice();
    this.holds.set(id, { count: 1, buffer });
    return { id, buffer };
  }

  keep(id: number): boolean {
    const held = this.holds.get(id);
    if (held === undefined) throw new FuzzFinding(`keep of receive buffer ${id}, which is back in the ring`);
    if (this.prng.chance(this.conditions.keepRefuseShare)) return false;
    held.count += 1;
    return true;
  }

  give(id: number): void {
    const held = this.holds.get(id);
    if (held === undefined) throw new FuzzFinding(`give of receive buffer ${id}, which is back in the ring`);
    held.count -= 1;
    if (held.count > 0) return;
    this.holds.delete(id);
    for (let index = 0; index < held.buffer.length; index++) held.buffer[index] = ~held.buffer[index]! & 0xff;
  }

  get buffersOut(): number {
    return this.holds.size;
  }
}

/**
 * A device (the memory device, or a real volume), with every call held until the run completes it (in a seeded
 * order), or fails it. A released call of the volume takes more than a turn: `running` counts those not settled.
 */
class SteppedDevice implements BlockDevice {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly blockSizeMinBytes = 1;
  readonly blockSizePreferredBytes = 4096;
  readonly held: Array<() => void> = [];
  calls = 0;
  running = 0;
  private settledWaiters: Array<() => void> = [];

  constructor(
    private readonly inner: BlockDevice,
    private readonly prng: Prng,
    private readonly conditions: Conditions,
  ) {
    this.sizeBytes = inner.sizeBytes;
    this.readOnly = inner.readOnly;
  }

  private hold<T>(run: () => Promise<T>): Promise<T> {
    this.calls += 1;
    if (this.prng.chance(this.conditions.deviceThrowShare)) throw new IOError("fuzz: the device threw");
    return new Promise<T>((resolve, reject) => {
      this.held.push(() => {
        if (this.prng.chance(this.conditions.deviceFailShare)) return reject(new IOError("fuzz: injected device failure"));
        this.running += 1;
        const done = (): void => {
          this.running -= 1;
          for (const wake of this.settledWaiters.splice(0)) wake();
        };
        run().then(
          (value) => (done(), resolve(value)),
          (error) => (done(), reject(error)),
        );
      });
    });
  }

  /** Resolves when a released call settles (call only while `running` > 0). */
  whenOneSettles(): Promise<void> {
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  /** Completes up to `count` held calls (at least one), chosen at random, in this turn. */
  complete(count: number): void {
    for (let left = Math.max(1, count); left > 0 && this.held.length > 0; left--) {
      const [run] = this.held.splice(this.prng.int(this.held.length), 1);
      run!();
    }
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.hold(() => this.inner.read(offset, length));
  }
  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    // The session may hand over a view of a receive buffer it keeps: it must hold the received bytes until now.
    const received = data.slice();
    return this.hold(() => {
      if (!Buffer.from(data).equals(received)) throw new FuzzFinding(`the payload of a WRITE at ${offset} changed before the device used it`);
      return this.inner.write(offset, data, fua);
    });
  }
  flush(): Promise<void> {
    return this.hold(() => this.inner.flush());
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.hold(() => this.inner.trim(offset, length, fua));
  }
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    return this.hold(() => this.inner.writeZeroes(offset, length, fua));
  }
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return this.hold(() => this.inner.blockStatus(offset, length));
  }
  cache(offset: number, length: number): Promise<void> {
    return this.hold(() => this.inner.cache(offset, length));
  }
}

/** Lets every queued microtask (promise callbacks, the output queue's flush) run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Errors that escaped into promise callbacks (an assertion inside a completion, say) during the current run. */
const escaped: unknown[] = [];
const onUnhandled = (reason: unknown): void => void escaped.push(reason);
export function watchEscapes(): () => void {
  process.on("unhandledRejection", onUnhandled);
  return () => process.off("unhandledRejection", onUnhandled);
}

/** One connection as src/nbd/server.ts's Connection wires it: the handshake, then a session, over one output queue. */
class FuzzConnection {
  readonly transport: FuzzTransport;
  readonly output: OutputQueue;
  readonly stats: NbdStats = newNbdStats();
  readonly device: SteppedDevice;
  readonly keeper: FuzzKeeper;
  handshake: Handshake | null;
  session: NbdSession | null = null;
  sessionRepliesFrom = -1;
  /** Why the connection was ended (null: still open). */
  end: string | null = null;
  settledCount = 0;
  peakReplyBytes = 0;
  peakWriteBytes = 0;

  constructor(
    prng: Prng,
    private readonly conditions: Conditions,
    keepSent: boolean,
    inner: BlockDevice | null,
  ) {
    this.transport = new FuzzTransport(prng, conditions, keepSent);
    this.keeper = new FuzzKeeper(prng, conditions);
    this.output = new OutputQueue(this.transport);
    this.device = new SteppedDevice(inner ?? new MemoryBlockDevice(DEVICE_BYTES, conditions.readOnly), prng, conditions);
    this.output.onFailed = () => {
      this.session?.onTransportClosed();
      this.endConnection("socket write failed");
    };
    this.handshake = new Handshake({ ...EXPORT, readOnly: conditions.readOnly }, (bytes) => this.output.appendCopy(bytes));
    this.handshake.start();
  }

  endConnection(why: string): void {
    if (this.end !== null) return;
    this.end = why;
    this.output.flush();
    this.transport.end();
  }

  /** Bytes received: a fresh buffer, or (transientChunks) a receive buffer held only while this runs, unless kept. */
  receive(bytes: Uint8Array): void {
    if (!this.conditions.transientChunks) return this.onData(bytes.slice(), false, -1);
    const { id, buffer } = this.keeper.receive(bytes);
    try {
      this.onData(buffer, true, id);
    } finally {
      this.keeper.give(id);
    }
  }

  private onData(chunk: Uint8Array, transient: boolean, chunkId: number): void {
    if (this.session !== null) return this.session.feed(chunk, transient, chunkId);
    if (transient) chunk = chunk.slice(); // the handshake keeps what it has not parsed, as server.ts's Connection
    if (this.handshake === null || this.end !== null) return;
    const result = this.handshake.feed(chunk);
    if (result.kind === "continue") return;
    this.handshake = null;
    if (result.kind === "close") return this.endConnection(`handshake: ${result.reason}`);
    if (result.kind === "starttls") throw new Error("the fuzz harness negotiates without TLS: STARTTLS is never acknowledged");
    this.sessionRepliesFrom = this.transport.sentBytes + this.output.queuedBytes;
    this.session = new NbdSession({
      device: this.device,
      negotiated: result.negotiated,
      transport: this.transport,
      output: this.output,
      stats: this.stats,
      logFailure: () => {},
      name: "fuzz",
      onProtocolError: (reason) => this.endConnection(`protocol error: ${reason}`),
      onDrainedForEnd: () => this.endConnection("disconnected"),
      onSettled: () => void (this.settledCount += 1),
      chunkKeeper: this.conditions.transientChunks ? this.keeper : null,
    });
    if (result.leftover.length > 0) this.session.feed(result.leftover);
  }

  /** The bounds, after every step. */
  check(): void {
    if (escaped.length > 0) throw escaped[0];
    const output = this.output;
    if (output.queuedBytes >= NBD_SESSION_OUTPUT_BYTES_BOUND) throw new FuzzFinding(`${output.queuedBytes} reply bytes queued`);
    const handshakeBytesMax = NBD_OPTION_HEADER_BYTES + NBD_OPTION_BYTES_MAX;
    if (this.handshake !== null && this.handshake.bufferedBytes > handshakeBytesMax) {
      throw new FuzzFinding(`the handshake buffers ${this.handshake.bufferedBytes} bytes (bound ${handshakeBytesMax})`);
    }
    const session = this.session;
    if (session === null) return;
    session.checkInvariants();
    const inflight = session.inflightBytes;
    this.peakReplyBytes = Math.max(this.peakReplyBytes, output.queuedBytes + inflight.reads);
    this.peakWriteBytes = Math.max(this.peakWriteBytes, inflight.writes);
    // The backlog holds at most the chunk that hit the limit and the one allowed after the pause.
    const bufferedMax = 2 * this.conditions.chunkMax + NBD_REQUEST_BYTES_MAX;
    if (session.bufferedBytes > bufferedMax) throw new FuzzFinding(`session buffers ${session.bufferedBytes} bytes (bound ${bufferedMax})`);
  }

  /** Nothing can happen any more: the connection must be closed, or open and waiting for bytes. */
  checkQuiescent(): void {
    if (this.end !== null) return;
    const session = this.session;
    if (session !== null) {
      // Open and reading; in flight at most the WRITE whose payload the rest of the stream would have carried.
      const waiting = session.inflight === (session.receivingPayload ? 1 : 0);
      if (session.phase !== "open" || session.readingPaused || !waiting) {
        throw new FuzzFinding(`stuck: session ${session.phase}, paused ${session.readingPaused}, ${session.inflight} in flight, ${this.output.queuedBytes} bytes queued`);
      }
    } else if (this.handshake === null) {
      throw new FuzzFinding("stuck: neither negotiating nor in transmission, and not closed");
    }
    if (!this.output.isEmpty) throw new FuzzFinding(`stuck: ${this.output.queuedBytes} reply bytes never sent`);
  }

  /** The peer hangs up (or the socket closes after our end()); every call finishes; the session must settle. */
  async hangUp(prng: Prng): Promise<number> {
    let steps = 0;
    this.output.close();
    this.session?.onTransportClosed();
    while (this.device.held.length > 0 || this.device.running > 0) {
      if (this.device.held.length > 0) this.device.complete(1 + prng.int(this.conditions.completionBurstMax));
      else await this.device.whenOneSettles();
      await settle();
      this.check();
      steps += 1;
    }
    await settle();
    this.check();
    const session = this.session;
    if (session !== null && (!session.isSettled || this.settledCount !== 1 || session.inflight !== 0)) {
      throw new FuzzFinding(`not settled after the socket closed: settled ${this.settledCount} times, ${session.inflight} in flight`);
    }
    if (this.keeper.buffersOut !== 0) throw new FuzzFinding(`${this.keeper.buffersOut} receive buffers still kept after the session settled`);
    return steps;
  }
}

/**
 * One connection fed `stream` under `conditions`, served by the memory device or by `served` (a real volume, whose
 * calls take real time); throws FuzzFinding (or the escaped error) on a violation.
 */
export async function runStream(stream: Uint8Array, prng: Prng, conditions: Conditions, keepSent = false, served: BlockDevice | null = null): Promise<Outcome> {
  escaped.length = 0;
  const connection = new FuzzConnection(prng, conditions, keepSent, served);
  const { transport, device } = connection;
  let cursor = 0;
  let chunkAfterPauseUsed = false;
  let steps = 0;
  for (;;) {
    await settle();
    connection.check();
    if (++steps > STEPS_MAX) throw new FuzzFinding(`no end after ${STEPS_MAX} steps`);
    if (!transport.paused) chunkAfterPauseUsed = false;
    const open = connection.end === null;
    const canFeed = open && cursor < stream.length && (!transport.paused || (conditions.chunkAfterPause && !chunkAfterPauseUsed));
    const actions: Array<() => void> = [];
    if (canFeed) {
      actions.push(() => {
        if (transport.paused) chunkAfterPauseUsed = true;
        const length = 1 + prng.int(Math.min(conditions.chunkMax, stream.length - cursor));
        // A fresh buffer per chunk, as Bun gives every data event (the session may keep views of it), or a receive
        // buffer as on io_uring.
        connection.receive(stream.subarray(cursor, cursor + length));
        cursor += length;
      });
    }
    const completing = actions.length === 0 || prng.chance(conditions.completionShare);
    if (device.held.length > 0 && completing) actions.push(() => device.complete(1 + prng.int(conditions.completionBurstMax)));
    if (transport.drainOwed && open) {
      actions.push(() => {
        transport.drainOwed = false;
        if (connection.session !== null) connection.session.onDrain();
        else connection.output.onDrain();
      });
    }
    if (actions.length === 0) {
      // Nothing to do but wait for a volume call already released (the memory device has none by now).
      if (device.running === 0) break;
      await device.whenOneSettles();
      continue;
    }
    actions[prng.int(actions.length)]!();
  }
  connection.checkQuiescent();
  const end = connection.end ?? "waiting";
  steps += await connection.hangUp(prng);
  return {
    end,
    steps,
    stats: connection.stats,
    deviceCalls: device.calls,
    sent: transport.sentStream(),
    sessionRepliesFrom: connection.sessionRepliesFrom,
    peakReplyBytes: connection.peakReplyBytes,
    peakWriteBytes: connection.peakWriteBytes,
  };
}
