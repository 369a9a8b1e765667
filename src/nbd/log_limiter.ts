// Rate-limited logging for what clients can cause in bulk: failed requests, refused and timed-out connections.
// At most `linesPerWindow` lines are written per window (one second in the server); past that, lines are counted by
// kind, and when the window ends one summary per kind says how many were left out and shows the last of them:
//
//   nbd unix#3: WRITE at 4096 length 4096 failed: EPERM (the export is read-only)
//   nbd: suppressed 4711 similar lines in the last 1000 ms; the last: nbd unix#9: WRITE at 8192 length 4096 ...
//
// So a flood cannot fill the log or bury other lines, and no failure goes uncounted. Kinds are bounded too
// (`KINDS_MAX`, the rest pooled as "other"), so a client inventing kinds cannot grow the table.

import { assert } from "../errors.ts";

const KINDS_MAX = 32;
const OTHER_KIND = "\u0000other";

export interface LogLimiterOptions {
  log: (line: string) => void;
  linesPerWindow: number;
  windowMs: number;
  /** Injectable for tests; Date.now by default. */
  now?: () => number;
}

interface Suppressed {
  count: number;
  lastLine: string;
}

export class LogLimiter {
  private readonly log: (line: string) => void;
  private readonly linesPerWindow: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private linesInWindow = 0;
  private readonly suppressed = new Map<string, Suppressed>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Lines left out so far, over the limiter's life (tests, stats). */
  suppressedTotal = 0;

  constructor(options: LogLimiterOptions) {
    assert(Number.isSafeInteger(options.linesPerWindow) && options.linesPerWindow > 0, "lines per window");
    assert(options.windowMs > 0, "log window");
    this.log = options.log;
    this.linesPerWindow = options.linesPerWindow;
    this.windowMs = options.windowMs;
    this.now = options.now ?? Date.now;
  }

  /** Writes `line`, or counts it under `kind` when this window already had its lines. */
  line(kind: string, line: string): void {
    const now = this.now();
    if (now - this.windowStartMs >= this.windowMs) {
      this.flush();
      this.windowStartMs = now;
      this.linesInWindow = 0;
    }
    if (this.linesInWindow < this.linesPerWindow) {
      this.linesInWindow++;
      this.log(line);
      return;
    }
    const key = this.suppressed.has(kind) || this.suppressed.size < KINDS_MAX ? kind : OTHER_KIND;
    const entry = this.suppressed.get(key);
    if (entry === undefined) this.suppressed.set(key, { count: 1, lastLine: line });
    else {
      entry.count++;
      entry.lastLine = line;
    }
    this.suppressedTotal++;
    if (this.timer === null) {
      // The summary comes when the window ends even if nothing else is logged; the timer never holds the process.
      this.timer = setTimeout(() => this.flush(), Math.max(0, this.windowStartMs + this.windowMs - now));
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  /** Writes the summaries of the current window now (the window end, or the server closing). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const [kind, entry] of this.suppressed) {
      const what = kind === OTHER_KIND ? "other lines" : entry.count === 1 ? "similar line" : "similar lines";
      this.log(`nbd: suppressed ${entry.count} ${what} in the last ${this.windowMs} ms; the last: ${entry.lastLine}`);
    }
    this.suppressed.clear();
  }
}
