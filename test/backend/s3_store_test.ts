// S3Store (src/backend/s3_store.ts) against radosgw of a real single-node Ceph started by test/ceph/up.sh: the
// ObjectStore contract (1100 objects cross a 1000-key listing page), bucket creation, which failures are
// transient, what radosgw does with If-None-Match / If-Match on PUT (raw signed requests: the facts the store's
// header states), and how the store reads an unclear answer to a conditional PUT (a stand-in gateway on loopback
// that answers as told, since radosgw cannot be made to lose a reply on demand).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { openBackend } from "../../src/backend/backend_uri.ts";
import { createBucket, S3Store, type S3StoreOptions } from "../../src/backend/s3_store.ts";
import { sha256Hex, signRequest } from "../../src/backend/s3_sigv4.ts";
import { ConflictError, InvalidArgumentError, IOError } from "../../src/errors.ts";
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

/** A raw signed request to the test gateway: what radosgw itself answers, without S3Store in between. */
async function rawRequest(method: string, key: string, body?: Uint8Array, headers: Record<string, string> = {}) {
  const url = new URL(`${env.AWS_ENDPOINT_URL}/${env.LSVD_S3_BUCKET}/${key}`);
  const signed = signRequest({
    method,
    url,
    headers,
    payloadSha256: sha256Hex(body ?? ""),
    region: env.AWS_REGION!,
    service: "s3",
    accessKeyId: env.AWS_ACCESS_KEY_ID!,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY!,
    now: new Date(),
  });
  const response = await fetch(url, { method, headers: signed, body, signal: AbortSignal.timeout(30_000) });
  await response.arrayBuffer();
  return { status: response.status, etag: response.headers.get("etag") };
}

describe("radosgw (Debian 12, Ceph 16.2) and conditional PUT", () => {
  const key = `cond-${Date.now().toString(36)}`;
  afterAll(async () => {
    await rawRequest("DELETE", key);
  });

  test("If-None-Match: * creates only an absent object (412 otherwise)", async () => {
    expect((await rawRequest("PUT", key, pattern(10, 1), { "if-none-match": "*" })).status).toBe(200);
    expect((await rawRequest("PUT", key, pattern(10, 2), { "if-none-match": "*" })).status).toBe(412);
  });

  test("If-Match matches the bare ETag only: the quoted form it returns is always refused", async () => {
    const { etag } = await rawRequest("GET", key);
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    // RFC 7232's form, exactly as the gateway sent it: refused although it is the object's ETag.
    expect((await rawRequest("PUT", key, pattern(10, 3), { "if-match": etag! })).status).toBe(412);
    const bare = etag!.slice(1, -1);
    expect((await rawRequest("PUT", key, pattern(10, 3), { "if-match": bare })).status).toBe(200);
    // Now stale.
    expect((await rawRequest("PUT", key, pattern(10, 4), { "if-match": bare })).status).toBe(412);
    // And an absent object never matches.
    expect((await rawRequest("PUT", `${key}-absent`, pattern(10, 4), { "if-match": bare })).status).toBe(412);
  });

  test("the ETag is the MD5 of the bytes: equal bytes, equal version", async () => {
    const store = new S3Store(options());
    try {
      const first = await store.putIfAbsent(`${key}-md5`, pattern(1000, 5));
      await store.put(`${key}-md5`, pattern(1000, 5));
      expect((await store.getVersioned(`${key}-md5`))!.version).toBe(first);
      expect(first).toBe(new Bun.CryptoHasher("md5").update(pattern(1000, 5)).digest("hex"));
    } finally {
      await store.delete(`${key}-md5`);
      await store.close();
    }
  });
});

const OTHER_BYTES = new TextEncoder().encode("another writer");

/**
 * A stand-in S3 gateway on loopback holding objects in memory, for answers radosgw cannot be made to give: it
 * honours If-Match only in the quoted form (as RFC 7232 writes it), and can lose the answer to the next PUT (a 500
 * after applying it, before, or after another client's write won).
 */
