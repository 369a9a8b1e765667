// Coalesces fdatasync calls on the cache device: every caller gets a sync that started after it asked, and callers
// that ask while one is running share the next one. This is what makes FLUSH and FUA cheap under load.

import type { CacheDevice } from "../cache/cache_device.ts";

export class FlushCoordinator {
  private requested = 0;
  private completed = 0;
  private running: Promise<void> | null = null;
  syncs = 0;

  constructor(private readonly device: CacheDevice) {}

  async sync(): Promise<void> {
    const ticket = ++this.requested;
    while (this.completed < ticket) {
      if (this.running) {
        await this.running;
        continue;
      }
      const target = this.requested;
      this.running = this.device.fdatasync().then(() => {
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
}
