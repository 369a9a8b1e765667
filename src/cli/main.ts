#!/usr/bin/env bun
// lsvd: the command-line entry point. Each command lives in cli/commands/; this file dispatches and maps errors to
// exit codes (0 success, 1 error or bad input, 2 usage; fsck documents its own).

import { LsvdError } from "../errors.ts";
import { COMMANDS } from "./commands/index.ts";

const VERSION = "0.1.0";

function usage(): string {
  const lines = COMMANDS.map((command) => `  ${command.name.padEnd(9)} ${command.summary}`);
  return `lsvd ${VERSION}: log-structured virtual disk (SSD journal + object-store backend, served over NBD)

Usage: lsvd <command> [options]   (lsvd <command> --help for each)

Commands:
${lines.join("\n")}

Sizes take units: 512m, 1g, 2t (binary). Volumes: /dir/obj, file:///dir/obj, rados://POOL/PREFIX, s3://BUCKET/PREFIX.
`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "version") {
    process.stdout.write(`lsvd ${VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (!command) {
    process.stderr.write(`lsvd: unknown command '${name}' (try 'lsvd --help')\n`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof LsvdError) {
      process.stderr.write(`lsvd ${name}: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`lsvd ${name}: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
