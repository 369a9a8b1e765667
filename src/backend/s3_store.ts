// An ObjectStore in an S3 bucket. The interface is in object_store.ts; the URI s3://BUCKET/PREFIX opens one
// (backend_uri.ts). One S3 object per lsvd object, keyed by its name at the bucket root.
//
// An S3 PUT replaces an object atomically and is durable when acknowledged; reads after it see it (S3 and radosgw
// are read-after-write consistent). With a custom endpoint (radosgw, MinIO) requests are path-style
// (http://host:port/bucket/key) by default: a test gateway on 127.0.0.1 has no DNS name for bucket.host.
//
// Two ways to the service: reads and listings go through Bun's built-in S3Client; every request that changes an
// object (PUT, DELETE) and the versioned GET are SigV4-signed fetches of our own (s3_sigv4.ts), because S3Client can
// neither send If-Match / If-None-Match nor return an object's ETag with its bytes, and has no timeout: ours are
// aborted after S3_REQUEST_TIMEOUT_MS, which bounds how long RetryingStore waits for an abandoned attempt.
//
// Conditional operations (version = the object's ETag without quotes; radosgw and S3 give a single-part PUT the MD5 of
// its bytes, so equal bytes are one version, which is safe for compare-and-swap because the bytes are the whole
// state):
// - putIfAbsent = PUT with `If-None-Match: *`; putIfVersion = PUT with `If-Match: ETAG`; 412 is ConflictError.
// - What Debian 12's radosgw (Ceph 16.2.15) does, measured against test/ceph/up.sh's gateway (s3_store_test.ts):
//   `If-None-Match: *` on PUT is honoured, also by concurrent racers (exactly one 200, the rest 412).
//   `If-Match` on PUT is honoured only with the bare ETag: radosgw compares the header with the stored ETag, which
//   has no quotes, so the quoted form it returns in the ETag header (and that RFC 7232 prescribes) never matches and
//   every such PUT is refused with 412; it compares only the stored ETag's length of the header (a longer value that
//   starts with the ETag matches). An absent object fails If-Match (412). Concurrent If-Match racers from one ETag:
//   exactly one 200; a loser gets 412 or, when it lost inside radosgw between its check and its write (ECANCELED),
//   500 UnknownError, having written nothing.
//   So this store sends the bare ETag first; if a 412 comes back while a read shows the object still has exactly that
//   ETag, the endpoint wants the other form: the store switches to quoted and tries once more, and remembers.
// - An answer that does not say whether the write happened (5xx, 409, no answer, an aborted request) is resolved by
//   reading the object back: our bytes -> it landed (success, its version); unchanged (still absent / still at the
//   expected ETag) -> a transient IOError (nothing landed; a retry may go ahead); anything else -> ConflictError
//   (another writer got there; if ours landed first it was replaced, so it lost either way).
// - Not guaranteed: a conditional PUT that was aborted here may still reach radosgw later; it then lands only if its
//   condition still holds. Plain PUT and DELETE carry no condition: a late one lands whatever happened meanwhile
//   (which is why the names lsvd writes more than once go through the conditional operations).
//
// Errors: Bun reports S3Client failures as S3Error with a `code` but without the HTTP status; a 5xx or 429 without an
// XML body arrives as "UnknownError". Transient: network failures, throttling codes, 5xx codes, and UnknownError
// (real S3 and radosgw give 4xx errors an XML code, so an UnknownError is most likely a proxy's 5xx). Our own
// fetches see the status: 5xx and 429 are transient.

import { S3Client } from "bun";
import {
  BACKEND_LIST_NAMES_MAX,
  S3_CREATE_BUCKET_TIMEOUT_MS,
  S3_LIST_PAGE_KEYS,
  S3_REQUEST_TIMEOUT_MS,
  S3_REQUESTS_INFLIGHT_MAX,
} from "../constants.ts";
import { assert, ConflictError, InvalidArgumentError, IOError, NotFoundError } from "../errors.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";
import { sha256Hex, signRequest } from "./s3_sigv4.ts";
import { Semaphore } from "./semaphore.ts";

