// Logging: one line per event on stderr, timestamped, so `lsvd serve` output can be read by people and by grep.

export type LogFn = (line: string) => void;

export function makeLogger(component: string, quiet = false): LogFn {
  if (quiet) return () => {};
  return (line: string) => {
    process.stderr.write(`${new Date().toISOString()} ${component}: ${line}\n`);
  };
}
