// The shape of a CLI command: a name, a one-line summary for `lsvd --help`, its options (what the parser accepts, with
// the defaults the parser fills in) and help text (test/cli/help_test.ts checks that the two agree), and run()
// returning the exit code.

import type { OptionSpec } from "../args.ts";

export interface Command {
  name: string;
  summary: string;
  /** Every option run() accepts besides --help, as given to parseCommandArgs. */
  options: OptionSpec;
  /** What `lsvd CMD --help` and `lsvd help CMD` print. */
  help: string;
  run(argv: string[]): Promise<number>;
}
