// --log-level and --log-format, for serve and every command that runs long (gc, fsck, import, export, mkdisk, mkcache):
// main.ts applies them, before run(), to every command whose option table has them.

import { InvalidArgumentError } from "../errors.ts";
import { configureLogging, logConfig, LOG_FORMATS, makeLogger, LOG_LEVELS, parseLogFormat, parseLogLevel, type LogLevel } from "../util/log.ts";
import { stringOption, type OptionSpec, type Parsed } from "./args.ts";

export const LOG_OPTIONS: OptionSpec = {
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
};

export const LOG_HELP = `Logging (stderr, a line per event):
  --log-level LEVEL      ${LOG_LEVELS.join(", ")}: lines at this level and above (default info)
  --log-format FORMAT    text (timestamp and the line) or json (one object per line: time, level, msg,
                         fields) (default text)`;

/** Whether a command takes the logging options (main.ts then applies them). */
export function hasLogOptions(options: OptionSpec): boolean {
  return "log-level" in options;
}

/**
 * Applies --log-level/--log-format to the process's logging. serve's --quiet is --log-level warn: given with a
 * --log-level other than the default, it is refused (which one was meant?).
 */
export function applyLogOptions(parsed: Parsed): void {
  const levelText = stringOption(parsed, "log-level") ?? "info";
  const formatText = stringOption(parsed, "log-format") ?? "text";
  const level = parseLogLevel(levelText);
  if (level === null) throw new InvalidArgumentError(`Invalid --log-level '${levelText}': expected one of ${LOG_LEVELS.join(", ")}`);
  const format = parseLogFormat(formatText);
  if (format === null) throw new InvalidArgumentError(`Invalid --log-format '${formatText}': expected one of ${LOG_FORMATS.join(", ")}`);
  let effective: LogLevel = level;
  if (parsed.values.quiet === true) {
    if (level !== "info" && level !== "warn") throw new InvalidArgumentError(`--quiet is --log-level warn; it cannot be given with --log-level ${level}`);
    effective = "warn";
  }
  configureLogging({ level: effective, format });
}

/**
 * The one line saying why a command failed ("lsvd CMD: why"): as it is in text, an error line of the log with
 * --log-format json (so that every line on stderr parses).
 */
export function writeCommandError(line: string): void {
  if (logConfig().format === "json") makeLogger("lsvd")(`error: ${line}`);
  else process.stderr.write(`${line}\n`);
}
