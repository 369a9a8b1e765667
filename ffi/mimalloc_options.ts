// The allocator's purge turned off from inside the process, as MIMALLOC_PURGE_DELAY=-1 in its environment would.
// Why and what it costs: docs/platform.md, "The allocator's purge"; how the option table is recognised:
// ./mimalloc_option_table.ts.
//
// mimalloc reads its MIMALLOC_* variables once, when the process starts, and Bun's executable exports no
// mi_option_set. So the executable's writable mappings are copied from /proc/self/mem, the option table is found by
// its shape, and the purge_delay descriptor is written back with the value -1 and the "initialised" state: the
// same two fields the variable sets at start-up, which mimalloc reads again at every purge decision. An operator's
// own MIMALLOC_PURGE_DELAY always wins, and when the table is not recognised exactly, nothing is written.

import { closeSync, openSync, readFileSync, readlinkSync, readSync, writeSync } from "node:fs";
import { encodeOptionValue, findOptionDescriptor, type MemoryRegion, type OptionLookup, type ReadName } from "./mimalloc_option_table.ts";

export const PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY";
const PURGE_DELAY_OPTION = "purge_delay";
const NEVER_PURGE = -1n;
const NAME_BYTES_MAX = 64;

export type PurgeOutcome =
  | { readonly state: "off"; readonly previousMs: number }
  | { readonly state: "environment"; readonly value: string }
  | { readonly state: "unchanged"; readonly reason: string };

interface Mapping {
  readonly start: bigint;
  readonly end: bigint;
  readonly perms: string;
  readonly path: string;
}

/** Turns the purge off unless the environment sets it; says what it did (never throws). */
export function keepFreedMemory(): PurgeOutcome {
  const preset = process.env[PURGE_DELAY_VARIABLE];
  if (preset !== undefined) return { state: "environment", value: preset };
  if (process.platform !== "linux") return { state: "unchanged", reason: `no /proc/self/mem on ${process.platform}` };
  let memory = -1;
  try {
    memory = openSync("/proc/self/mem", "r+");
    const lookup = locatePurgeDelay(memory);
    if ("failure" in lookup) return { state: "unchanged", reason: lookup.failure };
    const { address, index, value } = lookup.found;
    const update = encodeOptionValue(index, NEVER_PURGE);
    writeSync(memory, update, 0, update.byteLength, Number(address));
    if (!Buffer.from(readAt(memory, address, update.byteLength)).equals(update)) {
      return { state: "unchanged", reason: "the option did not read back as written" };
    }
    return { state: "off", previousMs: Number(value) };
  } catch (error) {
    return { state: "unchanged", reason: (error as Error).message };
  } finally {
    if (memory >= 0) closeSync(memory);
  }
}

/** The purge_delay descriptor's value in process `pid` (tests and diagnostics; another process needs ptrace rights). */
export function purgeDelayOf(pid: number | "self" = "self"): bigint | null {
  const memory = openSync(`/proc/${pid}/mem`, "r");
  try {
    const lookup = locatePurgeDelay(memory, `/proc/${pid}`);
    return "found" in lookup ? lookup.found.value : null;
  } finally {
    closeSync(memory);
  }
}

/** Copies the executable's writable mappings (of the process at `proc`) and finds the purge_delay descriptor in them. */
function locatePurgeDelay(memory: number, proc = "/proc/self"): OptionLookup {
  const executable = readlinkSync(`${proc}/exe`);
  const mappings = parseMappings(readFileSync(`${proc}/maps`, "utf8")).filter((mapping) => mapping.path === executable);
  const regions: MemoryRegion[] = mappings
    .filter((mapping) => mapping.perms.startsWith("rw"))
    .map((mapping) => ({ address: mapping.start, bytes: readAt(memory, mapping.start, Number(mapping.end - mapping.start)) }));
  return findOptionDescriptor(regions, nameReader(memory, mappings), PURGE_DELAY_OPTION);
}

/** /proc/PID/maps lines: "start-end perms offset dev inode [path]" (the path may hold spaces). */
function parseMappings(text: string): Mapping[] {
  const mappings: Mapping[] = [];
  for (const line of text.split("\n")) {
    const match = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (match === null) continue;
    mappings.push({ start: BigInt(`0x${match[1]}`), end: BigInt(`0x${match[2]}`), perms: match[3]!, path: match[4]! });
  }
  return mappings;
}

/** Names are read only from the executable's read-only mappings, and never past a mapping's end. */
function nameReader(memory: number, mappings: readonly Mapping[]): ReadName {
  const readOnly = mappings.filter((mapping) => mapping.perms.startsWith("r") && !mapping.perms.includes("w"));
  return (address) => {
    const mapping = readOnly.find((candidate) => address >= candidate.start && address < candidate.end);
    if (mapping === undefined) return null;
    const bytes = readAt(memory, address, Math.min(NAME_BYTES_MAX, Number(mapping.end - address)));
    const end = bytes.indexOf(0);
    return end < 0 ? null : Buffer.from(bytes.buffer, bytes.byteOffset, end).toString("latin1");
  };
}

function readAt(memory: number, address: bigint, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const got = readSync(memory, bytes, done, length - done, Number(address) + done);
    if (got === 0) break;
    done += got;
  }
  return done === length ? bytes : bytes.subarray(0, done);
}
