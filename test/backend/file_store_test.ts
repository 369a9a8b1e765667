// FileStore (src/backend/file_store.ts): the ObjectStore contract, plus what only a directory can get wrong:
// temporary files of the atomic put, leftovers of a crash, errors naming the object.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { FileStore } from "../../src/backend/file_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { FILE_STORE_DIRECT_WRITE_BYTES_MAX, FILE_STORE_DIRECT_READ_BYTES_MAX, FILE_STORE_READ_HANDLES_MAX } from "../../src/constants.ts";
import { IOError, NotFoundError } from "../../src/errors.ts";
import { objectStoreContract, pattern } from "./object_store_contract.ts";

const roots: string[] = [];
function tempRoot(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "lsvd-file-store-"));
  roots.push(root);
  return root;
}
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** The store's lock file (file_store.ts): made by the first put or delete, never an object. */
const LOCK_FILE = ".lsvd-store.lock";
/** Files in root other than the lock file. */
function filesIn(root: string): string[] {
  return fs.readdirSync(root).filter((name) => name !== LOCK_FILE);
}

/** Bytes of `file` in the page cache, by fincore(1) (util-linux-extra). */
function residentBytes(file: string): number {
  const run = Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", file]);
  if (run.exitCode !== 0) throw new Error(`fincore ${file}: ${run.stderr.toString()}`);
  return Number(run.stdout.toString().trim());
}

/** Drops `file`'s clean pages from the page cache (dd's nocache: posix_fadvise DONTNEED over the whole file). */
function dropCachedPages(file: string): void {
  const run = Bun.spawnSync(["dd", `if=${file}`, "iflag=nocache", "count=0", "status=none"]);
  if (run.exitCode !== 0) throw new Error(`dd nocache ${file}: ${run.stderr.toString()}`);
}

const contractRoot = tempRoot();
objectStoreContract("FileStore", () => FileStore.open(contractRoot), { manyObjects: 1100 });

