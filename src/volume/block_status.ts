// Block status from an extent map: which sectors of a range hold data and which are holes (never written, or
// trimmed), as merged runs in bytes. Shared by the volume's head and by a snapshot served read-only.

import { SECTOR_BYTES } from "../constants.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import type { BlockStatusExtent } from "../nbd/block_device.ts";

/** Runs over sectors lba .. lba + sectors of `map`: data where it maps, holes (reading as zeroes) elsewhere. */
export function mapBlockStatus(map: ExtentMap, lba: number, sectors: number): BlockStatusExtent[] {
  const runs: BlockStatusExtent[] = [];
  let cursor = lba;
  const push = (count: number, hole: boolean) => {
    const last = runs[runs.length - 1];
    if (last && last.hole === hole) last.length += count * SECTOR_BYTES;
    else runs.push({ length: count * SECTOR_BYTES, hole, zero: hole });
  };
  map.lookup(lba, sectors, (pieceLba, pieceSectors) => {
    if (pieceLba > cursor) push(pieceLba - cursor, true);
    push(pieceSectors, false);
    cursor = pieceLba + pieceSectors;
  });
  if (cursor < lba + sectors) push(lba + sectors - cursor, true);
  return runs;
}

/** Runs with `skip` bytes cut from the front and the rest cut to `length` bytes (empty runs dropped). */
export function clipRuns(runs: BlockStatusExtent[], skip: number, length: number): BlockStatusExtent[] {
  const cut: BlockStatusExtent[] = [];
  let position = 0;
  for (const run of runs) {
    const start = Math.max(position, skip);
    const end = Math.min(position + run.length, skip + length);
    if (end > start) cut.push({ ...run, length: end - start });
    position += run.length;
  }
  return cut;
}
