// One io_uring instance driven from JS: an op queue with batched submission and completion reaping, no C.
// Spec: io_uring(7), io_uring_enter(2); ring layout in ./liburing.ts; design facts in docs/platform.md, "liburing".
//
// How an op travels:
//   1. read/write/readv/writev/fsync take a free slot (slot index = user_data), write a 64-byte SQE straight into
//      the mmapped SQ (and the op's iovecs into the slot's native iovec area), and advance our copy of the SQ tail.
//      With no free slot the op waits in a bounded FIFO (URING_WAITING_MAX) and gets a slot as completions free them.
//   2. The first op of an event-loop turn schedules one microtask; it stores the tail into struct io_uring's
//      sq.sqe_tail and calls io_uring_submit once for everything queued meanwhile (one FFI call per batch). A turn
//      that queues many ops submits each URING_SUBMIT_BATCH_SQES as they fill: when completions arrive in bursts
//      (a virtualised disk completes a whole submitted batch at once) this restarts the device after a few ops
//      instead of after the whole burst was turned around, which keeps it busy (bench/RESULTS.md). A socket op's
//      SQE (below) goes with the turn's next file submit, or at the end of the turn (setImmediate).
//   3. The kernel posts CQEs and signals the eventfd registered with io_uring_register_eventfd, which Bun reads on
//      its own epoll (Bun.file(fd).stream()), so waiting never blocks the event loop; each wake reaps. A reap takes
//      every CQE visible (bulk), settles the slots' promises and stores the new CQ head once.
//      Polling (a ring opened with pollIdleTurns > 0): after a submit the ring polls its CQ once per event-loop turn
//      (setImmediate: the loop still serves sockets in between) with eventfd signals switched off
//      (IORING_CQ_EVENTFD_DISABLED), and keeps polling while completions keep landing; after pollIdleTurns empty
//      turns, or with nothing in flight, it switches the signals back on and waits on the eventfd again. Polling was
//      meant to turn bursts of completions around faster than a wake, but every turn is a zero-timeout epoll: where
//      the thread shares its cores with the clients (lsvd serve on a small machine) the turns cost more CPU per
//      write than the wakes they save, and IOPS with it, and a raw io_uring loop no longer gains from it either
//      (figures at URING_POLL_IDLE_TURNS), so the cache device does not poll.
//
// Memory ordering (why plain stores suffice for the SQ, and where Atomics are used):
// - SQ: with no SQPOLL thread the kernel reads SQEs and the SQ tail only inside io_uring_enter, i.e. on this thread
//   during the io_uring_submit call. Our SQE stores precede that call in program order; an FFI call is opaque to
//   the JIT (no stores sink past it) and x86-64 does not reorder stores with stores, and the syscall itself
//   serialises. liburing's flush then publishes the tail to *sq.ktail before entering. IORING_FEAT_SUBMIT_STABLE
//   (5.5+) means the kernel has copied what it needs from SQEs and iovecs by the time submit returns.
// - Switching eventfd signals back on: Atomics.and on *cq.kflags is a locked read-modify-write (a full fence on
//   x86-64), so the reap right after it sees every CQE posted before the kernel could see the flag clear. The
//   kernel reads the flag after publishing the tail without a full fence of its own, so a completion racing the
//   switch could in theory go unsignalled: a backstop timer (URING_BACKSTOP_MS) reaps while ops are in flight
//   and the ring is not polling, so such a completion is late, never lost. A ring that never polls never switches
//   the signals off and keeps the backstop all the same (a wake lost anywhere else is late too, never lost).
// - CQ: the kernel fills a CQE and then store-releases *cq.ktail, possibly from another CPU. We read the tail with
//   Atomics.load (allowed on a non-shared Int32/Uint32Array; it keeps the JIT from reordering or caching the load)
//   before reading entries, and publish the consumed head with Atomics.store after the last entry was read, so the
//   kernel never overwrites a CQE we still read. On x86-64 (TSO) loads are not reordered with loads, nor stores
//   with earlier loads, so these give acquire/release without fences.
//
// Socket ops (accept, recv, send, and the cancel of one of them) have slots of their own, after the file ops'
// (`socketSlots` when the ring is opened): a recv waits for its peer for as long as the peer likes, so file ops must
// never wait behind one, nor a socket op behind a full journal. A socket op does not settle a promise: its
// listener's onSocketOp gets the CQE's result as it is (bytes, a new descriptor, or -errno; a short send is not an
// error here), and its owner bounds how many it has in flight (NBD on io_uring: src/nbd/uring_socket.ts).
//
// Invariants:
// - inflight (slots taken) <= queueDepth + socketSlots <= SQ entries, and CQ entries = 2 x SQ entries: the SQ never
//   overflows, and the CQ cannot: CQEs not yet reaped number at most one per slot plus one per provided buffer (a
//   multishot receive's chunks each take a buffer, given back only in a reap; ffi/uring_buffers.ts), fewer than the
//   CQ's entries for the rings lsvd opens (src/constants.ts asserts it for NBD on io_uring). No op is ever dropped
//   or has to be retried for lack of ring space.
// - Every slot taken has exactly one SQE written and at least one CQE to come (one, but for a multishot receive,
//   whose last CQE is the one without IORING_CQE_F_MORE); a file op's promise settles exactly once.
// - A waiting op holds no slot. The waiting FIFO is non-empty only while every slot is taken.

