// Who this process is, and whether another process on this host still runs: what a lease holder records about itself
// and what a would-be owner checks before it takes a lease from a holder on the same host
// (docs/architecture.md, "Ownership and fencing"). Linux /proc only.
//
// A pid alone does not identify a process: pids are reused. The pair (pid, start time in clock ticks after boot,
// field 22 of /proc/PID/stat) does, within one boot; the boot id tells boots apart.

import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { validate as validateUuid, NIL as NIL_UUID } from "uuid";

export interface ProcessIdentity {
  host: string;
  /** /proc/sys/kernel/random/boot_id, or the nil UUID if it cannot be read. */
  bootId: string;
  pid: number;
  /** Start time of the process in clock ticks after boot (0: unknown). */
  processStartTicks: number;
}

/** State letter and start ticks of a /proc/PID/stat line; null if it does not parse. */
export function parseProcStat(line: string): { state: string; startTicks: number } | null {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted after the last ')'.
  const close = line.lastIndexOf(")");
  if (close < 0) return null;
  const fields = line.slice(close + 1).trim().split(/\s+/);
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  const startTicks = Number(fields[19]);
  if (fields.length < 20 || !Number.isSafeInteger(startTicks) || startTicks < 0) return null;
  return { state: fields[0]!, startTicks };
}

function readProcStat(pid: number): { state: string; startTicks: number } | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return null;
  }
}

function readBootId(): string {
  try {
    const text = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    return validateUuid(text) ? text : NIL_UUID;
  } catch {
    return NIL_UUID;
  }
}

let self: ProcessIdentity | null = null;

/** This process (computed once). */
export function thisProcess(): ProcessIdentity {
  self ??= {
    host: hostname() || "localhost",
    bootId: readBootId(),
    pid: process.pid,
    processStartTicks: readProcStat(process.pid)?.startTicks ?? 0,
  };
  return self;
}

/**
 * Whether the process (pid, startTicks) of this boot still runs. A zombie has stopped running (it only waits to
 * be reaped); a pid now held by a process that started at another time is another process. With startTicks 0
 * (unknown) any live process with that pid counts as the holder.
 */
export function processRuns(pid: number, startTicks: number): boolean {
  if (!(Number.isInteger(pid) && pid > 0)) return false;
  const stat = readProcStat(pid);
  if (stat === null) return false;
  if (stat.state === "Z" || stat.state === "X") return false;
  return startTicks === 0 || stat.startTicks === startTicks;
}
