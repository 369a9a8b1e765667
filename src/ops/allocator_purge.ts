// The allocator's purge for long-running servers (docs/operations.md, "Memory and the allocator's purge").
//
// The runtime's allocator (mimalloc, inside the lsvd binary) hands freed memory back to the kernel 10 ms after it
// goes idle, and the JavaScript heap frees and takes 16 KiB blocks all the time under load, so a server pays a page
// fault for every page of every block it takes again. With MIMALLOC_PURGE_DELAY=-1 freed memory is kept for reuse:
// 0.83x server CPU per 4 KiB write and 0.92x per 64 KiB write, for 11-23 MiB more peak RSS (bench/RESULTS.md,
// stop 17). mimalloc reads its options from the environment once, when the process starts, before any JavaScript
// runs, so a server whose environment lacks the variable re-executes itself (execve: the same pid, arguments and
// descriptors) with it added. A value the operator set, whatever it is, is kept as it is. Sockets the service
// manager passed (LISTEN_FDS, ops/systemd.ts) may be marked close-on-exec; they are kept across the execve.

import { readFileSync } from "node:fs";
import { execSelf, keepAcrossExec } from "../../ffi/libc.ts";
import { parseListenFds } from "./systemd.ts";

export const PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY";
/** Never purge: freed memory stays with the allocator for reuse. */
export const SERVING_PURGE_DELAY = "-1";

/**
 * The environment ("NAME=value" strings, as /proc/self/environ holds them) to re-execute with, or null to run on
 * as this process is (pure): when the variable is set already, by the operator or by an earlier re-execution.
 */
export function servingEnvironment(environ: string[]): string[] | null {
  const prefix = `${PURGE_DELAY_VARIABLE}=`;
  if (environ.some((entry) => entry.startsWith(prefix))) return null;
  return [...environ, prefix + SERVING_PURGE_DELAY];
}

/**
 * A NUL-separated /proc file (cmdline, environ) as strings, or null when one is not valid UTF-8 (it could not be
 * passed on unchanged).
 */
export function nulSeparatedStrings(bytes: Uint8Array): string[] | null {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const strings: string[] = [];
  let start = 0;
  for (let at = 0; at < bytes.length; at++) {
    if (bytes[at] !== 0) continue;
    try {
      strings.push(decoder.decode(bytes.subarray(start, at)));
    } catch {
      return null;
    }
    start = at + 1;
  }
  return strings;
}

/**
 * Re-executes this process with the serving purge delay when its environment lacks it; does not return then.
 * Returns null when the process already runs with it (or the operator's own value), and a note saying why not
 * when it cannot re-execute (the server then runs with the allocator's default purge; nothing else changes).
 */
export function reexecForServing(): string | null {
  let argv: string[] | null;
  let environ: string[] | null;
  try {
    argv = nulSeparatedStrings(readFileSync("/proc/self/cmdline"));
    environ = nulSeparatedStrings(readFileSync("/proc/self/environ"));
  } catch (error) {
    return cannotNote((error as Error).message);
  }
  if (argv === null || environ === null) return cannotNote("its arguments or environment are not UTF-8");
  const target = servingEnvironment(environ);
  if (target === null) return null;
  try {
    for (const fd of parseListenFds(environmentObject(environ), process.pid)) keepAcrossExec(fd, `passed socket ${fd}`);
    execSelf(argv, target);
  } catch (error) {
    return cannotNote((error as Error).message);
  }
}

/** "NAME=value" strings as an object (the first of a repeated name wins, as getenv(3) finds it). */
function environmentObject(environ: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of environ) {
    const equals = entry.indexOf("=");
    if (equals > 0 && !(entry.slice(0, equals) in env)) env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return env;
}

function cannotNote(reason: string): string {
  return `note: serving with the allocator's default purge: cannot re-execute with ${PURGE_DELAY_VARIABLE}=${SERVING_PURGE_DELAY} (${reason})`;
}