describe("FileStore specifics", () => {
  test("a log object's putIfAbsent (no version wanted) is not hashed: it resolves with \"\", through wrappers too", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "lsvd-file-store-noversion-"));
    const store = await FileStore.open(root);
    try {
      const data = new Uint8Array(8192).fill(7);
      expect(await store.putIfAbsent("vol.00000001", data, false)).toBe("");
      expect(await new RetryingStore(store, { log: () => {} }).putIfAbsent("vol.00000002", data, false)).toBe("");
      expect(await store.putIfAbsent("vol.00000003", data)).toBe((await store.getVersioned("vol.00000003"))!.version);
      expect((await store.getVersioned("vol.00000001"))!.version).toBe((await store.getVersioned("vol.00000003"))!.version);
    } finally {
      await store.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test("put leaves no temporary files behind, only the objects", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`obj.${i}`, pattern(5000, i))));
    await store.put("obj.3", pattern(10, 99)); // an overwrite too
    const files = fs.readdirSync(root).sort();
    expect(files).toEqual([LOCK_FILE, ...Array.from({ length: 20 }, (_, i) => `obj.${i}`)].sort());
    expect(fs.readFileSync(path.join(root, "obj.3"))).toEqual(Buffer.from(pattern(10, 99)));
  });

  // Puts go through O_DIRECT when the kernel takes the buffer, else through the page cache: both must give the same
  // files, on a disk file system and on tmpfs (which may refuse O_DIRECT at open).
  for (const [where, parent] of [["a disk file system", "/var/tmp"], ["tmpfs", "/dev/shm"]] as const) {
    test(`O_DIRECT and page-cache puts read back the same, on ${where}`, async () => {
      const root = fs.mkdtempSync(path.join(parent, "lsvd-file-store-"));
      roots.push(root);
      const store = await FileStore.open(root);
      const backing = new Uint8Array(8 * 1024 * 1024 + 3 * 4096);
      backing.set(pattern(backing.length, 7));
      const cases: Array<[string, Uint8Array]> = [
        ["obj.aligned", backing.subarray(4096, 4096 + 8 * 1024 * 1024)], // whole pages at a page offset
        // Not a multiple of the O_DIRECT write size: the last write is a short one.
        ["obj.chunks", backing.subarray(4096, 4096 + 2 * FILE_STORE_DIRECT_WRITE_BYTES_MAX + 5 * 4096)],
        ["obj.misaligned", backing.subarray(1, 1 + 64 * 1024)], // whole pages at an odd address: EINVAL, then buffered
        ["obj.sectors", backing.subarray(4096, 4096 + 3 * 512)], // not whole pages: buffered
        ["obj.empty", new Uint8Array(0)],
      ];
      for (const [name, data] of cases) await store.put(name, data);
      for (const [name, data] of cases) expect({ name, same: Buffer.from(await store.get(name)).equals(Buffer.from(data)) }).toEqual({ name, same: true });
      expect(filesIn(root).sort()).toEqual(cases.map(([name]) => name).sort());
    });
  }

  // Whole objects of at least one O_DIRECT write piece are read with O_DIRECT, in read pieces, past the page cache
  // (GC's victim reads must not queue 8 MiB of readahead ahead of the journal); smaller ones through the page cache.
  // Sizes that are not whole pages end in a short last piece; files another tool wrote (dirty in the page cache) read
  // back too.
  for (const [where, parent] of [["a disk file system", "/var/tmp"], ["tmpfs", "/dev/shm"]] as const) {
    test(`whole-object reads of every size read back what was written, on ${where}`, async () => {
      const root = fs.mkdtempSync(path.join(parent, "lsvd-file-store-read-"));
      roots.push(root);
      const store = await FileStore.open(root);
      const piece = FILE_STORE_DIRECT_WRITE_BYTES_MAX; // the smallest object read O_DIRECT
      const readPiece = FILE_STORE_DIRECT_READ_BYTES_MAX; // what each O_DIRECT read asks for
      const sizes = [piece - 512, piece, piece + 512, piece + readPiece - 4096, 3 * piece - 4096, 8 * piece + 3 * 4096];
      for (const [index, size] of sizes.entries()) {
        const data = pattern(size, index + 1);
        await store.put(`obj.${index}`, data);
        fs.writeFileSync(path.join(root, `other.${index}`), data); // buffered, likely still dirty
        for (const name of [`obj.${index}`, `other.${index}`]) {
          const read = await store.get(name);
          expect({ name, size: read.byteLength, same: Buffer.from(read).equals(Buffer.from(data)) }).toEqual({ name, size, same: true });
        }
      }
      await expect(store.get("obj.missing")).rejects.toBeInstanceOf(NotFoundError);
    });
  }

  test("a whole-object read of a large object leaves none of it in the page cache; a small one goes through it", async () => {
    const root = fs.mkdtempSync(path.join("/var/tmp", "lsvd-file-store-read-"));
    roots.push(root);
    const store = await FileStore.open(root);
    const large = pattern(4 * FILE_STORE_DIRECT_WRITE_BYTES_MAX, 3);
    const small = pattern(64 * 1024, 4);
    await store.put("obj.large", large);
    await store.put("obj.small", small);
    dropCachedPages(path.join(root, "obj.large")); // whichever way the put went, the read starts from the disk
    expect(residentBytes(path.join(root, "obj.large"))).toBe(0);
    expect(Buffer.from(await store.get("obj.large")).equals(Buffer.from(large))).toBe(true);
    expect(Buffer.from(await store.get("obj.small")).equals(Buffer.from(small))).toBe(true);
    expect(residentBytes(path.join(root, "obj.large"))).toBe(0);
    expect(residentBytes(path.join(root, "obj.small"))).toBe(small.byteLength);
  });

  // Garbage collection lends the same buffer from victim to victim: a large object is read into it (so the store's
  // threads fault in no fresh pages), a small one and one larger than the buffer get a new buffer.
  test("a large object is read into a lent buffer that holds it in whole pages; others get a new buffer", async () => {
    const root = fs.mkdtempSync(path.join("/var/tmp", "lsvd-file-store-into-"));
    roots.push(root);
    const store = await FileStore.open(root);
    const large = pattern(2 * FILE_STORE_DIRECT_WRITE_BYTES_MAX + 512, 5);
    const small = pattern(64 * 1024, 6);
    await store.put("obj.large", large);
    await store.put("obj.small", small);
    const lent = new Uint8Array(3 * FILE_STORE_DIRECT_WRITE_BYTES_MAX);
    const read = await store.get("obj.large", lent);
    expect({ shared: read.buffer === lent.buffer, same: Buffer.from(read).equals(Buffer.from(large)) }).toEqual({ shared: true, same: true });
    const again = await store.get("obj.large", lent); // a second read into the same buffer
    expect({ shared: again.buffer === lent.buffer, same: Buffer.from(again).equals(Buffer.from(large)) }).toEqual({ shared: true, same: true });
    const smallRead = await store.get("obj.small", lent);
    expect({ shared: smallRead.buffer === lent.buffer, same: Buffer.from(smallRead).equals(Buffer.from(small)) }).toEqual({ shared: false, same: true });
    // Holds the bytes but not whole pages of them (O_DIRECT reads whole blocks): a new buffer.
    const exact = new Uint8Array(large.byteLength);
    const exactRead = await store.get("obj.large", exact);
    expect({ shared: exactRead.buffer === exact.buffer, same: Buffer.from(exactRead).equals(Buffer.from(large)) }).toEqual({ shared: false, same: true });
  });

  test("a temporary file left by a crash is ignored by list and does not disturb the object", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    await store.put("vol.00000001", pattern(100, 1));
    // What a crash between write and rename leaves: a half-written temporary file.
    fs.writeFileSync(path.join(root, `.tmp.vol.00000001.${process.pid + 1}.7`), pattern(50, 2));
    fs.writeFileSync(path.join(root, `.tmp.vol.00000002.4242.1`), pattern(50, 3));
    expect(await store.list("vol")).toEqual(["vol.00000001"]);
    expect(await store.list("")).toEqual(["vol.00000001"]);
    expect(await store.get("vol.00000001")).toEqual(pattern(100, 1));
    expect(await store.stat("vol.00000002")).toBeNull();
    // A later put of the same name is not confused by the leftover either.
    await store.put("vol.00000001", pattern(100, 4));
    expect(await store.get("vol.00000001")).toEqual(pattern(100, 4));
  });

  test("a failed put removes its temporary file and names the object", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    // rename(2) of a file over a non-empty directory fails after the temporary file was written and synced.
    fs.mkdirSync(path.join(root, "obj.dir", "inner"), { recursive: true });
    let caught: unknown;
    try {
      await store.put("obj.dir", pattern(100, 5));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(IOError);
    expect((caught as IOError).message).toContain("obj.dir");
    expect((caught as IOError).transient).toBe(false);
    expect(filesIn(root)).toEqual(["obj.dir"]);
    // A directory is not an object.
    expect(await store.list("obj")).toEqual([]);
  });

  test("a store whose directory vanished fails with a permanent IOError naming the object", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    fs.rmSync(root, { recursive: true });
    let caught: unknown;
    try {
      await store.put("obj.1", pattern(10, 1));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(IOError);
    expect((caught as IOError).transient).toBe(false);
    expect((caught as IOError).message).toContain("obj.1");
    expect((caught as IOError).message).toContain("ENOENT");
  });

  test("open: a missing directory is NotFoundError unless create is asked for", async () => {
    const root = path.join(tempRoot(), "sub", "dir");
    await expect(FileStore.open(root)).rejects.toBeInstanceOf(NotFoundError);
    const store = await FileStore.open(root, { create: true });
    await store.put("x", pattern(3, 1));
    expect(filesIn(root)).toEqual(["x"]);
  });

  test("objects are plain files: a file written by another tool reads back", async () => {
    const root = tempRoot();
    fs.writeFileSync(path.join(root, "external"), pattern(4096, 7));
    const store = await FileStore.open(root);
    expect(await store.getRange("external", 4000, 96)).toEqual(pattern(4096, 7).slice(4000));
  });
});

