// An in-memory CacheDevice for deterministic tests, with a crash model (cf. leveldb fault_injection_test.cc):
// - completed writes are "on the device" (a process crash keeps them: O_DIRECT semantics), with the bytes their
//   buffers held at completion, as DMA would take them;
// - writes still in flight when the crash happens are dropped, kept, or torn at a sector boundary, by seed;
// - powerLoss() additionally drops or tears writes completed since the last fdatasync.
// Completion order is shuffled by the seeded PRNG, so out-of-order completion is exercised. Completions and yields
// are timers on `clock` (real time unless a simulated world gives its virtual clock, sim_clock.ts).

import { PAGE_BYTES } from "../../src/constants.ts";
import { IOError, InvalidArgumentError } from "../../src/errors.ts";
import type { AlignedPool, CacheDevice } from "../../src/cache/cache_device.ts";
import { systemClock, type Clock } from "../../src/util/clock.ts";
import { Prng } from "./prng.ts";

interface PendingWrite {
  offset: number;
  /** The caller's buffers, read only when the write completes or the crash takes it (see write()). */
  buffers: Uint8Array[];
  length: number;
  resolve: () => void;
}

function gather(write: PendingWrite): Uint8Array {
  const bytes = new Uint8Array(write.length);
  let cursor = 0;
  for (const buffer of write.buffers) {
    bytes.set(buffer, cursor);
    cursor += buffer.byteLength;
  }
  return bytes;
}

export class MemoryPool implements AlignedPool {
  outstanding = 0;
  acquire(bytes: number): Uint8Array {
    this.outstanding += 1;
    return new Uint8Array(Math.ceil(bytes / PAGE_BYTES) * PAGE_BYTES);
  }
  acquireExact(bytes: number): Uint8Array {
    return this.acquire(bytes);
  }
  release(_buffer: Uint8Array): void {
    this.outstanding -= 1;
  }
}

export class MemoryCacheDevice implements CacheDevice {
  readonly path: string;
  readonly data: Uint8Array;
  /** Writes completed since the last fdatasync (what power loss may take). */
  private unsynced: Array<{ offset: number; bytes: Uint8Array; before: Uint8Array }> = [];
  private inFlight: PendingWrite[] = [];
  private crashed = false;
  writes = 0;
  syncs = 0;
  /** Fail every write after this many (for error-path tests); -1 never. */
  failWritesAfter = -1;
  /** Where completions are scheduled: a simulated world sets its virtual clock (crash() passes it on). */
  clock: Clock = systemClock;

  constructor(
    readonly sizeBytes: number,
    private readonly prng: Prng,
    data?: Uint8Array,
    name = "memory-cache",
  ) {
    this.path = name;
    this.data = data ?? new Uint8Array(sizeBytes);
  }

  private checkRange(offset: number, length: number): void {
    if (offset % PAGE_BYTES !== 0 || length % PAGE_BYTES !== 0) throw new InvalidArgumentError(`unaligned I/O at ${offset}+${length}`);
    if (offset + length > this.sizeBytes) throw new IOError(`I/O past the end at ${offset}+${length}`);
  }

  async read(offset: number, buffer: Uint8Array): Promise<void> {
    if (this.crashed) throw new IOError("device crashed");
    this.checkRange(offset, buffer.byteLength);
    await this.yieldRandomly();
    buffer.set(this.data.subarray(offset, offset + buffer.byteLength));
  }

  /** Counted apart from read(), so tests can tell which path a caller took; the same bytes. */
  cachedReads = 0;
  readCached(offset: number, buffer: Uint8Array): Promise<void> {
    this.cachedReads += 1;
    return this.read(offset, buffer);
  }

  async write(offset: number, buffers: Uint8Array[]): Promise<void> {
    if (this.crashed) throw new IOError("device crashed");
    const length = buffers.reduce((sum, buffer) => sum + buffer.byteLength, 0);
    this.checkRange(offset, length);
    if (this.failWritesAfter >= 0 && this.writes >= this.failWritesAfter) throw new IOError(`injected write error at ${offset}`);
    this.writes += 1;
    // Like DMA, the bytes are taken from the caller's buffers as late as possible: when the write completes (or the
    // crash takes it). A caller that changes or reuses a buffer before its write completes corrupts what lands.
    await new Promise<void>((resolve) => {
      this.inFlight.push({ offset, buffers: [...buffers], length, resolve });
      this.scheduleCompletion();
    });
  }

  private scheduled = false;
  private scheduleCompletion(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.clock.setTimer(0, () => {
      this.scheduled = false;
      if (this.crashed) return;
      // Complete a random subset, in random order: the device may reorder.
      const pending = this.inFlight;
      this.inFlight = [];
      this.prng.shuffle(pending);
      const completeCount = 1 + this.prng.int(pending.length);
      for (let index = 0; index < pending.length; index++) {
        const write = pending[index]!;
        if (index < completeCount) {
          const bytes = gather(write);
          const before = this.data.slice(write.offset, write.offset + bytes.byteLength);
          this.data.set(bytes, write.offset);
          this.unsynced.push({ offset: write.offset, bytes, before });
          write.resolve();
        } else {
          this.inFlight.push(write);
        }
      }
      if (this.inFlight.length > 0) this.scheduleCompletion();
    });
  }

  private async yieldRandomly(): Promise<void> {
    if (this.prng.int(4) === 0) await this.clock.sleep(0);
  }

  async fdatasync(): Promise<void> {
    if (this.crashed) throw new IOError("device crashed");
    await this.yieldRandomly();
    this.unsynced = [];
    this.syncs += 1;
  }

  async close(): Promise<void> {}

  /**
   * The process dies now: in-flight writes are each dropped, applied, or torn (a prefix of sectors applied), by seed.
   * Returns a fresh device over the surviving bytes; this one refuses further I/O.
   */
  crash(options: { powerLoss?: boolean } = {}): MemoryCacheDevice {
    this.crashed = true;
    const survivor = this.data.slice();
    const tear = (offset: number, bytes: Uint8Array) => {
      const choice = this.prng.int(3);
      if (choice === 0) return; // dropped
      if (choice === 1) return survivor.set(bytes, offset); // applied whole
      const sectors = bytes.byteLength / 512;
      const kept = this.prng.int(sectors);
      survivor.set(bytes.subarray(0, kept * 512), offset); // torn
    };
    if (options.powerLoss) {
      // Undo unsynced completed writes newest first, then re-apply each with the crash model.
      for (const write of [...this.unsynced].reverse()) survivor.set(write.before, write.offset);
      for (const write of this.unsynced) tear(write.offset, write.bytes);
    }
    for (const write of this.inFlight) tear(write.offset, gather(write));
    this.inFlight = [];
    const device = new MemoryCacheDevice(this.sizeBytes, this.prng, survivor, this.path);
    device.clock = this.clock;
    return device;
  }
}
