// Rewrites the recovery decision tables in docs/architecture.md from their rows (src/volume/recovery/rules.ts).
// Usage: bun scripts/recovery_tables.ts [--check]   (--check: exit 1 if the doc differs, write nothing)

import { readFileSync, writeFileSync } from "node:fs";
import { DOC_TABLES_PATH, renderRecoveryTables } from "../src/volume/recovery/doc_tables.ts";

const path = new URL(`../${DOC_TABLES_PATH}`, import.meta.url).pathname;
const doc = readFileSync(path, "utf8");
const rendered = renderRecoveryTables(doc);
if (process.argv.includes("--check")) {
  if (rendered !== doc) {
    console.error(`${DOC_TABLES_PATH}: the recovery tables differ from src/volume/recovery/rules.ts (run: bun scripts/recovery_tables.ts)`);
    process.exit(1);
  }
} else if (rendered !== doc) {
  writeFileSync(path, rendered);
  console.log(`${DOC_TABLES_PATH}: recovery tables rewritten`);
}