// Between processes (what ownership relies on: two lsvd commands on one volume directory), with real processes.
describe("FileStore conditional operations between processes", () => {
  const RACERS = 4;
  const RACER = path.join(import.meta.dir, "_file_store_racer.ts");

  /** Starts RACERS processes in `mode`, releases them together, returns each one's JSON report. */
  async function runRacers(root: string, mode: string, count: number): Promise<Array<Record<string, unknown>>> {
    const barrier = path.join(tempRoot(), "barrier");
    const children = Array.from({ length: RACERS }, (_, id) =>
      Bun.spawn(["timeout", "60", process.execPath, RACER, root, barrier, String(id), mode, String(count)], {
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
    try {
      for (let waited = 0; filesReady(barrier) < RACERS && waited < 30_000; waited += 5) await Bun.sleep(5);
      expect(filesReady(barrier)).toBe(RACERS);
      fs.writeFileSync(`${barrier}.go`, "");
      return await Promise.all(
        children.map(async (child, id) => {
          const [exitCode, stdout, stderr] = await Promise.all([
            child.exited,
            new Response(child.stdout).text(),
            new Response(child.stderr).text(),
          ]);
          expect({ id, exitCode, stderr }).toEqual({ id, exitCode: 0, stderr: "" });
          return JSON.parse(stdout) as Record<string, unknown>;
        }),
      );
    } finally {
      for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    }
  }

  function filesReady(barrier: string): number {
    const dir = path.dirname(barrier);
    return fs.readdirSync(dir).filter((name) => name.startsWith(`${path.basename(barrier)}.ready.`)).length;
  }

  test("a process holding the store lock makes changes wait, then fail transiently; killing it releases the lock", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root, { lockWaitMsMax: 300 });
    await store.put("obj", pattern(10, 1));
    const version = (await store.getVersioned("obj"))!.version;
    // Another process takes the lock the way the store does (flock(2), exclusive), says so, and holds it until killed.
    const libc = path.resolve(import.meta.dir, "../../ffi/libc.ts");
    const script = `
      import { openFile, tryLockExclusive, O_RDWR, O_CREAT } from ${JSON.stringify(libc)};
      const fd = openFile(${JSON.stringify(path.join(root, LOCK_FILE))}, O_RDWR | O_CREAT, 0o644);
      if (!tryLockExclusive(fd, "lock")) process.exit(3);
      console.log("locked");
      setInterval(() => undefined, 1000);`;
    const holder = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
    try {
      const reader = holder.stdout.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toContain("locked");
      for (const change of [
        () => store.put("obj", pattern(10, 2)),
        () => store.delete("obj"),
        () => store.putIfVersion("obj", pattern(10, 3), version),
      ]) {
        const error = await change().then(
          () => undefined,
          (caught: unknown) => caught,
        );
        expect(error).toBeInstanceOf(IOError);
        expect((error as IOError).transient).toBe(true);
        expect((error as IOError).message).toContain(LOCK_FILE);
      }
      expect(await store.get("obj")).toEqual(pattern(10, 1));
    } finally {
      holder.kill("SIGKILL");
      await holder.exited;
    }
    // The holder died: the kernel released its lock.
    const replaced = await store.putIfVersion("obj", pattern(10, 3), version);
    expect(await store.getVersioned("obj")).toEqual({ data: pattern(10, 3), version: replaced });
  }, 30_000);

  test(`${RACERS} processes putIfAbsent the same 200 names: each name has exactly one winner, holding its bytes`, async () => {
    const root = tempRoot();
    const slots = 200;
    const reports = await runRacers(root, "create", slots);
    const winnerOf = new Map<number, number>();
    reports.forEach((report, id) => {
      for (const slot of report.won as number[]) {
        expect(winnerOf.has(slot)).toBe(false);
        winnerOf.set(slot, id);
      }
    });
    expect(winnerOf.size).toBe(slots);
    const store = await FileStore.open(root);
    for (const [slot, id] of winnerOf) expect(new TextDecoder().decode(await store.get(`slot.${slot}`))).toBe(`${id} ${slot}`);
    // Every racer won some: they really ran at the same time.
    expect(reports.filter((report) => (report.won as number[]).length > 0).length).toBeGreaterThan(1);
  }, 90_000);

  test(`${RACERS} processes increment one counter with getVersioned + putIfVersion: no update is lost`, async () => {
    const root = tempRoot();
    const each = 50;
    const store = await FileStore.open(root);
    await store.putIfAbsent("counter", new TextEncoder().encode("0"));
    const reports = await runRacers(root, "counter", each);
    expect(new TextDecoder().decode(await store.get("counter"))).toBe(String(RACERS * each));
    // Each value 1..N was written by exactly one process.
    const written = reports.flatMap((report) => report.wrote as number[]).sort((a, b) => a - b);
    expect(written).toEqual(Array.from({ length: RACERS * each }, (_, i) => i + 1));
    expect(reports.reduce((sum, report) => sum + (report.conflicts as number), 0)).toBeGreaterThan(0);
  }, 90_000);
});

/**
 * Closes complete in the thread pool, a little after the store lets go of a descriptor: waits (boundedly) until
 * `count` descriptors are open under root, then asserts it.
 */
async function expectFdsUnder(root: string, count: number): Promise<void> {
  for (let waited = 0; fdsUnder(root) !== count && waited < 5000; waited += 5) await Bun.sleep(5);
  expect(fdsUnder(root)).toBe(count);
}

/** Descriptors of this process open on files under root (from /proc/self/fd). */
function fdsUnder(root: string): number {
  let count = 0;
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(`${root}/`)) count += 1;
    } catch {
      // The descriptor closed while we looked (the one readdir used, say).
    }
  }
  return count;
}

