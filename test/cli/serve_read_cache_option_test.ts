// `lsvd serve`'s read-cache choice (src/cli/commands/serve.ts, readCacheOption): on by default for rados:// and s3://,
// off for the file backend (bench/RESULTS.md, "Read cache keyed by object"); the flags override; both are refused.

import { describe, expect, test } from "bun:test";
import { readCacheOption } from "../../src/cli/commands/serve.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

const parsed = (values: Record<string, boolean>) => ({ values, positionals: [] });

describe("serve read-cache option", () => {
  test("on by default for rados:// and s3://, off for the file backend; the flags override", () => {
    expect(readCacheOption(parsed({}), "rados://pool/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "RADOS://pool/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "s3://bucket/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "/var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({}), "file:///var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({}), "/var/lib/rados://x")).toBe(false);
    expect(readCacheOption(parsed({ "no-read-cache": true }), "rados://pool/vol")).toBe(false);
    expect(readCacheOption(parsed({ "no-read-cache": true }), "s3://bucket/vol")).toBe(false);
    expect(readCacheOption(parsed({ "read-cache": true }), "/var/lib/lsvd/vol")).toBe(true);
    expect(readCacheOption(parsed({ "read-cache": true }), "rados://pool/vol")).toBe(true);
  });

  test("both flags together are refused", () => {
    expect(() => readCacheOption(parsed({ "read-cache": true, "no-read-cache": true }), "s3://bucket/vol")).toThrow(InvalidArgumentError);
  });
});
