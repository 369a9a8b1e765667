// `lsvd serve`'s read-cache choice (src/cli/commands/serve.ts, readCacheOption): off by default for every backend
// (until filling it costs cold reads nothing: bench/RESULTS.md), --read-cache turns it on, both flags are refused.

import { describe, expect, test } from "bun:test";
import { readCacheOption } from "../../src/cli/commands/serve.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

const parsed = (values: Record<string, boolean>) => ({ values, positionals: [] });

describe("serve read-cache option", () => {
  test("off by default on every backend; the flags override", () => {
    expect(readCacheOption(parsed({}), "rados://pool/vol")).toBe(false);
    expect(readCacheOption(parsed({}), "s3://bucket/vol")).toBe(false);
    expect(readCacheOption(parsed({ "read-cache": true }), "rados://pool/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "/var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({}), "file:///var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({ "no-read-cache": true }), "rados://pool/vol")).toBe(false);
    expect(readCacheOption(parsed({ "read-cache": true }), "/var/lib/lsvd/vol")).toBe(true);
  });

  test("both flags together are refused", () => {
    expect(() => readCacheOption(parsed({ "read-cache": true, "no-read-cache": true }), "s3://bucket/vol")).toThrow(InvalidArgumentError);
  });
});
