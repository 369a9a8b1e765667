// The read path: each piece of a read comes from the newest place that holds it — a batch not yet durable in the
// backend (from its memory buffer, or from the journal on the cache device when the batch is journal-only), else a
// ranged read of its backend object; unmapped space reads as zeroes (docs/architecture.md, "The read path").
// Backend reads are bounded by GETS_INFLIGHT_MAX.

import { GETS_INFLIGHT_MAX, PAGE_BYTES, READ_CACHE_INSERTS_INFLIGHT_MAX, SECTOR_BYTES, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName } from "../format/object_name.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { AlignedPool } from "../cache/cache_device.ts";
import type { ReadCache } from "../cache/read_cache.ts";
import type { Batch, JournalReader } from "./batch.ts";
import type { ObjectTable } from "./object_table.ts";

interface Fetch {
  /** Byte offset in the result. */
  target: number;
  /** First LBA of the piece. */
  lba: number;
  obj: number;
  offsetSectors: number;
  sectors: number;
}

export class ReadPath {
  private inFlight = 0;
  private waiters: Array<() => void> = [];
  backendReads = 0;
  backendReadBytes = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly prefix: string,
    private readonly map: ExtentMap,
    private readonly objects: ObjectTable,
    private readonly unflushed: Map<number, Batch>,
    private readonly journal: { readJournal: JournalReader; whenWritten: (seq: number) => Promise<void>; pool: AlignedPool },
    private readonly readCache: ReadCache | null = null,
  ) {}

  private cacheInsertsInFlight = 0;
  /**
   * Backend objects that reads in flight will fetch from, with a count each. Taken in the same synchronous step as
   * the map lookup, so garbage collection, which deletes only unpinned objects, never removes one under a read.
   */
  private readonly pins = new Map<number, number>();

  isPinned(obj: number): boolean {
    return this.pins.has(obj);
  }

  private pin(obj: number): void {
    this.pins.set(obj, (this.pins.get(obj) ?? 0) + 1);
  }

  private unpin(obj: number): void {
    const count = this.pins.get(obj)!;
    if (count === 1) this.pins.delete(obj);
    else this.pins.set(obj, count - 1);
  }

  get readCacheStats(): { hits: number; misses: number; inserts: number; blocks: number } {
    const cache = this.readCache;
    return { hits: cache?.hits ?? 0, misses: cache?.misses ?? 0, inserts: cache?.inserts ?? 0, blocks: cache?.cachedBlocks ?? 0 };
  }

  /**
   * For the read cache at open: does the map point block (LBA / 8) at exactly `seq` from `offsetSectors` on, with
   * the object in the backend (not a batch still in the journal)? Only then does a persisted entry still hold the
   * block's current data (read_cache.ts invariants).
   */
  readonly mapsBlockTo = (block: number, seq: number, offsetSectors: number): boolean =>
    this.mapPoints(block, seq, offsetSectors) && this.objects.get(seq) !== undefined && !this.unflushed.has(seq);

  private mapPoints(block: number, seq: number, offsetSectors: number): boolean {
    let pieces = 0;
    let matches = false;
    this.map.lookup(block * SECTORS_PER_PAGE, SECTORS_PER_PAGE, (_lba, pieceSectors, obj, offset) => {
      pieces += 1;
      matches = pieceSectors === SECTORS_PER_PAGE && obj === seq && offset === offsetSectors;
    });
    return pieces === 1 && matches;
  }

  /**
   * Write-to-read migration, called as a batch's object becomes durable, before its buffer is reused: the whole
   * blocks the map still points at in it are copied once (the buffer is not the read-cache region's memory) and
   * handed to the read cache, which indexes each only if the map still points at it once its slot is written.
   */
  adoptDurableBatch(batch: Batch): void {
    const cache = this.readCache;
    if (cache === null || !cache.enabled || !batch.dataInBuffer) return;
    const blocks: number[] = [];
    const offsets: number[] = [];
    batch.forEachWholeBlock((block, offsetSectors) => {
      if (!this.mapPoints(block, batch.seq, offsetSectors)) return;
      blocks.push(block);
      offsets.push(offsetSectors);
    });
    if (blocks.length === 0) return;
    const data = new Uint8Array(blocks.length * PAGE_BYTES);
    for (let index = 0; index < blocks.length; index++) data.set(batch.dataView(offsets[index]!, SECTORS_PER_PAGE), index * PAGE_BYTES);
    void cache.adopt(batch.seq, blocks, offsets, data, this.mapsBlockTo);
  }

  /** Clean stop: the read cache's index is persisted whole. */
  async closeReadCache(): Promise<void> {
    await this.readCache?.close();
  }

  async read(lba: number, sectors: number): Promise<Uint8Array> {
    const result = new Uint8Array(sectors * SECTOR_BYTES);
    // Taken before the map lookup: data fetched for this read may enter the read cache only if no write or trim
    // came in between (read_cache.ts invariants).
    const cacheEpoch = this.readCache?.currentEpoch ?? 0;
    const fetches: Fetch[] = [];
    const journalReads: Array<Promise<void>> = [];
    const pinned: number[] = [];
    this.map.lookup(lba, sectors, (pieceLba, pieceSectors, obj, offset) => {
      const target = (pieceLba - lba) * SECTOR_BYTES;
      const batch = this.unflushed.get(obj);
      if (batch) {
        if (batch.dataInBuffer) result.set(batch.dataView(offset, pieceSectors), target);
        else {
          // Pinned too: the batch may become durable, and its object then be read, before this read ends.
          this.pin(obj);
          pinned.push(obj);
          journalReads.push(this.readFromJournal(result, target, obj, batch, offset, pieceSectors));
        }
        return;
      }
      const last = fetches[fetches.length - 1];
      // Adjacent pieces of one object that are adjacent inside it too become one ranged read.
      if (last && last.obj === obj && last.offsetSectors + last.sectors === offset && last.target + last.sectors * SECTOR_BYTES === target) {
        last.sectors += pieceSectors;
      } else {
        fetches.push({ target, lba: pieceLba, obj, offsetSectors: offset, sectors: pieceSectors });
      }
    });
    for (const fetch of fetches) {
      this.pin(fetch.obj);
      pinned.push(fetch.obj);
    }
    try {
      if (fetches.length === 1 && journalReads.length === 0) await this.fetch(result, fetches[0]!, cacheEpoch);
      else if (fetches.length + journalReads.length > 0) {
        // allSettled: the pins go only when every part has stopped, not at the first failure.
        const parts = await Promise.allSettled([...journalReads, ...fetches.map((fetch) => this.fetch(result, fetch, cacheEpoch))]);
        for (const part of parts) if (part.status === "rejected") throw part.reason;
      }
    } finally {
      for (const obj of pinned) this.unpin(obj);
    }
    return result;
  }

  /**
   * A piece of a journal-only batch: read from the journal pages that hold it, once their records are written. The
   * records cannot be released meanwhile: that waits for the batch's put, which waits for its build.
   */
  private async readFromJournal(
    result: Uint8Array,
    target: number,
    obj: number,
    batch: Batch,
    offsetSectors: number,
    sectors: number,
  ): Promise<void> {
    const runs = batch.journalRuns(offsetSectors, sectors);
    const { readJournal, whenWritten, pool } = this.journal;
    for (const run of runs) {
      await whenWritten(run.recordSeq);
      const alignedStart = Math.floor(run.journalOffset / PAGE_BYTES) * PAGE_BYTES;
      const alignedEnd = Math.ceil((run.journalOffset + run.bytes) / PAGE_BYTES) * PAGE_BYTES;
      const pages = pool.acquire(alignedEnd - alignedStart);
      try {
        await readJournal(alignedStart, pages.subarray(0, alignedEnd - alignedStart));
        const from = run.journalOffset - alignedStart;
        result.set(pages.subarray(from, from + run.bytes), target + run.target);
      } finally {
        pool.release(pages);
      }
    }
    // If the batch's object became durable meanwhile, its journal space may have been reused under the read: the
    // object is in the backend now, so read it from there instead.
    if (this.unflushed.get(obj) !== batch) {
      await this.fetch(result, { target, lba: -1, obj, offsetSectors, sectors }, -1);
    }
  }

  private async fetch(result: Uint8Array, fetch: Fetch, cacheEpoch: number): Promise<void> {
    const info = this.objects.get(fetch.obj);
    assert(info !== undefined, `map points at unknown object ${fetch.obj}`);
    // Whole, aligned 4 KiB blocks go through the SSD read cache.
    const cache = this.readCache;
    const cacheable = cache !== null && cache.enabled && fetch.lba >= 0 && fetch.lba % SECTORS_PER_PAGE === 0 && fetch.sectors % SECTORS_PER_PAGE === 0;
    const bytesWanted = fetch.sectors * SECTOR_BYTES;
    if (cacheable && (await cache.read(fetch.lba / SECTORS_PER_PAGE, fetch.sectors / SECTORS_PER_PAGE, result.subarray(fetch.target, fetch.target + bytesWanted)))) {
      return;
    }
    while (this.inFlight >= GETS_INFLIGHT_MAX) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.inFlight += 1;
    try {
      const bytes = await this.store.getRange(
        objectName(this.prefix, fetch.obj),
        (info.hdrSectors + fetch.offsetSectors) * SECTOR_BYTES,
        fetch.sectors * SECTOR_BYTES,
      );
      result.set(bytes, fetch.target);
      this.backendReads += 1;
      this.backendReadBytes += bytes.byteLength;
      // Filling the cache does not hold up the read; a bounded number of fills run at once, the rest are skipped.
      if (cacheable && this.cacheInsertsInFlight < READ_CACHE_INSERTS_INFLIGHT_MAX) {
        this.cacheInsertsInFlight += 1;
        void cache.insert(fetch.lba / SECTORS_PER_PAGE, bytes, cacheEpoch, { seq: fetch.obj, offsetSectors: fetch.offsetSectors }).finally(() => (this.cacheInsertsInFlight -= 1));
      }
    } finally {
      this.inFlight -= 1;
      this.waiters.shift()?.();
    }
  }
}
