// Any-size I/O over the sector-granular write and read paths (docs/architecture.md, "Any-size I/O"): reads of any
// offset and length, writes by read-modify-write of the partial head and tail sectors, and trims and zeroings that
// write zeroes into the partial parts.
//
// Guarantees, and how:
// - An unaligned write is one sector-aligned write of the sectors it touches (its bytes over the old bytes of the head
//   and tail sectors), queued as one write: after a crash or the loss of the cache it is there whole or not at all,
//   like any whole-sector write (write/record_former.ts queues a write's pieces together).
// - The old bytes of a partial sector must be the newest: an operation that reads a partial sector waits until every
//   earlier operation touching that sector is acknowledged (then it is in the map, and reads see it), and every later
//   operation touching a sector it rewrites waits until it is acknowledged (it would otherwise put the stale old bytes
//   back over them). Operations that share no rewritten sector never wait for each other: whole-sector writes keep
//   their order of arrival, as before. Waiting is FIFO on an order fixed at arrival (an operation waits only for
//   earlier ones), so nothing deadlocks.
// - A trim or zeroing with partial sectors is up to three writes queued in one step (zeroed head sector, trimmed
//   whole sectors, zeroed tail sector); a crash before it is acknowledged may leave some of them applied, as a
//   long NO_HOLE zeroing can (nbd/session.ts). Zeroing is idempotent: the client repeats an unacknowledged one.
//
// Invariants (checkInvariants):
//   1. every operation in flight is in the list of operations in flight (RewriteOrder.first..last, in arrival order)
//      from its arrival to its completion (or failure), once;
//   2. `rewriting` holds exactly the operations of that list that rewrite a partial sector;
//   3. an operation waits only for operations that arrived before it.
// Bounds: the list holds at most the requests the NBD layer lets be in flight (ANY_SIZE_INFLIGHT_MAX); the copy an
// unaligned write makes is its length rounded out to sectors (at most NBD_REQUEST_BYTES_MAX + 2 sectors).

