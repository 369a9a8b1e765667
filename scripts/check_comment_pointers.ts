// Checks that no comment in src/ ffi/ test/ bench/ scripts/ points at a file outside the repository: the facts a
// comment leans on belong in docs/ (docs/format.md, docs/architecture.md, docs/platform.md, docs/ceph.md), where a
// reader of the repository finds them. Flagged in comments (and in bench/ and scripts/ Markdown, which is all prose):
// - absolute paths of a development machine (under /work, /home, /root; runtime paths such as a default state
//   directory in /tmp are not pointers to facts);
// - the development notes kept beside the repository (the shared notes folder, stack facts, style anchors, reference
//   facts), by name;
// - links to files of other repositories (github.com, raw.githubusercontent.com, gitlab.com);
// - relative paths that climb out of the repository.
// Not flagged: published specifications and manuals cited by name (NetworkBlockDevice/nbd doc/proto.md, io_uring(7)),
// and headers of named system packages (liburing-dev's liburing.h), which every reader can get.
//
// Usage: bun scripts/check_comment_pointers.ts [ROOT]; prints one line per finding and exits 1 if there is any.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, relative, resolve, sep } from "node:path";

export interface OutsidePointer {
  file: string;
  line: number;
  text: string;
  why: string;
}

export const CHECKED_DIRS = ["src", "ffi", "test", "bench", "scripts"];
const SLASH_COMMENT_EXTENSIONS = new Set([".ts", ".js", ".mjs", ".c", ".h"]);
const HASH_COMMENT_EXTENSIONS = new Set([".sh", ".py", ".fio", ".toml", ".yml", ".yaml", ".conf"]);
const PROSE_EXTENSIONS = new Set([".md", ".txt"]);

const PATTERNS: Array<[RegExp, string]> = [
  [/(^|[\s("'`=:])\/(work|home|root)\/[\w.-]/, "an absolute path on a development machine"],
  [/\.\.\/shared\b|\bshared\/(notes|formats|ceph)\b/, "the development notes beside the repository"],
  [/stack-facts|style-anchors|reference-facts|lsvd-v1-backend-objects/, "a note kept outside the repository"],
  [/https?:\/\/(www\.)?(github\.com|raw\.githubusercontent\.com|gitlab\.com)\//, "a link to another repository's file"],
];
const RELATIVE_PATH = /(?:\.\.\/)+[\w.@-]+(?:\/[\w.@-]+)*/g;

/** The comment text of one line (empty if none), by the file's comment syntax. */
function commentOf(line: string, extension: string, inBlock: { open: boolean }): string {
  const trimmed = line.trimStart();
  if (PROSE_EXTENSIONS.has(extension)) return line;
  if (HASH_COMMENT_EXTENSIONS.has(extension)) {
    if (trimmed.startsWith("#!")) return "";
    if (trimmed.startsWith("#")) return trimmed;
    const at = line.search(/\s#\s/);
    return at >= 0 ? line.slice(at) : "";
  }
  if (!SLASH_COMMENT_EXTENSIONS.has(extension)) return "";
  if (inBlock.open) {
    if (line.includes("*/")) inBlock.open = false;
    return line;
  }
  if (trimmed.startsWith("//")) return trimmed;
  if (trimmed.startsWith("/*")) {
    inBlock.open = !trimmed.includes("*/");
    return trimmed;
  }
  // A trailing comment: " // " after code (a URL's "://" has no space before it).
  const at = line.search(/\s\/\/\s/);
  return at >= 0 ? line.slice(at) : "";
}

/** Findings in one file's text; `file` is its path relative to `root`. */
export function findOutsidePointers(root: string, file: string, text: string): OutsidePointer[] {
  const findings: OutsidePointer[] = [];
  const extension = extname(file);
  const inBlock = { open: false };
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const comment = commentOf(lines[index]!, extension, inBlock);
    if (comment === "") continue;
    const report = (why: string): void => void findings.push({ file, line: index + 1, text: lines[index]!.trim(), why });
    for (const [pattern, why] of PATTERNS) if (pattern.test(comment)) report(why);
    for (const match of comment.matchAll(RELATIVE_PATH)) {
      const target = resolve(root, dirname(file), match[0]);
      const inside = relative(root, target);
      if (inside.startsWith(`..${sep}`) || inside === "..") report(`a relative path out of the repository (${match[0]})`);
    }
  }
  return findings;
}

function walk(root: string, directory: string, files: string[]): void {
  for (const name of readdirSync(join(root, directory)).sort()) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const path = join(directory, name);
    if (statSync(join(root, path)).isDirectory()) walk(root, path, files);
    else files.push(path);
  }
}

/** Every finding under the checked directories of `root`. */
export function checkRepository(root: string): OutsidePointer[] {
  const files: string[] = [];
  for (const directory of CHECKED_DIRS) {
    try {
      if (statSync(join(root, directory)).isDirectory()) walk(root, directory, files);
    } catch {
      // A checkout without that directory: nothing to check there.
    }
  }
  return files.flatMap((file) => findOutsidePointers(root, file, readFileSync(join(root, file), "utf8")));
}

if (import.meta.main) {
  const root = resolve(process.argv[2] ?? join(import.meta.dir, ".."));
  const findings = checkRepository(root);
  for (const finding of findings) console.log(`${finding.file}:${finding.line}: ${finding.why}: ${finding.text}`);
  if (findings.length > 0) {
    console.log(`${findings.length} comment(s) point outside the repository; move the facts into docs/ and point there`);
    process.exit(1);
  }
}
