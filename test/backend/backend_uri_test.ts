// backend_uri.ts: which URIs parse to which store, and that malformed ones say why. (Opening rados:// and s3:// is
// tested against the real cluster in rados_store_test.ts and s3_store_test.ts.)
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describeBackendUri, openBackend, parseBackendUri } from "../../src/backend/backend_uri.ts";
import { FileStore } from "../../src/backend/file_store.ts";
import { InvalidArgumentError, NotFoundError } from "../../src/errors.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "lsvd-backend-uri-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe("parseBackendUri", () => {
  test("file paths and file:// URLs", () => {
    expect(parseBackendUri("/var/lsvd/vol")).toEqual({
      scheme: "file",
      location: "/var/lsvd",
      prefix: "vol",
      uri: "file:///var/lsvd/vol",
    });
    expect(parseBackendUri("file:///var/lsvd/vol")).toEqual(parseBackendUri("/var/lsvd/vol"));
    expect(parseBackendUri("file:///my%20dir/vol").location).toBe("/my dir");
    expect(parseBackendUri("./vol").location).toBe(process.cwd());
  });

  test("rados:// and s3://", () => {
    expect(parseBackendUri("rados://rbd/obj")).toEqual({ scheme: "rados", location: "rbd", prefix: "obj", uri: "rados://rbd/obj" });
    expect(parseBackendUri("s3://my-bucket/disk1")).toEqual({
      scheme: "s3",
      location: "my-bucket",
      prefix: "disk1",
      uri: "s3://my-bucket/disk1",
    });
    expect(parseBackendUri("RADOS://Pool_1/obj").location).toBe("Pool_1");
  });

  test("a path without a scheme is a file volume, relative to the working directory", () => {
    const parsed = parseBackendUri("b/vol");
    expect(parsed.scheme).toBe("file");
    expect(parsed.prefix).toBe("vol");
    expect(parsed.location).toBe(`${process.cwd()}/b`);
  });

  test("malformed URIs are InvalidArgumentError saying what is wrong", () => {
    const cases: Array<[string, string]> = [
      ["", "empty"],
      ["rados://pool/", "empty prefix"],
      ["rados://pool", "empty prefix"],
      ["s3://bucket/a/b", "contains '/'"],
      ["rados:///obj", "empty pool"],
      ["s3:///obj", "empty bucket"],
      ["http://host/obj", "unknown scheme"],
      ["://pool/vol", "no scheme"],
      ["/var/lsvd/", "empty prefix"],
      ["/var/lsvd/.hidden", "starts with '.'"],
      ["s3://b/" + "x".repeat(195), "prefix longer"],
      ["file://otherhost/dir/obj", "host"],
    ];
    for (const [uri, reason] of cases) {
      let caught: unknown;
      try {
        parseBackendUri(uri);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(InvalidArgumentError);
      expect((caught as Error).message).toContain(reason);
    }
  });

  test("describeBackendUri names the kind of store", () => {
    expect(describeBackendUri("rados://rbd/obj")).toBe("rados://rbd/obj (RADOS pool rbd, prefix obj)");
  });
});

describe("openBackend", () => {
  test("a file path opens a FileStore rooted at its directory", async () => {
    for (const uri of [path.join(root, "vol"), `file://${root}/vol`]) {
      const { store, prefix, uri: canonical } = await openBackend(uri);
      expect(store).toBeInstanceOf(FileStore);
      expect(prefix).toBe("vol");
      expect(canonical).toBe(`file://${root}/vol`);
      await store.put(`${prefix}.00000001`, new Uint8Array([1]));
      expect(fs.existsSync(path.join(root, "vol.00000001"))).toBe(true);
      await store.close();
    }
  });

  test("a directory that does not exist is NotFoundError", async () => {
    await expect(openBackend(path.join(root, "missing", "vol"))).rejects.toBeInstanceOf(NotFoundError);
  });
});
