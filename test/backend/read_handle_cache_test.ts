// ReadHandleCache (src/backend/read_handle_cache.ts): kept descriptors, their bound, and what a drop does to a read
// that is still using its descriptor. Real descriptors of real files, so a double close or a leak shows up.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { ReadHandleCache } from "../../src/backend/read_handle_cache.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "lsvd-read-handles-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
for (const name of ["a", "b", "c"]) fs.writeFileSync(path.join(root, name), name);

const openAsync = promisify(fs.open);

/** A cache over files in root that counts the opens it asks for. */
function countingCache(capacity: number): { cache: ReadHandleCache; opens: string[] } {
  const opens: string[] = [];
  const cache = new ReadHandleCache(capacity, (name) => {
    opens.push(name);
    return openAsync(path.join(root, name), "r");
  });
  return { cache, opens };
}

function readAll(fd: number): string {
  const buffer = Buffer.alloc(16);
  return buffer.subarray(0, fs.readSync(fd, buffer, 0, 16, 0)).toString();
}

/** A read that holds its descriptor until `finish` is called (reading it then would be EBADF had it been closed). */
function heldRead(cache: ReadHandleCache, name: string, gate: Promise<void>): Promise<string> {
  return cache.withHandle(name, async (fd) => {
    await gate;
    return readAll(fd);
  });
}

function makeGate(): { gate: Promise<void>; finish: () => void } {
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => (finish = resolve));
  return { gate, finish };
}

/**
 * Opens and closes complete in the thread pool, so counts change a little later: waits (boundedly) until the cache
 * reports `count` open descriptors, then asserts it (a slow machine delays the count; a wrong count still fails).
 */
async function expectOpenCount(cache: ReadHandleCache, count: number): Promise<void> {
  for (let waited = 0; cache.openCount !== count && waited < 5000; waited += 5) await Bun.sleep(5);
  expect(cache.openCount).toBe(count);
}

describe("ReadHandleCache", () => {
  test("a kept descriptor serves the next read without an open", async () => {
    const { cache, opens } = countingCache(4);
    expect(await cache.withHandle("a", async (fd) => readAll(fd))).toBe("a");
    expect(await cache.withHandle("a", async (fd) => readAll(fd))).toBe("a");
    expect(opens).toEqual(["a"]);
    cache.close();
    await expectOpenCount(cache, 0);
  });

  test("concurrent first reads of one name share one open", async () => {
    const { cache, opens } = countingCache(4);
    const reads = await Promise.all([1, 2, 3].map(() => cache.withHandle("b", async (fd) => readAll(fd))));
    expect(reads).toEqual(["b", "b", "b"]);
    expect(opens).toEqual(["b"]);
    cache.close();
  });

  test("the least recently used idle descriptor goes first", async () => {
    const { cache, opens } = countingCache(2);
    for (const name of ["a", "b", "a", "c", "a", "b"]) await cache.withHandle(name, async (fd) => readAll(fd));
    // a stays hot; b is evicted by c, then opened again.
    expect(opens).toEqual(["a", "b", "c", "b"]);
    await expectOpenCount(cache, 2);
    cache.close();
    await expectOpenCount(cache, 0);
  });

  test("a drop during a read lets that read finish on its descriptor, then closes it; the next read opens anew", async () => {
    const { cache, opens } = countingCache(4);
    const { gate, finish } = makeGate();
    const slow = heldRead(cache, "c", gate);
    await expectOpenCount(cache, 1); // the held read has its descriptor
    cache.drop("c");
    expect(await cache.withHandle("c", async (fd) => readAll(fd))).toBe("c");
    expect(opens).toEqual(["c", "c"]);
    await expectOpenCount(cache, 2);
    finish();
    expect(await slow).toBe("c");
    await expectOpenCount(cache, 1);
    cache.close();
    await expectOpenCount(cache, 0);
  });

  test("busy descriptors are never evicted: the bound applies to idle ones", async () => {
    const { cache } = countingCache(1);
    const { gate, finish } = makeGate();
    const reads = ["a", "b", "c"].map((name) => heldRead(cache, name, gate));
    await expectOpenCount(cache, 3);
    finish();
    expect(await Promise.all(reads)).toEqual(["a", "b", "c"]);
    await expectOpenCount(cache, 1);
    cache.close();
  });

  test("a failed open is not kept, and the error reaches the reader", async () => {
    const { cache, opens } = countingCache(4);
    await expect(cache.withHandle("missing", async () => "never")).rejects.toThrow(/ENOENT/);
    await expect(cache.withHandle("missing", async () => "never")).rejects.toThrow(/ENOENT/);
    expect(opens).toEqual(["missing", "missing"]);
    expect(cache.openCount).toBe(0);
    cache.close();
  });
});
