// A provided-buffer ring (io_uring_register_buf_ring, kernel 5.19+): buffers the kernel picks from when a receive
// carries IOSQE_BUFFER_SELECT, so a multishot receive needs no buffer of its own per connection. NBD on io_uring
// uses one group for every connection of a ring (src/nbd/uring_socket.ts).
// Spec: io_uring_register_buf_ring(3), io_uring_buf_ring_add(3) (the layout below is the kernel's ABI).
//
// Layout, in page-aligned native memory: `entries` (a power of two) struct io_uring_buf of 16 bytes
// { u64 addr; u32 len; u16 bid; u16 resv }; the ring's tail is the u16 at byte 14, the `resv` of entry 0, so entry
// 0 is written field by field and its `resv` never. The kernel owns the head. We add a buffer by writing the entry
// at tail & mask and then storing tail + 1 (x86-64 keeps stores in order: the kernel, which loads the tail with
// acquire, sees the entry before the tail). Buffer `bid` is at bufferAddress + bid * bufferBytes.
//
// Holds: a buffer handed out by a CQE is out of the ring while anyone holds it. The receiver holds it while it handles
// the CQE; a WRITE whose payload lies whole in it may keep it (keep) until the WRITE completes, so the payload is
// copied once, into the batch, instead of twice. The last give() puts the buffer back in the ring. keep() refuses
// once more than `keptBuffersMax` buffers are out, so the ring always has room to receive into (the caller copies
// instead).
//
// Invariants (checkInvariants): every buffer is either in the ring (the kernel may fill it, holds 0) or out (holds
// >= 1); buffersOut counts the buffers out.

import { assert, IOError } from "../src/errors.ts";
import { allocAligned, describeErrno, freeAligned, viewMemory } from "./libc.ts";
import type { Uring } from "./uring.ts";

const BUF_BYTES = 16;
const BUF_REG_BYTES = 40;
const PAGE_BYTES = 4096;
const TWO_POW_32 = 4294967296;
/** Share of the buffers keep() leaves for receiving: with 64 buffers, 16 stay in the ring however many are kept. */
const RECEIVING_SHARE_MIN = 1 / 4;

export class ProvidedBuffers {
  private readonly ringMemory: number;
  private readonly bufferMemory: number;
  private readonly words: Uint32Array;
  private readonly halves: Uint16Array;
  private readonly bufferBytesView: Uint8Array;
  private readonly mask: number;
  private tail = 0;
  private registered = false;
  /** Holds per buffer id: 0 while it is in the ring. */
  private readonly holds: Uint32Array;
  private buffersOut = 0;
  /** keep() takes no buffer beyond this many out: the rest stay for receiving. */
  readonly keptBuffersMax: number;

  /** Registers `entries` buffers of `bufferBytes` each as group `groupId` of `ring`. Throws IOError if refused. */
  constructor(
    private readonly ring: Uring,
    readonly groupId: number,
    readonly entries: number,
    readonly bufferBytes: number,
  ) {
    assert(entries >= 1 && entries <= 32768 && (entries & (entries - 1)) === 0, "entries: a power of two up to 32768");
    assert(Number.isSafeInteger(bufferBytes) && bufferBytes > 0 && bufferBytes < TWO_POW_32, "buffer size fits u32");
    this.mask = entries - 1;
    this.holds = new Uint32Array(entries);
    this.keptBuffersMax = Math.max(1, entries - Math.ceil(entries * RECEIVING_SHARE_MIN));
    this.ringMemory = allocAligned(entries * BUF_BYTES, PAGE_BYTES);
    this.bufferMemory = allocAligned(entries * bufferBytes, PAGE_BYTES);
    this.words = new Uint32Array(viewMemory(this.ringMemory, entries * BUF_BYTES));
    this.halves = new Uint16Array(this.words.buffer);
    this.bufferBytesView = new Uint8Array(viewMemory(this.bufferMemory, entries * bufferBytes));
    for (let bid = 0; bid < entries; bid++) this.add(bid);
    this.publishTail();
    this.register();
  }

  private register(): void {
    const registration = allocAligned(BUF_REG_BYTES, 64);
    try {
      const words = new Uint32Array(viewMemory(registration, BUF_REG_BYTES)).fill(0);
      words[0] = this.ringMemory >>> 0;
      words[1] = (this.ringMemory / TWO_POW_32) >>> 0;
      words[2] = this.entries;
      words[3] = this.groupId; // u16 bgid, then u16 pad
      const rc = this.ring.registerBufferRing(registration);
      if (rc < 0) {
        this.freeMemory();
        throw new IOError(`Cannot register ${this.entries} receive buffers with io_uring: ${describeErrno(-rc)}`, false, { errno: -rc });
      }
      this.registered = true;
    } finally {
      freeAligned(registration);
    }
  }

  /** The bytes of buffer `bid` a CQE reported (`length` of them). Valid until its last hold is given back. */
  view(bid: number, length: number): Uint8Array {
    assert(bid >= 0 && bid < this.entries && length >= 0 && length <= this.bufferBytes, "a filled buffer");
    const start = bid * this.bufferBytes;
    return this.bufferBytesView.subarray(start, start + length);
  }

  /** A CQE handed buffer `bid` out: its receiver holds it until give(bid). */
  take(bid: number): void {
    assert(bid >= 0 && bid < this.entries && this.holds[bid] === 0, "a buffer the ring handed out");
    this.holds[bid] = 1;
    this.buffersOut++;
  }

  /** One more hold on buffer `bid` (which is out), or false when keeping it would leave too few to receive into. */
  keep(bid: number): boolean {
    const holds = this.holds[bid]!;
    assert(holds >= 1, "keep a buffer that is out");
    if (holds === 1 && this.buffersOut > this.keptBuffersMax) return false;
    this.holds[bid] = holds + 1;
    return true;
  }

  /** Ends one hold on buffer `bid`; the last one gives it back to the kernel. */
  give(bid: number): void {
    const holds = this.holds[bid]!;
    assert(holds >= 1, "give a buffer that is out");
    this.holds[bid] = holds - 1;
    if (holds > 1) return;
    this.buffersOut--;
    this.add(bid);
    this.publishTail();
  }

  /** Buffers out of the ring now (held by a receiver or a kept payload). */
  get heldBuffers(): number {
    return this.buffersOut;
  }

  checkInvariants(): void {
    let out = 0;
    for (let bid = 0; bid < this.entries; bid++) if (this.holds[bid]! > 0) out++;
    assert(out === this.buffersOut && out <= this.entries, "provided buffers: buffersOut counts the buffers held");
  }

  /** Unregisters the group and frees its memory: no receive may use the group any more (the owner's job). */
  close(): void {
    if (!this.registered) return;
    assert(this.buffersOut === 0, "provided buffers: none is held when the group closes");
    this.registered = false;
    this.ring.unregisterBufferRing(this.groupId);
    this.freeMemory();
  }

  private add(bid: number): void {
    const index = this.tail & this.mask;
    const word = (index * BUF_BYTES) / 4;
    const address = this.bufferMemory + bid * this.bufferBytes;
    this.words[word] = address >>> 0;
    this.words[word + 1] = (address / TWO_POW_32) >>> 0;
    this.words[word + 2] = this.bufferBytes;
    this.halves[(index * BUF_BYTES + 12) / 2] = bid; // bid; the u16 after it is entry 0's tail
    this.tail = (this.tail + 1) & 0xffff;
  }

  private publishTail(): void {
    Atomics.store(this.halves, 14 / 2, this.tail);
  }

  private freeMemory(): void {
    freeAligned(this.ringMemory);
    freeAligned(this.bufferMemory);
  }
}
