// The read cache's persisted index (docs/format.md, "Read cache index page"): the index pages at the start of the
// read-cache region, loaded at open and written back in paced, bounded rounds, so a restart finds the cache warm.
//
// Ordering: a slot's data is written (the fill queue), then at the next round fdatasync, then the index page naming it
// is written and synced. An index page never names data not on the device; a slot reused after the last round reads
// as a miss after a crash (its CRC-32C no longer matches), never as wrong data.

import { PAGE_BYTES } from "../constants.ts";
import { decodeIndexPage, encodeIndexPage, indexPageVersion, INDEX_ENTRIES_PER_PAGE, type IndexEntry } from "../format/read_cache_index.ts";
import type { Clock, TimerHandle } from "../util/clock.ts";
import type { LogFn } from "../util/log.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";
import type { CacheSlots } from "./read_cache_slots.ts";

/** Index pages written per persist round (bounded writes); more dirty pages wait for the next round. */
export const INDEX_PAGES_PER_PERSIST_MAX = 256;
/**
 * A persist round starts this long after the first change it covers, and the next one no sooner than this after it
 * ends: a round's two fdatasyncs also flush the device under the journal's writes, so they are paced, not driven by
 * the fill rate (what is not persisted yet is only warmth a crash may lose).
 */
export const INDEX_PERSIST_DELAY_MS = 1000;

/** What load() found in the persisted index. */
export interface LoadCounts {
  kept: number;
  dropped: number;
  /** Pages of an older index format (version 1, keyed by volume block): their slots start empty. */
  oldFormatPages: number;
}

export interface IndexStoreOptions {
  device: CacheDevice;
  pool: AlignedPool;
  /** Where the index pages start on the device, and how many there are. */
  startBytes: number;
  pages: number;
  cacheUuid: string;
  log: LogFn;
  clock: Clock;
}

export class IndexStore {
  private slots: CacheSlots | null = null;
  private readonly dirtyPages = new Set<number>();
  private persistTimer: TimerHandle | null = null;
  private persisting: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly options: IndexStoreOptions) {}

  /** The slots this index describes (set once, before any change is reported). */
  attach(slots: CacheSlots): void {
    this.slots = slots;
  }

  /** A slot's entry changed: its page is written at a coming round. */
  readonly changed = (slot: number): void => {
    this.dirtyPages.add(Math.floor(slot / INDEX_ENTRIES_PER_PAGE));
    this.schedule(INDEX_PERSIST_DELAY_MS);
  };

  private schedule(delayMs: number): void {
    if (this.persistTimer !== null || this.persisting !== null || this.stopped) return;
    this.persistTimer = this.options.clock.setTimer(delayMs, () => {
      this.persistTimer = null;
      this.persisting = this.persist()
        .catch(() => undefined) // a failed persist only loses warmth: the pages stay dirty
        .finally(() => {
          this.persisting = null;
          if (this.dirtyPages.size > 0) this.schedule(INDEX_PERSIST_DELAY_MS);
        });
    });
  }

  /**
   * One bounded round of up to INDEX_PAGES_PER_PERSIST_MAX index pages: encode them, fdatasync, write them (one
   * vectored write per run of consecutive pages), fdatasync. A page that fails to be written stays dirty.
   */
  async persist(): Promise<void> {
    if (this.dirtyPages.size === 0) return;
    const { device, cacheUuid, log } = this.options;
    const pages = [...this.dirtyPages].slice(0, INDEX_PAGES_PER_PERSIST_MAX).sort((a, b) => a - b);
    for (const page of pages) this.dirtyPages.delete(page);
    // Encoded before the first fdatasync: every slot these entries name was written before it was indexed, so the
    // sync makes it durable before its entry is written. Later changes mark their page dirty again.
    const encoded = pages.map((page) => encodeIndexPage(page, cacheUuid, this.slots!.entries(page * INDEX_ENTRIES_PER_PAGE, (page + 1) * INDEX_ENTRIES_PER_PAGE)));
    try {
      await device.fdatasync();
      await this.writePages(pages, encoded);
      await device.fdatasync();
      log(`debug: read cache: index persisted, ${pages.length} page(s), ${this.slots!.indexed} blocks indexed`);
    } catch (error) {
      for (const page of pages) this.dirtyPages.add(page);
      throw error;
    }
  }

  /** Writes encoded index pages (sorted page numbers): one vectored write per run of consecutive pages, all at once. */
  private async writePages(pages: number[], encoded: Uint8Array[]): Promise<void> {
    const { device, pool, startBytes } = this.options;
    const buffers = encoded.map((bytes) => {
      const buffer = pool.acquire(PAGE_BYTES);
      buffer.set(bytes);
      return buffer;
    });
    try {
      const writes: Array<Promise<void>> = [];
      for (let first = 0, end = 1; first < pages.length; first = end, end = first + 1) {
        while (end < pages.length && pages[end] === pages[end - 1]! + 1) end += 1;
        writes.push(device.write(startBytes + pages[first]! * PAGE_BYTES, buffers.slice(first, end)));
      }
      const results = await Promise.allSettled(writes);
      for (const result of results) if (result.status === "rejected") throw result.reason;
    } finally {
      for (const buffer of buffers) pool.release(buffer);
    }
  }

  /**
   * At open: reads the persisted index into the slots. Every entry of a page that decodes is kept (an entry names
   * immutable bytes: nothing to check against a map); pages that do not decode (never written, torn, another
   * formatting's, an older format) leave their slots empty.
   */
  async load(): Promise<LoadCounts> {
    const { device, pool, startBytes, pages, cacheUuid } = this.options;
    const counts: LoadCounts = { kept: 0, dropped: 0, oldFormatPages: 0 };
    const buffer = pool.acquire(PAGE_BYTES);
    try {
      for (let page = 0; page < pages; page++) {
        const bytes = buffer.subarray(0, PAGE_BYTES);
        await device.read(startBytes + page * PAGE_BYTES, bytes);
        let entries: Array<IndexEntry | null>;
        try {
          entries = decodeIndexPage(bytes, page, cacheUuid);
        } catch {
          const version = indexPageVersion(bytes);
          if (version !== null && version < 2) {
            counts.oldFormatPages += 1;
            this.dirtyPages.add(page); // rewritten empty in the current format
          }
          continue;
        }
        this.loadPage(page, entries, counts);
      }
    } finally {
      pool.release(buffer);
    }
    if (this.dirtyPages.size > 0) this.schedule(INDEX_PERSIST_DELAY_MS);
    return counts;
  }

  private loadPage(page: number, entries: Array<IndexEntry | null>, counts: LoadCounts): void {
    const slots = this.slots!;
    entries.forEach((entry, position) => {
      const slot = page * INDEX_ENTRIES_PER_PAGE + position;
      if (entry === null || slot >= slots.count) return;
      if (slots.load(slot, entry)) {
        counts.kept += 1;
        return;
      }
      counts.dropped += 1;
      this.dirtyPages.add(page);
    });
  }

  /** Clean stop: no more timed rounds; the running one ends, then every dirty page is persisted. */
  async close(): Promise<void> {
    this.stopped = true;
    this.persistTimer?.cancel();
    this.persistTimer = null;
    await this.persisting;
    while (this.dirtyPages.size > 0) await this.persist();
  }
}
