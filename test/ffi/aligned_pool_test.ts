// Tests for ffi/aligned_pool.ts: alignment, reuse by size class, the bound, freeing on close, and huge-page advice.

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { PAGE_BYTES } from "../../src/constants.ts";
import { InvalidArgumentError, NoSpaceError } from "../../src/errors.ts";
import { AlignedBufferPool, alignedAddress, copyToAligned } from "../../ffi/aligned_pool.ts";
import { HUGE_PAGE_BYTES } from "../../ffi/libc.ts";

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

/** The /proc/self/smaps entry of the mapping holding `address`: its range, its VmFlags and its AnonHugePages kB. */
function mappingOf(address: number): { start: number; end: number; flags: string[]; anonHugeKb: number } {
  const lines = readFileSync("/proc/self/smaps", "utf8").split("\n");
  for (let index = 0; index < lines.length; index++) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(lines[index]!);
    if (range === null) continue;
    const [start, end] = [Number.parseInt(range[1]!, 16), Number.parseInt(range[2]!, 16)];
    if (address < start || address >= end) continue;
    let flags: string[] = [];
    let anonHugeKb = 0;
    for (let at = index + 1; at < lines.length && !/^[0-9a-f]+-/.test(lines[at]!); at++) {
      if (lines[at]!.startsWith("VmFlags:")) flags = lines[at]!.slice("VmFlags:".length).trim().split(/\s+/);
      const huge = /^AnonHugePages:\s+(\d+) kB/.exec(lines[at]!);
      if (huge !== null) anonHugeKb = Number(huge[1]);
    }
    return { start, end, flags, anonHugeKb };
  }
  throw new Error(`no mapping holds ${address.toString(16)}`);
}

test("buffers of a huge page or more (after rounding to their size class) start on one and are advised MADV_HUGEPAGE; smaller ones are not", () => {
  const pool = new AlignedBufferPool(64 * 1024 * 1024);
  const exact = pool.acquireExact(8 * 1024 * 1024 + 300 * 1024)!; // a batch buffer: 8 MiB of data and header room
  const classed = pool.acquire(4 * 1024 * 1024);
  const small = pool.acquire(HUGE_PAGE_BYTES / 2); // its size class is half a huge page
  for (const buffer of [exact, classed]) {
    const address = alignedAddress(buffer)!;
    expect(address % HUGE_PAGE_BYTES).toBe(0);
    // The advice covers the whole huge pages of the buffer (the kernel splits the mapping where it ends), not its tail.
    const head = mappingOf(address);
    expect(head.flags).toContain("hg");
    expect(head.start).toBeLessThanOrEqual(address);
    const hugeEnd = address + Math.floor(buffer.byteLength / HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES;
    expect(head.end).toBeGreaterThanOrEqual(hugeEnd);
    if (hugeEnd < address + buffer.byteLength) expect(mappingOf(hugeEnd).flags).not.toContain("hg");
    buffer.fill(0x5a); // usable end to end
  }
  expect(mappingOf(alignedAddress(small)!).flags).not.toContain("hg");
  pool.close();
});
