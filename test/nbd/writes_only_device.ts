// A block device for session tests that only take writes: geometry and every other call refused, so a test that
// reaches one fails loudly. Subclasses decide what a write does (hold it, count it, ...).

import type { BlockDevice, BlockStatusExtent } from "../../src/nbd/block_device.ts";

export abstract class WritesOnlyDevice implements BlockDevice {
  readonly sizeBytes = 64 * 1024 * 1024;
  readonly readOnly = false;
  readonly blockSizeMinBytes = 1;
  readonly blockSizePreferredBytes = 4096;
  abstract write(offset: number, data: Uint8Array, fua: boolean): Promise<void>;
  read(): Promise<Uint8Array> {
    throw new Error("not used");
  }
  flush(): Promise<void> {
    throw new Error("not used");
  }
  trim(): Promise<void> {
    throw new Error("not used");
  }
  writeZeroes(): Promise<void> {
    throw new Error("not used");
  }
  blockStatus(): Promise<BlockStatusExtent[]> {
    throw new Error("not used");
  }
  cache(): Promise<void> {
    throw new Error("not used");
  }
}