import {
  URING_BACKSTOP_MS,
  URING_IOVECS_PER_OP_MAX,
  URING_POLL_IDLE_TURNS,
  URING_QUEUE_DEPTH,
  URING_SUBMIT_BATCH_SQES,
  URING_WAITING_MAX,
} from "../src/constants.ts";
import { assert, IOError } from "../src/errors.ts";
import {
  allocAligned,
  closeFile,
  describeErrno,
  EAGAIN,
  EBADF,
  EBUSY,
  EINTR,
  EINVAL,
  freeAligned,
  openEventfd,
  readPointer,
  viewMemory,
} from "./libc.ts";
import {
  checkHeaderLayout,
  IORING_CQE_F_MORE,
  IORING_OP_ACCEPT,
  IORING_RECV_MULTISHOT,
  IOSQE_BUFFER_SELECT,
  IORING_OP_ASYNC_CANCEL,
  IORING_OP_RECV,
  IORING_OP_SEND,
  checkRingLayout,
  CQE_BYTES,
  CqeWord,
  IORING_CQ_EVENTFD_DISABLED,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_TASKRUN_FLAG,
  IORING_FSYNC_DATASYNC,
  IORING_OP_FSYNC,
  IORING_OP_READ,
  IORING_OP_READV,
  IORING_OP_WRITE,
  IORING_OP_WRITEV,
  KERNEL_HEADER_PATH,
  liburing,
  LIBURING_HEADER_PATH,
  RING_STRUCT_BYTES,
  RingOffset,
  SQE_BYTES,
  SqeWord,
} from "./liburing.ts";
import { existsSync, readFileSync } from "node:fs";

const IOVEC_BYTES = 16;
const WORDS_PER_SQE = SQE_BYTES / 4;
const WORDS_PER_CQE = CQE_BYTES / 4;
const WORDS_PER_IOVEC = IOVEC_BYTES / 4;
const TWO_POW_32 = 4294967296;
/** io_uring_enter refusing for a moment (EAGAIN/EBUSY/EINTR): try the submit again after this long. */
const SUBMIT_RETRY_DELAY_MS = 1;

type Resolve = (value: void) => void;
type Reject = (error: unknown) => void;

/** An op that found every slot taken. Vectored ops keep copies of their address/length lists. */
interface WaitingOp {
  readonly opcode: number;
  readonly fd: number;
  readonly address: number;
  readonly bytes: number;
  readonly addresses: readonly number[] | undefined;
  readonly lengths: readonly number[] | undefined;
  readonly offset: number;
  readonly opFlags: number;
  readonly label: string;
  readonly resolve: Resolve;
  readonly reject: Reject;
}

/**
 * Told the result of a socket op: bytes moved (0: the peer closed), a new descriptor (accept), or -errno; and the
 * CQE's flags (a multishot receive: IORING_CQE_F_MORE while it goes on, the provided buffer's id with F_BUFFER).
 */
export interface SocketOpListener {
  onSocketOp(result: number, flags: number): void;
}

let headersChecked = false;

function checkHeadersOnce(): void {
  if (headersChecked) return;
  const read = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : undefined);
  checkHeaderLayout(read(LIBURING_HEADER_PATH), read(KERNEL_HEADER_PATH));
  headersChecked = true;
}

function operationName(opcode: number, opFlags: number): string {
  if (opcode === IORING_OP_READ || opcode === IORING_OP_READV) return "read";
  if (opcode === IORING_OP_WRITE || opcode === IORING_OP_WRITEV) return "write";
  if (opcode === IORING_OP_ACCEPT) return "accept";
  if (opcode === IORING_OP_RECV) return "receive";
  if (opcode === IORING_OP_SEND) return "send";
  if (opcode === IORING_OP_ASYNC_CANCEL) return "cancel";
  return opFlags & IORING_FSYNC_DATASYNC ? "fdatasync" : "fsync";
}

/**
 * io_uring_queue_init with COOP_TASKRUN | TASKRUN_FLAG: a completion's task work (the kernel's side of posting a
 * CQE) runs at this thread's next kernel entry, which every event-loop turn makes (epoll, submits, socket calls),
 * instead of interrupting the thread wherever it is; a sleeping thread is still woken. Measured in serve at 4 KiB
 * QD32: 2-4% less server CPU per write in two A/Bs (Bun's sockets, and NBD on io_uring), no difference in a third
 * (bench/RESULTS.md, "NBD on io_uring"). A kernel older than 5.19 refuses the flags (EINVAL): then the ring is set
 * up without them.
 */