function standInGateway() {
  const objects = new Map<string, Uint8Array>();
  const state = {
    ifMatchSeen: [] as string[],
    nextPut: "normal" as "normal" | "500-after-apply" | "500-before-apply" | "500-other-wins",
  };
  const etagOf = (data: Uint8Array) => new Bun.CryptoHasher("md5").update(data).digest("hex");
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const key = new URL(request.url).pathname;
      const current = objects.get(key);
      if (request.method === "GET") {
        if (current === undefined) return new Response("<Error><Code>NoSuchKey</Code></Error>", { status: 404 });
        return new Response(current, { headers: { etag: `"${etagOf(current)}"` } });
      }
      if (request.method !== "PUT") return new Response("", { status: 405 });
      const body = new Uint8Array(await request.arrayBuffer());
      const ifMatch = request.headers.get("if-match");
      if (ifMatch !== null) state.ifMatchSeen.push(ifMatch);
      const failed = (status: number) => new Response("<Error><Code>PreconditionFailed</Code></Error>", { status });
      if (request.headers.get("if-none-match") === "*" && current !== undefined) return failed(412);
      if (ifMatch !== null && (current === undefined || ifMatch !== `"${etagOf(current)}"`)) return failed(412);
      const mode = state.nextPut;
      state.nextPut = "normal";
      if (mode === "500-before-apply") return new Response("", { status: 500 });
      // Another client's write got there first (what radosgw's ECANCELED 500 means).
      if (mode === "500-other-wins") {
        objects.set(key, OTHER_BYTES);
        return new Response("", { status: 500 });
      }
      objects.set(key, body);
      if (mode === "500-after-apply") return new Response("", { status: 500 });
      return new Response("", { headers: { etag: `"${etagOf(body)}"` } });
    },
  });
  return { server, objects, state };
}

describe("S3Store conditional PUT: forms and unclear answers (stand-in gateway)", () => {
  test("an endpoint that wants the quoted If-Match: the store switches once and remembers", async () => {
    const gateway = standInGateway();
    try {
      const store = new S3Store(options({ endpoint: `http://127.0.0.1:${gateway.server.port}` }));
      const v1 = await store.putIfAbsent("obj", pattern(10, 1));
      const v2 = await store.putIfVersion("obj", pattern(10, 2), v1);
      expect(await store.getVersioned("obj")).toEqual({ data: pattern(10, 2), version: v2 });
      // Bare first (radosgw's form), refused, then quoted; the next call starts quoted.
      expect(gateway.state.ifMatchSeen).toEqual([v1, `"${v1}"`]);
      await store.putIfVersion("obj", pattern(10, 3), v2);
      expect(gateway.state.ifMatchSeen).toEqual([v1, `"${v1}"`, `"${v2}"`]);
      // A real conflict is still a conflict, in either form.
      await expect(store.putIfVersion("obj", pattern(10, 4), v1)).rejects.toBeInstanceOf(ConflictError);
    } finally {
      gateway.server.stop(true);
    }
  });

  test("a 500 answer is read back: our bytes landed -> success; unchanged -> transient IOError; another's -> Conflict", async () => {
    const gateway = standInGateway();
    try {
      const store = new S3Store(options({ endpoint: `http://127.0.0.1:${gateway.server.port}` }));
      gateway.state.nextPut = "500-after-apply";
      const v1 = await store.putIfAbsent("obj", pattern(10, 1));
      expect(await store.getVersioned("obj")).toEqual({ data: pattern(10, 1), version: v1 });

      gateway.state.nextPut = "500-before-apply";
      const unchanged = await failure(store.putIfVersion("obj", pattern(10, 2), v1));
      expect(unchanged).not.toBeInstanceOf(ConflictError);
      expect(unchanged.transient).toBe(true);
      expect(await store.get("obj")).toEqual(pattern(10, 1));

      gateway.state.nextPut = "500-other-wins";
      const lost = await store.putIfVersion("obj", pattern(10, 2), v1).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(lost).toBeInstanceOf(ConflictError);
      expect(await store.get("obj")).toEqual(OTHER_BYTES);
    } finally {
      gateway.server.stop(true);
    }
  });
});
