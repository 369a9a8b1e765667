// Progress of long work (import, export): on a terminal, one line rewritten in place at most every
// PROGRESS_REDRAW_MS; otherwise (a log, a pipe) one line per step and per PROGRESS_LINE_PERCENT of the work.

import { formatSize } from "../util/size.ts";

const PROGRESS_REDRAW_MS = 200;
const PROGRESS_LINE_PERCENT = 10;

export class Progress {
  private readonly tty: boolean;
  private lastDrawMs = 0;
  private lastPercentLine = -1;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = stream.isTTY === true;
  }

  /** A step begins (a line of its own either way). */
  step(text: string): void {
    if (!this.enabled) return;
    this.clear();
    this.stream.write(`${this.label}: ${text}\n`);
  }

  /** Work done so far, in bytes of `total`. */
  bytes(done: number, total: number, what: string): void {
    if (!this.enabled) return;
    const percent = total === 0 ? 100 : Math.floor((done / total) * 100);
    const text = `${this.label}: ${what} ${formatSize(done)} of ${formatSize(total)} (${percent}%)`;
    if (this.tty) {
      const now = Date.now();
      if (now - this.lastDrawMs < PROGRESS_REDRAW_MS && done < total) return;
      this.lastDrawMs = now;
      this.stream.write(`\r\x1b[K${text}`);
      this.drawn = true;
      return;
    }
    const line = Math.floor(percent / PROGRESS_LINE_PERCENT);
    if (line === this.lastPercentLine) return;
    this.lastPercentLine = line;
    this.stream.write(`${text}\n`);
  }

  /** Ends a line drawn in place, so what follows starts on its own line. */
  clear(): void {
    if (this.drawn) this.stream.write("\n");
    this.drawn = false;
  }
}
