// Page-aligned native buffers for O_DIRECT I/O, pooled by size class. Implements AlignedPool
// (src/cache/cache_device.ts).
//
// Buffers are posix_memalign'd native memory seen from JS through koffi.view as zero-copy ArrayBuffers, so the
// kernel reads and writes the very bytes JS sees. The I/O layer needs each buffer's native address for SQEs and
// iovecs; a module-wide WeakMap from ArrayBuffer to its allocation gives it, for buffers of any pool
// (alignedAddress). Buffers that are not pool memory have no address and are refused by uring_device.ts;
// copyToAligned is the slow-path helper for callers holding ordinary Uint8Arrays.
//
// Buffers of 2 MiB or more (after rounding to their size class) start on a 2 MiB boundary with their whole huge
// pages advised MADV_HUGEPAGE (libc.ts, allocAligned): O_DIRECT pins every transfer's pages, and on a huge page it
// pins 2 MiB at once (docs/platform.md, "Huge pages for O_DIRECT buffers").
//
// Invariants:
// - bytesAllocated = sum of the class sizes of all live allocations (in use + cached) <= bytesMax.
// - A buffer is in exactly one state: in use (handed out, not released), cached (in its class free list), or freed
//   (pool closed or evicted; its ArrayBuffer is detached so stale views read as empty instead of freed memory).
// - Size classes are PAGE_BYTES * 2^k up to ALIGNED_BUFFER_BYTES_MAX, so a cached buffer serves any request of its
//   class; the waste is under 2x and buys reuse without fragmentation.
// - acquireExact buffers (few, long-lived: batch buffers) have no class: exactly their size, freed on release.

import { ALIGNED_BUFFER_BYTES_MAX, ALIGNED_POOL_BYTES_DEFAULT, PAGE_BYTES } from "../src/constants.ts";
import type { AlignedPool } from "../src/cache/cache_device.ts";
import { assert, InvalidArgumentError, NoSpaceError } from "../src/errors.ts";
import { allocAligned, freeAligned, HUGE_PAGE_BYTES, viewMemory } from "./libc.ts";

const SIZE_CLASS_COUNT = Math.log2(ALIGNED_BUFFER_BYTES_MAX / PAGE_BYTES) + 1;
assert(Number.isInteger(SIZE_CLASS_COUNT), "ALIGNED_BUFFER_BYTES_MAX is PAGE_BYTES times a power of two");

interface Allocation {
  readonly pool: AlignedBufferPool;
  readonly address: number;
  readonly sizeClass: number;
  readonly bytes: number;
  readonly arrayBuffer: ArrayBuffer;
  inUse: boolean;
}

/** ArrayBuffer (from koffi.view) -> its live allocation. Entries go when the memory is freed. */
const allocations = new WeakMap<ArrayBuffer, Allocation>();

/**
 * Native address of buffer[0] when buffer is a view of pool memory currently handed out, else undefined
 * (ordinary JS memory, a released buffer, or one from a closed pool). Alignment is the caller's to check.
 */
export function alignedAddress(buffer: Uint8Array): number | undefined {
  const allocation = allocations.get(buffer.buffer as ArrayBuffer);
  if (allocation === undefined || !allocation.inUse) return undefined;
  return allocation.address + buffer.byteOffset;
}

/** Slow path for data in ordinary memory: a pool buffer holding a copy (zero-padded to a page). Release it after. */
export function copyToAligned(pool: AlignedPool, data: Uint8Array): Uint8Array {
  const buffer = pool.acquire(Math.max(data.byteLength, 1));
  buffer.set(data);
  buffer.fill(0, data.byteLength);
  return buffer;
}

/** The sizeClass of acquireExact buffers: freed on release, never cached. */
const EXACT_SIZE_CLASS = -1;

function sizeClassOf(bytes: number): number {
  let sizeClass = 0;
  while (PAGE_BYTES * 2 ** sizeClass < bytes) sizeClass++;
  return sizeClass;
}

export class AlignedBufferPool implements AlignedPool {
  private readonly cached: Allocation[][] = Array.from({ length: SIZE_CLASS_COUNT }, () => []);
  private readonly live = new Set<Allocation>();
  private bytesAllocatedNow = 0;
  private bytesInUseNow = 0;
  private closed = false;

