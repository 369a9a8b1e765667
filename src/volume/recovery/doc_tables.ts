// The recovery tables in docs/architecture.md are generated from the rows in rules.ts, so the doc cannot drift from
// the code: each sits between a start marker naming its table and an end marker. scripts/recovery_tables.ts rewrites
// the doc; test/volume/recovery_tables_test.ts fails when the doc differs from what this renders.

import { assert } from "../../errors.ts";
import type { DecisionTable } from "./decision_table.ts";
import { CHECKPOINT_CASES, JOURNAL_CASES, LOG_OBJECT_CASES } from "./rules.ts";

const TABLES: ReadonlyArray<DecisionTable<string, unknown>> = [CHECKPOINT_CASES, LOG_OBJECT_CASES, JOURNAL_CASES] as never;

export const DOC_TABLES_PATH = "docs/architecture.md";

function startMarker(name: string): string {
  return `<!-- recovery table "${name}": generated from src/volume/recovery/rules.ts by scripts/recovery_tables.ts, do not edit -->`;
}
const END_MARKER = "<!-- end of recovery table -->";

/** `doc` with every recovery table block replaced by its rendering from the rows. Throws if a block is missing. */
export function renderRecoveryTables(doc: string): string {
  let out = doc;
  for (const table of TABLES) {
    const start = out.indexOf(startMarker(table.name));
    assert(start >= 0, `${DOC_TABLES_PATH} has a block for the recovery table "${table.name}" (${startMarker(table.name)})`);
    const end = out.indexOf(END_MARKER, start);
    assert(end > start, `${DOC_TABLES_PATH}: the recovery table "${table.name}" block ends with ${END_MARKER}`);
    out = `${out.slice(0, start)}${startMarker(table.name)}\n${table.renderMarkdown()}\n${out.slice(end)}`;
  }
  return out;
}
