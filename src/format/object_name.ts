// Names of backend objects: the one place that builds or parses them (cf. leveldb db/filename.h).
// Spec: docs/format.md, "Object names". The superblock is named `<prefix>` itself; every other object (data,
// checkpoint) is `<prefix>.` followed by its 32-bit sequence number as exactly 8 lowercase hex digits, as the LSVD v1
// reference names them. Fixed width keeps lexicographic listing order equal to sequence order.

import { assert } from "../errors.ts";
import { isU32 } from "./_codec.ts";

const SEQ_HEX_DIGITS = 8;
const SEQ_PATTERN = /^[0-9a-f]{8}$/;

export function objectName(prefix: string, seq: number): string {
  assert(prefix.length > 0, "object name prefix is not empty");
  if (!isU32(seq)) assert(false, `object seq ${seq} is a uint32`);
  return `${prefix}.${seq.toString(16).padStart(SEQ_HEX_DIGITS, "0")}`;
}

/**
 * The lease object of the volume at `prefix` (docs/format.md, "Lease object"): not a seq name, so parseObjectName
 * returns null for it and nothing that walks the log ever reads it.
 */
export function leaseName(prefix: string): string {
  assert(prefix.length > 0, "object name prefix is not empty");
  return `${prefix}${LEASE_SUFFIX}`;
}

export const LEASE_SUFFIX = ".lease";

/** The sequence number named by `name`, or null if `name` is not `<prefix>.<8 lowercase hex digits>`. */
export function parseObjectName(prefix: string, name: string): number | null {
  assert(prefix.length > 0, "object name prefix is not empty");
  if (name.length !== prefix.length + 1 + SEQ_HEX_DIGITS) return null;
  if (!name.startsWith(prefix) || name[prefix.length] !== ".") return null;
  const digits = name.slice(prefix.length + 1);
  if (!SEQ_PATTERN.test(digits)) return null;
  return Number.parseInt(digits, 16);
}
