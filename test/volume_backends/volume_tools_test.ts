// `lsvd import`, `export`, `ls` and `rm` on a real RADOS pool and a real S3 bucket (radosgw) of the test Ceph cluster,
// as real processes: an image imported (creating the volume), listed, exported back byte for byte and sparse,
// re-imported over itself with other data, and removed with every object. The cluster is the shared default one
// (test/backend/_ceph.ts), started here if needed; the tests FAIL if it cannot start.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { type CephEnv, cephUp } from "../backend/_ceph.ts";
import { type Backend, type BackendKind, backendOf, deleteVolume, lsvd, makeTempDir, uniquePrefix } from "./_volume_backends.ts";

const TEST_TIMEOUT_MS = 180_000;
const IMAGE_BYTES = 6 * 1024 * 1024 + 512;

function image(path: string, regions: Array<[number, number]>): Buffer {
  const bytes = Buffer.alloc(IMAGE_BYTES);
  for (const [offset, length] of regions) randomBytes(length).copy(bytes, offset);
  writeFileSync(path, bytes);
  return bytes;
}

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

for (const kind of ["rados", "s3"] as BackendKind[]) {
  describe(`volume tools on ${kind}`, () => {
    let backend: Backend;
    let store: ObjectStore;
    let directory: string;
    let prefix: string;

    beforeAll(async () => {
      backend = backendOf(kind, env);
      store = await backend.openStore();
      directory = makeTempDir(`tools-${kind}`);
      prefix = uniquePrefix("tools");
    });

    afterAll(async () => {
      await deleteVolume(store, prefix);
      await deleteVolume(store, `${prefix}x`);
      await store.close();
    });

    test("import creates the volume, ls lists it, export gives the image back (sparse), a second import replaces it, rm deletes every object", async () => {
      const uri = backend.uri(prefix);
      const volumeBytes = Math.ceil(IMAGE_BYTES / 4096) * 4096;
      const first = image(join(directory, "one"), [[0, 1_000_000], [4 * 1024 * 1024, 8192], [IMAGE_BYTES - 512, 512]]);
      const imported = JSON.parse((await lsvd(backend, ["import", "--json", "--object-size", "512k", ...backend.cliArgs, join(directory, "one"), uri])).stdout);
      expect({ created: imported.created, volumeBytes: imported.volumeBytes }).toEqual({ created: true, volumeBytes });
      await lsvd(backend, ["mkdisk", "--size", "8m", ...backend.cliArgs, backend.uri(`${prefix}x`)]);

      const listed = JSON.parse((await lsvd(backend, ["ls", "--json", ...backend.cliArgs, backend.uri(prefix)])).stdout);
      expect(listed.map((row: { name: string; sizeBytes: number }) => [row.name, row.sizeBytes])).toEqual([[prefix, volumeBytes], [`${prefix}x`, 8 * 1024 * 1024]]);

      const out = join(directory, "one.raw");
      await lsvd(backend, ["export", ...backend.cliArgs, uri, out]);
      expect(readFileSync(out).equals(Buffer.concat([first, Buffer.alloc(volumeBytes - IMAGE_BYTES)]))).toBe(true);
      expect(statSync(out).blocks * 512).toBeLessThan(2 * 1024 * 1024);

      const second = image(join(directory, "two"), [[2 * 1024 * 1024, 100_000]]);
      await lsvd(backend, ["import", ...backend.cliArgs, join(directory, "two"), "--volume", uri]);
      await lsvd(backend, ["export", "--force", ...backend.cliArgs, "--volume", uri, out]);
      expect(readFileSync(out).equals(Buffer.concat([second, Buffer.alloc(volumeBytes - IMAGE_BYTES)]))).toBe(true);

      expect((await store.list(prefix)).filter((name) => name === prefix || name.startsWith(`${prefix}.`)).length).toBeGreaterThan(2);
      await lsvd(backend, ["rm", ...backend.cliArgs, uri]);
      expect((await store.list(prefix)).filter((name) => name === prefix || name.startsWith(`${prefix}.`))).toEqual([]);
      const after = JSON.parse((await lsvd(backend, ["ls", "--json", ...backend.cliArgs, backend.uri(prefix)])).stdout);
      expect(after.map((row: { name: string }) => row.name)).toEqual([`${prefix}x`]);
    }, TEST_TIMEOUT_MS);
  });
}