export interface S3StoreOptions {
  bucket: string;
  /** Default $AWS_ENDPOINT_URL; unset means AWS itself. */
  endpoint?: string;
  /** Default $AWS_REGION, else us-east-1. */
  region?: string;
  /** Default $AWS_ACCESS_KEY_ID. */
  accessKeyId?: string;
  /** Default $AWS_SECRET_ACCESS_KEY. */
  secretAccessKey?: string;
  /** Default $AWS_SESSION_TOKEN. */
  sessionToken?: string;
  /** bucket.host addressing instead of host/bucket; default false (path-style). */
  virtualHostedStyle?: boolean;
  /** Requests in flight; more wait. Default S3_REQUESTS_INFLIGHT_MAX. */
  inflightMax?: number;
  /** Our own requests (PUT, DELETE, versioned GET) are aborted after this long. Default S3_REQUEST_TIMEOUT_MS. */
  requestTimeoutMs?: number;
}

interface ResolvedS3Options {
  bucket: string;
  endpoint: string | undefined;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string | undefined;
  virtualHostedStyle: boolean;
}

// Codes worth retrying: the service is busy, overloaded or briefly broken, or the connection failed.
const TRANSIENT_CODES = new Set([
  "SlowDown",
  "ServiceUnavailable",
  "InternalError",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "Throttling",
  "ThrottlingException",
  "TooManyRequests",
  "RequestLimitExceeded",
  "BandwidthLimitExceeded",
  "UnknownError",
]);

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function isTransientCode(code: string | undefined): boolean {
  if (code === undefined) return true; // not an S3 answer at all: a network or runtime failure
  if (TRANSIENT_CODES.has(code)) return true;
  // ConnectionRefused, ConnectionClosed, ECONNRESET, ETIMEDOUT, Timeout, ...
  return /^E[A-Z]+$/.test(code) || /Connection|Timeout|TimedOut|Socket/i.test(code);
}

