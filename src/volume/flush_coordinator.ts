// The cache device's fdatasync, coalesced (util/coalesced_sync.ts): every caller gets a sync that started after it
// asked, and callers that ask while one is running share the next one. This is what makes FLUSH and FUA cheap under
// load.

import type { CacheDevice } from "../cache/cache_device.ts";
import { CoalescedSync } from "../util/coalesced_sync.ts";

export class FlushCoordinator extends CoalescedSync {
  constructor(device: CacheDevice) {
    super(() => device.fdatasync());
  }
}
