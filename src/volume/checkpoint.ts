// Builds a CKPT object from the in-memory state at a seal point (docs/architecture.md, "Checkpoints").
//
// Checkpoint invariants:
// - A checkpoint with seq c describes exactly the objects < c: it is taken synchronously right after object c-1 is
//   sealed, before any later write can touch the map; and only when object c-1 ends on a write boundary (no client
//   write has pieces still to come: write/checkpoint_scheduler.ts), since recovery starts from it even when the cache
//   is lost.
// - It becomes the recovery starting point only when the superblock names it, and the superblock is rewritten only
//   after every object <= c is durable; so a listed checkpoint never refers to an object that may be missing.
// - Recovery reads only checkpoints the superblock names, and rolls forward from one of them through every later seq
//   (a CKPT object there only holds its seq's place). So once the durable superblock names checkpoints whose oldest
//   is m, no recovery reads a CKPT object below m: it may be deleted (checkpointsUnneeded).

import {
  CKPT_MAP_ENTRY_BYTES,
  CKPT_MAP_ENTRY_WORD,
  CKPT_MAP_ENTRY_WORDS,
  CKPT_MAP_ENTRY_WORDS_NATIVE,
  encodeCheckpointFilling,
  encodedCheckpointMap,
} from "../format/checkpoint_object.ts";
import { assert } from "../errors.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { ObjectKind, type ObjectTable } from "./object_table.ts";
import type { SnapshotPins } from "./snapshots.ts";

export interface CheckpointInput {
  volUuid: string;
  seq: number;
  map: ExtentMap;
  objects: ObjectTable;
  checkpoints: number[];
  cacheUuid: string;
  cacheSeqFirst: number;
  cacheSeqLast: number;
}

/**
 * The CKPT objects the write path deletes once the superblock naming `next` is durable: those `previous` named that
 * `next` does not, and the ones in the object table below the oldest of `next` (rolled forward by recovery after a
 * crash that came before the superblock named them, or whose delete failed). Never one `next` names, never one at or
 * above its oldest (a fallback recovery from that one rolls forward through them), none when `next` is empty, and
 * never a snapshot's checkpoint (pins).
 */
export function checkpointsUnneeded(
  previous: readonly number[],
  next: readonly number[],
  objects: ObjectTable,
  pins: Pick<SnapshotPins, "isSnapshotCheckpoint">,
): number[] {
  if (next.length === 0) return [];
  const oldest = Math.min(...next);
  const unneeded = new Set(previous.filter((seq) => seq < oldest && !pins.isSnapshotCheckpoint(seq)));
  objects.forEach((seq, info) => {
    if (info.kind === ObjectKind.Checkpoint && seq < oldest && !pins.isSnapshotCheckpoint(seq)) unneeded.add(seq);
  });
  for (const seq of unneeded) assert(!next.includes(seq), `checkpoint ${seq} is still named`);
  return [...unneeded].sort((a, b) => a - b);
}

// Every machine Bun runs on (x64, arm64) is little-endian: map entries are written as words.
assert(CKPT_MAP_ENTRY_WORDS_NATIVE, "checkpoints are built on a little-endian machine");

/**
 * Objects below a checkpoint's seq, by seq, as a dense table when their seqs span at most this many (an Int32Array of
 * 16 MiB at most); a wider span (a very old object still live) looks seqs up one by one instead.
 */
const HEADER_TABLE_SPAN_MAX = 1 << 22;

/**
 * The CKPT object for `input`. `sameMapAs`: a checkpoint built from the same map in the same turn (garbage collection
 * asks for several back to back): its map entries are copied, not built again (they differ in seq and objects only).
 * `allocate`: where the object is built (encodeCheckpointFilling), a fresh buffer by default.
 */
export function buildCheckpoint(input: CheckpointInput, sameMapAs: Uint8Array | null = null, allocate?: (bytes: number) => Uint8Array): Uint8Array {
  const objects = input.objects
    .entries()
    .filter(([seq, info]) => info.kind === ObjectKind.Data && seq < input.seq)
    .map(([seq, info]) => ({ seq, hdrSectors: info.hdrSectors, dataSectors: info.dataSectors, liveSectors: info.liveSectors }));
  const fields = {
    volUuid: input.volUuid,
    seq: input.seq,
    cacheSeq: input.cacheSeqFirst,
    checkpoints: input.checkpoints,
    objects,
    deferredDeletes: [],
    cacheUuid: input.cacheUuid,
    cacheSeqLast: input.cacheSeqLast,
  };
  const fillMap = (area: Uint8Array): void => {
    if (sameMapAs === null) return fillMapEntries(input, area);
    const entries = encodedCheckpointMap(sameMapAs);
    assert(entries.byteLength === area.byteLength, "a checkpoint copied from another has the same map");
    area.set(entries);
  };
  return encodeCheckpointFilling(fields, input.map.extentCount, fillMap, allocate);
}

/**
 * The map's extents copied as words straight into the checkpoint (the extent map keeps them in ckpt_mapentry's
 * layout), then each offset moved past its object's header: a few ns per extent, where a call per extent cost ~40
 * (a checkpoint of a 200k-extent map held the event loop 20-57 ms under 4 KiB writes: bench/loop_stalls.sh).
 */
function fillMapEntries(input: CheckpointInput, area: Uint8Array): void {
  const count = input.map.extentCount;
  assert(area.byteLength === count * CKPT_MAP_ENTRY_BYTES && area.byteOffset % 4 === 0, "the map area holds whole aligned entries");
  const words = new Uint32Array(area.buffer, area.byteOffset, count * CKPT_MAP_ENTRY_WORDS);
  assert(input.map.copyExtentWords(words) === count, "extent count matches the copy");
  const table = headerTable(input.objects, input.seq);
  for (let at = 0; at < words.length; at += CKPT_MAP_ENTRY_WORDS) {
    const obj = words[at + CKPT_MAP_ENTRY_WORD.obj]!;
    const index = obj - table.low;
    const hdrSectors = table.hdrSectors !== null ? (index >= 0 && index < table.hdrSectors.length ? table.hdrSectors[index]! : -1) : (table.bySeq.get(obj) ?? -1);
    const offsetSectors = words[at + CKPT_MAP_ENTRY_WORD.offsetSectors]! + hdrSectors;
    if (!(hdrSectors >= 0 && offsetSectors > 0 && offsetSectors <= 0xffff_ffff)) {
      assert(false, `map points at object ${obj} outside the checkpoint ${input.seq} (or offset ${offsetSectors} out of range)`);
    }
    words[at + CKPT_MAP_ENTRY_WORD.offsetSectors] = offsetSectors;
  }
}

/** Header sectors of every object below `seq` (-1: none): dense over [low, seq) when narrow enough, else by seq. */
function headerTable(objects: ObjectTable, seq: number): { low: number; hdrSectors: Int32Array | null; bySeq: Map<number, number> } {
  let low = seq;
  objects.forEach((each) => {
    if (each < low) low = each;
  });
  const bySeq = new Map<number, number>();
  if (seq - low > HEADER_TABLE_SPAN_MAX) {
    objects.forEach((each, info) => {
      if (each < seq) bySeq.set(each, info.hdrSectors);
    });
    return { low, hdrSectors: null, bySeq };
  }
  const hdrSectors = new Int32Array(seq - low).fill(-1);
  objects.forEach((each, info) => {
    if (each < seq) hdrSectors[each - low] = info.hdrSectors;
  });
  return { low, hdrSectors, bySeq };
}
