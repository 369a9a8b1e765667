// Deletes CKPT objects left behind by crashes of earlier runs, for the garbage collector (docs/architecture.md,
// "Checkpoints" and "Garbage collection"). The write path deletes the checkpoints of its own run once a durable
// superblock no longer needs them (checkpoint.ts, checkpointsUnneeded); what it cannot see are CKPT objects that no
// longer are in its object table: those an earlier run dropped from the superblock and was killed before deleting,
// and those an earlier run wrote, was killed before listing, and a later run rolled forward and forgot.
//
// Rule: a CKPT object with seq c is deleted only when
//   - c is below the oldest checkpoint the durable superblock names (the collector's checkpointMin, reported after
//     the superblock put resolved): recovery reads only named checkpoints and rolls forward from one of them, so it
//     never reads below the oldest; a checkpoint of this run that is written but not yet named is newer than every
//     named one, so it is never below the oldest;
//   - c is not in the object table (the write path owns those: its own checkpoints and the ones recovery rolled
//     forward through);
//   - its header says it is a CKPT object of this volume with seq c (a DATA object under an unknown seq, or anything
//     foreign, is left alone for fsck to report);
//   - it is not a listed snapshot's checkpoint (snapshots.ts: a deleted snapshot's checkpoint goes into the object
//     table, and the write path deletes it).
// Candidates come from one listing of the backend at the first round; seqs the run allocates later are in the object
// table, so one listing finds every left-over.

import { GC_DELETES_PER_ROUND_MIN } from "../constants.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { CorruptionError, NotFoundError } from "../errors.ts";
import { COMMON_HEADER_BYTES, decodeCommonHeader, ObjectType } from "../format/object_header.ts";
import { objectName, parseObjectName } from "../format/object_name.ts";
import type { ObjectTable } from "./object_table.ts";
import type { SnapshotPins } from "./snapshots.ts";

export interface LeftoverCheckpointsOptions {
  store: ObjectStore;
  prefix: string;
  volUuid: string;
  objects: ObjectTable;
  log: (line: string) => void;
  snapshotPins: Pick<SnapshotPins, "isSnapshotCheckpoint">;
}

export class LeftoverCheckpoints {
  /** Seqs under the prefix that the object table did not know at the listing, ascending; null: not listed yet. */
  private candidates: number[] | null = null;

  constructor(private readonly options: LeftoverCheckpointsOptions) {}

  /**
   * Deletes, oldest first and at most GC_DELETES_PER_ROUND_MIN, the left-over CKPT objects below checkpointMin (the
   * oldest checkpoint the durable superblock names; 0: none, then nothing is deleted). Returns how many it deleted.
   */
  async collect(checkpointMin: number, sequenceNext: number, stopped: () => boolean): Promise<number> {
    if (checkpointMin === 0) return 0;
    const { store, prefix, objects, log } = this.options;
    if (this.candidates === null) this.candidates = await this.list(sequenceNext);
    let deleted = 0;
    while (this.candidates.length > 0 && this.candidates[0]! < checkpointMin) {
      if (deleted >= GC_DELETES_PER_ROUND_MIN || stopped()) break;
      const seq = this.candidates[0]!;
      const pinned = this.options.snapshotPins.isSnapshotCheckpoint(seq); // a snapshot's: never a left-over
      if (objects.get(seq) === undefined && !pinned && (await this.isOurCheckpoint(seq))) {
        await store.delete(objectName(prefix, seq));
        deleted += 1;
      }
      this.candidates.shift(); // only once deleted or ruled out: a failed delete throws and is tried next round
    }
    if (deleted > 0) log(`gc: deleted ${deleted} checkpoint(s) left by an earlier crash (below checkpoint ${checkpointMin}, which the superblock names)`);
    return deleted;
  }

  private async list(sequenceNext: number): Promise<number[]> {
    const { store, prefix, objects } = this.options;
    const found: number[] = [];
    for (const name of await store.list(`${prefix}.`)) {
      const seq = parseObjectName(prefix, name);
      if (seq !== null && seq > 0 && seq < sequenceNext && objects.get(seq) === undefined) found.push(seq);
    }
    return found.sort((a, b) => a - b);
  }

  private async isOurCheckpoint(seq: number): Promise<boolean> {
    const { store, prefix, volUuid, log } = this.options;
    const name = objectName(prefix, seq);
    try {
      const header = decodeCommonHeader(await store.getRange(name, 0, COMMON_HEADER_BYTES));
      if (header.type === ObjectType.Checkpoint && header.seq === seq && header.volUuid === volUuid) return true;
      log(`warning: gc: ${name} is not a checkpoint of this volume that the object table lacks (type ${header.type}, seq ${header.seq}); left alone, see lsvd fsck`);
    } catch (error) {
      if (error instanceof NotFoundError) return false; // deleted meanwhile (by the write path)
      if (!(error instanceof CorruptionError)) throw error;
      log(`warning: gc: ${name} has no valid header (${error.message}); left alone, see lsvd fsck`);
    }
    return false;
  }
}
