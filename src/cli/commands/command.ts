// The shape of a CLI command: a name, a one-line summary for `lsvd --help`, and run() returning the exit code.

export interface Command {
  name: string;
  summary: string;
  run(argv: string[]): Promise<number>;
}
