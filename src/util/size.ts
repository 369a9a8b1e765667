// Human sizes for the CLI: "512m", "1g", "1gb", "1GiB", "2t", "4096", "64k", "1.5g". Binary units (k = 1024), as dd and
// qemu-img use, case-insensitive.

import { InvalidArgumentError } from "../errors.ts";

const UNIT_BYTES: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

/** Parses a size; throws InvalidArgumentError naming what was wrong. The result is a whole, safe integer of bytes. */
export function parseSize(text: string, what = "size"): number {
  // A unit letter may be followed by "b" or "ib" (1g = 1gb = 1GiB); a bare "b" means bytes.
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?|b)?\s*$/i.exec(text);
  if (!match) throw new InvalidArgumentError(`Invalid ${what} '${text}': expected a number with an optional binary unit (k, m, g, t; also kb, KiB, ...)`);
  const unit = (match[2] ?? "").toLowerCase();
  const bytes = Number(match[1]) * UNIT_BYTES[unit]!;
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`Invalid ${what} '${text}': not a whole number of bytes within range`);
  }
  return bytes;
}

/** 1073741824 -> "1 GiB", 1536 -> "1.5 KiB". */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let index = 0;
  while (Math.abs(value) >= 1024 && index < units.length - 1) {
    value /= 1024;
    index += 1;
  }
  const text = index === 0 ? String(value) : value.toFixed(value < 10 && !Number.isInteger(value) ? 2 : 1).replace(/\.0+$/, "");
  return `${text} ${units[index]}`;
}
