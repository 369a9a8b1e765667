// Invariant checks a simulated world runs after every step (volume_sim_test.ts): the parts' own checks (ExtentMap,
// Journal, and WritePath's, which checks its record former, object pipeline and checkpoint scheduler:
// src/volume/write/), plus the cross-part rules no single part can check: the extent map names only objects the table
// holds, every object's live-sector count is what the map maps to it, the write path's unflushed batches are in the
// table, and the journal's persisted tail, live records and head lie in order within one region. A broken rule throws with the step's context.

import { assert } from "../../src/errors.ts";
import type { Journal } from "../../src/cache/journal.ts";
import type { ExtentMap } from "../../src/map/extent_map.ts";
import { ObjectKind, type ObjectTable } from "../../src/volume/object_table.ts";
import type { Volume } from "../../src/volume/volume.ts";
import type { WritePath } from "../../src/volume/write_path.ts";

/** The volume's parts, reached past `private` (the checks read them, never change them). */
interface VolumeParts {
  state: { map: ExtentMap; objects: ObjectTable };
  journal: Journal;
  writes: WritePath;
}

interface JournalInternals {
  head: number;
  persistedTail: number;
  slots: Array<{ seq: number; position: number; bytes: number }>;
  slotsFront: number;
}

export function checkVolumeInvariants(volume: Volume): void {
  const parts = volume as unknown as VolumeParts;
  parts.state.map.checkInvariants();
  parts.journal.checkInvariants();
  parts.writes.checkInvariants();
  checkMapAgainstObjects(parts.state.map, parts.state.objects);
  for (const seq of parts.writes.unflushed.keys()) assert(parts.state.objects.get(seq) !== undefined, `unflushed batch ${seq} is in the object table`);
  checkJournal(parts.journal);
}

function checkMapAgainstObjects(map: ExtentMap, objects: ObjectTable): void {
  const mapped = new Map<number, number>();
  map.forEach((_lba, sectors, obj) => mapped.set(obj, (mapped.get(obj) ?? 0) + sectors));
  for (const [obj, sectors] of mapped) {
    const info = objects.get(obj);
    assert(info !== undefined, `the map names object ${obj}, which the object table does not hold`);
    assert(info.kind === ObjectKind.Data, `the map names object ${obj}, which is not a data object`);
    assert(info.liveSectors === sectors, `object ${obj}: ${info.liveSectors} live sectors in the table, ${sectors} in the map`);
  }
  objects.forEach((seq, info) => {
    if (!mapped.has(seq)) assert(info.liveSectors === 0, `object ${seq}: ${info.liveSectors} live sectors in the table, none in the map`);
  });
}

function checkJournal(journal: Journal): void {
  const internals = journal as unknown as JournalInternals;
  const { head, persistedTail, slots, slotsFront } = internals;
  assert(persistedTail <= head && head - persistedTail <= journal.regionBytes, `journal: persisted tail ${persistedTail}, head ${head}`);
  assert(journal.usedBytes <= journal.regionBytes, "journal: used bytes within the region");
  let previous: { seq: number; position: number; bytes: number } | null = null;
  for (let index = slotsFront; index < slots.length; index++) {
    const slot = slots[index]!;
    assert(slot.position >= persistedTail && slot.position + slot.bytes <= head, `journal: record ${slot.seq} lies between the tail and the head`);
    if (previous) {
      assert(slot.seq === previous.seq + 1, `journal: record ${slot.seq} follows ${previous.seq}`);
      assert(slot.position >= previous.position + previous.bytes, `journal: record ${slot.seq} starts after record ${previous.seq} ends`);
    }
    previous = slot;
  }
  if (previous) assert(previous.seq === journal.sequenceNext - 1, `journal: the newest record ${previous.seq} is the one before ${journal.sequenceNext}`);
}
