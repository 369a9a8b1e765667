// Progress of long work (import, export, recovery at serve start, fsck, gc): on a terminal (and text logs), one line
// rewritten in place at most every PROGRESS_REDRAW_MS; otherwise (a log, a pipe, json logs) one line per step, per
// PROGRESS_LINE_PERCENT of the work, and, for work of unknown size, at most one per PROGRESS_LINE_MS.
// Lines that are not drawn in place go through `log` when given (serve: its log lines, timestamped), else to the
// stream as "label: text"; with --log-format json always through the logger, as info lines with fields.

import { logConfig, makeLogger, setLineInPlace, type LogFields, type LogFn } from "../util/log.ts";
import { formatSize } from "../util/size.ts";

const PROGRESS_REDRAW_MS = 200;
const PROGRESS_LINE_PERCENT = 10;
const PROGRESS_LINE_MS = 5000;

export class Progress {
  private readonly tty: boolean;
  private lastDrawMs = 0;
  private lastLineMs = 0;
  private lastPercentLine = -1;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly log: LogFn | null = null,
  ) {
    this.tty = stream.isTTY === true && logConfig().format === "text";
  }

  /** A step begins (a line of its own either way). */
  step(text: string, fields?: LogFields): void {
    if (!this.enabled) return;
    this.clear();
    this.line(text, fields);
  }

  /** Work done so far, in bytes of `total`. */
  bytes(done: number, total: number, what: string): void {
    const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
    this.update(`${what} ${formatSize(done)} of ${formatSize(total)} (${percent}%)`, percent, done >= total, { done, total });
  }

  /** Work done so far, in things (objects, records) of `total`, or of a total not known yet (null). */
  count(done: number, total: number | null, what: string): void {
    if (total === null) {
      this.update(`${what}: ${done}`, null, false, { done, total });
      return;
    }
    const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
    this.update(`${what}: ${done} of ${total} (${percent}%)`, percent, done >= total, { done, total });
  }

  /** Where work of no measurable size stands (a gc round): drawn in place on a terminal, a line each otherwise. */
  status(text: string, fields?: LogFields): void {
    if (!this.enabled) return;
    if (!this.tty) {
      this.line(text, fields);
      return;
    }
    this.draw(text);
  }

  /** Ends a line drawn in place, so what follows starts on its own line. */
  clear(): void {
    if (!this.drawn) return;
    this.drawn = false;
    setLineInPlace(null);
    this.stream.write("\n");
  }

  /** Draws `text` in place; a log line written meanwhile first ends it (util/log.ts). */
  private draw(text: string): void {
    this.stream.write(`\r\x1b[K${this.label}: ${text}`);
    this.drawn = true;
    setLineInPlace(() => this.clear());
  }

  private update(text: string, percent: number | null, finished: boolean, fields: LogFields): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (this.tty) {
      if (now - this.lastDrawMs < PROGRESS_REDRAW_MS && !finished) return;
      this.lastDrawMs = now;
      this.draw(text);
      return;
    }
    if (percent === null) {
      if (now - this.lastLineMs < PROGRESS_LINE_MS) return;
    } else {
      const line = Math.floor(percent / PROGRESS_LINE_PERCENT);
      if (line === this.lastPercentLine) return;
      this.lastPercentLine = line;
    }
    this.lastLineMs = now;
    this.line(text, fields);
  }

  private line(text: string, fields?: LogFields): void {
    if (this.log !== null) this.log(`${this.label}: ${text}`, fields);
    else if (logConfig().format === "json") makeLogger("lsvd")(`${this.label}: ${text}`, fields);
    else this.stream.write(`${this.label}: ${text}\n`);
  }
}