// Ranged reads keep the object's file open between calls (src/backend/read_handle_cache.ts). A kept handle must never
// serve an old version of a name after put or delete resolves.
describe("FileStore read handles", () => {
  test("a read after a put over the same name sees the new object, not the kept handle's old file", async () => {
    const store = await FileStore.open(tempRoot());
    await store.put("obj.1", pattern(8192, 1));
    expect(await store.getRange("obj.1", 4096, 4096)).toEqual(pattern(8192, 1).slice(4096));
    expect(store.readHandlesOpen).toBe(1);
    await store.put("obj.1", pattern(8192, 2));
    expect(await store.getRange("obj.1", 4096, 4096)).toEqual(pattern(8192, 2).slice(4096));
    // A shorter replacement: a stale handle would read past the new end without complaint.
    await store.put("obj.1", pattern(4096, 3));
    await expect(store.getRange("obj.1", 4096, 4096)).rejects.toThrow(/obj\.1/);
    expect(await store.getRange("obj.1", 0, 4096)).toEqual(pattern(4096, 3));
  });

  test("a read after delete is NotFound even though the handle was kept", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    await store.put("obj.2", pattern(4096, 4));
    expect(await store.getRange("obj.2", 0, 16)).toEqual(pattern(4096, 4).slice(0, 16));
    await store.delete("obj.2");
    await expect(store.getRange("obj.2", 0, 16)).rejects.toBeInstanceOf(NotFoundError);
    await expectFdsUnder(root, 0);
  });

  test("idle handles are bounded, reads of many objects stay correct, and close releases every descriptor", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    const objects = FILE_STORE_READ_HANDLES_MAX + 40;
    await Promise.all(Array.from({ length: objects }, (_, i) => store.put(`obj.${i}`, pattern(4096, i))));
    for (let round = 0; round < 2; round++) {
      const reads = await Promise.all(Array.from({ length: objects }, (_, i) => store.getRange(`obj.${i}`, 100, 50)));
      reads.forEach((bytes, i) => expect(bytes).toEqual(pattern(4096, i).slice(100, 150)));
    }
    await expectFdsUnder(root, FILE_STORE_READ_HANDLES_MAX);
    expect(store.readHandlesOpen).toBe(FILE_STORE_READ_HANDLES_MAX);
    await store.close();
    await expectFdsUnder(root, 0);
    expect(store.readHandlesOpen).toBe(0);
  });

  test("the directory's descriptor is opened by the first put, kept for every later sync, and closed with the store", async () => {
    const root = tempRoot();
    const directoryFds = () => fs.readdirSync("/proc/self/fd").filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === root;
      } catch {
        return false;
      }
    }).length;
    const store = await FileStore.open(root);
    expect(directoryFds()).toBe(0);
    // Puts and deletes at once: every one resolves, durable, over one kept descriptor.
    await Promise.all(Array.from({ length: 16 }, (_, i) => store.put(`obj.${i}`, pattern(4096, i))));
    await Promise.all(Array.from({ length: 8 }, (_, i) => store.delete(`obj.${i}`)));
    expect(directoryFds()).toBe(1);
    expect((await store.list("obj.")).length).toBe(8);
    await store.close();
    expect(directoryFds()).toBe(0);
  });

  test("a failed open keeps nothing: the object put afterwards reads back", async () => {
    const store = await FileStore.open(tempRoot());
    await expect(store.getRange("obj.late", 0, 8)).rejects.toBeInstanceOf(NotFoundError);
    expect(store.readHandlesOpen).toBe(0);
    await store.put("obj.late", pattern(64, 5));
    expect(await store.getRange("obj.late", 8, 8)).toEqual(pattern(64, 5).slice(8, 16));
  });
});
