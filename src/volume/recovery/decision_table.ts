// A decision table as data: rows of boolean patterns over named parameters, each with a decision. Every input
// matches exactly one row, or is impossible (a row asserts a parameter the input contradicts). Modelled on the
// recovery table of a replicated log: a pattern is `any`, `yes`, `no`, or an assertion that a parameter is false
// (`never`) for inputs reaching that row, which marks a combination that cannot occur (docs/architecture.md,
// "Recovery"). Parameters are checked in their declared order, so a row rejects an input on its first mismatch
// before it reaches its assertions.
//
// The rows are also the documentation: renderMarkdown() writes the table docs/architecture.md shows, and a test
// checks the doc holds exactly that text.

import { assert } from "../../errors.ts";

/** `yes`/`no`: the parameter must be true/false; `any`: either; `never`: it cannot be true for this row's inputs. */
export type Matcher = "any" | "yes" | "no" | "never";

export interface Row<P extends string, D> {
  /** A short name (`@B`), stable: logs and fsck reports name cases by it. */
  label: string;
  when: Record<P, Matcher>;
  decision: D;
  /** The decision in words, for the doc and the log. */
  says: string;
}

export interface Parameter<P extends string> {
  name: P;
  /** What the parameter means, in words (the doc's legend). */
  means: string;
}

/** Thrown (as a programmer error) when an input matches no row, several rows, or contradicts a row's assertion. */
export class ImpossibleCase extends Error {}

export class DecisionTable<P extends string, D> {
  constructor(
    readonly name: string,
    readonly parameters: ReadonlyArray<Parameter<P>>,
    readonly rows: ReadonlyArray<Row<P, D>>,
  ) {
    const labels = new Set(rows.map((row) => row.label));
    assert(labels.size === rows.length, `decision table ${name}: labels are unique`);
    for (const row of rows) {
      assert(Object.keys(row.when).length === parameters.length, `decision table ${name}, row ${row.label}: one matcher per parameter`);
    }
  }

  /** Whether `row` matches `input`; throws ImpossibleCase when the input breaks one of the row's assertions. */
  private matches(row: Row<P, D>, input: Readonly<Record<P, boolean>>): boolean {
    for (const { name } of this.parameters) {
      const matcher = row.when[name];
      const value = input[name];
      if (matcher === "yes" && !value) return false;
      if (matcher === "no" && value) return false;
      if (matcher === "never" && value) {
        throw new ImpossibleCase(`decision table ${this.name}: row ${row.label} says '${name}' cannot hold for ${describe(input)}`);
      }
    }
    return true;
  }

  /** The one row matching `input`. Throws ImpossibleCase when none does (the table is not exhaustive) or several do. */
  decide(input: Readonly<Record<P, boolean>>): Row<P, D> {
    let found: Row<P, D> | null = null;
    for (const row of this.rows) {
      if (!this.matches(row, input)) continue;
      if (found !== null) throw new ImpossibleCase(`decision table ${this.name}: rows ${found.label} and ${row.label} both match ${describe(input)}`);
      found = row;
    }
    if (found === null) throw new ImpossibleCase(`decision table ${this.name}: no row matches ${describe(input)}`);
    return found;
  }

  /** Every combination of the parameters (2^n of them), for exhaustive tests. */
  *inputs(): Generator<Record<P, boolean>> {
    const count = this.parameters.length;
    for (let bits = 0; bits < 1 << count; bits++) {
      const input = {} as Record<P, boolean>;
      this.parameters.forEach(({ name }, index) => (input[name] = (bits & (1 << index)) !== 0));
      yield input;
    }
  }

  /** The table as Markdown: a legend of the parameters, then one line per row (docs/architecture.md). */
  renderMarkdown(): string {
    const symbol: Record<Matcher, string> = { any: "·", yes: "yes", no: "no", never: "(no)" };
    const legend = this.parameters.map(({ name, means }) => `- \`${name}\`: ${means}`);
    const header = `| case | ${this.parameters.map(({ name }) => `\`${name}\``).join(" | ")} | decision |`;
    const rule = `|---|${this.parameters.map(() => "---|").join("")}---|`;
    const lines = this.rows.map((row) => `| ${row.label} | ${this.parameters.map(({ name }) => symbol[row.when[name]]).join(" | ")} | ${row.says} |`);
    return [...legend, "", header, rule, ...lines].join("\n");
  }
}

function describe(input: Readonly<Record<string, boolean>>): string {
  return `{${Object.entries(input).map(([name, value]) => `${name}: ${value ? "yes" : "no"}`).join(", ")}}`;
}
