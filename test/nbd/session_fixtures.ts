// Fixtures for tests that drive one NbdSession in process: a block device that only takes writes (geometry and every
// other call refused, so a test that reaches one fails loudly; subclasses decide what a write does), and a session
// over it after a plain handshake whose protocol errors throw.

import type { BlockDevice, BlockStatusExtent } from "../../src/nbd/block_device.ts";
import { OutputQueue, type Transport } from "../../src/nbd/output_queue.ts";
import { NbdSession, newNbdStats, type ChunkKeeper, type NbdStats } from "../../src/nbd/session.ts";

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

/** A session over `device` and `transport`, simple replies, counting into `stats`; a protocol error throws. */
export function testSession(device: BlockDevice, transport: Transport, stats: NbdStats = newNbdStats(), chunkKeeper: ChunkKeeper | null = null): NbdSession {
  return new NbdSession({
    chunkKeeper,
    device,
    negotiated: { structuredReplies: false, baseAllocation: false, transmissionFlags: 0 },
    transport,
    output: new OutputQueue(transport),
    stats,
    logFailure: () => {},
    name: "test",
    onProtocolError: (reason) => {
      throw new Error(`protocol error: ${reason}`);
    },
    onDrainedForEnd: () => {},
    onSettled: () => {},
  });
}
