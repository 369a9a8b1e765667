// `lsvd export`: a volume's image read through its map straight from the backend, without a cache and without
// writing anything (docs/architecture.md, "Import and export"). The map is what recovery builds (recovery/backend.ts
// reads only); an unfinished tail is left out (no journal continues it: what a new owner without the cache would see).
// Unmapped space and all-zero pages are not written: the target, made sparse by the caller, keeps holes there.

import { PAGE_BYTES, SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { objectName } from "../format/object_name.ts";
import { isAllZero } from "../util/zero.ts";
import { dropUnfinishedTail, recoverBackend } from "./recovery/backend.ts";

/** Ranged reads in flight at once. */
export const EXPORT_READS_INFLIGHT = 8;
/** One ranged read covers at most this much (bounds memory: EXPORT_READS_INFLIGHT of them). */
export const EXPORT_READ_BYTES_MAX = 8 * 1024 * 1024;

export interface ImageTarget {
  /** Writes `data` at byte `offset` of the image. */
  write(offset: number, data: Uint8Array): Promise<void>;
}

export interface ExportOptions {
  /** Read-only use: nothing is written through it. */
  store: ObjectStore;
  prefix: string;
  /** Called once the volume's size is known, before any write (the caller sizes the target). */
  begin(sizeBytes: number, mappedBytes: number): Promise<void>;
  target: ImageTarget;
  progress?: (bytesDone: number, mappedBytes: number) => void;
}

export interface ExportResult {
  sizeBytes: number;
  /** Bytes the map points at (read from the backend). */
  mappedBytes: number;
  /** Of those, bytes written to the target (the rest were all-zero pages). */
  writtenBytes: number;
  objectsRead: number;
  notes: string[];
}

interface Piece {
  lba: number;
  sectors: number;
  obj: number;
  offset: number;
}

/** The map's pieces, each cut to at most EXPORT_READ_BYTES_MAX. */
function piecesOf(map: { forEach(visit: (lba: number, sectors: number, obj: number, offset: number) => void): void }): Piece[] {
  const pieces: Piece[] = [];
  const maxSectors = EXPORT_READ_BYTES_MAX / SECTOR_BYTES;
  map.forEach((lba, sectors, obj, offset) => {
    for (let done = 0; done < sectors; done += maxSectors) {
      pieces.push({ lba: lba + done, sectors: Math.min(maxSectors, sectors - done), obj, offset: offset + done });
    }
  });
  return pieces;
}

/** Writes the non-zero runs of `data` (whole 4 KiB pages where aligned; sector-aligned edges as they are). */
async function writeNonZero(target: ImageTarget, offset: number, data: Uint8Array): Promise<number> {
  let written = 0;
  let runStart = -1;
  const flush = async (end: number) => {
    if (runStart < 0) return;
    await target.write(offset + runStart, data.subarray(runStart, end));
    written += end - runStart;
    runStart = -1;
  };
  for (let at = 0; at < data.byteLength; at += PAGE_BYTES) {
    const page = data.subarray(at, Math.min(at + PAGE_BYTES, data.byteLength));
    if (isAllZero(page)) await flush(at);
    else if (runStart < 0) runStart = at;
  }
  await flush(data.byteLength);
  return written;
}

export async function exportImage(options: ExportOptions): Promise<ExportResult> {
  const { store, prefix } = options;
  const state = await recoverBackend(store, prefix, { verifyData: false });
  dropUnfinishedTail(prefix, state);
  const sizeBytes = state.superblock.volSectors * SECTOR_BYTES;
  const pieces = piecesOf(state.map);
  const mappedBytes = pieces.reduce((sum, piece) => sum + piece.sectors * SECTOR_BYTES, 0);
  await options.begin(sizeBytes, mappedBytes);
  const objects = new Set<number>();
  let done = 0;
  let writtenBytes = 0;
  let next = 0;
  let failed = false;
  const work = async () => {
    while (next < pieces.length && !failed) {
      const piece = pieces[next++]!;
      const info = state.objects.get(piece.obj);
      assert(info !== undefined, `the map points at object ${piece.obj}, which the object table holds`);
      objects.add(piece.obj);
      const bytes = piece.sectors * SECTOR_BYTES;
      const data = await state.store.getRange(objectName(prefix, piece.obj), (info.hdrSectors + piece.offset) * SECTOR_BYTES, bytes);
      const written = await writeNonZero(options.target, piece.lba * SECTOR_BYTES, data);
      writtenBytes += written;
      done += bytes;
      options.progress?.(done, mappedBytes);
    }
  };
  // Every worker stops at the first failure and all have stopped before the caller closes the target.
  const worker = () => work().catch((error) => {
    failed = true;
    throw error;
  });
  const results = await Promise.allSettled(Array.from({ length: Math.min(EXPORT_READS_INFLIGHT, pieces.length) }, worker));
  const rejected = results.find((result) => result.status === "rejected");
  if (rejected !== undefined) throw rejected.reason;
  return { sizeBytes, mappedBytes, writtenBytes, objectsRead: objects.size, notes: state.notes };
}
