// A BlockDevice in memory for the NBD tests (cf. nbdkit plugins/memory): a sparse map of 4 KiB pages.
// Unwritten (or trimmed, or zeroed) pages are holes that read as zeroes; blockStatus reports them as hole+zero.
// Unaligned I/O is handled page by page, as BlockDevice allows. Not the thing under test: kept obviously simple.

import { PAGE_BYTES } from "../../src/constants.ts";
import { InvalidArgumentError, assert } from "../../src/errors.ts";
import type { BlockDevice, BlockStatusExtent } from "../../src/nbd/block_device.ts";

const RESOLVED = Promise.resolve();
const SLAB_BYTES = 256 * PAGE_BYTES;

export class MemoryBlockDevice implements BlockDevice {
  /** Any offset and length, as the volume (the pages make it simple). */
  readonly blockSizeMinBytes = 1;
  readonly blockSizePreferredBytes = PAGE_BYTES;
  /** Page index -> page contents. */
  readonly pages = new Map<number, Uint8Array>();
  private readonly freePages: Uint8Array[] = [];
  /** Counters the tests look at. */
  flushCount = 0;
  fuaCount = 0;
  cacheCount = 0;
  /**
   * Every write payload the device was given, with a copy taken when it was given, when `keepPayloads` (checks the
   * session's promise: a payload does not change until its write completes; a write that sees it change fails).
   */
  keptPayloads: { data: Uint8Array; copy: Uint8Array }[] = [];
  keepPayloads = false;
  /** When set, every call waits for this promise first (tests of in-flight behaviour). */
  gate: Promise<void> | null = null;

  constructor(
    readonly sizeBytes: number,
    readonly readOnly = false,
  ) {
    assert(sizeBytes % PAGE_BYTES === 0, "memory device size is whole pages");
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (this.gate) await this.gate;
    this.checkRange(offset, length);
    const result = new Uint8Array(length);
    this.forEachPage(offset, length, (page, pageOffset, resultOffset, bytes) => {
      const data = this.pages.get(page);
      if (data) result.set(data.subarray(pageOffset, pageOffset + bytes), resultOffset);
    });
    return result;
  }

  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    // Fast path for the perf checks (serve_memory.ts): one aligned page, no gate, no closure, no async frame.
    if (this.gate === null && !this.keepPayloads && data.length === PAGE_BYTES && offset % PAGE_BYTES === 0) {
      if (offset + PAGE_BYTES > this.sizeBytes) return Promise.reject(this.rangeError(offset, data.length));
      if (fua) this.fuaCount++;
      const page = offset / PAGE_BYTES;
      const target = this.pages.get(page) ?? this.newPage(page);
      target.set(data); // a copy: never keep a view that pins the client's whole chunk
      return RESOLVED;
    }
    return this.writeSlow(offset, data, fua);
  }

  private async writeSlow(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    const kept = this.keepPayloads ? { data, copy: data.slice() } : null;
    if (kept !== null) this.keptPayloads.push(kept);
    if (this.gate) await this.gate;
    // The session promises the payload stays as it was until the write completes: check it did, at the last moment.
    if (kept !== null && Buffer.compare(Buffer.from(kept.data), Buffer.from(kept.copy)) !== 0) {
      throw new Error(`the payload of the write at ${offset} changed while the write was in flight`);
    }
    this.checkRange(offset, data.length);
    if (fua) this.fuaCount++;
    this.forEachPage(offset, data.length, (page, pageOffset, dataOffset, bytes) => {
      const target = this.pages.get(page) ?? this.newPage(page);
      target.set(data.subarray(dataOffset, dataOffset + bytes), pageOffset);
    });
  }

  async flush(): Promise<void> {
    if (this.gate) await this.gate;
    this.flushCount++;
  }

  async trim(offset: number, length: number, fua: boolean): Promise<void> {
    await this.writeZeroes(offset, length, fua);
  }

  /** Whole pages become holes; partial pages are zeroed in place. */
  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    if (this.gate) await this.gate;
    this.checkRange(offset, length);
    if (fua) this.fuaCount++;
    this.forEachPage(offset, length, (page, pageOffset, _dataOffset, bytes) => {
      const target = this.pages.get(page);
      if (target === undefined) return;
      if (bytes === PAGE_BYTES) {
        this.pages.delete(page);
        this.freePages.push(target.fill(0));
      } else {
        target.fill(0, pageOffset, pageOffset + bytes);
      }
    });
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    if (this.gate) await this.gate;
    this.checkRange(offset, length);
    const extents: BlockStatusExtent[] = [];
    this.forEachPage(offset, length, (page, _pageOffset, _dataOffset, bytes) => {
      const hole = !this.pages.has(page);
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) last.length += bytes;
      else extents.push({ length: bytes, hole, zero: hole });
    });
    return extents;
  }

  async cache(offset: number, length: number): Promise<void> {
    if (this.gate) await this.gate;
    this.checkRange(offset, length);
    this.cacheCount++;
  }

  /**
   * Pages are carved from slabs and recycled: one ArrayBuffer per 4 KiB page made the garbage collector, not the
   * server, the cost of a random-write benchmark. A page comes back zeroed.
   */
  private newPage(page: number): Uint8Array {
    let target = this.freePages.pop();
    if (target === undefined) {
      const slab = new Uint8Array(SLAB_BYTES);
      for (let offset = SLAB_BYTES - PAGE_BYTES; offset > 0; offset -= PAGE_BYTES) {
        this.freePages.push(slab.subarray(offset, offset + PAGE_BYTES));
      }
      target = slab.subarray(0, PAGE_BYTES);
    }
    this.pages.set(page, target);
    return target;
  }

  private checkRange(offset: number, length: number): void {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.sizeBytes)) throw this.rangeError(offset, length);
  }

  private rangeError(offset: number, length: number): InvalidArgumentError {
    return new InvalidArgumentError(`Cannot access memory device at ${offset}+${length}: past the end`);
  }

  /** Calls `visit(page, offsetInPage, offsetInRequest, bytes)` for each page the range touches. */
  private forEachPage(
    offset: number,
    length: number,
    visit: (page: number, pageOffset: number, requestOffset: number, bytes: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const page = Math.floor(position / PAGE_BYTES);
      const pageOffset = position % PAGE_BYTES;
      const bytes = Math.min(PAGE_BYTES - pageOffset, length - done);
      visit(page, pageOffset, done, bytes);
      done += bytes;
    }
  }
}
