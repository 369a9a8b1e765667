// A volume's client write load as read-cache migration sees it (src/cache/migration_rules.ts): client writes queued
// and not yet acknowledged, and client bytes written per second since the previous look (each look is a durable
// batch, so under sustained writes the interval is one batch's worth of writes).

import type { WriteLoad } from "../../cache/migration_rules.ts";

export class WriteLoadMeter {
  private lastMs: number;
  private lastBytes: number;

  constructor(nowMs: number, writeBytes: number) {
    this.lastMs = nowMs;
    this.lastBytes = writeBytes;
  }

  /** The load now, given the clock and the write path's counters; the rate covers the time since the previous look. */
  look(nowMs: number, writeBytes: number, clientWritesInFlight: number): WriteLoad {
    const elapsedMs = Math.max(1, nowMs - this.lastMs);
    const bytesPerSecond = ((writeBytes - this.lastBytes) * 1000) / elapsedMs;
    this.lastMs = nowMs;
    this.lastBytes = writeBytes;
    return { clientWritesInFlight, bytesPerSecond };
  }
}
