// Backend URIs: where a volume's objects live, and the store that reaches them. A volume is a prefix in a store;
// its superblock is the object named by the prefix and every other object is `<prefix>.%08x`
// (docs/format.md, "Object names").
//
//   /dir/obj, ./dir/obj, file:///dir/obj    FileStore rooted at /dir (must exist), prefix "obj"
//   rados://POOL/PREFIX                     RadosStore on pool POOL (ceph.conf from options or $CEPH_CONF)
//   s3://BUCKET/PREFIX                      S3Store on bucket BUCKET (endpoint and keys from options or AWS_*)
//
// A prefix is one object name (no '/', no leading '.', short enough for the ".%08x" suffix): a malformed URI is an
// InvalidArgumentError that says what is wrong with it.

import { statSync } from "node:fs";
import * as path from "node:path";
import { OBJECT_NAME_BYTES_MAX } from "../constants.ts";
import { InvalidArgumentError } from "../errors.ts";
import { checkObjectName } from "./_object_name.ts";
import { FileStore } from "./file_store.ts";
import type { ObjectStore } from "./object_store.ts";
import { RadosStore } from "./rados_store.ts";
import { S3Store } from "./s3_store.ts";

export interface BackendOptions {
  cephConf?: string;
  cephKeyring?: string;
  cephClient?: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3AccessKey?: string;
  s3SecretKey?: string;
}

export type BackendScheme = "file" | "rados" | "s3";

export interface ParsedBackendUri {
  scheme: BackendScheme;
  /** The directory (absolute), pool or bucket. */
  location: string;
  prefix: string;
  /** Canonical form: file:///dir/obj, rados://pool/obj, s3://bucket/obj. */
  uri: string;
}

/** ".%08x": the suffix the longest object name adds to the prefix. */
const SEQUENCE_SUFFIX_BYTES = 9;

function malformed(uri: string, reason: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `Invalid backend URI ${JSON.stringify(uri)}: ${reason} (expected /dir/PREFIX, file:///dir/PREFIX, rados://POOL/PREFIX or s3://BUCKET/PREFIX)`,
  );
}

function checkPrefix(uri: string, prefix: string): void {
  if (prefix === "") throw malformed(uri, "empty prefix");
  if (prefix.includes("/")) throw malformed(uri, `prefix ${prefix} contains '/'`);
  try {
    checkObjectName(prefix);
  } catch (error) {
    throw malformed(uri, (error as Error).message);
  }
  if (new TextEncoder().encode(prefix).length + SEQUENCE_SUFFIX_BYTES > OBJECT_NAME_BYTES_MAX) {
    throw malformed(uri, `prefix longer than ${OBJECT_NAME_BYTES_MAX - SEQUENCE_SUFFIX_BYTES} bytes`);
  }
}