import { ANY_SIZE_INFLIGHT_MAX, ANY_SIZE_READ_WHOLE_BYTES_MAX, SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { debugChecks } from "../util/debug_checks.ts";
import type { WriteListener } from "../nbd/block_device.ts";

/** The sectors [lba, lba+sectors) that bytes [offset, offset+length) touch, and which of them are touched in part. */
export interface SectorSpan {
  lba: number;
  sectors: number;
  /** Bytes of the first sector before the range (0: the range starts on a sector). */
  headSkip: number;
  /** Partial sectors (0, 1 or 2 LBAs, ascending): their bytes outside the range must be kept. */
  partial: number[];
}

export function sectorSpan(offset: number, length: number): SectorSpan {
  assert(Number.isSafeInteger(offset) && offset >= 0, "offset is a safe non-negative integer");
  assert(Number.isSafeInteger(length) && length > 0, "length is a safe positive integer");
  const lba = Math.floor(offset / SECTOR_BYTES);
  const endLba = Math.ceil((offset + length) / SECTOR_BYTES);
  const headSkip = offset - lba * SECTOR_BYTES;
  const partial: number[] = [];
  if (headSkip !== 0) partial.push(lba);
  // One sector touched in its middle is one partial sector, listed once.
  if ((offset + length) % SECTOR_BYTES !== 0 && endLba - 1 !== partial[0]) partial.push(endLba - 1);
  return { lba, sectors: endLba - lba, headSkip, partial };
}

/** What the volume gives this layer: its sector-granular read and write (data null: trim/zero). */
export interface SectorIo {
  /** A new buffer, the caller's to keep and to write into. */
  readSectors(lba: number, sectors: number): Promise<Uint8Array>;
  writeSectors(lba: number, sectors: number, data: Uint8Array | null, fua: boolean): Promise<void>;
  /** writeSectors without a promise: `listener` is told once. */
  writeSectorsThen(lba: number, sectors: number, data: Uint8Array, fua: boolean, listener: WriteListener): void;
}

/**
 * One write, trim or zeroing from arrival to completion: a node of RewriteOrder's list of operations in flight (no
 * set to hash into per write). A whole-sector write started by writeThen is also its own listener (writeDone leaves
 * the order, then tells the caller): one object per write.
 */
class Operation implements WriteListener {
  /** The neighbours in RewriteOrder's list of operations in flight, in arrival order. */
  prev: Operation | null = null;
  next: Operation | null = null;
  /** Called when it completes: operations that arrived later and waited for it. */
  waiters: Array<() => void> | null = null;
  /** Resolves when every earlier operation it must follow is done; null when it follows none. */
  ready: Promise<void> | null = null;
  /** Told after the operation left the order (writeThen's writes). */
  listener: WriteListener | null = null;

  constructor(
    readonly order: RewriteOrder,
    /** Arrival number: an operation waits only for lower ones. */
    readonly arrival: number,
    readonly lba: number,
    readonly end: number,
    /** The partial sectors it reads and rewrites (empty for whole-sector operations). */
    readonly partial: number[],
  ) {}

  writeDone(): void {
    this.order.leave(this);
    this.listener!.writeDone();
  }

  writeFailed(error: unknown): void {
    this.order.leave(this);
    this.listener!.writeFailed(error);
  }
}

const NO_PARTIAL: number[] = [];

function touches(operation: Operation, lba: number): boolean {
  return lba >= operation.lba && lba < operation.end;
}

/** The order in which writes that share rewritten sectors take effect (see "Guarantees" at the top). */
export class RewriteOrder {
  /** Operations in flight, oldest first (a doubly linked list through Operation.prev/next). */
  private first: Operation | null = null;
  private last: Operation | null = null;
  private count = 0;
  private readonly rewriting = new Set<Operation>();
  private arrivals = 0;
  /** Operations that had to wait (tests and stats). */
  waits = 0;

  get size(): number {
    return this.count;
  }

  /** Admits an operation; its `ready` resolves when every earlier operation it must follow is done. Call leave() after. */
  enter(lba: number, sectors: number, partial: number[]): Operation {
    assert(this.count < ANY_SIZE_INFLIGHT_MAX, "writes in flight are bounded by the NBD layer");
    const operation = new Operation(this, ++this.arrivals, lba, lba + sectors, partial);
    // Made only when needed: whole-sector writes with no rewrite in flight (the common case) allocate nothing more.
    let before: Set<Operation> | null = null;
    // An earlier operation rewriting a sector this one touches: this one must not land before it is done.
    if (this.rewriting.size > 0) {
      for (const earlier of this.rewriting) {
        if (earlier.partial.some((sector) => touches(operation, sector))) (before ??= new Set()).add(earlier);
      }
    }
    // This one rewrites partial sectors: every earlier operation touching them must be visible to its read first.
    if (partial.length > 0) {
      for (let earlier = this.first; earlier !== null; earlier = earlier.next) {
        if (partial.some((sector) => touches(earlier, sector))) (before ??= new Set()).add(earlier);
      }
      this.rewriting.add(operation);
    }
    this.append(operation);
    if (debugChecks) this.checkInvariants();
    if (before !== null) operation.ready = this.waitFor(operation, before);
    return operation;
  }

  leave(operation: Operation): void {
    this.unlink(operation);
    this.rewriting.delete(operation);
    const waiters = operation.waiters;
    operation.waiters = null;
    if (waiters !== null) for (const wake of waiters) wake();
    if (debugChecks) this.checkInvariants();
  }

  private waitFor(operation: Operation, before: Set<Operation>): Promise<void> {
    for (const earlier of before) assert(earlier.arrival < operation.arrival, "an operation waits only for earlier ones");
    this.waits += 1;
    return new Promise<void>((resolve) => {
      let left = before.size;
      const done = (): void => {
        left -= 1;
        if (left === 0) resolve();
      };
      for (const earlier of before) (earlier.waiters ??= []).push(done);
    });
  }

  private append(operation: Operation): void {
    operation.prev = this.last;
    if (this.last !== null) this.last.next = operation;
    else this.first = operation;
    this.last = operation;
    this.count += 1;
  }

  private unlink(operation: Operation): void {
    assert(operation.prev !== null || this.first === operation, "a finished operation was in flight");
    if (operation.prev !== null) operation.prev.next = operation.next;
    else this.first = operation.next;
    if (operation.next !== null) operation.next.prev = operation.prev;
    else this.last = operation.prev;
    operation.prev = null;
    operation.next = null;
    this.count -= 1;
  }

  checkInvariants(): void {
    let counted = 0;
    let partialCounted = 0;
    let previous: Operation | null = null;
    for (let operation = this.first; operation !== null; operation = operation.next) {
      assert(operation.prev === previous && (previous === null || previous.arrival < operation.arrival), "the list of operations in flight is linked in arrival order");
      assert(operation.partial.length > 0 === this.rewriting.has(operation), "rewriting holds exactly the partial ones");
      if (operation.partial.length > 0) partialCounted += 1;
      previous = operation;
      counted += 1;
    }
    assert(previous === this.last && counted === this.count, "the list's ends and count agree");
    assert(this.rewriting.size === partialCounted, "every rewriting operation is in flight");
  }
}

/** Byte-granular reads, writes, trims and zeroings over a SectorIo (see the top of this file). */
export class AnySizeIo {
  readonly order = new RewriteOrder();
  /** Unaligned operations served (read-modify-write or a sub-sector read). */
  unalignedWrites = 0;
  unalignedReads = 0;

  constructor(private readonly io: SectorIo) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    const span = sectorSpan(offset, length);
    const data = await this.io.readSectors(span.lba, span.sectors);
    if (span.partial.length === 0) return data;
    this.unalignedReads += 1;
    return data.subarray(span.headSkip, span.headSkip + length);
  }

  async write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    if (offset % SECTOR_BYTES === 0 && data.byteLength % SECTOR_BYTES === 0) return this.writeWhole(offset / SECTOR_BYTES, data, fua);
    const span = sectorSpan(offset, data.byteLength);
    const operation = this.order.enter(span.lba, span.sectors, span.partial);
    try {
      if (operation.ready !== null) await operation.ready;
      this.unalignedWrites += 1;
      const sectors = await this.oldPartialSectors(span);
      sectors.set(data, span.headSkip);
      await this.io.writeSectors(span.lba, span.sectors, sectors, fua);
    } finally {
      this.order.leave(operation);
    }
  }

  /**
   * write() without a promise: `listener` is told once. Whole sectors that wait for nothing (the hot path) go straight
   * to writeSectorsThen; the rest take write()'s way.
   */
  writeThen(offset: number, data: Uint8Array, fua: boolean, listener: WriteListener): void {
    if (offset % SECTOR_BYTES !== 0 || data.byteLength % SECTOR_BYTES !== 0) {
      this.write(offset, data, fua).then(
        () => listener.writeDone(),
        (error: unknown) => listener.writeFailed(error),
      );
      return;
    }
    const lba = offset / SECTOR_BYTES;
    const sectors = data.byteLength / SECTOR_BYTES;
    const operation = this.order.enter(lba, sectors, NO_PARTIAL);
    operation.listener = listener;
    if (operation.ready === null) return this.startOrdered(operation, data, fua);
    void operation.ready.then(() => this.startOrdered(operation, data, fua));
  }

  /** Starts a whole-sector write that took its place in the order; the operation leaves it when told the outcome. */
  private startOrdered(operation: Operation, data: Uint8Array, fua: boolean): void {
    try {
      this.io.writeSectorsThen(operation.lba, operation.end - operation.lba, data, fua, operation);
    } catch (error) {
      operation.writeFailed(error);
    }
  }

  /** The hot path of write(): whole sectors, nothing to read; it still takes its place in the order. */
  private async writeWhole(lba: number, data: Uint8Array, fua: boolean): Promise<void> {
    const sectors = data.byteLength / SECTOR_BYTES;
    const operation = this.order.enter(lba, sectors, NO_PARTIAL);
    try {
      if (operation.ready !== null) await operation.ready;
      await this.io.writeSectors(lba, sectors, data, fua);
    } finally {
      this.order.leave(operation);
    }
  }

  /** Trim or zeroing (one thing here: unmapped space reads as zeroes): whole sectors unmapped, partial ones zeroed. */
  async zero(offset: number, length: number, fua: boolean): Promise<void> {
    const span = sectorSpan(offset, length);
    const operation = this.order.enter(span.lba, span.sectors, span.partial);
    try {
      if (operation.ready !== null) await operation.ready;
      if (span.partial.length === 0) return await this.io.writeSectors(span.lba, span.sectors, null, fua);
      this.unalignedWrites += 1;
      const sectors = await this.oldPartialSectors(span);
      sectors.fill(0, span.headSkip, span.headSkip + length);
      await Promise.all(this.zeroPieces(span, sectors, fua));
    } finally {
      this.order.leave(operation);
    }
  }

  /**
   * The span's sectors in a new buffer holding the current bytes of its partial sectors (the rest is left zero: the
   * caller overwrites it). A span up to ANY_SIZE_READ_WHOLE_BYTES_MAX is read in one call (one backend read where two
   * would each cost a round trip); a longer one reads its partial sectors alone.
   */
  private async oldPartialSectors(span: SectorSpan): Promise<Uint8Array> {
    if (span.sectors * SECTOR_BYTES <= ANY_SIZE_READ_WHOLE_BYTES_MAX) {
      // A fresh buffer from the read path, not shared: the caller may write into it.
      return this.io.readSectors(span.lba, span.sectors);
    }
    const buffer = new Uint8Array(span.sectors * SECTOR_BYTES);
    const reads = span.partial.map(async (lba) => {
      buffer.set(await this.io.readSectors(lba, 1), (lba - span.lba) * SECTOR_BYTES);
    });
    await Promise.all(reads);
    return buffer;
  }

  /** The writes of a zeroing with partial sectors, queued in this one synchronous step (see the top). */
  private zeroPieces(span: SectorSpan, sectors: Uint8Array, fua: boolean): Array<Promise<void>> {
    const first = span.partial[0] === span.lba ? 1 : 0;
    const last = span.partial[span.partial.length - 1] === span.lba + span.sectors - 1 ? 1 : 0;
    const middle = span.sectors - first - last;
    if (middle <= 0) return [this.io.writeSectors(span.lba, span.sectors, sectors, fua)];
    const pieces: Array<Promise<void>> = [];
    if (first === 1) pieces.push(this.io.writeSectors(span.lba, 1, sectors.subarray(0, SECTOR_BYTES), fua));
    pieces.push(this.io.writeSectors(span.lba + first, middle, null, fua));
    if (last === 1) {
      const lba = span.lba + span.sectors - 1;
      pieces.push(this.io.writeSectors(lba, 1, sectors.subarray((span.sectors - 1) * SECTOR_BYTES), fua));
    }
    return pieces;
  }
}