function resolveOptions(options: S3StoreOptions): ResolvedS3Options {
  const env = process.env;
  if (options.bucket === "") throw new InvalidArgumentError("Invalid S3 store: empty bucket name");
  const accessKeyId = options.accessKeyId ?? env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = options.secretAccessKey ?? env.AWS_SECRET_ACCESS_KEY;
  if (accessKeyId === undefined || accessKeyId === "" || secretAccessKey === undefined || secretAccessKey === "") {
    throw new InvalidArgumentError(
      `Cannot open s3://${options.bucket}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass keys)`,
    );
  }
  const endpoint = options.endpoint ?? (env.AWS_ENDPOINT_URL || undefined);
  if (endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new InvalidArgumentError(`Invalid S3 endpoint ${endpoint}: not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new InvalidArgumentError(`Invalid S3 endpoint ${endpoint}: not http:// or https://`);
    }
  }
  return {
    bucket: options.bucket,
    endpoint,
    region: options.region ?? (env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1"),
    accessKeyId,
    secretAccessKey,
    sessionToken: options.sessionToken ?? (env.AWS_SESSION_TOKEN || undefined),
    virtualHostedStyle: options.virtualHostedStyle ?? false,
  };
}

/** The URL of the bucket (key undefined) or of one object in it. */
function s3Url(resolved: ResolvedS3Options, key?: string): URL {
  const base = new URL(resolved.endpoint ?? `https://s3.${resolved.region}.amazonaws.com`);
  const path = key === undefined ? "" : `/${encodeURIComponent(key)}`;
  if (resolved.virtualHostedStyle) return new URL(`${base.protocol}//${resolved.bucket}.${base.host}${path || "/"}`);
  return new URL(`${base.origin}${base.pathname.replace(/\/$/, "")}/${encodeURIComponent(resolved.bucket)}${path}`);
}

/** One answer of the service to our own request: status, the error code of an XML error body, the ETag. */
interface S3Answer {
  status: number;
  code: string | undefined;
  /** Without quotes (and without a weak prefix): the form a version takes. */
  etag: string | undefined;
  body: Uint8Array;
}

function bareEtag(header: string | null): string | undefined {
  if (header === null || header === "") return undefined;
  return header.replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

type PutCondition = { absent: true } | { version: ObjectVersion };

export class S3Store implements ObjectStore {
  readonly description: string;
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly slots: Semaphore;
  private readonly resolved: ResolvedS3Options;
  private readonly requestTimeoutMs: number;
  /** If-Match carries the ETag bare (radosgw) until the endpoint shows it wants the quoted form (see the header). */
  private ifMatchQuoted = false;
  private closed = false;

  constructor(options: S3StoreOptions) {
    const resolved = resolveOptions(options);
    this.resolved = resolved;
    this.requestTimeoutMs = options.requestTimeoutMs ?? S3_REQUEST_TIMEOUT_MS;
    assert(this.requestTimeoutMs > 0, "S3 request timeout");
    this.bucket = resolved.bucket;
    this.description = `s3://${resolved.bucket}`;
    this.client = new S3Client({
      bucket: resolved.bucket,
      endpoint: resolved.endpoint,
      region: resolved.region,
      accessKeyId: resolved.accessKeyId,
      secretAccessKey: resolved.secretAccessKey,
      sessionToken: resolved.sessionToken,
      virtualHostedStyle: resolved.virtualHostedStyle,
      // Retries are RetryingStore's job, with one policy for every backend.
      retry: 0,
    });
    this.slots = new Semaphore(options.inflightMax ?? S3_REQUESTS_INFLIGHT_MAX);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    const answer = await this.request("PUT", name, "write", { body: data });
    if (answer.status !== 200) throw this.answerError("write", name, answer);
  }

  async get(name: string): Promise<Uint8Array> {
    this.checkOpen();
    checkObjectName(name);
    try {
      return new Uint8Array(await this.slots.run(() => this.client.file(name).arrayBuffer()));
    } catch (error) {
      throw this.objectError("read", name, error);
    }
  }

  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    this.checkOpen();
    checkObjectName(name);
    checkRange(name, offset, length);
    let data: Uint8Array;
    if (length === 0) {
      // An empty Range header is not valid HTTP; a stat answers the same question.
      data = new Uint8Array(0);
    } else {
      try {
        data = new Uint8Array(
          await this.slots.run(() => this.client.file(name).slice(offset, offset + length).arrayBuffer()),
        );
      } catch (error) {
        if (errorCode(error) === "InvalidRange") throw shortObjectError(name, offset, length, undefined);
        throw this.objectError("read", name, error);
      }
    }
    if (data.length < length || length === 0) {
      const stat = await this.stat(name);
      if (stat === null) throw new NotFoundError(`Cannot read object ${name}: not found in ${this.description}`);
      if (offset + length > stat.size) throw shortObjectError(name, offset, length, stat.size);
      if (data.length < length) {
        throw new IOError(`Cannot read object ${name} in ${this.description}: short read of ${data.length} bytes`, true);
      }
    }
    assert(data.length === length, `S3 ranged read of ${name} returned ${data.length} bytes, not ${length}`);
    return data;
  }

  async delete(name: string): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    const answer = await this.request("DELETE", name, "delete");
    // S3 answers 204 whether or not the key existed; some gateways say NoSuchKey instead.
    if (answer.status === 204 || answer.status === 200 || answer.code === "NoSuchKey") return;
    throw this.answerError("delete", name, answer);
  }

  async list(prefix: string): Promise<string[]> {
    this.checkOpen();
    checkListPrefix(prefix);
    const names: string[] = [];
    let continuationToken: string | undefined;
    const pagesMax = Math.ceil(BACKEND_LIST_NAMES_MAX / S3_LIST_PAGE_KEYS) + 1;
    for (let page = 0; page < pagesMax; page++) {
      let response;
      try {
        response = await this.slots.run(() =>
          this.client.list({ prefix, maxKeys: S3_LIST_PAGE_KEYS, ...(continuationToken ? { continuationToken } : {}) }),
        );
      } catch (error) {
        throw this.objectError("list", `${prefix}*`, error);
      }
      for (const entry of response.contents ?? []) {
        // A key with '/' is not one of ours (lsvd names have none); skip it rather than hand out an invalid name.
        if (entry.key.startsWith(prefix) && !entry.key.includes("/")) names.push(entry.key);
      }
      if (names.length > BACKEND_LIST_NAMES_MAX) {
        throw new IOError(`Cannot list ${this.description}: more than ${BACKEND_LIST_NAMES_MAX} objects named ${prefix}*`);
      }
      if (response.isTruncated !== true) return sortNames(names);
      continuationToken = response.nextContinuationToken;
      if (continuationToken === undefined || continuationToken === "") {
        throw new IOError(`Cannot list ${this.description}: truncated listing without a continuation token`, true);
      }
    }
    throw new IOError(`Cannot list ${this.description}: more than ${pagesMax} pages of objects named ${prefix}*`);
  }

  async getVersioned(name: string): Promise<VersionedObject | null> {
    this.checkOpen();
    checkObjectName(name);
    const answer = await this.request("GET", name, "read");
    if (answer.status === 404 && answer.code === "NoSuchKey") return null;
    if (answer.status !== 200) throw this.answerError("read", name, answer);
    if (answer.etag === undefined) {
      throw new IOError(`Cannot read object ${name} in ${this.description}: the answer has no ETag`);
    }
    return { data: answer.body, version: answer.etag };
  }

  async putIfAbsent(name: string, data: Uint8Array): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    return this.conditionalPut(name, data, { absent: true });
  }

  async putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    return this.conditionalPut(name, data, { version: expected });
  }

  /** PUT under a condition; see the header for what each answer means. */
  private async conditionalPut(name: string, data: Uint8Array, condition: PutCondition, formRetry = false): Promise<ObjectVersion> {
    const headers: Record<string, string> =
      "absent" in condition
        ? { "if-none-match": "*" }
        : { "if-match": this.ifMatchQuoted ? `"${condition.version}"` : condition.version };
    let answer: S3Answer;
    try {
      answer = await this.request("PUT", name, "write", { body: data, headers });
    } catch (error) {
      if (error instanceof IOError && error.transient) return this.resolveUnclearPut(name, data, condition, error);
      throw error;
    }
    if (answer.status === 200 && answer.etag !== undefined) return answer.etag;
    if (answer.status === 412) {
      if ("absent" in condition) throw new ConflictError(`Cannot create object ${name}: it exists in ${this.description}`);
      const current = await this.getVersioned(name);
      if (current?.version !== condition.version) {
        throw new ConflictError(
          `Cannot replace object ${name}: its version is ${current?.version ?? "absent"}, not ${condition.version}, in ${this.description}`,
        );
      }
      // Refused although the object has exactly this ETag: the endpoint wants the other form of If-Match.
      if (formRetry) {
        throw new IOError(`Cannot replace object ${name} in ${this.description}: the endpoint refuses If-Match with the object's own ETag, quoted or not`);
      }
      this.ifMatchQuoted = !this.ifMatchQuoted;
      return this.conditionalPut(name, data, condition, true);
    }
    const error = answer.status === 200 ? new IOError(`Cannot write object ${name} in ${this.description}: the answer has no ETag`, true) : this.answerError("write", name, answer);
    if (error.transient || answer.status === 409) return this.resolveUnclearPut(name, data, condition, error);
    throw error;
  }

  /**
   * A conditional PUT whose answer does not say whether it was applied: read the object back. Our bytes: it landed.
   * Unchanged: nothing landed, `error` (transient) stands. Anything else: another writer won.
   */
  private async resolveUnclearPut(name: string, data: Uint8Array, condition: PutCondition, error: IOError): Promise<ObjectVersion> {
    const current = await this.getVersioned(name);
    if (current !== null && sameBytes(current.data, data)) return current.version;
    const unchanged = "absent" in condition ? current === null : current?.version === condition.version;
    if (unchanged) throw new IOError(error.message, true, { cause: error });
    throw new ConflictError(`Cannot write object ${name} in ${this.description}: another writer changed it (${error.message})`, {
      cause: error,
    });
  }

  /**
   * One signed request of our own, aborted after requestTimeoutMs, holding a slot until its body is read. No answer
   * (refused, reset, aborted) is a transient IOError; any answer is returned for the caller to judge.
   */
  private async request(
    method: "GET" | "PUT" | "DELETE",
    name: string,
    verb: string,
    options: { body?: Uint8Array; headers?: Record<string, string> } = {},
  ): Promise<S3Answer> {
    const url = s3Url(this.resolved, name);
    try {
      return await this.slots.run(async () => {
        const headers = signRequest({
          method,
          url,
          headers: options.body === undefined ? options.headers : { "content-type": "application/octet-stream", ...options.headers },
          payloadSha256: sha256Hex(options.body ?? ""),
          region: this.resolved.region,
          service: "s3",
          accessKeyId: this.resolved.accessKeyId,
          secretAccessKey: this.resolved.secretAccessKey,
          sessionToken: this.resolved.sessionToken,
          now: new Date(),
        });
        const response = await fetch(url, {
          method,
          headers,
          body: options.body,
          signal: AbortSignal.timeout(this.requestTimeoutMs),
        });
        const body = new Uint8Array(await response.arrayBuffer());
        const code =
          response.ok || body.length === 0 ? undefined : /<Code>([^<]*)<\/Code>/.exec(new TextDecoder().decode(body.subarray(0, 4096)))?.[1];
        return { status: response.status, code, etag: bareEtag(response.headers.get("etag")), body };
      });
    } catch (error) {
      const reason = (error as Error)?.name === "TimeoutError" ? `no answer in ${this.requestTimeoutMs} ms` : ((error as Error)?.message ?? String(error));
      throw new IOError(`Cannot ${verb} object ${name} in ${this.description}: ${reason}`, true, { cause: error });
    }
  }

  /** An answer that is not a success, as an IOError naming the object, the status and the code. */
  private answerError(verb: string, name: string, answer: S3Answer): IOError {
    const transient = answer.status >= 500 || answer.status === 429 || (answer.code !== undefined && TRANSIENT_CODES.has(answer.code));
    const what = `HTTP ${answer.status}${answer.code !== undefined ? ` ${answer.code}` : ""}`;
    return new IOError(`Cannot ${verb} object ${name} in ${this.description}: ${what}`, transient);
  }

  async stat(name: string): Promise<ObjectStat | null> {
    this.checkOpen();
    checkObjectName(name);
    try {
      const stats = await this.slots.run(() => this.client.stat(name));
      return { size: stats.size };
    } catch (error) {
      if (errorCode(error) === "NoSuchKey" || errorCode(error) === "NotFound") return null;
      throw this.objectError("stat", name, error);
    }
  }

  async exists(name: string): Promise<boolean> {
    return (await this.stat(name)) !== null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Taking every slot means every request has settled. fetch keeps no other state of ours.
    for (let i = 0; i < this.slots.permits; i++) await this.slots.acquire();
  }

  private objectError(verb: string, name: string, error: unknown): Error {
    if (error instanceof IOError) return error;
    const code = errorCode(error);
    if (code === "NoSuchKey" && verb === "read") {
      return new NotFoundError(`Cannot read object ${name}: not found in ${this.description}`, { cause: error });
    }
    const message = (error as Error)?.message ?? String(error);
    // Bun puts radosgw's whole XML error document into the message; the code says it all.
    const reason = code === undefined ? message : message.startsWith("<") || message === "" ? code : `${code}: ${message}`;
    return new IOError(`Cannot ${verb} object ${name} in ${this.description}: ${reason}`, isTransientCode(code), {
      cause: error,
    });
  }

  private checkOpen(): void {
    assert(!this.closed, `${this.description} used after close`);
  }
}

