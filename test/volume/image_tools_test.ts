// volume/image_import.ts and image_export.ts in-process on a memory store: an import that dies part way (one of
// its DATA objects never lands) leaves the volume holding what it held before or a prefix of the new image, never a
// mix; the next import completes it; rm and resize under the lease (volume_admin.ts).

import { describe, expect, test } from "bun:test";
import { randomBytes, randomUUID } from "node:crypto";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { IOError } from "../../src/errors.ts";
import { objectName, parseObjectName } from "../../src/format/object_name.ts";
import { exportImage } from "../../src/volume/image_export.ts";
import { importImage } from "../../src/volume/image_import.ts";
import { createVolume, takeOwnership } from "../../src/volume/ownership.ts";
import { removeVolume, resizeVolume } from "../../src/volume/volume_admin.ts";

const PREFIX = "vol";
const VOLUME_BYTES = 4 * 1024 * 1024;
const OBJECT_BYTES = 256 * 1024;
/** A holder of this process that did not release counts as crashed: the next owner takes its lease at once. */
const LEASE = { durationMs: 30_000, processRuns: () => false, log: () => {} };

/** A memory store in which one object never lands: its put fails, as if the importing process died before it. */
class DroppingStore extends MemoryStore {
  dropSeq: number | null = null;
  override async putIfAbsent(name: string, data: Uint8Array): Promise<string> {
    if (this.dropSeq !== null && parseObjectName(PREFIX, name) === this.dropSeq) throw new IOError(`${name}: the process died before this put`);
    return super.putIfAbsent(name, data);
  }
}

async function newVolume(store: MemoryStore): Promise<void> {
  await createVolume({ store, prefix: PREFIX, volUuid: randomUUID(), volSectors: VOLUME_BYTES / 512, replace: false, lease: { command: "mkdisk", ...LEASE } });
}

/** Imports `image`; returns the first seq it wrote, or throws what the import threw. */
async function importBytes(store: MemoryStore, image: Uint8Array): Promise<number> {
  const taken = await takeOwnership({ store, prefix: PREFIX, command: "import", ...LEASE });
  const source = { sizeBytes: image.byteLength, read: async (offset: number, into: Uint8Array) => (into.set(image.subarray(offset, offset + into.byteLength)), into.byteLength) };
  const result = await importImage({ store, prefix: PREFIX, owner: taken.owner, source, objectBytes: OBJECT_BYTES, log: () => {} });
  await taken.lease.release();
  return result.firstSeq;
}

async function exportBytes(store: MemoryStore): Promise<Buffer> {
  let image = Buffer.alloc(0);
  await exportImage({
    store,
    prefix: PREFIX,
    begin: async (sizeBytes) => void (image = Buffer.alloc(sizeBytes)),
    target: { write: async (offset, data) => void image.set(data, offset) },
  });
  return image;
}

/** An image with random data in `regions`, zeroes elsewhere. */
function image(regions: Array<[number, number]>): Buffer {
  const bytes = Buffer.alloc(VOLUME_BYTES);
  for (const [offset, length] of regions) randomBytes(length).copy(bytes, offset);
  return bytes;
}

/** `image` with only its first `pages` non-zero 4 KiB pages kept (what that many pages of DATA objects hold). */
function firstDataPages(image: Buffer, pages: number): Buffer {
  const out = Buffer.alloc(image.byteLength);
  const zero = Buffer.alloc(4096);
  for (let at = 0, kept = 0; at < image.byteLength && kept < pages; at += 4096) {
    if (image.subarray(at, at + 4096).equals(zero)) continue;
    image.copy(out, at, at, at + 4096);
    kept += 1;
  }
  return out;
}

describe("an import that dies part way", () => {
  // The first, a middle one, and the last: no put follows the last one, only the checkpoint, which must wait for it.
  for (const dropped of [0, 2, 5]) {
    test(`DATA object ${dropped + 1} of 6 never lands: the volume holds ${dropped === 0 ? "its old contents" : "a prefix of the new image"}; importing again completes it`, async () => {
      const store = new DroppingStore();
      await newVolume(store);
      const old = image([[0, VOLUME_BYTES]]); // data everywhere: any of it left behind would show
      const firstSeq = await importBytes(store, old);
      expect((await exportBytes(store)).equals(old)).toBe(true);

      const next = image([[0, 1024 * 1024], [2 * 1024 * 1024, 512 * 1024]]); // 6 objects of 256 KiB
      // The next import starts its log after the previous one's objects and checkpoint (no margin: released cleanly).
      store.dropSeq = firstSeq + VOLUME_BYTES / OBJECT_BYTES + 1 + dropped;
      await expect(importBytes(store, next)).rejects.toThrow(/the process died before this put/);
      await Bun.sleep(10); // puts still in flight land (or not) now
      const after = await exportBytes(store);
      if (dropped === 0) {
        expect(after.equals(old)).toBe(true);
      } else {
        // The objects before the dropped one: the image's first non-zero pages; the trim in the first removed the rest.
        expect(after.equals(firstDataPages(next, (dropped * OBJECT_BYTES) / 4096))).toBe(true);
      }
      store.dropSeq = null;
      await importBytes(store, next);
      expect((await exportBytes(store)).equals(next)).toBe(true);
    });
  }
});

describe("rm and resize", () => {
  test("resize grows and refuses to shrink; rm deletes every object of the volume and nothing else", async () => {
    const store = new MemoryStore();
    await newVolume(store);
    await store.put("other", new Uint8Array([1, 2, 3]));
    await importBytes(store, image([[0, 300_000]]));
    await expect(resizeVolume({ store, prefix: PREFIX, command: "resize", ...LEASE }, VOLUME_BYTES / 2)).rejects.toThrow(/Cannot shrink/);
    expect(await resizeVolume({ store, prefix: PREFIX, command: "resize", ...LEASE }, 2 * VOLUME_BYTES)).toEqual({ oldBytes: VOLUME_BYTES, newBytes: 2 * VOLUME_BYTES });
    const grown = await exportBytes(store);
    expect(grown.byteLength).toBe(2 * VOLUME_BYTES);
    expect(grown.subarray(VOLUME_BYTES).equals(Buffer.alloc(VOLUME_BYTES))).toBe(true);
    const objects = (await store.list(PREFIX)).length;
    const removed = await removeVolume({ store, prefix: PREFIX, command: "rm", ...LEASE });
    expect(removed).toEqual({ hadSuperblock: true, objectsDeleted: objects - 2 }); // all but the superblock and the lease
    expect(await store.list("")).toEqual(["other"]);
    expect(await store.stat(objectName(PREFIX, 1))).toBeNull();
  });
});
