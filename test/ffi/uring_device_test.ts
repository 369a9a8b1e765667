// Tests for ffi/uring_device.ts: real O_DIRECT I/O through io_uring on a temp file (no mocks).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PAGE_BYTES, URING_IOVECS_PER_OP_MAX } from "../../src/constants.ts";
import { InvalidArgumentError, IOError, NotFoundError } from "../../src/errors.ts";
import { openUringDevice, type UringDevice } from "../../ffi/uring_device.ts";

let directory: string;
beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), "lsvd-uring-device-"));
});
afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

/** Deterministic PRNG (mulberry32) so a failure replays. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fillPattern(buffer: Uint8Array, seed: number): void {
  const random = prng(seed);
  for (let index = 0; index < buffer.length; index += 4) {
    const word = (random() * 4294967296) >>> 0;
    buffer[index] = word;
    buffer[index + 1] = word >>> 8;
    buffer[index + 2] = word >>> 16;
    buffer[index + 3] = word >>> 24;
  }
}

/** Pages of the file the kernel holds in its page cache (fincore(1); mincore(2) underneath). */
function residentPages(path: string): number {
  const result = Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", path]);
  expect(result.exitCode).toBe(0);
  const bytes = Number(result.stdout.toString().trim());
  expect(Number.isSafeInteger(bytes)).toBe(true);
  return bytes / PAGE_BYTES;
}

async function withDevice(name: string, sizeBytes: number, body: (device: UringDevice) => Promise<void>, queueDepth = 32) {
  const device = await openUringDevice(join(directory, name), { createSizeBytes: sizeBytes, queueDepth });
  try {
    await body(device);
  } finally {
    await device.close();
  }
}

