// S3Store (src/backend/s3_store.ts) against radosgw of a real single-node Ceph started by test/ceph/up.sh: the
// ObjectStore contract (1100 objects cross a 1000-key listing page), bucket creation, and which failures are
// transient.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { openBackend } from "../../src/backend/backend_uri.ts";
import { createBucket, S3Store, type S3StoreOptions } from "../../src/backend/s3_store.ts";
import { InvalidArgumentError, IOError } from "../../src/errors.ts";
import { type CephEnv, cephUp } from "./_ceph.ts";
import { objectStoreContract, pattern } from "./object_store_contract.ts";

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

function options(overrides: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    bucket: env.LSVD_S3_BUCKET!,
    endpoint: env.AWS_ENDPOINT_URL,
    region: env.AWS_REGION,
    accessKeyId: env.AWS_ACCESS_KEY_ID,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
    ...overrides,
  };
}

objectStoreContract("S3Store", async () => new S3Store(options()), { manyObjects: 1100 });

async function failure(promise: Promise<unknown>): Promise<IOError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(IOError);
    return error as IOError;
  }
  throw new Error("expected a failure");
}

describe("S3Store specifics", () => {
  const bucket = `lsvd-test-${Date.now().toString(36)}`;

  afterAll(async () => {
    const store = new S3Store(options({ bucket }));
    for (const name of await store.list("")) await store.delete(name);
    await store.close();
  });

  test("createBucket makes a usable bucket and is idempotent", async () => {
    await createBucket(options({ bucket }));
    await createBucket(options({ bucket }));
    const store = new S3Store(options({ bucket }));
    await store.put("obj", pattern(1000, 1));
    expect(await store.get("obj")).toEqual(pattern(1000, 1));
    expect(await store.exists("obj")).toBe(true);
    expect(await store.exists("other")).toBe(false);
    await store.close();
  });

  test("a wrong secret key is a permanent IOError naming the object", async () => {
    const store = new S3Store(options({ secretAccessKey: "wrong" }));
    const error = await failure(store.put("obj.1", pattern(10, 1)));
    expect(error.transient).toBe(false);
    expect(error.message).toContain("obj.1");
    expect(error.message).toContain("SignatureDoesNotMatch");
  });

  test("a bucket that does not exist is a permanent IOError", async () => {
    const store = new S3Store(options({ bucket: "no-such-bucket-lsvd" }));
    const error = await failure(store.put("obj.1", pattern(10, 1)));
    expect(error.transient).toBe(false);
    expect(error.message).toContain("NoSuchBucket");
  });

  test("nothing listening is a transient IOError", async () => {
    // Bind and release a port so that nothing listens on it.
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const port = server.port;
    server.stop(true);
    const store = new S3Store(options({ endpoint: `http://127.0.0.1:${port}` }));
    expect((await failure(store.get("obj.1"))).transient).toBe(true);
    expect((await failure(store.put("obj.1", pattern(10, 1)))).transient).toBe(true);
  });

  test("5xx, 429 and SlowDown answers are transient; AccessDenied is not", async () => {
    // A stand-in gateway on loopback that answers every request with a chosen status and body.
    let status = 503;
    let body = "";
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(body, { status }) });
    try {
      const store = new S3Store(options({ endpoint: `http://127.0.0.1:${server.port}` }));
      for (const [code, text] of [
        [503, ""],
        [500, ""],
        [429, ""],
        [503, "<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"],
        [500, "<Error><Code>InternalError</Code><Message>oops</Message></Error>"],
      ] as const) {
        status = code;
        body = text;
        expect((await failure(store.put("obj.1", pattern(10, 1)))).transient).toBe(true);
        expect((await failure(store.stat("obj.1"))).transient).toBe(true);
      }
      status = 403;
      body = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>";
      const denied = await failure(store.put("obj.1", pattern(10, 1)));
      expect(denied.transient).toBe(false);
      expect(denied.message).toContain("AccessDenied");
    } finally {
      server.stop(true);
    }
  });

  test("missing credentials are InvalidArgumentError", () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      expect(() => new S3Store({ bucket: "b", endpoint: env.AWS_ENDPOINT_URL })).toThrow(InvalidArgumentError);
    } finally {
      if (saved.id !== undefined) process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret !== undefined) process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });

  test("openBackend(s3://BUCKET/PREFIX) opens a store on the bucket", async () => {
    const { store, prefix, uri } = await openBackend(`s3://${env.LSVD_S3_BUCKET}/vol1`, {
      s3Endpoint: env.AWS_ENDPOINT_URL,
      s3Region: env.AWS_REGION,
      s3AccessKey: env.AWS_ACCESS_KEY_ID,
      s3SecretKey: env.AWS_SECRET_ACCESS_KEY,
    });
    try {
      expect(prefix).toBe("vol1");
      expect(uri).toBe(`s3://${env.LSVD_S3_BUCKET}/vol1`);
      await store.put("vol1.00000001", pattern(10, 2));
      expect(await store.list("vol1")).toContain("vol1.00000001");
      await store.delete("vol1.00000001");
    } finally {
      await store.close();
    }
  });
});
