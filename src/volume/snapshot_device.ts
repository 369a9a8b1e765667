// A read-only block device over one snapshot (`lsvd serve --volume VOLUME@SNAP --read-only`): the snapshot's
// checkpoint map, read straight from the backend. No cache, no lease, no write: it may run while another process
// serves the head, since nothing it reads changes while the snapshot is listed (docs/architecture.md, "Snapshots":
// the snapshot pins its checkpoint and every object its map names). If the snapshot is deleted meanwhile, a read of
// an object GC then deleted fails with an error; it never returns other data (object names are never reused).

import { GETS_INFLIGHT_MAX, NBD_REQUEST_BYTES_MAX, PAGE_BYTES, SECTOR_BYTES } from "../constants.ts";
import { CKPT_MAP_ENTRY_BYTES, unpackCheckpointMapEntry } from "../format/checkpoint_object.ts";
import { objectName } from "../format/object_name.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { loadCloneChain } from "./clone_chain.ts";
import { mapBlockStatus } from "./block_status.ts";
import { ExtentMap } from "../map/extent_map.ts";
import type { BlockDevice, BlockStatusExtent } from "../nbd/block_device.ts";
import { InvalidArgumentError, NotSupportedError, assert } from "../errors.ts";
import { readSuperblock } from "./recovery/backend.ts";
import { findSnapshot, readSnapshotCheckpoint, type SnapshotInfo } from "./snapshots.ts";

export class SnapshotDevice implements BlockDevice {
  readonly readOnly = true;
  readonly blockSizeMinBytes = SECTOR_BYTES;
  readonly blockSizePreferredBytes = PAGE_BYTES;
  /** Backend reads made (tests). */
  backendReads = 0;

  private constructor(
    private readonly store: ObjectStore,
    private readonly prefix: string,
    readonly snapshot: SnapshotInfo,
    readonly sizeBytes: number,
    /** lba -> object seq and sector offset inside the object (header included). */
    private readonly map: ExtentMap,
  ) {}

  /** Snapshot `name` of the volume at `prefix`: reads the superblock and the snapshot's checkpoint. */
  static async open(store: ObjectStore, prefix: string, name: string): Promise<SnapshotDevice> {
    const superblock = await readSuperblock(store, prefix);
    const snapshot = findSnapshot(superblock, prefix, name);
    // A clone's snapshot names its bases' objects too: read them through the chain (clone_chain.ts).
    const chained = (await loadCloneChain(store, prefix, superblock)).wrap(store);
    const checkpoint = await readSnapshotCheckpoint(store, prefix, superblock.volUuid, snapshot.seq);
    const map = new ExtentMap();
    const entries = checkpoint.mapEntries;
    const view = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
    for (let index = 0; index < entries.byteLength / CKPT_MAP_ENTRY_BYTES; index++) {
      const entry = unpackCheckpointMapEntry(view, index);
      map.update(entry.lba, entry.sectors, entry.obj, entry.offsetSectors);
    }
    return new SnapshotDevice(chained, prefix, snapshot, superblock.volSectors * SECTOR_BYTES, map);
  }

  get extentCount(): number {
    return this.map.extentCount;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    assert(offset % SECTOR_BYTES === 0 && length % SECTOR_BYTES === 0 && offset + length <= this.sizeBytes, "read inside the volume, whole sectors");
    if (length > NBD_REQUEST_BYTES_MAX) throw new InvalidArgumentError(`read of ${length} bytes: more than ${NBD_REQUEST_BYTES_MAX}`);
    const out = new Uint8Array(length);
    const pieces: Array<{ at: number; obj: number; offset: number; sectors: number }> = [];
    const lba = offset / SECTOR_BYTES;
    this.map.lookup(lba, length / SECTOR_BYTES, (pieceLba, sectors, obj, pieceOffset) => {
      pieces.push({ at: (pieceLba - lba) * SECTOR_BYTES, obj, offset: pieceOffset, sectors });
    });
    // Bounded: at most GETS_INFLIGHT_MAX ranged gets at once.
    for (let start = 0; start < pieces.length; start += GETS_INFLIGHT_MAX) {
      await Promise.all(
        pieces.slice(start, start + GETS_INFLIGHT_MAX).map(async (piece) => {
          const bytes = await this.store.getRange(objectName(this.prefix, piece.obj), piece.offset * SECTOR_BYTES, piece.sectors * SECTOR_BYTES);
          this.backendReads += 1;
          out.set(bytes, piece.at);
        }),
      );
    }
    return out;
  }

  private refuse(what: string): never {
    throw new NotSupportedError(`${what}: snapshot '${this.snapshot.name}' of ${this.prefix} is read-only`);
  }

  async write(): Promise<void> {
    this.refuse("write");
  }

  async flush(): Promise<void> {}

  async trim(): Promise<void> {
    this.refuse("trim");
  }

  async writeZeroes(): Promise<void> {
    this.refuse("write zeroes");
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    return mapBlockStatus(this.map, offset / SECTOR_BYTES, length / SECTOR_BYTES);
  }

  async cache(): Promise<void> {}
}
