// The methods bench/_loop_stalls.ts charges loop time to, apart from the sampler (which patches them on import), so
// that a test can check every name still exists: a method renamed in src/ would otherwise break the bench only when
// someone runs it.

import { NbdSession } from "../src/nbd/session.ts";
import { Uring } from "../ffi/uring.ts";
import { RecordFormer } from "../src/volume/write/record_former.ts";
import { ObjectPipeline } from "../src/volume/write/object_pipeline.ts";
import { CheckpointScheduler } from "../src/volume/write/checkpoint_scheduler.ts";
import { WritePath } from "../src/volume/write_path.ts";
import { Batch } from "../src/volume/batch.ts";
import { ObjectWriter } from "../src/volume/object_writer.ts";
import { GarbageCollector } from "../src/volume/garbage_collector.ts";
import { ReadCache } from "../src/cache/read_cache.ts";
import { FillQueue } from "../src/cache/read_cache_fills.ts";
import { IndexStore } from "../src/cache/read_cache_index_store.ts";
import { Journal } from "../src/cache/journal.ts";
import { FileStore } from "../src/backend/file_store.ts";
import { ExtentMap } from "../src/map/extent_map.ts";
import { ObjectTable } from "../src/volume/object_table.ts";


export type Proto = Record<string, unknown>;
/** [prototype, method, the name its self time is charged to]; test/repo/loop_stall_methods_test.ts checks each exists. */
export const LOOP_STALL_METHODS: Array<[Proto, string, string]> = [
  [NbdSession.prototype as unknown as Proto, "feed", "nbd.feed"],
  [NbdSession.prototype as unknown as Proto, "onDrain", "nbd.onDrain"],
  [Uring.prototype as unknown as Proto, "reap", "uring.reap"],
  [RecordFormer.prototype as unknown as Proto, "formRecord", "record.form"],
  [RecordFormer.prototype as unknown as Proto, "acknowledge", "record.acknowledge"],
  [RecordFormer.prototype as unknown as Proto, "copyExtents", "record.copyExtents(gc)"],
  [WritePath.prototype as unknown as Proto, "sealOpen", "writePath.sealOpen"],
  [ObjectPipeline.prototype as unknown as Proto, "sealOpen", "pipeline.sealOpen"],
  [ObjectPipeline.prototype as unknown as Proto, "queueObject", "pipeline.queueObject(checkpoint build)"],
  [ObjectPipeline.prototype as unknown as Proto, "onObjectDurable", "pipeline.onObjectDurable"],
  [ObjectPipeline.prototype as unknown as Proto, "startPuts", "pipeline.startPuts"],
  [ObjectPipeline.prototype as unknown as Proto, "openNext", "pipeline.openNext"],
  [Batch.prototype as unknown as Proto, "seal", "batch.seal(header)"],
  [Batch.prototype as unknown as Proto, "checksumNewData", "batch.checksumNewData(crc)"],
  [CheckpointScheduler.prototype as unknown as Proto, "afterSeal", "checkpoint.afterSeal"],
  [CheckpointScheduler.prototype as unknown as Proto, "onDurable", "checkpoint.onDurable"],
  [CheckpointScheduler.prototype as unknown as Proto, "rewrite", "checkpoint.rewrite"],
  [CheckpointScheduler.prototype as unknown as Proto, "deleteUnneeded", "checkpoint.deleteUnneeded"],
  [ObjectWriter.prototype as unknown as Proto, "start", "objectWriter.start"],
  [GarbageCollector.prototype as unknown as Proto, "roundBody", "gc.roundBody"],
  [GarbageCollector.prototype as unknown as Proto, "chooseVictims", "gc.chooseVictims"],
  [GarbageCollector.prototype as unknown as Proto, "clean", "gc.clean"],
  [GarbageCollector.prototype as unknown as Proto, "queueCopies", "gc.queueCopies"],
  [GarbageCollector.prototype as unknown as Proto, "deleteRetired", "gc.deleteRetired"],
  [GarbageCollector.prototype as unknown as Proto, "noteCheckpoints", "gc.noteCheckpoints"],
  [GarbageCollector.prototype as unknown as Proto, "spaceState", "gc.spaceState"],
  [ReadCache.prototype as unknown as Proto, "adopt", "readCache.adopt"],
  [ReadCache.prototype as unknown as Proto, "offer", "readCache.offer"],
  [FillQueue.prototype as unknown as Proto, "writeBatch", "readCache.fills.writeBatch"],
  [IndexStore.prototype as unknown as Proto, "persist", "readCache.index.persist"],
  [Journal.prototype as unknown as Proto, "submit", "journal.submit"],
  [Journal.prototype as unknown as Proto, "onWritten", "journal.onWritten"],
  [Journal.prototype as unknown as Proto, "release", "journal.release"],
  [Journal.prototype as unknown as Proto, "persistTail", "journal.persistTail"],
  [FileStore.prototype as unknown as Proto, "putIfAbsent", "fileStore.putIfAbsent"],
  [FileStore.prototype as unknown as Proto, "delete", "fileStore.delete"],
  [FileStore.prototype as unknown as Proto, "getRange", "fileStore.getRange"],
  [ExtentMap.prototype as unknown as Proto, "forEach", "map.forEach"],
  [ExtentMap.prototype as unknown as Proto, "update", "map.update"],
  [ObjectTable.prototype as unknown as Proto, "forEach", "objectTable.forEach"],
  [ObjectTable.prototype as unknown as Proto, "entries", "objectTable.entries"],
];
