// The exports of `lsvd serve --export` / `--config` (src/cli/serve_exports.ts): the grammar, and errors that say
// what is wrong and, for a config file, on which line.

import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkExports, parseExportConfig, parseExportSpec, readExportConfig } from "../../src/cli/serve_exports.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

test("NAME=VOLUME,cache=CACHE and each setting", () => {
  expect(parseExportSpec("web=rados://pool/web,cache=/dev/nvme0n1p1")).toEqual({ name: "web", volumeUri: "rados://pool/web", cachePath: "/dev/nvme0n1p1", readOnly: false, readCache: null, gc: null });
  expect(parseExportSpec("db.1=/srv/b/db,cache=/c/db,read-only,read-cache=on,gc=off")).toEqual({ name: "db.1", volumeUri: "/srv/b/db", cachePath: "/c/db", readOnly: true, readCache: true, gc: false });
  expect(parseExportSpec("x=/v,read-cache=off,cache=/c").readCache).toBe(false);
});

test("bad specs are refused, saying why", () => {
  const cases: Array<[string, RegExp]> = [
    ["/v,cache=/c", /expected NAME=VOLUME,cache=CACHE/],
    ["=/v,cache=/c", /export name ''/],
    ["a b=/v,cache=/c", /export name 'a b'/],
    ["-a=/v,cache=/c", /export name '-a'/],
    ["a=,cache=/c", /export a: no VOLUME/],
    ["a=/v", /export a: no cache=CACHE/],
    ["a=/v,cache=", /export a: cache needs a path/],
    ["a=/v,cache=/c,read-only=yes", /export a: read-only takes no value/],
    ["a=/v,cache=/c,read-cache", /export a: read-cache takes on or off, not nothing/],
    ["a=/v,cache=/c,gc=maybe", /export a: gc takes on or off, not 'maybe'/],
    ["a=/v,cache=/c,colour=blue", /export a: unknown setting 'colour' \(known: cache, read-only, read-cache, gc\)/],
    ["a=/v,cache=/c,cache=/d", /export a: cache given twice/],
  ];
  for (const [text, message] of cases) {
    expect(() => parseExportSpec(text)).toThrow(InvalidArgumentError);
    expect(() => parseExportSpec(text)).toThrow(message);
  }
});

test("a config file: one export a line, comments and blank lines skipped, errors name the line", () => {
  const text = "# volumes of host 7\n\nweb=/b/web,cache=/c/web\n  db=/b/db,cache=/c/db,read-only  \n";
  expect(parseExportConfig(text, "exports.conf").map((spec) => [spec.name, spec.readOnly])).toEqual([["web", false], ["db", true]]);
  expect(() => parseExportConfig("web=/b/web,cache=/c/web\n\nbad line\n", "exports.conf")).toThrow(/^exports\.conf:3: expected NAME=VOLUME,cache=CACHE, got 'bad line'$/);
  expect(() => parseExportConfig("a=/v,cache=/c\nb=/w,cache=/d,gc=sometimes\n", "f")).toThrow(/^f:2: export b: gc takes on or off/);
  expect(() => parseExportConfig("# nothing\n\n", "f")).toThrow(/^f: no exports/);
});

test("readExportConfig: a missing file is a clear error", () => {
  const dir = mkdtempSync(join(tmpdir(), "lsvd-exports-"));
  try {
    expect(() => readExportConfig(join(dir, "missing.conf"))).toThrow(/Cannot read --config .*missing\.conf: ENOENT/);
    writeFileSync(join(dir, "ok.conf"), "a=/v,cache=/c\n");
    expect(readExportConfig(join(dir, "ok.conf"))[0]!.name).toBe("a");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("names, volumes and caches are each used once", () => {
  const spec = (text: string) => parseExportSpec(text);
  expect(() => checkExports([spec("a=/v,cache=/c"), spec("b=/w,cache=/d")])).not.toThrow();
  expect(() => checkExports([spec("a=/v,cache=/c"), spec("a=/w,cache=/d")])).toThrow(/exports a and a name the same name a/);
  expect(() => checkExports([spec("a=/v,cache=/c"), spec("b=/v/../v,cache=/d")])).toThrow(/exports a and b name the same volume \/v/);
  expect(() => checkExports([spec("a=/v,cache=/c"), spec("b=/w,cache=/c")])).toThrow(/exports a and b name the same cache \/c/);
  expect(() => checkExports([])).toThrow(/no exports/);
});
