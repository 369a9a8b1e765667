// An ObjectStore in an S3 bucket through Bun's built-in S3Client. The interface is in object_store.ts; the URI
// s3://BUCKET/PREFIX opens one (backend_uri.ts). One S3 object per lsvd object, keyed by its name at the bucket root.
//
// An S3 PUT replaces an object atomically and is durable when acknowledged; reads after it see it (S3 and radosgw
// are read-after-write consistent). With a custom endpoint (radosgw, MinIO) requests are path-style
// (http://host:port/bucket/key), which is Bun's default (virtualHostedStyle: false): a test gateway on 127.0.0.1
// has no DNS name for bucket.host.
//
// Errors: Bun reports S3 failures as S3Error with a `code` but without the HTTP status; a 5xx or 429 without an XML
// body arrives as "UnknownError". Transient: network failures, throttling codes, 5xx codes, and UnknownError (real
// S3 and radosgw give 4xx errors an XML code, so an UnknownError is most likely a proxy's 5xx).

import { S3Client } from "bun";
import { BACKEND_LIST_NAMES_MAX, S3_CREATE_BUCKET_TIMEOUT_MS, S3_LIST_PAGE_KEYS, S3_REQUESTS_INFLIGHT_MAX } from "../constants.ts";
import { assert, InvalidArgumentError, IOError, NotFoundError } from "../errors.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";
import { NotSupportedError } from "../errors.ts";
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

export class S3Store implements ObjectStore {
  readonly description: string;
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly slots: Semaphore;
  private closed = false;

  constructor(options: S3StoreOptions) {
    const resolved = resolveOptions(options);
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
    try {
      const written = await this.slots.run(() => this.client.write(name, data, { type: "application/octet-stream" }));
      if (written !== data.length) {
        throw new IOError(`Cannot write object ${name} in ${this.description}: wrote ${written} of ${data.length} bytes`, true);
      }
    } catch (error) {
      throw this.objectError("write", name, error);
    }
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
    try {
      await this.slots.run(() => this.client.delete(name));
    } catch (error) {
      if (errorCode(error) === "NoSuchKey") return;
      throw this.objectError("delete", name, error);
    }
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

  // TEMPORARY until the conditional operations land (issue 12, ownership): not callable yet.
  async getVersioned(name: string): Promise<VersionedObject | null> {
    throw new NotSupportedError(`getVersioned(${name}) is not built for ${this.description} yet`);
  }

  async putIfAbsent(name: string, _data: Uint8Array): Promise<ObjectVersion> {
    throw new NotSupportedError(`putIfAbsent(${name}) is not built for ${this.description} yet`);
  }

  async putIfVersion(name: string, _data: Uint8Array, _expected: ObjectVersion): Promise<ObjectVersion> {
    throw new NotSupportedError(`putIfVersion(${name}) is not built for ${this.description} yet`);
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
  const base = new URL(resolved.endpoint ?? `https://s3.${resolved.region}.amazonaws.com`);
  const url = resolved.virtualHostedStyle
    ? new URL(`${base.protocol}//${resolved.bucket}.${base.host}/`)
    : new URL(`${base.origin}${base.pathname.replace(/\/$/, "")}/${encodeURIComponent(resolved.bucket)}`);
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
