// A volume's client write load as read-cache migration sees it (src/cache/migration_rules.ts): client writes queued
// and not yet acknowledged, and client bytes written per second since the previous look (each look is a durable
// batch, so under sustained writes the interval is one batch's worth of writes; after an idle spell it spans the
// spell, so a burst after it is not mistaken for sustained writing).

import type { WriteLoad } from "../../cache/migration_rules.ts";

export class WriteLoadMeter {
  /** The previous look; none before the first, whose rate is 0 (a burst right after open is not sustained writing). */
  private last: { ms: number; bytes: number } | null = null;

  /** The load now, given the clock and the write path's counters; the rate covers the time since the previous look. */
  look(nowMs: number, writeBytes: number, clientWritesInFlight: number): WriteLoad {
    const last = this.last;
    const bytesPerSecond = last === null ? 0 : ((writeBytes - last.bytes) * 1000) / Math.max(1, nowMs - last.ms);
    this.last = { ms: nowMs, bytes: writeBytes };
    return { clientWritesInFlight, bytesPerSecond };
  }
}
