// The io_uring layer inside a `bun build --compile` binary, run from / so nothing resolves from the source tree.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let directory: string;
beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), "lsvd-uring-compiled-"));
});
afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

test("a compiled binary writes and reads back through io_uring", () => {
  const binary = join(directory, "compiled_uring");
  const build = Bun.spawnSync([process.execPath, "build", "--compile", join(import.meta.dir, "compiled_uring_main.ts"), "--outfile", binary], {
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(build.exitCode, build.stderr.toString()).toBe(0);
  const run = Bun.spawnSync([binary, join(directory, "cache.img")], { cwd: "/", stdout: "pipe", stderr: "pipe" });
  expect(run.stderr.toString()).toBe("");
  expect(run.stdout.toString().trim()).toBe("ok");
  expect(run.exitCode).toBe(0);
}, 60_000);
