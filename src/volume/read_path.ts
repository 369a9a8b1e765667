// The read path: each piece of a read comes from the newest place that holds it — a batch not yet durable in the
// backend (from its memory buffer, or from the journal on the cache device when the batch is journal-only), else a
// ranged read of its backend object; unmapped space reads as zeroes (docs/architecture.md, "The read path").
// Backend reads are bounded by GETS_INFLIGHT_MAX.

import { GETS_INFLIGHT_MAX, PAGE_BYTES, SECTOR_BYTES, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName } from "../format/object_name.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { AlignedPool } from "../cache/cache_device.ts";
import type { ReadCache } from "../cache/read_cache.ts";
import type { WriteLoad } from "../cache/migration_rules.ts";
import type { Batch, JournalReader } from "./batch.ts";
import type { ObjectTable } from "./object_table.ts";

/** The read cache a volume reads through (its own region, or a process's shared device) and the log id of each seq. */
export interface ReadCacheUse {
  cache: ReadCache;
  /** The cache's id for the log holding object `seq` of this volume: the base's for seqs a clone reads from its base. */
  logOf: (seq: number) => number;
}

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
    readonly readCacheUse: ReadCacheUse | null = null,
  ) {}

  /** This volume's reads of 4 KiB-aligned pieces the read cache served, and those it did not. */
  private readCacheHits = 0;
  private readCacheMisses = 0;
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

  /** Hits and misses are this volume's; inserts, adopted and blocks are the cache's (shared by every volume on it). */
  get readCacheStats() {
    const cache = this.readCacheUse?.cache;
    return {
      hits: this.readCacheHits,
      misses: this.readCacheMisses,
      inserts: cache?.inserts ?? 0,
      adopted: cache?.adopted ?? 0,
      skipped: cache?.fillsSkipped ?? 0,
      adoptSkipped: cache?.adoptSkipped ?? 0,
      adoptSkippedBusy: cache?.adoptSkippedBusy ?? 0,
      fillBatches: cache?.fillBatches ?? 0,
      fillWrites: cache?.fillWrites ?? 0,
      blocks: cache?.cachedBlocks ?? 0,
    };
  }

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
   * Write-to-read migration, called as a batch's object becomes durable, before its buffer is reused, with the
   * volume's client write load (the cache skips the batch while it is busy: migration_rules.ts): the whole
   * blocks the map still points at in it (the others are dead already) are copied once into an aligned buffer of the
   * read cache's pool (the batch buffer is not the read-cache region's memory), from which their slots are written,
   * under the object's name.
   */
  adoptDurableBatch(batch: Batch, load: WriteLoad): void {
    const use = this.readCacheUse;
    if (use === null || !use.cache.enabled || !batch.dataInBuffer) return;
    const blocksOf = (): number[] => {
      const offsets: number[] = [];
      batch.forEachWholeBlock((block, offsetSectors) => {
        if (this.mapPoints(block, batch.seq, offsetSectors)) offsets.push(offsetSectors);
      });
      return offsets;
    };
    // Runs of blocks adjacent in the data area (4 KiB writes appended one after another) are copied at once.
    use.cache.adopt(use.logOf(batch.seq), batch.seq, load, blocksOf, (into, offsets) => {
      for (let first = 0, end = 1; first < offsets.length; first = end, end = first + 1) {
        while (end < offsets.length && offsets[end] === offsets[end - 1]! + SECTORS_PER_PAGE) end += 1;
        into.set(batch.dataView(offsets[first]!, (end - first) * SECTORS_PER_PAGE), first * PAGE_BYTES);
      }
    });
  }

  async read(lba: number, sectors: number): Promise<Uint8Array> {
    const result = new Uint8Array(sectors * SECTOR_BYTES);
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
      if (fetches.length === 1 && journalReads.length === 0) await this.fetch(result, fetches[0]!);
      else if (fetches.length + journalReads.length > 0) {
        // allSettled: the pins go only when every part has stopped, not at the first failure.
        const parts = await Promise.allSettled([...journalReads, ...fetches.map((fetch) => this.fetch(result, fetch))]);
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
      await this.fetch(result, { target, lba: -1, obj, offsetSectors, sectors });
    }
  }

  private async fetch(result: Uint8Array, fetch: Fetch): Promise<void> {
    const info = this.objects.get(fetch.obj);
    assert(info !== undefined, `map points at unknown object ${fetch.obj}`);
    // Whole, aligned 4 KiB blocks go through the SSD read cache, under the object's name (read_cache.ts).
    const use = this.readCacheUse;
    const cacheable = use !== null && use.cache.enabled && fetch.lba >= 0 && fetch.lba % SECTORS_PER_PAGE === 0 && fetch.sectors % SECTORS_PER_PAGE === 0;
    const bytesWanted = fetch.sectors * SECTOR_BYTES;
    const log = cacheable ? use.logOf(fetch.obj) : -1;
    if (cacheable) {
      const into = result.subarray(fetch.target, fetch.target + bytesWanted);
      if (await use.cache.read(log, fetch.obj, fetch.offsetSectors, fetch.sectors / SECTORS_PER_PAGE, into)) {
        this.readCacheHits += 1;
        return;
      }
      this.readCacheMisses += 1;
    }
    while (this.inFlight >= GETS_INFLIGHT_MAX) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.inFlight += 1;
    try {
      const bytes = await this.store.getRange(objectName(this.prefix, fetch.obj), (info.hdrSectors + fetch.offsetSectors) * SECTOR_BYTES, bytesWanted);
      result.set(bytes, fetch.target);
      this.backendReads += 1;
      this.backendReadBytes += bytes.byteLength;
      // Queued for a batched fill: the reply does not wait for it (bounded; more are skipped).
      if (cacheable) use.cache.offer(log, fetch.obj, fetch.offsetSectors, bytes);
    } finally {
      this.inFlight -= 1;
      this.waiters.shift()?.();
    }
  }
}