  constructor(readonly bytesMax: number = ALIGNED_POOL_BYTES_DEFAULT) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= PAGE_BYTES, "pool bound is at least a page");
  }

  /** Bytes of native memory held (in use + cached). */
  get bytesAllocated(): number {
    return this.bytesAllocatedNow;
  }

  /** Class bytes of the buffers handed out and not yet released. */
  get bytesInUse(): number {
    return this.bytesInUseNow;
  }

  /**
   * A buffer of `bytes` rounded up to PAGE_BYTES, at a page-aligned address; contents undefined.
   * NoSpaceError when the pool bound would be exceeded even after dropping every cached buffer.
   */
  acquire(bytes: number): Uint8Array {
    assert(!this.closed, "acquire from a closed pool");
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > ALIGNED_BUFFER_BYTES_MAX) {
      throw new InvalidArgumentError(`Cannot allocate an aligned buffer of ${bytes} bytes: must be 1..${ALIGNED_BUFFER_BYTES_MAX}`);
    }
    const length = Math.ceil(bytes / PAGE_BYTES) * PAGE_BYTES;
    const sizeClass = sizeClassOf(length);
    const allocation = this.cached[sizeClass]!.pop() ?? this.allocate(sizeClass);
    assert(!allocation.inUse, "a cached buffer is not in use");
    allocation.inUse = true;
    this.bytesInUseNow += allocation.bytes;
    return new Uint8Array(allocation.arrayBuffer, 0, length);
  }

  acquireExact(bytes: number): Uint8Array | null {
    assert(!this.closed, "acquire from a closed pool");
    assert(Number.isSafeInteger(bytes) && bytes > 0, "exact buffer size is positive");
    const length = Math.ceil(bytes / PAGE_BYTES) * PAGE_BYTES;
    if (!this.makeRoom(length)) return null;
    const allocation = this.allocateBytes(EXACT_SIZE_CLASS, length);
    allocation.inUse = true;
    this.bytesInUseNow += allocation.bytes;
    return new Uint8Array(allocation.arrayBuffer, 0, length);
  }

  release(buffer: Uint8Array): void {
    const allocation = allocations.get(buffer.buffer as ArrayBuffer);
    assert(allocation !== undefined && allocation.pool === this, "released buffer comes from this pool");
    assert(allocation.inUse, "buffer released twice");
    assert(buffer.byteOffset === 0, "release the buffer acquire() returned, not a subarray");
    allocation.inUse = false;
    this.bytesInUseNow -= allocation.bytes;
    if (this.closed || allocation.sizeClass === EXACT_SIZE_CLASS) this.free(allocation);
    else this.cached[allocation.sizeClass]!.push(allocation);
  }

  /**
   * Frees all native memory, including buffers still in use: their views become empty (detached). The owner calls
   * this after all I/O on the buffers has completed (UringDevice.close drains the ring first).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const allocation of [...this.live]) this.free(allocation);
    for (const list of this.cached) list.length = 0;
    assert(this.bytesAllocatedNow === 0, "all pool memory freed");
  }

  private allocate(sizeClass: number): Allocation {
    const bytes = PAGE_BYTES * 2 ** sizeClass;
    if (!this.makeRoom(bytes)) {
      throw new NoSpaceError(
        `Cannot allocate an aligned buffer of ${bytes} bytes: pool limit ${this.bytesMax} bytes reached (${this.bytesInUseNow} in use)`,
      );
    }
    return this.allocateBytes(sizeClass, bytes);
  }

  /** Whether `bytes` more fit under the bound, after dropping cached buffers, largest first (likeliest idle). */
  private makeRoom(bytes: number): boolean {
    for (let index = SIZE_CLASS_COUNT - 1; index >= 0 && this.bytesAllocatedNow + bytes > this.bytesMax; index--) {
      const list = this.cached[index]!;
      while (list.length > 0 && this.bytesAllocatedNow + bytes > this.bytesMax) this.free(list.pop()!);
    }
    return this.bytesAllocatedNow + bytes <= this.bytesMax;
  }

  private allocateBytes(sizeClass: number, bytes: number): Allocation {
    // Buffers of a huge page or more (batches, large records) start on one and ask for huge pages: O_DIRECT pins
    // the pages of every transfer (get_user_pages), once per 4 KiB page but once per huge page where one backs them.
    const huge = bytes >= HUGE_PAGE_BYTES;
    const address = allocAligned(bytes, huge ? HUGE_PAGE_BYTES : PAGE_BYTES, huge);
    const allocation: Allocation = { pool: this, address, sizeClass, bytes, arrayBuffer: viewMemory(address, bytes), inUse: false };
    allocations.set(allocation.arrayBuffer, allocation);
    this.live.add(allocation);
    this.bytesAllocatedNow += bytes;
    return allocation;
  }

  private free(allocation: Allocation): void {
    assert(this.live.delete(allocation), "freed allocation was live");
    allocations.delete(allocation.arrayBuffer);
    if (allocation.inUse) this.bytesInUseNow -= allocation.bytes;
    allocation.inUse = false;
    this.bytesAllocatedNow -= allocation.bytes;
    // Detach first: any Uint8Array still pointing here then has length 0 rather than reading freed memory.
    allocation.arrayBuffer.transfer(0);
    freeAligned(allocation.address);
  }
}
