#!/usr/bin/env bun
// lsvd: the command-line entry point. Each command lives in cli/commands/; this file dispatches and maps errors to
// exit codes (0 success, 1 error or bad input, 2 no or unknown command; fsck documents its own).

import { flushOutput, writeOut } from "./output.ts";
import { LsvdError } from "../errors.ts";
import { loadIsalCrc32c } from "../../ffi/isal_crc32c.ts";
import { installCrc32cAccelerator } from "../format/crc32c.ts";
import { COMMANDS } from "./commands/index.ts";
import { parseCommandArgs, type Parsed } from "./args.ts";
import { applyLogOptions, hasLogOptions, writeCommandError } from "./log_options.ts";
import { makeLogger } from "../util/log.ts";

const VERSION = "0.1.0";

function usage(): string {
  const lines = COMMANDS.map((command) => `  ${command.name.padEnd(9)} ${command.summary}`);
  return `lsvd ${VERSION}: log-structured virtual disk (SSD journal + object-store backend, served over NBD)

Usage: lsvd <command> [options]   (lsvd help <command>, or lsvd <command> --help, for each)

Commands:
${lines.join("\n")}

Sizes take binary units, in any case: 512m, 1g, 1gb, 1GiB, 2t. VOLUME may also be given as --volume VOLUME.
Volumes: /dir/obj, file:///dir/obj, rados://POOL/PREFIX, s3://BUCKET/PREFIX.
`;
}

/** The one line saying the optional library is missing, by the package that provides it. */
export function isalMissingNote(reason: string): string {
  return `note: ISA-L not loaded (install the libisal2 package for hardware CRC-32C, about 10 times faster): ${reason}; using the portable CRC-32C`;
}

/**
 * Hardware CRC-32C when ISA-L is installed (libisal2); the table loop otherwise, said once per process (after the
 * command's --log-level and --log-format apply). LSVD_CRC32C=table forces the table loop, silently.
 */
function installNativeCrc32c(): string | null {
  if (process.env.LSVD_CRC32C === "table") return null;
  const native = loadIsalCrc32c();
  if (native.crc32c && installCrc32cAccelerator(native.crc32c)) return null;
  return isalMissingNote(native.reason || "its self-check failed");
}

/** `lsvd help CMD`: the command's --help. */
function helpFor(names: string[]): number {
  const command = COMMANDS.find((candidate) => candidate.name === names[0]);
  if (!command || names.length > 1) {
    process.stderr.write(`lsvd help: unknown command '${names.join(" ")}' (commands: ${COMMANDS.map((each) => each.name).join(", ")})\n`);
    return 2;
  }
  writeOut(command.help);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const crc32cNote = installNativeCrc32c();
  const [name, ...rest] = argv;
  if (name === "help" && rest.length > 0) return helpFor(rest);
  if (!name || name === "--help" || name === "-h" || name === "help") {
    writeOut(usage());
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "version") {
    writeOut(`lsvd ${VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (!command) {
    process.stderr.write(`lsvd: unknown command '${name}' (try 'lsvd --help')\n`);
    return 2;
  }
  let parsed: Parsed & { help: boolean };
  try {
    parsed = parseCommandArgs(rest, command.options);
  } catch (error) {
    if (!(error instanceof LsvdError)) throw error;
    process.stderr.write(`lsvd ${name}: ${error.message.replace(/\s*\n\s*/g, " ")}\n`);
    return command.usageExitCode ?? 1;
  }
  if (parsed.help) {
    writeOut(command.help);
    return 0;
  }
  try {
    if (hasLogOptions(command.options)) applyLogOptions(parsed);
    if (crc32cNote !== null) makeLogger("lsvd")(crc32cNote);
    return await command.run(parsed);
  } catch (error) {
    if (error instanceof LsvdError) {
      // One line per error, so scripts can grep it (messages that embed a usage text or a parseArgs hint have several).
      writeCommandError(`lsvd ${name}: ${error.message.replace(/\s*\n\s*/g, " ")}`);
      return 1;
    }
    writeCommandError(`lsvd ${name}: internal error: ${(error as Error)?.stack ?? String(error)}`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  try {
    await flushOutput();
  } catch (error) {
    // A reader that went away (EPIPE) must not turn a success into a crash; say so when the command succeeded.
    if (code === 0) process.stderr.write(`lsvd: cannot write standard output: ${(error as Error).message}\n`);
  }
  process.exit(code);
}
