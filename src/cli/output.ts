// Standard output for the CLI. process.stdout.write to a pipe is asynchronous in Bun, and process.exit drops what is
// still queued: `lsvd parse --json BIG | jq` lost everything past 64 KiB. Every write here goes through Bun.write,
// chained so the order is kept, and main awaits flushOutput() before it exits.

let pending: Promise<unknown> = Promise.resolve();

/** Queues `text` for standard output, after everything queued before it. */
export function writeOut(text: string): void {
  pending = pending.then(() => Bun.write(Bun.stdout, text));
}

/** Resolves once everything queued so far is written (a write error, e.g. EPIPE, is reported by the caller). */
export function flushOutput(): Promise<unknown> {
  return pending;
}
