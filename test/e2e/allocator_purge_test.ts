// `lsvd serve` (the built binary) runs with the allocator's purge off unless the operator chose a value
// (docs/operations.md, "Memory and the allocator's purge"): it re-executes itself as the same process, with the
// same arguments, and serves as usual.
import { afterAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume } from "./_harness.ts";

afterAll(cleanupAll);

function procStrings(pid: number, file: "environ" | "cmdline"): string[] {
  return readFileSync(`/proc/${pid}/${file}`, "utf8").split("\0").slice(0, -1);
}

function environWithout(name: string): Record<string, string> {
  const env = { ...TOOL_ENV };
  delete env[name];
  return env;
}

test("serve without MIMALLOC_PURGE_DELAY re-executes itself with -1: same pid, same arguments, serves and stops cleanly", async () => {
  const paths = await createVolume("allocator-purge", { size: "64m", cacheSize: "64m" });
  const server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, env: environWithout("MIMALLOC_PURGE_DELAY") });
  try {
    const pid = server.process.pid; // the child Bun spawned: execve keeps it
    expect(procStrings(pid, "environ")).toContain("MIMALLOC_PURGE_DELAY=-1");
    expect(procStrings(pid, "cmdline").slice(1, 4)).toEqual(["serve", "--volume", paths.volume]);
    expect(server.log.match(/serving on /g)?.length).toBe(1);
    expect(server.log).not.toContain("default purge");
  } finally {
    const stopped = await server.stop();
    expect(stopped.exitCode).toBe(0);
  }
});

test("serve keeps an operator's MIMALLOC_PURGE_DELAY as it is", async () => {
  const paths = await createVolume("allocator-purge-set", { size: "64m", cacheSize: "64m" });
  const server = await LsvdServer.start({ volume: paths.volume, cache: paths.cache, transport: "unix", dir: paths.dir, env: { ...TOOL_ENV, MIMALLOC_PURGE_DELAY: "10" } });
  try {
    const environ = procStrings(server.process.pid, "environ");
    expect(environ).toContain("MIMALLOC_PURGE_DELAY=10");
    expect(environ).not.toContain("MIMALLOC_PURGE_DELAY=-1");
  } finally {
    expect((await server.stop()).exitCode).toBe(0);
  }
});
