// The exports of `lsvd serve --export ...` / `--config FILE`: one daemon serving several volumes, each under its own
// NBD export name, with its own cache file (journal), lease, recovery, GC and checkpoints (docs/architecture.md, "One
// daemon, many exports"; the file format: docs/operations.md, "Serving several volumes").
//
//   export  := NAME "=" VOLUME ( "," setting )*
//   setting := "cache=" PATH | "read-only" | "read-cache=" ("on" | "off") | "gc=" ("on" | "off")
//
// A config file holds one export per line in the same syntax; blank lines and lines starting with '#' are skipped.
// Errors name the line. Pure parsing: nothing here opens a file but the config itself.

import { readFileSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { InvalidArgumentError } from "../errors.ts";

/** At most this many exports in one process (each holds a cache device, a ring and a lease renewal). */
export const SERVE_EXPORTS_MAX = 64;
/** Export names: what fits in a URI path and a metrics label without escaping. */
const EXPORT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A config file larger than this is not a config file. */
const CONFIG_BYTES_MAX = 1024 * 1024;

export interface ExportSpec {
  /** The NBD export name clients ask for. */
  name: string;
  volumeUri: string;
  cachePath: string;
  readOnly: boolean;
  /** null: the command line's --read-cache / --no-read-cache decides. */
  readCache: boolean | null;
  /** null: the command line's --no-gc decides. */
  gc: boolean | null;
}

type Setting = (spec: ExportSpec, value: string | null) => void;

function onOff(key: string): (value: string | null) => boolean {
  return (value) => {
    if (value === "on") return true;
    if (value === "off") return false;
    throw new InvalidArgumentError(`${key} takes on or off, not ${value === null ? "nothing" : `'${value}'`}`);
  };
}

function noValue(key: string, value: string | null): void {
  if (value !== null) throw new InvalidArgumentError(`${key} takes no value (got '${value}')`);
}

/** Each setting's parser, by key: a table, so the help and the docs list exactly these. */
const SETTINGS: Record<string, Setting> = {
  cache: (spec, value) => {
    if (value === null || value === "") throw new InvalidArgumentError("cache needs a path: cache=PATH");
    spec.cachePath = value;
  },
  "read-only": (spec, value) => {
    noValue("read-only", value);
    spec.readOnly = true;
  },
  "read-cache": (spec, value) => (spec.readCache = onOff("read-cache")(value)),
  gc: (spec, value) => (spec.gc = onOff("gc")(value)),
};

/** One export's text, NAME=VOLUME,cache=CACHE[,...]. Throws InvalidArgumentError saying what is wrong. */
export function parseExportSpec(text: string): ExportSpec {
  const parts = text.split(",");
  const head = parts[0]!;
  const equals = head.indexOf("=");
  if (equals < 0) throw new InvalidArgumentError(`expected NAME=VOLUME,cache=CACHE, got '${text}'`);
  const name = head.slice(0, equals);
  const volumeUri = head.slice(equals + 1);
  if (!EXPORT_NAME_PATTERN.test(name)) {
    throw new InvalidArgumentError(`export name '${name}': 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  if (volumeUri === "") throw new InvalidArgumentError(`export ${name}: no VOLUME after '='`);
  const spec: ExportSpec = { name, volumeUri, cachePath: "", readOnly: false, readCache: null, gc: null };
  const seen = new Set<string>();
  for (const part of parts.slice(1)) {
    const at = part.indexOf("=");
    const key = at < 0 ? part : part.slice(0, at);
    const setting = SETTINGS[key];
    if (setting === undefined) throw new InvalidArgumentError(`export ${name}: unknown setting '${key}' (known: ${Object.keys(SETTINGS).join(", ")})`);
    if (seen.has(key)) throw new InvalidArgumentError(`export ${name}: ${key} given twice`);
    seen.add(key);
    try {
      setting(spec, at < 0 ? null : part.slice(at + 1));
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw new InvalidArgumentError(`export ${name}: ${error.message}`);
      throw error;
    }
  }
  if (spec.cachePath === "") throw new InvalidArgumentError(`export ${name}: no cache=CACHE (every export has its own cache file)`);
  return spec;
}

/** The exports of a config file's text; errors say `FILE:LINE: ...`. */
export function parseExportConfig(text: string, file: string): ExportSpec[] {
  const specs: ExportSpec[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    try {
      specs.push(parseExportSpec(line));
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw new InvalidArgumentError(`${file}:${index + 1}: ${error.message}`);
      throw error;
    }
  }
  if (specs.length === 0) throw new InvalidArgumentError(`${file}: no exports (one NAME=VOLUME,cache=CACHE per line)`);
  return specs;
}

/** Reads and parses --config FILE. */
export function readExportConfig(file: string): ExportSpec[] {
  let text: string;
  try {
    const bytes = readFileSync(file);
    if (bytes.length > CONFIG_BYTES_MAX) throw new InvalidArgumentError(`${file}: ${bytes.length} bytes; a config file holds at most ${CONFIG_BYTES_MAX}`);
    text = bytes.toString("utf8");
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw error;
    throw new InvalidArgumentError(`Cannot read --config ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  return parseExportConfig(text, file);
}

/** Names, volumes and caches each used once; at most SERVE_EXPORTS_MAX exports. */
export function checkExports(specs: readonly ExportSpec[]): void {
  if (specs.length === 0) throw new InvalidArgumentError("no exports");
  if (specs.length > SERVE_EXPORTS_MAX) throw new InvalidArgumentError(`${specs.length} exports; one process serves at most ${SERVE_EXPORTS_MAX}`);
  const unique = (what: string, key: (spec: ExportSpec) => string) => {
    const seen = new Map<string, string>();
    for (const spec of specs) {
      const value = key(spec);
      const other = seen.get(value);
      if (other !== undefined) throw new InvalidArgumentError(`exports ${other} and ${spec.name} name the same ${what} ${value}`);
      seen.set(value, spec.name);
    }
  };
  unique("name", (spec) => spec.name);
  unique("volume", (spec) => (/^[a-z][a-z0-9+.-]*:\/\//.test(spec.volumeUri) ? spec.volumeUri : resolvePath(spec.volumeUri)));
  unique("cache", (spec) => resolvePath(spec.cachePath));
}
