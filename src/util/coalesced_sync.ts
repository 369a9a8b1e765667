// Coalesces calls of one sync operation (an fdatasync of the cache device, an fsync of a directory): every caller
// gets a sync that *started after it asked*, and callers that ask while one is running share the next one. So what
// a caller did before asking (a journal write, a rename, an unlink) is covered, and N callers at once cost two syncs
// at most, not N. A failed sync rejects every caller that waited on it; the next caller starts a new one.

export class CoalescedSync {
  private requested = 0;
  private completed = 0;
  private running: Promise<void> | null = null;
  /** Syncs that completed (tests and counters read it). */
  syncs = 0;

  constructor(private readonly syncOnce: () => Promise<void>) {}

  async sync(): Promise<void> {
    const ticket = ++this.requested;
    while (this.completed < ticket) {
      if (this.running) {
        await this.running;
        continue;
      }
      const target = this.requested;
      this.running = this.syncOnce().then(() => {
        this.completed = Math.max(this.completed, target);
        this.syncs += 1;
      });
      try {
        await this.running;
      } finally {
        this.running = null;
      }
    }
  }

  /** Resolves once no sync is running (whether the last one failed or not): before its descriptor is closed. */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }
}
