// The shape of a CLI command: a name, a one-line summary for `lsvd --help`, its options (what the parser accepts, with
// the defaults the parser fills in) and help text (test/cli/help_test.ts checks that the two agree), and run()
// returning the exit code. main.ts parses the arguments against `options` and answers --help for every command.

import type { OptionSpec, Parsed } from "../args.ts";

export interface Command {
  name: string;
  summary: string;
  /** Every option run() accepts besides --help, as given to parseCommandArgs. */
  options: OptionSpec;
  /** What `lsvd CMD --help` and `lsvd help CMD` print. */
  help: string;
  /** The exit code for arguments the parser refuses (default 1; fsck's is 8, as fsck(8)'s). */
  usageExitCode?: number;
  run(parsed: Parsed): Promise<number>;
}