describe("openUringDevice", () => {
  test("creates a file of createSizeBytes and reports its size", async () => {
    const path = join(directory, "create.img");
    const device = await openUringDevice(path, { createSizeBytes: 64 * PAGE_BYTES });
    expect(device.sizeBytes).toBe(64 * PAGE_BYTES);
    expect(device.path).toBe(path);
    await device.close();
    expect(statSync(path).size).toBe(64 * PAGE_BYTES);
    // Reopening without createSizeBytes keeps the file as it is.
    const again = await openUringDevice(path);
    expect(again.sizeBytes).toBe(64 * PAGE_BYTES);
    await again.close();
  });

  test("exclusive: a second exclusive open is refused (EBUSY) until the first closes; plain opens are not", async () => {
    const path = join(directory, "locked.img");
    const first = await openUringDevice(path, { createSizeBytes: 16 * PAGE_BYTES, exclusive: true });
    const refused = await openUringDevice(path, { exclusive: true }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(IOError);
    expect((refused as IOError).errno).toBe(16);
    expect((refused as IOError).message).toContain("in use by another process");
    const reader = await openUringDevice(path); // fsck and parse read without the lock
    await reader.close();
    await first.close();
    const second = await openUringDevice(path, { exclusive: true });
    await second.close();
  });

  test("a missing path without createSizeBytes is NotFoundError", async () => {
    await expect(openUringDevice(join(directory, "missing.img"))).rejects.toBeInstanceOf(NotFoundError);
  });

  test("rounds a file size down to whole pages", async () => {
    const path = join(directory, "odd.img");
    writeFileSync(path, new Uint8Array(3 * PAGE_BYTES + 100));
    const device = await openUringDevice(path);
    expect(device.sizeBytes).toBe(3 * PAGE_BYTES);
    await device.close();
  });

  test("rejects a size that is not a page multiple", async () => {
    await expect(openUringDevice(join(directory, "bad.img"), { createSizeBytes: 1000 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });
});

describe("UringDevice I/O", () => {
  test("random aligned extents read back byte for byte", async () => {
    const pages = 2048;
    await withDevice("random.img", pages * PAGE_BYTES, async (device) => {
      const random = prng(42);
      const model = new Uint8Array(pages * PAGE_BYTES); // what the device must hold (file starts zeroed)
      for (let round = 0; round < 8; round++) {
        const writes: Promise<void>[] = [];
        const buffers: Uint8Array[] = [];
        const claimed = new Set<number>(); // no two concurrent writes overlap, so the model is exact
        for (let index = 0; index < 40; index++) {
          const lengthPages = 1 + Math.floor(random() * 16);
          const startPage = Math.floor(random() * (pages - lengthPages));
          let overlaps = false;
          for (let page = startPage; page < startPage + lengthPages; page++) overlaps ||= claimed.has(page);
          if (overlaps) continue;
          for (let page = startPage; page < startPage + lengthPages; page++) claimed.add(page);
          const buffer = device.pool.acquire(lengthPages * PAGE_BYTES);
          fillPattern(buffer, round * 1000 + index);
          model.set(buffer, startPage * PAGE_BYTES);
          buffers.push(buffer);
          writes.push(device.write(startPage * PAGE_BYTES, [buffer]));
        }
        await Promise.all(writes);
        for (const buffer of buffers) device.pool.release(buffer);
      }
      // Read everything back in random-sized extents, concurrently.
      const reads: Promise<void>[] = [];
      const checks: Array<{ buffer: Uint8Array; offset: number }> = [];
      for (let page = 0; page < pages; ) {
        const lengthPages = Math.min(1 + Math.floor(random() * 32), pages - page);
        const buffer = device.pool.acquire(lengthPages * PAGE_BYTES);
        reads.push(device.read(page * PAGE_BYTES, buffer));
        checks.push({ buffer, offset: page * PAGE_BYTES });
        page += lengthPages;
      }
      await Promise.all(reads);
      for (const { buffer, offset } of checks) {
        expect(Buffer.compare(buffer, model.subarray(offset, offset + buffer.length))).toBe(0);
        device.pool.release(buffer);
      }
    });
  });

  test("1000 requests in flight with queue depth 32 all complete correctly", async () => {
    const pages = 1000;
    await withDevice("deep.img", pages * PAGE_BYTES, async (device) => {
      const buffers = Array.from({ length: pages }, (_, page) => {
        const buffer = device.pool.acquire(PAGE_BYTES);
        fillPattern(buffer, page);
        return buffer;
      });
      await Promise.all(buffers.map((buffer, page) => device.write(page * PAGE_BYTES, [buffer])));
      const readBuffers = Array.from({ length: pages }, () => device.pool.acquire(PAGE_BYTES));
      await Promise.all(readBuffers.map((buffer, page) => device.read(page * PAGE_BYTES, buffer)));
      for (let page = 0; page < pages; page++) expect(Buffer.compare(readBuffers[page]!, buffers[page]!)).toBe(0);
    }, 32);
  });

  test("vectored writes land back to back, including more buffers than one op carries", async () => {
    const count = URING_IOVECS_PER_OP_MAX + 10; // forces a split into two ops
    await withDevice("vectored.img", (count + 8) * PAGE_BYTES, async (device) => {
      const small = Array.from({ length: 3 }, (_, index) => {
        const buffer = device.pool.acquire((index + 1) * PAGE_BYTES);
        fillPattern(buffer, 100 + index);
        return buffer;
      });
      await device.write(PAGE_BYTES, small);
      const expected = Buffer.concat(small);
      const readBack = device.pool.acquire(expected.length);
      await device.read(PAGE_BYTES, readBack);
      expect(Buffer.compare(readBack, expected)).toBe(0);

      const many = Array.from({ length: count }, (_, index) => {
        const buffer = device.pool.acquire(PAGE_BYTES);
        buffer.fill(index & 0xff);
        return buffer;
      });
      await device.write(8 * PAGE_BYTES, many);
      const all = device.pool.acquire(count * PAGE_BYTES);
      await device.read(8 * PAGE_BYTES, all);
      for (let index = 0; index < count; index++) {
        expect(all[index * PAGE_BYTES]).toBe(index & 0xff);
        expect(all[index * PAGE_BYTES + PAGE_BYTES - 1]).toBe(index & 0xff);
      }
    });
  });

  test("fdatasync resolves after writes and the data is in the file", async () => {
    const path = join(directory, "sync.img");
    const device = await openUringDevice(path, { createSizeBytes: 16 * PAGE_BYTES });
    const buffer = device.pool.acquire(PAGE_BYTES);
    buffer.fill(0x5a);
    await device.write(2 * PAGE_BYTES, [buffer]);
    await device.fdatasync();
    await Promise.all([device.fdatasync(), device.fdatasync()]);
    await device.close();
    const bytes = await Bun.file(path).bytes();
    expect(bytes[2 * PAGE_BYTES]).toBe(0x5a);
    expect(bytes[3 * PAGE_BYTES - 1]).toBe(0x5a);
    expect(bytes[3 * PAGE_BYTES]).toBe(0);
  });

  test("readCached goes through the page cache and sees every write that resolved before it; read() does not fill it", async () => {
    const pages = 64;
    const path = join(directory, "cached.img");
    await withDevice("cached.img", pages * PAGE_BYTES, async (device) => {
      const buffer = device.pool.acquire(8 * PAGE_BYTES);
      fillPattern(buffer, 7);
      await device.write(16 * PAGE_BYTES, [buffer]); // O_DIRECT: the written range leaves the page cache
      const readBack = device.pool.acquire(8 * PAGE_BYTES);
      await device.read(16 * PAGE_BYTES, readBack);
      expect(residentPages(path)).toBe(0); // the file is never read but through readCached here
      await device.readCached(16 * PAGE_BYTES, readBack);
      expect(Buffer.compare(readBack, buffer)).toBe(0);
      expect(residentPages(path)).toBe(8); // kept by the kernel: the next readCached needs no device read
      // An overwrite of cached pages: the next readCached returns the new bytes, not the cached old ones.
      const again = device.pool.acquire(2 * PAGE_BYTES);
      fillPattern(again, 8);
      await device.write(18 * PAGE_BYTES, [again]);
      await device.readCached(16 * PAGE_BYTES, readBack);
      expect(Buffer.compare(readBack.subarray(2 * PAGE_BYTES, 4 * PAGE_BYTES), again)).toBe(0);
      expect(Buffer.compare(readBack.subarray(0, 2 * PAGE_BYTES), buffer.subarray(0, 2 * PAGE_BYTES))).toBe(0);
      expect(Buffer.compare(readBack.subarray(4 * PAGE_BYTES), buffer.subarray(4 * PAGE_BYTES))).toBe(0);
      // The same refusals as read().
      await expect(device.readCached(PAGE_BYTES / 2, readBack)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.readCached(pages * PAGE_BYTES, readBack)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.readCached(0, new Uint8Array(PAGE_BYTES))).rejects.toBeInstanceOf(InvalidArgumentError);
    });
  });

  test("close waits for ops in flight, then refuses new ones", async () => {
    const pages = 300;
    const path = join(directory, "close.img");
    const device = await openUringDevice(path, { createSizeBytes: pages * PAGE_BYTES, queueDepth: 16 });
    const buffer = device.pool.acquire(PAGE_BYTES);
    buffer.fill(0xc3);
    const writes = Array.from({ length: pages }, (_, page) => device.write(page * PAGE_BYTES, [buffer]));
    const closing = device.close();
    await expect(device.write(0, [buffer])).rejects.toBeInstanceOf(IOError);
    await Promise.all(writes); // every write queued before close still succeeds
    await closing;
    await device.close(); // idempotent
    const bytes = await Bun.file(path).bytes();
    expect(bytes.every((byte) => byte === 0xc3)).toBe(true);
  });
});

describe("UringDevice refuses bad requests", () => {
  test("unaligned offset, unaligned length, unaligned or foreign buffer, past the end", async () => {
    await withDevice("errors.img", 8 * PAGE_BYTES, async (device) => {
      const big = device.pool.acquire(3 * PAGE_BYTES);
      await expect(device.write(512, [device.pool.acquire(PAGE_BYTES)])).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.read(100, big)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.write(0, [big.subarray(0, 1000)])).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.read(0, big.subarray(512, 512 + PAGE_BYTES))).rejects.toThrow(/not 4096-aligned/);
      await expect(device.write(0, [new Uint8Array(PAGE_BYTES)])).rejects.toThrow(/not from an AlignedBufferPool/);
      await expect(device.read(0, new Uint8Array(PAGE_BYTES))).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(device.read(6 * PAGE_BYTES, big)).rejects.toThrow(/past the end/);
      await expect(device.write(8 * PAGE_BYTES, [big.subarray(0, PAGE_BYTES)])).rejects.toThrow(/past the end/);
      const released = device.pool.acquire(PAGE_BYTES);
      device.pool.release(released);
      await expect(device.write(0, [released])).rejects.toBeInstanceOf(InvalidArgumentError);
      // A valid request still works after all those refusals.
      await device.read(5 * PAGE_BYTES, big);
    });
  });

  test("requests on a closed device are IOError naming the operation and EBADF", async () => {
    const device = await openUringDevice(join(directory, "closed.img"), { createSizeBytes: 4 * PAGE_BYTES });
    const buffer = device.pool.acquire(PAGE_BYTES);
    await device.close();
    const error = await device.read(PAGE_BYTES, buffer).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).errno).toBe(9);
    expect((error as IOError).message).toMatch(/Cannot read .*closed\.img at offset 4096: device is closed/);
    await expect(device.fdatasync()).rejects.toBeInstanceOf(IOError);
    // The pool was freed with the device: the buffer's view is detached rather than pointing at freed memory.
    expect(buffer.byteLength).toBe(0);
  });
});
