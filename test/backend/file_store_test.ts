// FileStore (src/backend/file_store.ts): the ObjectStore contract, plus what only a directory can get wrong:
// temporary files of the atomic put, leftovers of a crash, errors naming the object.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { FileStore } from "../../src/backend/file_store.ts";
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

objectStoreContract("FileStore", () => FileStore.open(tempRoot()), { manyObjects: 1100 });

describe("FileStore specifics", () => {
  test("put leaves no temporary files behind, only the objects", async () => {
    const root = tempRoot();
    const store = await FileStore.open(root);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`obj.${i}`, pattern(5000, i))));
    await store.put("obj.3", pattern(10, 99)); // an overwrite too
    const files = fs.readdirSync(root).sort();
    expect(files).toEqual(Array.from({ length: 20 }, (_, i) => `obj.${i}`).sort());
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
        ["obj.misaligned", backing.subarray(1, 1 + 64 * 1024)], // whole pages at an odd address: EINVAL, then buffered
        ["obj.sectors", backing.subarray(4096, 4096 + 3 * 512)], // not whole pages: buffered
        ["obj.empty", new Uint8Array(0)],
      ];
      for (const [name, data] of cases) await store.put(name, data);
      for (const [name, data] of cases) expect({ name, same: Buffer.from(await store.get(name)).equals(Buffer.from(data)) }).toEqual({ name, same: true });
      expect(fs.readdirSync(root).sort()).toEqual(cases.map(([name]) => name).sort());
    });
  }

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
    expect(fs.readdirSync(root)).toEqual(["obj.dir"]);
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
    expect(fs.readdirSync(root)).toEqual(["x"]);
  });

  test("objects are plain files: a file written by another tool reads back", async () => {
    const root = tempRoot();
    fs.writeFileSync(path.join(root, "external"), pattern(4096, 7));
    const store = await FileStore.open(root);
    expect(await store.getRange("external", 4000, 96)).toEqual(pattern(4096, 7).slice(4000));
  });
});
