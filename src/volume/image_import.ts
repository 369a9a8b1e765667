// `lsvd import`: a raw image written straight into a volume's object log, without a cache (docs/architecture.md,
// "Import and export"). The caller owns the volume (its lease, takeOwnership); this module writes, in this order:
//   1. the new ownership's log start (beginLog: the superblock names this owner's epoch and next_seq);
//   2. DATA objects, PUTS_INFLIGHT at a time, each up to objectBytes of data: the image's non-zero 4 KiB pages, in
//      LBA order. When the volume held data, the first object also trims the whole volume (before its extents), so
//      what the image has as zeroes reads as zeroes;
//   3. once every DATA object is durable, a CKPT object right after the last one;
//   4. the superblock naming that checkpoint (compare-and-swap), then the checkpoints it no longer names are deleted.
// A crash before 4 leaves a prefix of the import in the log (recovery rolls forward up to the first missing object);
// running the import again writes the whole image again. Every object names a writer UUID of its own (no cache), so
// no cache's journal is ever replayed over the imported image (journal decision table, case @F).

import { v4 as uuidv4 } from "uuid";
import { CHECKPOINTS_KEPT, PAGE_BYTES, SECTOR_BYTES } from "../constants.ts";
import { assert, IOError } from "../errors.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import { encodeDataObjectHeader } from "../format/data_object.ts";
import { objectName } from "../format/object_name.ts";
import { isAllZero } from "../util/zero.ts";
import type { SuperblockObject } from "../format/superblock_object.ts";
import { buildCheckpoint, checkpointsUnneeded } from "./checkpoint.ts";
import { ObjectKind } from "./object_table.ts";
import { snapshotCheckpointsOf } from "./snapshots.ts";
import { beginLog, type VolumeOwner } from "./ownership.ts";
import { dropUnfinishedTail, recoverBackend, type BackendState } from "./recovery/backend.ts";

/** DATA object puts in flight at once (each holds up to objectBytes of memory). */
export const IMPORT_PUTS_INFLIGHT = 4;
/** A trim's length is a u32 of sectors: a whole-volume trim is split in pieces of at most this. */
const TRIM_SECTORS_MAX = 2 ** 31;

/** What the import reads: `read` fills `into` from `offset` and returns the bytes read (fewer only at the end). */
export interface ImageSource {
  sizeBytes: number;
  read(offset: number, into: Uint8Array): Promise<number>;
}

export interface ImportOptions {
  /** The owner's view of the backend (lease-guarded). */
  store: ObjectStore;
  prefix: string;
  owner: VolumeOwner;
  source: ImageSource;
  /** Data bytes per DATA object (a multiple of 4 KiB). */
  objectBytes: number;
  log: (line: string) => void;
  /** Called after each chunk read and each object durable ("data"), and once per other step. */
  progress?: (event: ImportProgress) => void;
}

export interface ImportProgress {
  step: "log-start" | "data" | "checkpoint" | "superblock";
  bytesRead: number;
  bytesStored: number;
  objects: number;
}

export interface ImportResult {
  objects: number;
  /** Non-zero bytes stored (the image's other pages are holes). */
  dataBytes: number;
  firstSeq: number;
  checkpointSeq: number;
  trimmedOldData: boolean;
}

/** An object being filled: the image's non-zero pages, back to back, and the extents they form. */
class PendingObject {
  readonly data: Uint8Array;
  used = 0;
  readonly extents: Array<{ lba: number; sectors: number }> = [];

  constructor(capacity: number) {
    this.data = new Uint8Array(capacity);
  }

  get full(): boolean {
    return this.used === this.data.byteLength;
  }

  add(lba: number, page: Uint8Array): void {
    assert(this.used + page.byteLength <= this.data.byteLength, "page fits the object");
    this.data.set(page, this.used);
    this.used += page.byteLength;
    const sectors = page.byteLength / SECTOR_BYTES;
    const last = this.extents.at(-1);
    if (last !== undefined && last.lba + last.sectors === lba) last.sectors += sectors;
    else this.extents.push({ lba, sectors });
  }
}

/** The whole-volume trim that clears what the volume held before, split where a trim's u32 length needs it. */
function wholeVolumeTrims(volSectors: number): Array<{ lba: number; sectors: number; beforeIndex: number }> {
  const trims = [];
  for (let lba = 0; lba < volSectors; lba += TRIM_SECTORS_MAX) trims.push({ lba, sectors: Math.min(TRIM_SECTORS_MAX, volSectors - lba), beforeIndex: 0 });
  return trims;
}

/** Puts objects with at most IMPORT_PUTS_INFLIGHT in flight; the first failure is thrown by the next call or drain(). */
class BoundedPuts {
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown = null;
  constructor(private readonly store: ObjectStore, private readonly onDone: (bytes: number) => void) {}

  async put(name: string, bytes: Uint8Array): Promise<void> {
    while (this.inFlight.size >= IMPORT_PUTS_INFLIGHT) await Promise.race(this.inFlight);
    if (this.failure !== null) throw this.failure;
    const promise: Promise<void> = this.store.putIfAbsent(name, bytes).then(
      () => this.onDone(bytes.byteLength),
      (error) => {
        this.failure ??= error;
      },
    );
    const tracked = promise.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    if (this.failure !== null) throw this.failure;
  }
}