function initRing(lib: ReturnType<typeof liburing>, entries: number, ringAddress: number): number {
  const rc = lib.queueInit(entries, ringAddress, IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
  return rc === -EINVAL ? lib.queueInit(entries, ringAddress, 0) : rc;
}

function u32View(address: number, bytes: number): Uint32Array {
  return new Uint32Array(viewMemory(address, bytes));
}

/**
 * One ring, used from the thread that opened it. While open, its eventfd reader keeps the event loop (and so the
 * process) alive: close() it.
 */
export class Uring {
  /** Slots of file ops (read, write, fsync); socket ops have `socketSlots` more, after these. */
  readonly queueDepth: number;
  readonly socketSlots: number;
  private bufferGroups = 0;

  private readonly lib = liburing();
  private readonly ringAddress: number;
  private readonly ringWords: Uint32Array;
  private readonly sqMask: number;
  private readonly sqeWords: Uint32Array;
  private readonly sqKhead: Uint32Array;
  private sqTail: number;
  private readonly cqMask: number;
  private readonly cqeWords: Int32Array;
  private readonly cqKtail: Uint32Array;
  private readonly cqKhead: Uint32Array;
  private readonly cqKflags: Uint32Array;
  private cqHead: number;
  private readonly iovecAddress: number;
  private readonly iovecWords: Uint32Array;
  private readonly eventfd: number;
  private readonly wakeReader: { read(): Promise<{ done: boolean }>; cancel(): Promise<void> };
  private readonly reaping: Promise<void>;

  // Per-slot state of the op occupying it (parallel arrays: no object per op on the hot path).
  private readonly slotOpcode: Uint8Array;
  private readonly slotOpFlags: Uint8Array;
  private readonly slotOffset: Float64Array;
  private readonly slotBytes: Float64Array;
  private readonly slotLabel: string[];
  private readonly slotResolve: (Resolve | undefined)[];
  private readonly slotReject: (Reject | undefined)[];
  private readonly freeSlots: Int32Array;
  private freeSlotCount: number;
  /** Socket ops: their listener per slot (null for a cancel), and the free socket slots. */
  private readonly slotListener: (SocketOpListener | null)[];
  private readonly freeSocketSlots: Int32Array;
  private freeSocketSlotCount: number;

  private readonly waiting: (WaitingOp | undefined)[] = [];
  private waitingHead = 0;
  private submitScheduled = false;
  /** SQEs written since the last io_uring_submit call. */
  private unsubmitted = 0;
  private submitRetryTimer: ReturnType<typeof setTimeout> | undefined;
  private broken: IOError | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private drained: Resolve | undefined;
  private readonly submitBound = () => this.submitNow();
  /** Socket SQEs wait for the end of the turn (writeSqe). */
  private socketSubmitScheduled = false;
  private readonly socketSubmitBound = () => {
    this.socketSubmitScheduled = false;
    if (!this.torndown) this.submit();
  };
  /** Empty turns a polling ring polls before it waits on the eventfd again; 0: it never polls (the header, step 3). */
  private readonly pollIdleTurns: number;
  /** Polling the CQ once per event-loop turn, eventfd signals off (see the header, step 3). */
  private polling = false;
  private idleTurns = 0;
  private readonly pollBound = () => this.pollTurn();
  private backstopTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly backstopBound = () => this.backstop();
  /** Reaps woken by the eventfd, and polling turns run: how completions were found (tests and benchmarks read them). */
  eventfdWakes = 0;
  pollTurns = 0;
  /** The ring's memory is gone (close finished): nothing may touch its views. */
  private torndown = false;

  /**
   * Sets up a ring with queueDepth slots that polls its CQ for up to pollIdleTurns empty event-loop turns after a
   * submit (0: it waits on the eventfd only), with socketSlots more slots for socket ops (0: it does none). Throws
   * NotSupportedError when liburing's layout is not the expected one.
   */
  static open(queueDepth: number = URING_QUEUE_DEPTH, pollIdleTurns: number = URING_POLL_IDLE_TURNS, socketSlots = 0): Uring {
    assert(Number.isSafeInteger(queueDepth) && queueDepth >= 1 && queueDepth <= 4096, "queue depth in 1..4096");
    assert(Number.isSafeInteger(socketSlots) && socketSlots >= 0 && socketSlots <= 4096, "socket slots in 0..4096");
    assert(Number.isSafeInteger(pollIdleTurns) && pollIdleTurns >= 0, "poll idle turns is a non-negative integer");
    checkHeadersOnce();
    return new Uring(queueDepth, pollIdleTurns, socketSlots);
  }

  private constructor(queueDepth: number, pollIdleTurns: number, socketSlots: number) {
    this.queueDepth = queueDepth;
    this.socketSlots = socketSlots;
    this.pollIdleTurns = pollIdleTurns;
    const slots = queueDepth + socketSlots;
    this.ringAddress = allocAligned(RING_STRUCT_BYTES, 64);
    const rc = initRing(this.lib, slots, this.ringAddress);
    if (rc < 0) {
      freeAligned(this.ringAddress);
      throw new IOError(`Cannot set up io_uring with ${slots} entries: ${describeErrno(-rc)}`, false, { errno: -rc });
    }
    let eventfd = -1;
    try {
      const ring = new DataView(viewMemory(this.ringAddress, RING_STRUCT_BYTES));
      checkRingLayout(ring, slots, (address) => u32View(address, 4)[0]!);
      const pointer = (offset: number) => readPointer(this.ringAddress, offset);
      this.ringWords = new Uint32Array(ring.buffer);
      const sqEntries = ring.getUint32(RingOffset.sqRingEntries, true);
      const cqEntries = ring.getUint32(RingOffset.cqRingEntries, true);
      this.sqMask = sqEntries - 1;
      this.cqMask = cqEntries - 1;
      this.sqeWords = u32View(pointer(RingOffset.sqSqes), sqEntries * SQE_BYTES);
      this.sqKhead = u32View(pointer(RingOffset.sqKhead), 4);
      this.sqTail = ring.getUint32(RingOffset.sqSqeTail, true);
      this.cqeWords = new Int32Array(viewMemory(pointer(RingOffset.cqCqes), cqEntries * CQE_BYTES));
      this.cqKtail = u32View(pointer(RingOffset.cqKtail), 4);
      this.cqKhead = u32View(pointer(RingOffset.cqKhead), 4);
      this.cqKflags = u32View(pointer(RingOffset.cqKflags), 4);
      this.cqHead = Atomics.load(this.cqKhead, 0);
      assert(cqEntries >= slots && sqEntries >= slots, "the rings hold every op in flight");

      eventfd = openEventfd();
      const registered = this.lib.registerEventfd(this.ringAddress, eventfd);
      if (registered < 0) {
        throw new IOError(`Cannot register an eventfd with io_uring: ${describeErrno(-registered)}`, false, { errno: -registered });
      }
      this.eventfd = eventfd;
    } catch (error) {
      if (eventfd >= 0) closeFile(eventfd, "io_uring eventfd");
      this.lib.queueExit(this.ringAddress);
      freeAligned(this.ringAddress);
      throw error;
    }

    this.iovecAddress = allocAligned(queueDepth * URING_IOVECS_PER_OP_MAX * IOVEC_BYTES, 64);
    this.iovecWords = u32View(this.iovecAddress, queueDepth * URING_IOVECS_PER_OP_MAX * IOVEC_BYTES);
    this.slotOpcode = new Uint8Array(slots);
    this.slotOpFlags = new Uint8Array(slots);
    this.slotOffset = new Float64Array(slots);
    this.slotBytes = new Float64Array(slots);
    this.slotLabel = new Array<string>(slots).fill("");
    this.slotResolve = new Array<Resolve | undefined>(slots).fill(undefined);
    this.slotReject = new Array<Reject | undefined>(slots).fill(undefined);
    this.freeSlots = new Int32Array(queueDepth);
    for (let index = 0; index < queueDepth; index++) this.freeSlots[index] = queueDepth - 1 - index;
    this.freeSlotCount = queueDepth;
    this.slotListener = new Array<SocketOpListener | null>(slots).fill(null);
    this.freeSocketSlots = new Int32Array(socketSlots);
    for (let index = 0; index < socketSlots; index++) this.freeSocketSlots[index] = slots - 1 - index;
    this.freeSocketSlotCount = socketSlots;

    this.wakeReader = Bun.file(this.eventfd).stream().getReader();
    this.reaping = this.reapLoop();
  }

  /** Ops holding a slot (submitted or about to be), file and socket ops alike. */
  get inflight(): number {
    return this.fileInflight + this.socketInflight;
  }

  /** File ops holding a slot. */
  get fileInflight(): number {
    return this.queueDepth - this.freeSlotCount;
  }

  /** Socket ops holding a slot (cancels included). */
  get socketInflight(): number {
    return this.socketSlots - this.freeSocketSlotCount;
  }

  /** Ops waiting in JS for a slot. */
  get waitingCount(): number {
    return this.waiting.length - this.waitingHead;
  }

  /** Reads `bytes` at `offset` into native memory at `address`. Resolves only when all bytes were read. */
  read(fd: number, address: number, bytes: number, offset: number, label: string): Promise<void> {
    return this.enqueue(IORING_OP_READ, fd, address, bytes, undefined, undefined, offset, 0, label);
  }

  /** Writes `bytes` from native memory at `address` to `offset`. Resolves only when all bytes were written. */
  write(fd: number, address: number, bytes: number, offset: number, label: string): Promise<void> {
    return this.enqueue(IORING_OP_WRITE, fd, address, bytes, undefined, undefined, offset, 0, label);
  }

  /** Vectored read into buffers back to back (at most URING_IOVECS_PER_OP_MAX). */
  readv(fd: number, addresses: readonly number[], lengths: readonly number[], offset: number, label: string): Promise<void> {
    return this.enqueue(IORING_OP_READV, fd, 0, sumOf(lengths), addresses, lengths, offset, 0, label);
  }

  /** Vectored write of buffers back to back (at most URING_IOVECS_PER_OP_MAX). */
  writev(fd: number, addresses: readonly number[], lengths: readonly number[], offset: number, label: string): Promise<void> {
    return this.enqueue(IORING_OP_WRITEV, fd, 0, sumOf(lengths), addresses, lengths, offset, 0, label);
  }

  /**
   * fsync (dataOnly: fdatasync). Like fsync(2) it covers writes that completed before it was queued; io_uring does
   * not order it after writes still in flight.
   */
  fsync(fd: number, dataOnly: boolean, label: string): Promise<void> {
    return this.enqueue(IORING_OP_FSYNC, fd, 0, 0, undefined, undefined, 0, dataOnly ? IORING_FSYNC_DATASYNC : 0, label);
  }

  /**
   * Starts a socket op in a socket slot and returns the slot (to cancel the op with). `address2` is the SQE's second
   * address (accept: the address length's), `opFlags` its msg_flags or accept flags. The caller bounds its ops in
   * flight below socketSlots (a cancel takes a slot too). The listener is called from a reap, once per CQE: once,
   * but for a multishot receive.
   */
  socketOp(opcode: number, fd: number, address: number, bytes: number, address2: number, opFlags: number, listener: SocketOpListener | null, label: string): number {
    // A closing ring still takes cancels: close() waits for the ops they end.
    const refusal = this.closing && opcode !== IORING_OP_ASYNC_CANCEL ? "io_uring is closed" : this.broken?.message;
    if (refusal !== undefined) throw new IOError(`Cannot ${operationName(opcode, opFlags)} ${label}: ${refusal}`, false, { errno: EBADF });
    assert(opcode === IORING_OP_ACCEPT || opcode === IORING_OP_RECV || opcode === IORING_OP_SEND || opcode === IORING_OP_ASYNC_CANCEL, "a socket opcode");
    assert(this.freeSocketSlotCount > 0, "a socket slot is free (the caller bounds its socket ops)");
    assert(bytes >= 0 && bytes < TWO_POW_32, "op length fits the SQE's 32-bit len");
    const slot = this.freeSocketSlots[--this.freeSocketSlotCount]!;
    this.slotOpcode[slot] = opcode;
    this.slotOpFlags[slot] = 0;
    this.slotBytes[slot] = bytes;
    this.slotLabel[slot] = label;
    this.slotListener[slot] = listener;
    this.writeSqe(opcode, fd, address2, address, bytes, opFlags, slot, false);
    return slot;
  }

  /**
   * A multishot receive on `fd` into buffers the kernel picks from provided-buffer group `bufferGroup`
   * (ffi/uring_buffers.ts): one CQE per chunk, each with IORING_CQE_F_MORE while the receive goes on; its slot stays
   * taken until a CQE without F_MORE (the peer closed, an error, a cancel, or no buffer was free: -ENOBUFS).
   */
  receiveMultishot(fd: number, bufferGroup: number, listener: SocketOpListener, label: string): number {
    const slot = this.socketOp(IORING_OP_RECV, fd, 0, 0, 0, 0, listener, label);
    // A socket op's SQE is never submitted within the call that wrote it (writeSqe): it can be amended here.
    const base = ((this.sqTail - 1) & this.sqMask) * WORDS_PER_SQE;
    this.sqeWords[base + SqeWord.opcodeFlagsIoprio] = IORING_OP_RECV | (IOSQE_BUFFER_SELECT << 8) | (IORING_RECV_MULTISHOT << 16);
    this.sqeWords[base + SqeWord.bufferGroup] = bufferGroup;
    return slot;
  }

  /** A provided-buffer group id not yet handed out on this ring. */
  allocateBufferGroup(): number {
    assert(this.bufferGroups < 65536, "buffer group ids are u16");
    return this.bufferGroups++;
  }

  /** io_uring_register_buf_ring with a struct io_uring_buf_reg at `registrationAddress`: 0 or -errno. */
  registerBufferRing(registrationAddress: number): number {
    return this.lib.registerBufRing(this.ringAddress, registrationAddress);
  }

  unregisterBufferRing(groupId: number): number {
    return this.lib.unregisterBufRing(this.ringAddress, groupId);
  }

  /**
   * Asks the kernel to cancel the socket op in `slot` (it then completes with -ECANCELED, or has completed). The
   * cancel is a socket op of its own: its slot is returned, and `listener` (if any) told when it completed.
   */
  cancelSocketOp(slot: number, label: string, listener: SocketOpListener | null = null): number {
    assert(slot >= this.queueDepth && slot < this.queueDepth + this.socketSlots, "a socket slot");
    assert(this.slotOpcode[slot] !== IORING_OP_ASYNC_CANCEL, "a cancel is not cancelled");
    return this.socketOp(IORING_OP_ASYNC_CANCEL, -1, slot, 0, 0, 0, listener, label);
  }

  /**
   * Stops taking ops, waits for every queued and in-flight op to settle, then tears the ring down and frees its
   * memory. Safe to call more than once.
   */
  close(): Promise<void> {
    this.closed ??= this.drainAndClose();
    return this.closed;
  }

  private async drainAndClose(): Promise<void> {
    this.closing = true;
    if (this.inflight > 0 || this.waitingCount > 0) {
      await new Promise<void>((resolve) => {
        this.drained = resolve;
      });
    }
    assert(this.inflight === 0 && this.waitingCount === 0, "ring drained");
    if (this.submitRetryTimer !== undefined) clearTimeout(this.submitRetryTimer);
    if (this.backstopTimer !== undefined) clearTimeout(this.backstopTimer);
    this.torndown = true;
    await this.wakeReader.cancel();
    await this.reaping;
    this.lib.queueExit(this.ringAddress);
    closeFile(this.eventfd, "io_uring eventfd");
    // The ring's mmaps are gone: detach every view over them so a stray access reads nothing instead of faulting.
    for (const view of [this.sqeWords, this.sqKhead, this.cqeWords, this.cqKtail, this.cqKhead, this.cqKflags, this.ringWords, this.iovecWords]) {
      (view.buffer as ArrayBuffer).transfer(0);
    }
    freeAligned(this.ringAddress);
    freeAligned(this.iovecAddress);
  }

  private enqueue(
    opcode: number,
    fd: number,
    address: number,
    bytes: number,
    addresses: readonly number[] | undefined,
    lengths: readonly number[] | undefined,
    offset: number,
    opFlags: number,
    label: string,
  ): Promise<void> {
    const refusal = this.closing ? "io_uring is closed" : this.broken?.message;
    if (refusal !== undefined) {
      const where = opcode === IORING_OP_FSYNC ? "" : ` at offset ${offset}`;
      return Promise.reject(
        new IOError(`Cannot ${operationName(opcode, opFlags)} ${label}${where}: ${refusal}`, false, { errno: EBADF }),
      );
    }
    assert(addresses === undefined || (addresses.length >= 1 && addresses.length <= URING_IOVECS_PER_OP_MAX), "iovec count");
    assert(addresses === undefined || lengths!.length === addresses.length, "one length per address");
    assert(Number.isSafeInteger(offset) && offset >= 0, "offset is a safe non-negative integer");
    assert(bytes >= 0 && bytes < TWO_POW_32, "op length fits the SQE's 32-bit len");
    return new Promise<void>((resolve, reject) => {
      if (this.freeSlotCount > 0) {
        this.start(opcode, fd, address, bytes, addresses, lengths, offset, opFlags, label, resolve, reject);
        return;
      }
      if (this.waitingCount >= URING_WAITING_MAX) {
        reject(
          new IOError(
            `Cannot ${operationName(opcode, opFlags)} ${label} at offset ${offset}: ${URING_WAITING_MAX} requests already waiting for io_uring`,
            true,
          ),
        );
        return;
      }
      this.waiting.push({
        opcode,
        fd,
        address,
        bytes,
        addresses: addresses === undefined ? undefined : [...addresses],
        lengths: lengths === undefined ? undefined : [...lengths],
        offset,
        opFlags,
        label,
        resolve,
        reject,
      });
    });
  }

  /** Takes a slot and writes the op's SQE (and iovecs); submits when a batch is full, else at the end of the turn. */
  private start(
    opcode: number,
    fd: number,
    address: number,
    bytes: number,
    addresses: readonly number[] | undefined,
    lengths: readonly number[] | undefined,
    offset: number,
    opFlags: number,
    label: string,
    resolve: Resolve,
    reject: Reject,
  ): void {
    assert(this.freeSlotCount > 0, "a slot is free");
    const slot = this.freeSlots[--this.freeSlotCount]!;
    this.slotOpcode[slot] = opcode;
    this.slotOpFlags[slot] = opFlags;
    this.slotOffset[slot] = offset;
    this.slotBytes[slot] = bytes;
    this.slotLabel[slot] = label;
    this.slotResolve[slot] = resolve;
    this.slotReject[slot] = reject;

    let length = bytes;
    if (addresses !== undefined) {
      // The slot's own iovec area: it stays untouched until the CQE frees the slot.
      const iovecIndex = slot * URING_IOVECS_PER_OP_MAX;
      const words = this.iovecWords;
      for (let index = 0; index < addresses.length; index++) {
        const base = (iovecIndex + index) * WORDS_PER_IOVEC;
        const iovecAddress = addresses[index]!;
        words[base] = iovecAddress >>> 0;
        words[base + 1] = (iovecAddress / TWO_POW_32) >>> 0;
        words[base + 2] = lengths![index]!;
        words[base + 3] = 0;
      }
      address = this.iovecAddress + iovecIndex * IOVEC_BYTES;
      length = addresses.length;
    }

    this.writeSqe(opcode, fd, offset, address, length, opFlags, slot, true);
  }

  /**
   * Writes one SQE at the SQ tail. A file op's is submitted when a batch is full, else in a microtask; a socket op's
   * goes with the turn's next file op submit, or at the end of the turn (setImmediate), so that a turn whose replies
   * and receives follow journal completions through several microtasks still enters the kernel once.
   */
  private writeSqe(opcode: number, fd: number, offset: number, address: number, length: number, opFlags: number, slot: number, fileOp: boolean): void {
    const words = this.sqeWords;
    const base = (this.sqTail & this.sqMask) * WORDS_PER_SQE;
    words[base + SqeWord.opcodeFlagsIoprio] = opcode;
    words[base + SqeWord.fd] = fd;
    words[base + SqeWord.offsetLow] = offset >>> 0;
    words[base + SqeWord.offsetHigh] = (offset / TWO_POW_32) >>> 0;
    words[base + SqeWord.addressLow] = address >>> 0;
    words[base + SqeWord.addressHigh] = (address / TWO_POW_32) >>> 0;
    words[base + SqeWord.length] = length;
    words[base + SqeWord.opFlags] = opFlags;
    words[base + SqeWord.userDataLow] = slot;
    words[base + SqeWord.userDataHigh] = 0;
    for (let word = 10; word < WORDS_PER_SQE; word++) words[base + word] = 0;
    this.sqTail = (this.sqTail + 1) >>> 0;
    if (!fileOp) {
      if (!this.submitScheduled && !this.socketSubmitScheduled) {
        this.socketSubmitScheduled = true;
        setImmediate(this.socketSubmitBound);
      }
      return;
    }
    this.unsubmitted += 1;

    // A full batch goes now, so the device works on it while JS prepares the rest of the turn's ops; the turn's
    // remainder goes in the microtask (unless a short submit is waiting out its retry delay).
    if (this.unsubmitted >= URING_SUBMIT_BATCH_SQES && this.submitRetryTimer === undefined) this.submit();
    if (!this.submitScheduled) {
      this.submitScheduled = true;
      queueMicrotask(this.submitBound);
    }
  }

  /** The turn's submit (a microtask), or a retry after a short submit (a timer). */
  private submitNow(): void {
    this.submitScheduled = false;
    // Whichever of the two runs first does the retry's work: the other must not run after close.
    if (this.submitRetryTimer !== undefined) clearTimeout(this.submitRetryTimer);
    this.submitRetryTimer = undefined;
    if (this.torndown) return;
    this.submit();
  }

  /** One io_uring_submit for every SQE written since the last one. */
  private submit(): void {
    if (this.broken !== undefined) return;
    this.unsubmitted = 0;
    const unconsumed = (this.sqTail - Atomics.load(this.sqKhead, 0)) >>> 0;
    if (unconsumed === 0) return;
    assert(unconsumed <= this.queueDepth + this.socketSlots, "SQ holds at most one SQE per slot");
    this.ringWords[RingOffset.sqSqeTail / 4] = this.sqTail;
    const rc = this.lib.submit(this.ringAddress);
    if (rc < 0 && rc !== -EAGAIN && rc !== -EBUSY && rc !== -EINTR) {
      this.breakRing(new IOError(`io_uring_submit failed: ${describeErrno(-rc)}`, false, { errno: -rc }));
      return;
    }
    if (this.pollIdleTurns === 0) this.armBackstop();
    else if (!this.polling) this.startPolling();
    // A short submit leaves SQEs in the ring; liburing's next flush resubmits them from the kernel's head.
    if (Atomics.load(this.sqKhead, 0) !== this.sqTail && this.submitRetryTimer === undefined) {
      this.submitScheduled = true;
      this.submitRetryTimer = setTimeout(this.submitBound, SUBMIT_RETRY_DELAY_MS);
    }
  }

  private async reapLoop(): Promise<void> {
    for (;;) {
      const { done } = await this.wakeReader.read();
      if (done || this.torndown) return;
      this.eventfdWakes += 1;
      this.reap();
    }
  }

  private startPolling(): void {
    this.polling = true;
    this.idleTurns = 0;
    Atomics.or(this.cqKflags, 0, IORING_CQ_EVENTFD_DISABLED);
    setImmediate(this.pollBound);
  }

  /** One polling turn: reap, then poll again next turn, or hand waiting back to the eventfd. */
  private pollTurn(): void {
    if (this.torndown) return;
    this.pollTurns += 1;
    if (this.reap() > 0) this.idleTurns = 0;
    else this.idleTurns += 1;
    if (this.inflight > 0 && this.idleTurns < this.pollIdleTurns) {
      setImmediate(this.pollBound);
      return;
    }
    this.polling = false;
    Atomics.and(this.cqKflags, 0, ~IORING_CQ_EVENTFD_DISABLED);
    // CQEs posted while the signals were off raised no eventfd: take them now.
    this.reap();
    if (this.inflight > 0 && !this.polling) this.armBackstop();
  }

  private armBackstop(): void {
    if (this.backstopTimer === undefined) this.backstopTimer = setTimeout(this.backstopBound, URING_BACKSTOP_MS);
  }

  /**
   * Re-armed while file ops are in flight only: a recv waits for its peer as long as the peer likes, and a timer
   * every URING_BACKSTOP_MS for each idle connection would cost wakes for nothing (each submit still arms it once).
   */
  private backstop(): void {
    this.backstopTimer = undefined;
    if (this.torndown) return;
    this.reap();
    if (this.fileInflight > 0 && !this.polling) this.armBackstop();
  }

  /** Consumes every CQE the kernel has posted, then hands freed slots to waiting ops. Returns how many. */
  private reap(): number {
    const tail = Atomics.load(this.cqKtail, 0);
    let head = this.cqHead;
    if (head === tail) return 0;
    const words = this.cqeWords;
    while (head !== tail) {
      const base = (head & this.cqMask) * WORDS_PER_CQE;
      const slot = words[base + CqeWord.userDataLow]!;
      const result = words[base + CqeWord.result]!;
      head = (head + 1) >>> 0;
      if (slot < this.queueDepth) this.complete(slot, result);
      else this.completeSocketOp(slot, result, words[base + CqeWord.flags]!);
    }
    const reaped = (head - this.cqHead) >>> 0;
    this.cqHead = head;
    Atomics.store(this.cqKhead, 0, head);
    this.admitWaiting();
    if (this.drained !== undefined && this.inflight === 0 && this.waitingCount === 0) this.drained();
    return reaped;
  }

  private complete(slot: number, result: number): void {
    assert(slot >= 0 && slot < this.queueDepth, "CQE user_data is a slot index");
    const resolve = this.slotResolve[slot];
    const reject = this.slotReject[slot];
    assert(resolve !== undefined && reject !== undefined, "CQE for a slot in use");
    this.slotResolve[slot] = undefined;
    this.slotReject[slot] = undefined;
    this.freeSlots[this.freeSlotCount++] = slot;
    if (result === this.slotBytes[slot]) resolve();
    else reject(this.completionError(slot, result));
  }

  /**
   * A socket op's CQE: free the slot first, unless more CQEs of a multishot op follow (the listener may start the
   * next op at once), then tell the listener.
   */
  private completeSocketOp(slot: number, result: number, flags: number): void {
    assert(slot >= this.queueDepth && slot < this.queueDepth + this.socketSlots, "CQE user_data is a slot index");
    const listener = this.slotListener[slot]!;
    if ((flags & IORING_CQE_F_MORE) === 0) {
      this.slotListener[slot] = null;
      this.freeSocketSlots[this.freeSocketSlotCount++] = slot;
    }
    if (listener === null) return;
    try {
      listener.onSocketOp(result, flags);
    } catch (error) {
      // The reap must finish (the CQ head is stored after the loop): the error surfaces on its own, after it.
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  private completionError(slot: number, result: number): IOError {
    const opcode = this.slotOpcode[slot]!;
    const name = operationName(opcode, this.slotOpFlags[slot]!);
    const bytes = this.slotBytes[slot]!;
    const where = opcode === IORING_OP_FSYNC ? "" : ` at offset ${this.slotOffset[slot]} (${bytes} bytes)`;
    const subject = `Cannot ${name} ${this.slotLabel[slot]}${where}`;
    if (result < 0) {
      return new IOError(`${subject}: ${describeErrno(-result)}`, -result === EAGAIN || -result === EINTR, { errno: -result });
    }
    // A short transfer is an error, never a silent partial success: past the end of a file, or out of space.
    return new IOError(`${subject}: short ${name} of ${result} bytes`);
  }

  private admitWaiting(): void {
    while (this.freeSlotCount > 0 && this.waitingHead < this.waiting.length) {
      const op = this.waiting[this.waitingHead]!;
      this.waiting[this.waitingHead++] = undefined;
      this.start(op.opcode, op.fd, op.address, op.bytes, op.addresses, op.lengths, op.offset, op.opFlags, op.label, op.resolve, op.reject);
    }
    // Compact the FIFO once it is drained or mostly consumed, so its array does not grow without bound.
    if (this.waitingHead === this.waiting.length) {
      this.waiting.length = 0;
      this.waitingHead = 0;
    } else if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waiting.length) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }

  /**
   * io_uring_enter failed for a reason retrying will not fix. Ops whose SQEs the kernel never consumed will not
   * complete: fail them, fail the waiting ones, and refuse new ops. Ops the kernel did take still complete normally.
   */
  private breakRing(error: IOError): void {
    this.broken = error;
    const kernelHead = Atomics.load(this.sqKhead, 0);
    for (let index = kernelHead; index !== this.sqTail; index = (index + 1) >>> 0) {
      const slot = this.sqeWords[(index & this.sqMask) * WORDS_PER_SQE + SqeWord.userDataLow]!;
      if (slot >= this.queueDepth) {
        this.completeSocketOp(slot, -(error.errno ?? EBADF), 0);
        continue;
      }
      const reject = this.slotReject[slot]!;
      this.slotResolve[slot] = undefined;
      this.slotReject[slot] = undefined;
      this.freeSlots[this.freeSlotCount++] = slot;
      reject(error);
    }
    this.sqTail = kernelHead;
    while (this.waitingHead < this.waiting.length) {
      const op = this.waiting[this.waitingHead]!;
      this.waiting[this.waitingHead++] = undefined;
      op.reject(error);
    }
    this.waiting.length = 0;
    this.waitingHead = 0;
    if (this.drained !== undefined && this.inflight === 0) this.drained();
  }
}

function sumOf(lengths: readonly number[]): number {
  let total = 0;
  for (let index = 0; index < lengths.length; index++) total += lengths[index]!;
  return total;
}
