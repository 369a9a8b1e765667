// `serve --pid-file PATH`: a file holding the server's process id and a newline, for init systems and scripts.
//
// Rules:
//   - claim() (before anything is bound) refuses a file that names a live process other than this one, and a
//     file that does not hold a process id at all (it is not ours to overwrite); a file naming a dead process is
//     stale and is replaced later;
//   - write() (after the lease is taken and the listeners are bound) writes PATH.tmp.PID and renames it over PATH,
//     so a reader never sees a partial file;
//   - remove() (at exit after a shutdown) unlinks PATH only while it still names this process.
// A process killed with SIGKILL leaves its file behind; the next claim() finds it stale.

import { readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { IOError, InvalidArgumentError } from "../errors.ts";

/** The pid in a pid file's text, or null when the text is not "<digits>" with an optional newline (pure). */
export function parsePidFileText(text: string): number | null {
  const match = /^(\d{1,10})\n?$/.exec(text);
  if (match === null) return null;
  const pid = Number(match[1]);
  return pid > 0 ? pid : null;
}

/** True when process `pid` exists (kill(pid, 0) succeeds, or fails with EPERM: it exists under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readIfPresent(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new IOError(`Cannot read pid file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

export class PidFile {
  private written = false;

  private constructor(
    readonly path: string,
    readonly pid: number,
  ) {}

  /** Checks PATH may be (re)written by this process; see the rules above. */
  static claim(path: string, pid = process.pid): PidFile {
    const text = readIfPresent(path);
    if (text !== null) {
      const holder = parsePidFileText(text);
      if (holder === null) throw new InvalidArgumentError(`--pid-file ${path} exists and does not hold a process id; not replacing it`);
      if (holder !== pid && processAlive(holder)) {
        throw new IOError(`--pid-file ${path} names process ${holder}, which is running; not replacing it (another server uses this pid file)`);
      }
    }
    return new PidFile(path, pid);
  }

  write(): void {
    const temp = `${this.path}.tmp.${this.pid}`;
    try {
      writeFileSync(temp, `${this.pid}\n`);
      renameSync(temp, this.path);
    } catch (error) {
      throw new IOError(`Cannot write pid file ${this.path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
    this.written = true;
  }

  /** Unlinks PATH if this process wrote it and it still names this process. Never throws (exit paths call it). */
  remove(): void {
    if (!this.written) return;
    try {
      if (parsePidFileText(readIfPresent(this.path) ?? "") === this.pid) unlinkSync(this.path);
    } catch {
      // Leaving a stale pid file is harmless: the next claim() replaces it.
    }
  }
}
