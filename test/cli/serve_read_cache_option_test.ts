// `lsvd serve`'s read-cache choice (src/cli/commands/serve.ts, readCacheOption): on by default for rados:// and s3://
// volumes, off for a file backend, either flag overrides the default, and both together are refused.

import { describe, expect, test } from "bun:test";
import { readCacheOption } from "../../src/cli/commands/serve.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

const parsed = (values: Record<string, boolean>) => ({ values, positionals: [] });

describe("serve read-cache option", () => {
  test("defaults follow the backend; the flags override", () => {
    expect(readCacheOption(parsed({}), "rados://pool/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "s3://bucket/vol")).toBe(true);
    expect(readCacheOption(parsed({}), "/var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({}), "file:///var/lib/lsvd/vol")).toBe(false);
    expect(readCacheOption(parsed({ "no-read-cache": true }), "rados://pool/vol")).toBe(false);
    expect(readCacheOption(parsed({ "read-cache": true }), "/var/lib/lsvd/vol")).toBe(true);
  });

  test("both flags together are refused", () => {
    expect(() => readCacheOption(parsed({ "read-cache": true, "no-read-cache": true }), "s3://bucket/vol")).toThrow(InvalidArgumentError);
  });
});