/** Parses without touching any store. */
export function parseBackendUri(uri: string): ParsedBackendUri {
  if (uri === "") throw malformed(uri, "empty");
  let filePath: string | undefined;
  // Anything without a scheme is a path, relative ones against the working directory, as every CLI tool does.
  if (!uri.includes("://")) {
    filePath = path.resolve(uri);
  } else if (uri.startsWith("file://")) {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      throw malformed(uri, "not a valid file URL");
    }
    if (url.host !== "" && url.host !== "localhost") throw malformed(uri, `file URL names host ${url.host}`);
    if (url.search !== "" || url.hash !== "") throw malformed(uri, "file URL has a query or fragment");
    filePath = decodeURIComponent(url.pathname);
  }
  if (filePath !== undefined) {
    if (uri.endsWith("/")) throw malformed(uri, "empty prefix");
    const prefix = path.basename(filePath);
    checkPrefix(uri, prefix);
    const directory = path.dirname(filePath);
    return { scheme: "file", location: directory, prefix, uri: `file://${filePath}` };
  }
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/]*)(?:\/(.*))?$/.exec(uri);
  if (match === null) throw malformed(uri, "no scheme");
  const scheme = match[1]!.toLowerCase();
  const location = match[2]!;
  const prefix = match[3] ?? "";
  if (scheme !== "rados" && scheme !== "s3") throw malformed(uri, `unknown scheme ${scheme}://`);
  if (location === "") throw malformed(uri, scheme === "rados" ? "empty pool name" : "empty bucket name");
  if (/[?#@:\s]/.test(location)) throw malformed(uri, `bad ${scheme === "rados" ? "pool" : "bucket"} name ${location}`);
  checkPrefix(uri, prefix);
  return { scheme, location, prefix, uri: `${scheme}://${location}/${prefix}` };
}

/** "file:///var/lsvd/vol (directory /var/lsvd, prefix vol)": for messages and `lsvd info`. */
export function describeBackendUri(uri: string): string {
  const parsed = parseBackendUri(uri);
  const where = { file: "directory", rados: "RADOS pool", s3: "S3 bucket" }[parsed.scheme];
  return `${parsed.uri} (${where} ${parsed.location}, prefix ${parsed.prefix})`;
}

/** Opens the store a URI names. The caller owns the store and must close() it. */
export async function openBackend(
  uri: string,
  options: BackendOptions & { createDirectory?: boolean } = {},
): Promise<{ store: ObjectStore; prefix: string; uri: string }> {
  const parsed = parseBackendUri(uri);
  const store = await openStore(parsed.scheme, parsed.location, options);
  return { store, prefix: parsed.prefix, uri: parsed.uri };
}

/**
 * A place that holds volumes (`lsvd ls`): a directory (/dir, file:///dir), a pool (rados://POOL) or a bucket
 * (s3://BUCKET), optionally followed by the start of the names wanted (/dir/vm-, rados://POOL/vm-; for a path, only
 * when it is not a directory). The caller owns the store.
 */
export async function openBackendLocation(
  uri: string,
  options: BackendOptions = {},
): Promise<{ store: ObjectStore; namePrefix: string; uriOf(name: string): string }> {
  if (uri === "") throw malformed(uri, "empty");
  if (!uri.includes("://") || uri.startsWith("file://")) {
    let filePath = uri.startsWith("file://") ? decodeURIComponent(new URL(uri).pathname) : path.resolve(uri);
    let namePrefix = "";
    if (!uri.endsWith("/") && !isDirectory(filePath)) {
      namePrefix = path.basename(filePath);
      filePath = path.dirname(filePath);
    }
    const store = await openStore("file", filePath, options);
    return { store, namePrefix, uriOf: (name) => `file://${path.join(filePath, name)}` };
  }
  const match = /^(rados|s3):\/\/([^/?#@:\s]+)(?:\/(.*))?$/i.exec(uri);
  if (match === null) throw malformed(uri, "expected a directory, rados://POOL[/NAME-START] or s3://BUCKET[/NAME-START]");
  const scheme = match[1]!.toLowerCase() as BackendScheme;
  const location = match[2]!;
  const store = await openStore(scheme, location, options);
  return { store, namePrefix: match[3] ?? "", uriOf: (name) => `${scheme}://${location}/${name}` };
}

function isDirectory(filePath: string): boolean {
  try {
    return statSync(filePath).isDirectory();
  } catch {
    return false;
  }
}

async function openStore(scheme: BackendScheme, location: string, options: BackendOptions & { createDirectory?: boolean }): Promise<ObjectStore> {
  let store: ObjectStore;
  const parsed = { location };
  switch (scheme) {
    case "file":
      store = await FileStore.open(parsed.location, { create: options.createDirectory === true });
      break;
    case "rados":
      store = await RadosStore.open({
        pool: parsed.location,
        confPath: options.cephConf,
        keyringPath: options.cephKeyring,
        clientName: options.cephClient,
      });
      break;
    case "s3":
      store = new S3Store({
        bucket: parsed.location,
        endpoint: options.s3Endpoint,
        region: options.s3Region,
        accessKeyId: options.s3AccessKey,
        secretAccessKey: options.s3SecretKey,
      });
      break;
  }
  return store;
}
