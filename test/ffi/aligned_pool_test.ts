// Tests for ffi/aligned_pool.ts: alignment, reuse by size class, the bound, and freeing on close.

import { expect, test } from "bun:test";
import { PAGE_BYTES } from "../../src/constants.ts";
import { InvalidArgumentError, NoSpaceError } from "../../src/errors.ts";
import { AlignedBufferPool, alignedAddress, copyToAligned } from "../../ffi/aligned_pool.ts";

test("buffers are page-aligned, page-rounded, and have native addresses", () => {
  const pool = new AlignedBufferPool(1024 * 1024);
  for (const bytes of [1, 4096, 4097, 12288, 65536]) {
    const buffer = pool.acquire(bytes);
    expect(buffer.byteLength).toBe(Math.ceil(bytes / PAGE_BYTES) * PAGE_BYTES);
    const address = alignedAddress(buffer)!;
    expect(address % PAGE_BYTES).toBe(0);
    if (buffer.byteLength > PAGE_BYTES) expect(alignedAddress(buffer.subarray(PAGE_BYTES))).toBe(address + PAGE_BYTES);
    buffer.fill(0xee); // the memory is writable end to end
  }
  expect(alignedAddress(new Uint8Array(PAGE_BYTES))).toBeUndefined();
  pool.close();
});

test("a released buffer is reused for a request of the same size class", () => {
  const pool = new AlignedBufferPool(1024 * 1024);
  const first = pool.acquire(3 * PAGE_BYTES);
  const address = alignedAddress(first);
  pool.release(first);
  expect(alignedAddress(first)).toBeUndefined(); // released: no longer valid for I/O
  const second = pool.acquire(4 * PAGE_BYTES); // same class (16 KiB)
  expect(alignedAddress(second)).toBe(address);
  expect(pool.bytesAllocated).toBe(4 * PAGE_BYTES);
  expect(() => pool.release(second.subarray(PAGE_BYTES))).toThrow(/subarray/);
  pool.release(second);
  expect(() => pool.release(second)).toThrow(/twice/);
  pool.close();
});

test("the pool never holds more than its bound; cached buffers are dropped to make room", () => {
  const pool = new AlignedBufferPool(64 * 1024);
  const small = pool.acquire(32 * 1024);
  const other = pool.acquire(32 * 1024);
  expect(() => pool.acquire(PAGE_BYTES)).toThrow(NoSpaceError);
  pool.release(small);
  pool.release(other);
  const big = pool.acquire(64 * 1024); // both cached 32 KiB buffers are freed for it
  expect(pool.bytesAllocated).toBe(64 * 1024);
  expect(pool.bytesInUse).toBe(64 * 1024);
  expect(() => pool.acquire(0)).toThrow(InvalidArgumentError);
  pool.release(big);
  pool.close();
  expect(pool.bytesAllocated).toBe(0);
});

test("acquireExact: exactly the pages asked for, counted against the bound, freed on release, null when full", () => {
  const pool = new AlignedBufferPool(1024 * 1024);
  const cached = pool.acquire(256 * 1024);
  pool.release(cached); // cached, not freed: acquireExact may drop it to make room
  const exact = pool.acquireExact(600 * 1024 + 1)!;
  expect(exact.byteLength).toBe(151 * PAGE_BYTES); // not the 1 MiB size class
  expect(alignedAddress(exact)! % PAGE_BYTES).toBe(0);
  exact.fill(0xab);
  expect(pool.bytesInUse).toBe(151 * PAGE_BYTES);
  expect(pool.acquireExact(1024 * 1024)).toBeNull(); // over the bound: null, not an exception
  expect(pool.bytesAllocated).toBe(151 * PAGE_BYTES); // the cached 256 KiB buffer was dropped trying
  pool.release(exact);
  expect(pool.bytesAllocated).toBe(0); // freed at once, never cached
  expect(alignedAddress(exact)).toBeUndefined();
  expect(exact.byteLength).toBe(0);
  pool.close();
});

test("close frees buffers still in use and detaches their views", () => {
  const pool = new AlignedBufferPool(1024 * 1024);
  const buffer = pool.acquire(PAGE_BYTES);
  buffer[0] = 1;
  pool.close();
  expect(buffer.byteLength).toBe(0);
  expect(buffer[0]).toBeUndefined();
  expect(alignedAddress(buffer)).toBeUndefined();
});

test("copyToAligned copies ordinary bytes into a zero-padded pool buffer", () => {
  const pool = new AlignedBufferPool(1024 * 1024);
  const copy = copyToAligned(pool, new Uint8Array([1, 2, 3]));
  expect(copy.byteLength).toBe(PAGE_BYTES);
  expect([...copy.subarray(0, 4)]).toEqual([1, 2, 3, 0]);
  expect(alignedAddress(copy)).toBeDefined();
  pool.release(copy);
  pool.close();
});
