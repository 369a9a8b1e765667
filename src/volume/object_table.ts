// Per-object facts the volume keeps in memory: header size (to turn map offsets into byte offsets) and live sectors
// (for garbage collection and checkpoints). Map offsets count from the start of an object's data area.

import { assert } from "../errors.ts";

export const ObjectKind = { Data: 2, Checkpoint: 3 } as const;

export interface ObjectInfo {
  kind: number;
  hdrSectors: number;
  dataSectors: number;
  liveSectors: number;
}

export class ObjectTable {
  private readonly objects = new Map<number, ObjectInfo>();
  /** The CHECKPOINT objects in the table (a few: the kept ones, snapshots', left-overs). */
  private readonly checkpointSeqs = new Set<number>();
  /**
   * Objects whose live sectors went down, or that were added, since the last takeChanged() (null: nobody asked). The
   * garbage collector keeps its totals up to date from it instead of scanning the table every round.
   */
  private changed: Set<number> | null = null;
  /** Objects deleted since the last takeRemoved(), noted likewise (null: nobody asked). */
  private removed: Set<number> | null = null;

  add(seq: number, info: ObjectInfo): void {
    assert(!this.objects.has(seq), `object ${seq} added twice`);
    this.objects.set(seq, info);
    if (info.kind === ObjectKind.Checkpoint) this.checkpointSeqs.add(seq);
    this.changed?.add(seq);
  }

  get(seq: number): ObjectInfo | undefined {
    return this.objects.get(seq);
  }

  delete(seq: number): void {
    this.objects.delete(seq);
    this.checkpointSeqs.delete(seq);
    this.removed?.add(seq);
  }

  /** Starts noting changed and deleted objects (see `changed`, `removed`); stopping forgets them. */
  noteChanges(on: boolean): void {
    this.changed = on ? (this.changed ?? new Set()) : null;
    this.removed = on ? (this.removed ?? new Set()) : null;
  }

  /** The objects deleted since the last call, handed over. */
  takeRemoved(): Set<number> {
    const removed = this.removed;
    assert(removed !== null, "deletes are taken only while they are noted");
    if (removed.size > 0) this.removed = new Set();
    return removed;
  }

  /** The objects changed since the last call, handed over (the table notes later ones in a new set). */
  takeChanged(): Set<number> {
    const changed = this.changed;
    assert(changed !== null, "changes are taken only while they are noted");
    if (changed.size > 0) this.changed = new Set();
    return changed;
  }

  /** The CHECKPOINT objects in the table, in no particular order. */
  get checkpoints(): ReadonlySet<number> {
    return this.checkpointSeqs;
  }

  /** Sectors displaced since the table was made: garbage made, by clients and GC copies alike (GC paces by it). */
  displacedSectors = 0;

  /** One watcher, called once when displacedSectors reaches `atSectors` (garbage collection's early round). */
  private displacedWatch: { atSectors: number; fire: () => void } | null = null;

  /** Called by the extent map for every mapped piece that a write or trim displaces. */
  readonly displaced = (seq: number, sectors: number): void => {
    this.displacedSectors += sectors;
    const info = this.objects.get(seq);
    if (info) info.liveSectors -= sectors;
    this.changed?.add(seq);
    const watch = this.displacedWatch;
    if (watch !== null && this.displacedSectors >= watch.atSectors) {
      this.displacedWatch = null;
      watch.fire(); // called inside a map update: it must only schedule work, not look at the map or the table
    }
  };

  /** Calls fire once, when displacedSectors reaches atSectors (replacing any earlier watch); null cancels. */
  watchDisplaced(watch: { atSectors: number; fire: () => void } | null): void {
    this.displacedWatch = watch;
  }

  get count(): number {
    return this.objects.size;
  }

  /** Every object, in no particular order (no sort: checkpoints and the collector's checks walk it whole). */
  forEach(visit: (seq: number, info: ObjectInfo) => void): void {
    for (const [seq, info] of this.objects) visit(seq, info);
  }

  /** Objects in ascending seq order. */
  entries(): Array<[number, ObjectInfo]> {
    return [...this.objects.entries()].sort((a, b) => a[0] - b[0]);
  }
}
