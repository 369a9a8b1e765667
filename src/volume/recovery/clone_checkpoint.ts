// A clone's first checkpoint (seq = the base's last_seq + 1): a copy of the base snapshot checkpoint's map
// (docs/architecture.md, "Clones"; docs/format.md, "Clones").
//
// lsvd writes it with its extension, both CRCs, and the base checkpoint's object table: decodeCheckpoint verifies it
// like any checkpoint. lsvd-rbd's clone tool writes a plain v1 CKPT whose header it copied from the base checkpoint (a
// stale v1 crc), without an object table. Such a checkpoint is verified against the base checkpoint it copies, which
// its own CRCs cover: its map must equal that checkpoint's map byte for byte; the object table (the sizes of the base
// objects the map names) is then taken from the base checkpoint. Anything else is refused as corrupt.

import type { ObjectStore } from "../../backend/object_store.ts";
import { CorruptionError } from "../../errors.ts";
import { CKPT_MAP_ENTRY_BYTES, decodeCheckpoint, decodeUncheckedV1Checkpoint, unpackCheckpointMapEntry, type CheckpointObject } from "../../format/checkpoint_object.ts";
import { objectName } from "../../format/object_name.ts";
import type { SuperblockObject } from "../../format/superblock_object.ts";

type CloneInfo = NonNullable<SuperblockObject["clone"]>;

/** The clone's first checkpoint, decoded and verified (see the file comment); throws CorruptionError otherwise. */
export async function decodeFirstCloneCheckpoint(store: ObjectStore, prefix: string, bytes: Uint8Array, clone: CloneInfo): Promise<CheckpointObject> {
  let strictError: CorruptionError | null = null;
  try {
    const checkpoint = decodeCheckpoint(bytes);
    if (checkpoint.objects.length > 0 || checkpoint.mapEntries.byteLength === 0) return checkpoint;
  } catch (error) {
    if (!(error instanceof CorruptionError)) throw error;
    strictError = error;
  }
  const unchecked = decodeUncheckedV1Checkpoint(bytes);
  if (unchecked === null) throw strictError ?? new CorruptionError("checkpoint carries the extension but lists no objects");
  // The base checkpoint, through the chain: objectName(prefix, last_seq) resolves to the base's object.
  const baseName = objectName(prefix, clone.lastSeq);
  let base: CheckpointObject;
  try {
    base = decodeCheckpoint(await store.get(baseName));
  } catch (error) {
    if (error instanceof CorruptionError) throw new CorruptionError(`the base checkpoint it copies (last_seq ${clone.lastSeq}) does not decode: ${error.message}`);
    throw error;
  }
  if (base.seq !== clone.lastSeq || base.volUuid !== clone.baseUuid) {
    throw new CorruptionError(`the base checkpoint at last_seq ${clone.lastSeq} is not the base volume's (${base.volUuid}, seq ${base.seq})`);
  }
  if (!Buffer.from(unchecked.mapEntries).equals(Buffer.from(base.mapEntries))) {
    throw new CorruptionError(`it has no checksum lsvd can verify (a v1 clone checkpoint) and its map differs from the base checkpoint's at last_seq ${clone.lastSeq}`);
  }
  return { ...unchecked, objects: objectsNamedByMap(base.objects, base.mapEntries) };
}

/** The entries of `objects` that some entry of `mapEntries` names: a clone carries only the base objects it reads. */
export function objectsNamedByMap(objects: CheckpointObject["objects"], mapEntries: Uint8Array): CheckpointObject["objects"] {
  const view = new DataView(mapEntries.buffer, mapEntries.byteOffset, mapEntries.byteLength);
  const named = new Set<number>();
  for (let index = 0; index < mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES; index++) named.add(unpackCheckpointMapEntry(view, index).obj);
  return objects.filter((entry) => named.has(entry.seq));
}
