// Logging: one line per event on stderr, for people (text: timestamp, component, the line) or for programs (json: one
// object per line with time, level, msg and fields). Levels error < warn < info < debug; a line is written when its
// level is at or below the configured one (docs/architecture.md, "Logs and progress").
//
// Call sites pass plain lines to a LogFn. A line's level is its prefix ("error: ", "warning: ", "debug: ") or, without
// one, the level of the LogFn it was given to (its channel): serve logs failed requests and backend retries on a warn
// channel (kept by --quiet) and what it does on an info channel. So modules below the CLI need no logger of their own.
//
// The level and format are process-wide (configureLogging, once the command's arguments are parsed), read at each
// line, so loggers made before that follow it too.

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Facts a line carries for programs (json format's `fields`); text shows only the line. */
export type LogFields = Record<string, string | number | boolean | null>;
export type LogFn = (line: string, fields?: LogFields) => void;

export interface LogConfig {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go: stderr by default (tests collect them). */
  write: (text: string) => void;
  now: () => Date;
}

const DEFAULT_CONFIG: LogConfig = {
  level: "info",
  format: "text",
  write: (text) => void process.stderr.write(text),
  now: () => new Date(),
};

let config: LogConfig = { ...DEFAULT_CONFIG };

/** Sets the process-wide level and format (and, for tests, the sink); unspecified parts return to the defaults. */
export function configureLogging(options: Partial<LogConfig>): void {
  config = { ...DEFAULT_CONFIG, ...options };
}

export function logConfig(): Readonly<LogConfig> {
  return config;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Whether a line of `level` is written under the current configuration. */
export function logEnabled(level: LogLevel): boolean {
  return RANK[level] <= RANK[config.level];
}

/** The prefixes that give a line its level, whatever channel it is logged on. */
const PREFIX_LEVELS: ReadonlyArray<readonly [string, LogLevel]> = [
  ["error: ", "error"],
  ["warning: ", "warn"],
  ["debug: ", "debug"],
];

/** A line's level and its message without the level prefix. */
export function classifyLine(line: string, channel: LogLevel): { level: LogLevel; msg: string } {
  for (const [prefix, level] of PREFIX_LEVELS) {
    if (line.startsWith(prefix)) return { level, msg: line.slice(prefix.length) };
  }
  return { level: channel, msg: line };
}

/** One line as written: text keeps the line as given (prefix included), json one object per line. */
export function formatLine(component: string, line: string, channel: LogLevel, fields: LogFields | undefined, time: Date): string {
  if (config.format === "text") return `${time.toISOString()} ${component}: ${line}\n`;
  const { level, msg } = classifyLine(line, channel);
  return `${JSON.stringify({ time: time.toISOString(), level, msg, fields: { component, ...fields } })}\n`;
}

/** Ends a progress line drawn in place on the terminal (cli/progress.ts), so that a log line starts on its own. */
let endLineInPlace: (() => void) | null = null;

export function setLineInPlace(end: (() => void) | null): void {
  endLineInPlace = end;
}

/**
 * A LogFn for `component` whose unprefixed lines are at level `channel` (info by default). `quiet` makes that
 * channel debug: the lines appear only with --log-level debug (commands whose lease and recovery lines are noise).
 */
export function makeLogger(component: string, quiet = false, channel: LogLevel = "info"): LogFn {
  const base: LogLevel = quiet ? "debug" : channel;
  return (line: string, fields?: LogFields) => {
    if (!logEnabled(classifyLine(line, base).level)) return;
    if (endLineInPlace !== null) endLineInPlace();
    config.write(formatLine(component, line, base, fields, config.now()));
  };
}

/** Parses a --log-level value; null when it names no level. */
export function parseLogLevel(text: string): LogLevel | null {
  return (LOG_LEVELS as readonly string[]).includes(text) ? (text as LogLevel) : null;
}

export function parseLogFormat(text: string): LogFormat | null {
  return (LOG_FORMATS as readonly string[]).includes(text) ? (text as LogFormat) : null;
}
