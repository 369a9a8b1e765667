// No comment in src/ ffi/ test/ bench/ scripts/ points at a file outside the repository (scripts/check_comment_pointers.ts):
// the repository passes, and each kind of pointer the check knows is caught in a file of a scratch tree (so the check
// can fail), while code, published specs and runtime paths are left alone.

import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { checkRepository } from "../../scripts/check_comment_pointers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const scratch = mkdtempSync(join(tmpdir(), "lsvd-pointers-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(scratch, "tree-"));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

// Built from pieces, so this file's own comments and strings hold none of them.
const MACHINE = "/" + "work/shared/notes/facts.md";
const NOTES = "../" + "shared/notes/x.md";
const NOTE_NAME = "stack" + "-facts.md";
const LINK = "https://" + "github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md";

test("no comment in the repository points outside it", () => {
  const findings = checkRepository(ROOT);
  expect(findings.map((finding) => `${finding.file}:${finding.line}: ${finding.why}`)).toEqual([]);
});

test("each kind of outside pointer is caught, in each comment syntax", () => {
  const root = tree({
    "src/a.ts": `// facts in ${MACHINE}\nconst x = 1; // see ${NOTE_NAME}\n/**\n * layout: ${LINK}\n */\n`,
    "ffi/b.ts": `// the notes: ${NOTES}\n// up and out: ../../../elsewhere/spec.md\n`,
    "test/c.sh": `#!/usr/bin/env bash\n# settings explained in ${MACHINE}\necho hi # and ${NOTE_NAME}\n`,
    "bench/README.md": `The baseline of ${MACHINE}.\n`,
    "scripts/d.py": `# ${LINK}\n`,
  });
  const found = checkRepository(root).map((finding) => `${finding.file}:${finding.line}`);
  expect([...new Set(found)].sort()).toEqual([
    "bench/README.md:1",
    "ffi/b.ts:1",
    "ffi/b.ts:2",
    "scripts/d.py:1",
    "src/a.ts:1",
    "src/a.ts:2",
    "src/a.ts:4",
    "test/c.sh:2",
    "test/c.sh:3",
  ]);
});

test("code, published specs, paths inside the repository and runtime paths are not pointers", () => {
  const root = tree({
    "src/cli/x.ts": `import { y } from "../../ffi/y.ts";\n// Spec: NetworkBlockDevice/nbd doc/proto.md; io_uring(7); see ../../docs/format.md\nconst url = "http://127.0.0.1:7480/bucket";\n`,
    "test/ceph/up.sh": `#!/usr/bin/env bash\n# state directory (default /tmp/lsvd-ceph-$UID)\nDIR=${MACHINE}\n`,
    "docs/notes.md": `Facts: ${MACHINE}\n`,
  });
  expect(checkRepository(root)).toEqual([]);
});
