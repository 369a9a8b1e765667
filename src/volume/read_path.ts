// The read path: each piece of a read comes from the newest place that holds it — a batch still in memory (open,
// or sealed and not yet durable), else a ranged read of its backend object; unmapped space reads as zeroes
// (docs/architecture.md, "The read path"). Backend reads are bounded by GETS_INFLIGHT_MAX.

import { GETS_INFLIGHT_MAX, SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName } from "../format/object_name.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { Batch } from "./batch.ts";
import type { ObjectTable } from "./object_table.ts";

interface Fetch {
  /** Byte offset in the result. */
  target: number;
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
    private readonly inMemory: Map<number, Batch>,
  ) {}

  async read(lba: number, sectors: number): Promise<Uint8Array> {
    const result = new Uint8Array(sectors * SECTOR_BYTES);
    const fetches: Fetch[] = [];
    this.map.lookup(lba, sectors, (pieceLba, pieceSectors, obj, offset) => {
      const target = (pieceLba - lba) * SECTOR_BYTES;
      const batch = this.inMemory.get(obj);
      if (batch) {
        result.set(batch.dataView(offset, pieceSectors), target);
        return;
      }
      const last = fetches[fetches.length - 1];
      // Adjacent pieces of one object that are adjacent inside it too become one ranged read.
      if (last && last.obj === obj && last.offsetSectors + last.sectors === offset && last.target + last.sectors * SECTOR_BYTES === target) {
        last.sectors += pieceSectors;
      } else {
        fetches.push({ target, obj, offsetSectors: offset, sectors: pieceSectors });
      }
    });
    if (fetches.length === 1) await this.fetch(result, fetches[0]!);
    else if (fetches.length > 1) await Promise.all(fetches.map((fetch) => this.fetch(result, fetch)));
    return result;
  }

  private async fetch(result: Uint8Array, fetch: Fetch): Promise<void> {
    const info = this.objects.get(fetch.obj);
    assert(info !== undefined, `map points at unknown object ${fetch.obj}`);
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
    } finally {
      this.inFlight -= 1;
      this.waiters.shift()?.();
    }
  }
}
