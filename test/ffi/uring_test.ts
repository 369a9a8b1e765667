// Tests for ffi/uring.ts: the ring itself, on real files, with raw fds and pool addresses.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PAGE_BYTES, URING_POLL_IDLE_TURNS } from "../../src/constants.ts";
import { IOError } from "../../src/errors.ts";
import { AlignedBufferPool, alignedAddress } from "../../ffi/aligned_pool.ts";
import { closeFile, O_CLOEXEC, O_DIRECT, O_RDWR, openFile } from "../../ffi/libc.ts";
import { Uring } from "../../ffi/uring.ts";

let directory: string;
let pool: AlignedBufferPool;
beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), "lsvd-uring-"));
  pool = new AlignedBufferPool(16 * 1024 * 1024);
});
afterAll(() => {
  pool.close();
  rmSync(directory, { recursive: true, force: true });
});

function openDirect(name: string, sizeBytes: number): number {
  const path = join(directory, name);
  writeFileSync(path, new Uint8Array(sizeBytes));
  return openFile(path, O_RDWR | O_DIRECT | O_CLOEXEC, 0);
}

function addressOf(buffer: Uint8Array): number {
  const address = alignedAddress(buffer);
  if (address === undefined) throw new Error("not a pool buffer");
  return address;
}

test("write, readv and fsync through the ring", async () => {
  const fd = openDirect("basic.img", 8 * PAGE_BYTES);
  const uring = Uring.open(4);
  try {
    const source = pool.acquire(2 * PAGE_BYTES);
    source.fill(1, 0, PAGE_BYTES);
    source.fill(2, PAGE_BYTES);
    await uring.write(fd, addressOf(source), source.length, PAGE_BYTES, "basic.img");
    await uring.fsync(fd, false, "basic.img");
    await uring.fsync(fd, true, "basic.img");
    const first = pool.acquire(PAGE_BYTES);
    const second = pool.acquire(PAGE_BYTES);
    await uring.readv(fd, [addressOf(second), addressOf(first)], [PAGE_BYTES, PAGE_BYTES], PAGE_BYTES, "basic.img");
    expect(second.every((byte) => byte === 1)).toBe(true);
    expect(first.every((byte) => byte === 2)).toBe(true);
    for (const buffer of [source, first, second]) pool.release(buffer);
  } finally {
    await uring.close();
    closeFile(fd, "basic.img");
  }
});

for (const pollIdleTurns of [0, 64]) {
  test(`ops beyond the queue depth wait in JS and all complete (poll idle turns ${pollIdleTurns})`, async () => {
    const pages = 200;
    const fd = openDirect("waiting.img", pages * PAGE_BYTES);
    const uring = Uring.open(8, pollIdleTurns);
    try {
      const buffers = Array.from({ length: pages }, (_, page) => pool.acquire(PAGE_BYTES).fill(page & 0xff));
      const writes = buffers.map((buffer, page) => uring.write(fd, addressOf(buffer), PAGE_BYTES, page * PAGE_BYTES, "w"));
      expect(uring.inflight).toBe(8);
      expect(uring.waitingCount).toBe(pages - 8);
      await Promise.all(writes);
      expect(uring.inflight).toBe(0);
      expect(uring.waitingCount).toBe(0);
      const readBack = pool.acquire(pages * PAGE_BYTES);
      await uring.read(fd, addressOf(readBack), readBack.length, 0, "w");
      for (let page = 0; page < pages; page++) expect(readBack[page * PAGE_BYTES + 7]).toBe(page & 0xff);
      for (const buffer of [...buffers, readBack]) pool.release(buffer);
    } finally {
      await uring.close();
      closeFile(fd, "waiting.img");
    }
  });
}

test("a bad fd fails with IOError naming the operation, offset and errno", async () => {
  const uring = Uring.open(4);
  const buffer = pool.acquire(PAGE_BYTES);
  try {
    const error = await uring.write(9999, addressOf(buffer), PAGE_BYTES, 8192, "nowhere").catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).errno).toBe(9);
    expect((error as IOError).message).toBe("Cannot write nowhere at offset 8192 (4096 bytes): EBADF (errno 9)");
    await expect(uring.fsync(9999, true, "nowhere")).rejects.toThrow("Cannot fdatasync nowhere: EBADF (errno 9)");
  } finally {
    pool.release(buffer);
    await uring.close();
  }
});

test("a short read at the end of a file is an error, not a partial success", async () => {
  const fd = openDirect("short.img", 2 * PAGE_BYTES);
  const uring = Uring.open(4);
  const buffer = pool.acquire(4 * PAGE_BYTES);
  try {
    await expect(uring.read(fd, addressOf(buffer), buffer.length, 0, "short.img")).rejects.toThrow(
      "Cannot read short.img at offset 0 (16384 bytes): short read of 8192 bytes",
    );
  } finally {
    pool.release(buffer);
    await uring.close();
    closeFile(fd, "short.img");
  }
});

test("close drains queued ops, then refuses new ones", async () => {
  const fd = openDirect("drain.img", 64 * PAGE_BYTES);
  const uring = Uring.open(4);
  const buffer = pool.acquire(PAGE_BYTES);
  try {
    const writes = Array.from({ length: 64 }, (_, page) => uring.write(fd, addressOf(buffer), PAGE_BYTES, page * PAGE_BYTES, "d"));
    const closing = uring.close();
    await expect(uring.fsync(fd, true, "d")).rejects.toThrow("io_uring is closed");
    await Promise.all(writes);
    await closing;
    expect(uring.inflight).toBe(0);
  } finally {
    pool.release(buffer);
    closeFile(fd, "drain.img");
  }
});

test("a ring that does not poll finds completions through its eventfd; a polling ring polls", async () => {
  expect(URING_POLL_IDLE_TURNS).toBe(0); // the cache device's rings do not poll
  const fd = openDirect("wakes.img", 16 * PAGE_BYTES);
  const buffer = pool.acquire(PAGE_BYTES);
  try {
    for (const pollIdleTurns of [0, 64]) {
      const uring = Uring.open(4, pollIdleTurns);
      try {
        for (let page = 0; page < 16; page++) await uring.write(fd, addressOf(buffer), PAGE_BYTES, page * PAGE_BYTES, "wakes.img");
        if (pollIdleTurns === 0) {
          expect(uring.pollTurns).toBe(0);
          expect(uring.eventfdWakes).toBeGreaterThan(0);
        } else {
          expect(uring.pollTurns).toBeGreaterThan(0);
        }
      } finally {
        await uring.close();
      }
    }
  } finally {
    pool.release(buffer);
    closeFile(fd, "wakes.img");
  }
});