export async function importImage(options: ImportOptions): Promise<ImportResult> {
  const { store, prefix, owner, source } = options;
  assert(options.objectBytes > 0 && options.objectBytes % PAGE_BYTES === 0, "objectBytes is whole pages");
  const superblocks = owner.superblocks;
  assert(superblocks !== undefined, "the owner read the superblock when it took the volume");
  const state = await recoverBackend(store, prefix, { verifyData: false, superblock: superblocks.decoded });
  dropUnfinishedTail(prefix, state); // no journal continues it: the import replaces it anyway
  assert(source.sizeBytes <= state.superblock.volSectors * SECTOR_BYTES, "the image fits the volume");
  const plan = await beginLog(store, state, superblocks, owner, options.log);
  const counts = { bytesRead: 0, bytesStored: 0, objects: 0 };
  const report = (step: ImportProgress["step"]) => options.progress?.({ step, ...counts });
  report("log-start");
  const writer = { uuid: uuidv4(), seq: plan.nextSeq, trims: state.map.extentCount > 0 ? wholeVolumeTrims(state.superblock.volSectors) : [] };
  const trimmedOldData = writer.trims.length > 0;
  const puts = new BoundedPuts(store, (bytes) => {
    counts.objects += 1;
    counts.bytesStored += bytes;
    report("data");
  });
  const seal = async (pending: PendingObject) => {
    const seq = writer.seq++;
    const bytes = sealObject(state, seq, writer.uuid, pending, writer.trims);
    writer.trims = [];
    await puts.put(objectName(prefix, seq), bytes);
  };
  let pending = new PendingObject(options.objectBytes);
  let dataBytes = 0;
  for await (const { offset, page } of pagesOf(source, options.objectBytes)) {
    counts.bytesRead = offset + page.byteLength;
    if (offset % options.objectBytes === 0) report("data"); // a chunk was read
    if (isAllZero(page)) continue;
    pending.add(offset / SECTOR_BYTES, page);
    dataBytes += page.byteLength;
    if (pending.full) {
      await seal(pending);
      pending = new PendingObject(options.objectBytes);
    }
  }
  counts.bytesRead = source.sizeBytes;
  if (pending.used > 0 || writer.trims.length > 0) await seal(pending);
  await puts.drain();
  const checkpointSeq = await checkpointAndPublish(options, state, superblocks.superblock, writer, (next) => superblocks.write(next));
  report("checkpoint");
  report("superblock");
  return { objects: counts.objects, dataBytes, firstSeq: plan.nextSeq, checkpointSeq, trimmedOldData };
}

/** Encodes one DATA object and applies it to the in-memory map (which the checkpoint is built from). */
function sealObject(state: BackendState, seq: number, writerUuid: string, pending: PendingObject, trims: Array<{ lba: number; sectors: number; beforeIndex: number }>): Uint8Array {
  const dataArea = pending.data.subarray(0, pending.used);
  const header = encodeDataObjectHeader(
    { volUuid: state.superblock.volUuid, seq, cacheSeq: 0, cacheSeqLast: 0, cacheUuid: writerUuid, objsCleaned: [], extents: pending.extents, trims, writeContinues: false },
    dataArea,
  );
  const hdrSectors = header.byteLength / SECTOR_BYTES;
  state.objects.add(seq, { kind: ObjectKind.Data, hdrSectors, dataSectors: pending.used / SECTOR_BYTES, liveSectors: pending.used / SECTOR_BYTES });
  for (const trim of trims) state.map.trim(trim.lba, trim.sectors, state.objects.displaced);
  let offset = 0;
  for (const extent of pending.extents) {
    state.map.update(extent.lba, extent.sectors, seq, offset, state.objects.displaced);
    offset += extent.sectors;
  }
  const bytes = new Uint8Array(header.byteLength + dataArea.byteLength);
  bytes.set(header);
  bytes.set(dataArea, header.byteLength);
  return bytes;
}

/** Steps 3 and 4: the checkpoint after the last DATA object, the superblock naming it, the old checkpoints deleted. */
async function checkpointAndPublish(
  options: ImportOptions,
  state: BackendState,
  superblock: SuperblockObject,
  writer: { uuid: string; seq: number },
  writeSuperblock: (next: SuperblockObject) => Promise<void>,
): Promise<number> {
  const { store, prefix } = options;
  const seq = writer.seq;
  const bytes = buildCheckpoint({
    volUuid: superblock.volUuid,
    seq,
    map: state.map,
    objects: state.objects,
    checkpoints: superblock.checkpoints,
    cacheUuid: writer.uuid,
    cacheSeqFirst: 0,
    cacheSeqLast: 0,
  });
  await store.putIfAbsent(objectName(prefix, seq), bytes);
  state.objects.add(seq, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
  const previous = superblock.checkpoints;
  const checkpoints = [...previous, seq].slice(-CHECKPOINTS_KEPT);
  await writeSuperblock({ ...superblock, checkpoints, nextSeq: seq + 1 });
  for (const old of checkpointsUnneeded(previous, checkpoints, state.objects, snapshotCheckpointsOf(superblock))) await store.delete(objectName(prefix, old));
  return seq;
}

/** The image page by page (the last one zero-padded), read `chunkBytes` at a time. */
async function* pagesOf(source: ImageSource, chunkBytes: number): AsyncGenerator<{ offset: number; page: Uint8Array }> {
  const chunk = new Uint8Array(chunkBytes);
  for (let offset = 0; offset < source.sizeBytes; offset += chunkBytes) {
    chunk.fill(0);
    const want = Math.min(chunkBytes, source.sizeBytes - offset);
    const got = await source.read(offset, chunk.subarray(0, want));
    if (got !== want) throw new IOError(`Read ${got} of ${want} bytes at offset ${offset} of the image: did it shrink while being imported?`);
    for (let at = 0; at < want; at += PAGE_BYTES) yield { offset: offset + at, page: chunk.subarray(at, at + PAGE_BYTES) };
  }
}
