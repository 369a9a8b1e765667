// Checks shared by every ObjectStore (folder-private): which object names and ranges are valid, and the wording of
// range errors. One rule for all backends so that a volume that works on one store works on every other.

import { OBJECT_NAME_BYTES_MAX } from "../constants.ts";
import { assert, CorruptionError, InvalidArgumentError } from "../errors.ts";

const encoder = new TextEncoder();

/**
 * A name is 1..OBJECT_NAME_BYTES_MAX bytes of UTF-8 without '/', NUL or a leading '.'. No '/' keeps a file store
 * flat and a name from escaping its directory; no leading '.' leaves that namespace to a file store's temporary
 * files, which listings then skip.
 */
export function checkObjectName(name: string): void {
  const bytes = encoder.encode(name).length;
  if (bytes === 0) throw new InvalidArgumentError("Invalid object name: empty");
  if (bytes > OBJECT_NAME_BYTES_MAX) {
    throw new InvalidArgumentError(`Invalid object name ${name.slice(0, 40)}...: longer than ${OBJECT_NAME_BYTES_MAX} bytes`);
  }
  if (name.includes("/")) throw new InvalidArgumentError(`Invalid object name ${name}: contains '/'`);
  if (name.includes("\0")) throw new InvalidArgumentError(`Invalid object name ${JSON.stringify(name)}: contains NUL`);
  if (name.startsWith(".")) throw new InvalidArgumentError(`Invalid object name ${name}: starts with '.'`);
}

/** A list prefix may be empty (everything) but otherwise follows the name rules, except for length 0. */
export function checkListPrefix(prefix: string): void {
  if (prefix !== "") checkObjectName(prefix);
}

/** Offsets and lengths come from our own metadata: a bad one is a programmer error. */
export function checkRange(name: string, offset: number, length: number): void {
  assert(Number.isSafeInteger(offset) && offset >= 0, `getRange ${name}: bad offset ${offset}`);
  assert(Number.isSafeInteger(length) && length >= 0, `getRange ${name}: bad length ${length}`);
}

export function shortObjectError(name: string, offset: number, length: number, sizeBytes: number | undefined): CorruptionError {
  const size = sizeBytes === undefined ? "shorter" : `only ${sizeBytes} bytes`;
  return new CorruptionError(`Cannot read object ${name} bytes [${offset}, ${offset + length}): the object is ${size}`);
}

/** Byte-wise ascending order of names, the order S3 lists in; JS `<` agrees with it for ASCII names. */
export function sortNames(names: string[]): string[] {
  return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