/**
 * Creates the bucket (Bun's S3Client has no call for it) with a SigV4-signed PUT. Succeeds if we already own it.
 */
export async function createBucket(options: S3StoreOptions): Promise<void> {
  const resolved = resolveOptions(options);
  const url = s3Url(resolved);
  // Outside us-east-1 the region goes in the body; in us-east-1 a body naming it is an error.
  const body =
    resolved.region === "us-east-1"
      ? ""
      : `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>${resolved.region}</LocationConstraint></CreateBucketConfiguration>`;
  const headers = signRequest({
    method: "PUT",
    url,
    payloadSha256: sha256Hex(body),
    region: resolved.region,
    service: "s3",
    accessKeyId: resolved.accessKeyId,
    secretAccessKey: resolved.secretAccessKey,
    sessionToken: resolved.sessionToken,
    now: new Date(),
  });
  let response: Response;
  try {
    response = await fetch(url, {
      method: "PUT",
      headers,
      body: body === "" ? undefined : body,
      signal: AbortSignal.timeout(S3_CREATE_BUCKET_TIMEOUT_MS),
    });
  } catch (error) {
    throw new IOError(`Cannot create bucket ${resolved.bucket} at ${url.origin}: ${(error as Error).message}`, true, {
      cause: error,
    });
  }
  const text = await response.text();
  if (response.ok) return;
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  if (code === "BucketAlreadyOwnedByYou") return;
  const transient = response.status >= 500 || response.status === 429;
  throw new IOError(
    `Cannot create bucket ${resolved.bucket} at ${url.origin}: HTTP ${response.status}${code ? ` ${code}` : ""}`,
    transient,
  );
}
