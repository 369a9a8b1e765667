// The write path (docs/architecture.md, "The write path"): client writes -> group-committed journal records ->
// the open batch -> sealed DATA objects -> backend puts, with checkpoints every N objects.
//
// Ordering, in one place:
// 1. A write waits in `pending` until the pump forms a record from it and the writes queued with it (group commit).
// 2. Forming a record is one synchronous step: take the record's seq, copy the data into the open batch, update the
//    extent map, start the journal write (from the batch's own pages when they are whole pages of device memory,
//    else from a copy). So the batch holds whole records in seq order, and a read issued after a write is
//    acknowledged always finds it. A batch buffer is reused only after its records are on the device.
// 3. The write is acknowledged when its record and every earlier record are on the cache device (O_DIRECT); with
//    FUA, after an fdatasync that started after that.
// 4. Batches are sealed when full, when the journal needs space, after an idle pause, and on close; objects are put
//    with a bounded number in flight; journal records are released only when the objects holding them are durable
//    *in seq order* (ObjectWriter), and the journal tail is persisted before its space is reused (Journal).
//
// Bounds: pending writes are bounded by the NBD layer's per-connection in-flight limit; records in flight by
// JOURNAL_WRITES_INFLIGHT_MAX; batches in memory by PUTS_INFLIGHT_MAX + 1 buffers; puts by PUTS_INFLIGHT_MAX;
// objects sealed and not yet durable by SEALED_OBJECTS_AHEAD_MAX (no batch opens beyond it: waitAheadRoom).

import {
  CHECKPOINTS_KEPT,
  JOURNAL_RECORD_DATA_BYTES_MAX,
  JOURNAL_RECORD_EXTENTS_MAX,
  PAGE_BYTES,
  PUTS_INFLIGHT_MAX,
  SEALED_OBJECTS_AHEAD_MAX,
  SECTOR_BYTES,
} from "../constants.ts";
import { assert } from "../errors.ts";
import type { AlignedPool } from "../cache/cache_device.ts";
import { Journal } from "../cache/journal.ts";
import type { ReadCache } from "../cache/read_cache.ts";
import type { JournalExtent } from "../format/journal_record.ts";
import { encodeDataObjectHeader } from "../format/data_object.ts";
import type { SuperblockObject } from "../format/superblock_object.ts";
import { objectName } from "../format/object_name.ts";
import type { ObjectStore } from "../backend/object_store.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { Batch, batchCapacityBytes, batchHeaderRoomBytes, type JournalReader } from "./batch.ts";
import { buildCheckpoint, checkpointsUnneeded } from "./checkpoint.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import type { FlushCoordinator } from "./flush_coordinator.ts";
import { ObjectKind, type ObjectTable } from "./object_table.ts";
import { ObjectWriter } from "./object_writer.ts";
import { FencedError, type Fence } from "./lease.ts";
import type { SuperblockStore } from "./superblock_store.ts";

interface WriteWaiter {
  piecesLeft: number;
  fua: boolean;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Piece {
  lba: number;
  sectors: number;
  /** null: TRIM / WRITE_ZEROES. */
  data: Uint8Array | null;
  waiter: WriteWaiter;
  /**
   * Garbage collection's copy of live data: where the data was read from. The piece only keeps the sectors the map
   * still points at there when its record is formed (resolveCopy); null for client writes.
   */
  copiedFrom: { obj: number; offset: number } | null;
  /** A GC copy (resolved or not): same bytes as the map already shows, so the read cache keeps its blocks. */
  isCopy: boolean;
  /**
   * Data bytes of the pieces of the same client write that come after this one (they follow it in `pending`): 0 for
   * a write's last piece, a trim and a copy. A piece with bytesAfter > 0 leaves its write unfinished.
   */
  bytesAfter: number;
}

/** How a record's pieces sit in the client writes they belong to (recordShape). */
interface RecordShape {
  /** Its first piece continues a write begun in an earlier record. */
  continuesWrite: boolean;
  /** Its last piece leaves a write unfinished (the next record continues it). */
  endsInsideWrite: boolean;
  /** A write longer than one piece starts in it: its data bytes plus the record's before it (else 0). */
  startsLongWriteBytes: number;
}

export interface WritePathOptions {
  volUuid: string;
  cacheUuid: string;
  prefix: string;
  store: ObjectStore;
  map: ExtentMap;
  objects: ObjectTable;
  journal: Journal;
  /** Blocks to drop whenever a write or trim lands (null: no read cache). */
  readCache: ReadCache | null;
  /** Reads the journal back (journal-only batches, before their put). */
  readJournal: JournalReader;
  pool: AlignedPool;
  flusher: FlushCoordinator;
  clock: Clock;
  log: (line: string) => void;
  /** The superblock, rewritten (compare-and-swap) when a checkpoint is durable. */
  superblocks: SuperblockStore;
  /** Closed when this process may no longer change the volume: nothing more is acknowledged or put. */
  fence: Fence;
  batchBytes: number;
  batchIdleMs: number;
  checkpointIntervalObjects: number;
  nextSeq: number;
  checkpointSeq: number;
  /** The log's writer as recovery found it: what a checkpoint records until this run seals an object. */
  writerCacheUuid: string;
  writerCacheSeqLast: number;
  /**
   * The log ends inside a client write whose rest the journal replay brings (recovery kept an unfinished tail): no
   * checkpoint until the replay is over (endReplay).
   */
  logEndsInsideWrite: boolean;
  /** Objects sealed and not yet durable before a new batch waits (default SEALED_OBJECTS_AHEAD_MAX; tests lower it). */
  sealedObjectsAheadMax?: number;
}

export class WritePath {
  private readonly pending: Piece[] = [];
  private pendingFront = 0;
  private pumping = false;
  private pumpAgain = false;
  private open: Batch | null = null;
  private readonly buffers: BatchBuffers;
  /** Open and sealed batches whose object is not yet durable in the backend, by object seq: reads come from here. */
  readonly unflushed = new Map<number, Batch>();
  private readonly writer: ObjectWriter;
  /** Objects to put, in seq order: ready bytes, or a journal-only batch to build first. */
  private readonly sealedQueue: Array<{ seq: number; bytes: Uint8Array | null; batch: Batch | null }> = [];
  private startingPuts = false;
  /** Journal-only batches sealed and waiting for a buffer to be built in. */
  private batchesToBuild = 0;
  private nextSeq: number;
  private lastCheckpointSeq: number;
  private superblock: SuperblockObject;
  private superblockUpdate: Promise<void> = Promise.resolve();
  private idleTimer: TimerHandle | null = null;
  /** Garbage collection asked for a checkpoint: the next seal writes one (requestCheckpoint). */
  private checkpointRequested = false;
  private failure: unknown = null;
  /** Rejected with the failure when the write path fails: waits for durability end with it. */
  private readonly failureSignal = Promise.withResolvers<never>();
  private readonly durableWaiters = new Map<number, Array<() => void>>();
  /** The pump waits here for room ahead of the backend (waitAheadRoom); onDurable wakes it. */
  private aheadRoomWaiter: (() => void) | null = null;
  private readonly sealedObjectsAheadMax: number;
  /**
   * The newest record formed (or replayed) ends inside a client write: its next piece is still in `pending` (or,
   * while the journal is replayed, unknown). A batch sealed now is marked WRITE_CONTINUES and no checkpoint is taken.
   */
  private writeOpen = false;
  stats = { writes: 0, writeBytes: 0, trims: 0, records: 0, objects: 0, objectsEndingInsideWrite: 0, checkpoints: 0, gcCopiedSectors: 0, gcSupersededSectors: 0 };
  /** Called after the superblock naming a new set of checkpoints is durable (garbage collection deletes by it). */
  onCheckpointsPersisted: ((checkpoints: number[]) => void) | null = null;

  constructor(private readonly options: WritePathOptions) {
    this.writeOpen = options.logEndsInsideWrite;
    this.sealedObjectsAheadMax = options.sealedObjectsAheadMax ?? SEALED_OBJECTS_AHEAD_MAX;
    assert(this.sealedObjectsAheadMax > PUTS_INFLIGHT_MAX, "sealed objects keep every put slot busy");
    this.nextSeq = options.nextSeq;
    this.lastCheckpointSeq = options.checkpointSeq;
    this.superblock = options.superblocks.superblock;
    this.failureSignal.promise.catch(() => undefined); // observed by whoever waits; never an unhandled rejection
    this.writerCacheUuid = options.writerCacheUuid;
    this.sealedCacheSeqLast = options.writerCacheSeqLast;
    this.buffers = new BatchBuffers(
      batchHeaderRoomBytes(batchCapacityBytes(options.batchBytes)) + batchCapacityBytes(options.batchBytes),
      PUTS_INFLIGHT_MAX + 1,
      options.pool,
    );
    this.writer = new ObjectWriter(
      options.store,
      options.prefix,
      PUTS_INFLIGHT_MAX,
      options.clock,
      options.log,
      (seq) => this.onDurable(seq),
      options.nextSeq - 1,
      (error) => this.failOwnership(error),
    );
    options.fence.onFenced((reason) => this.fail(new FencedError(`Volume ${options.prefix}: this process no longer owns it (${reason})`)));
  }

  /** A put hit a ConflictError: the volume was lost (FencedError), or another writer holds one of our names. */
  private failOwnership(error: unknown): void {
    if (!(error instanceof FencedError)) this.options.fence.fence(`another writer's object holds a name this owner writes: ${String(error)}`);
    this.fail(error);
  }

  get objectWriter(): ObjectWriter {
    return this.writer;
  }

  /** Queues [lba, lba+data/512) (or a zeroing of sectors when data is null); resolves when acknowledged-safe. */
  write(lba: number, sectors: number, data: Uint8Array | null, fua: boolean): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      // A write larger than a journal record or a batch is split; it is acknowledged when all its pieces are.
      const pieceSectorsMax = Math.min(JOURNAL_RECORD_DATA_BYTES_MAX, this.options.batchBytes) / SECTOR_BYTES;
      const piecesLeft = data === null ? 1 : Math.ceil(sectors / pieceSectorsMax);
      const waiter: WriteWaiter = { piecesLeft, fua, resolve, reject };
      if (data === null) {
        this.pending.push({ lba, sectors, data: null, waiter, copiedFrom: null, isCopy: false, bytesAfter: 0 });
        this.stats.trims += 1;
      } else {
        // All pieces are queued in this one step, so a write's pieces are contiguous in `pending` and in the journal.
        for (let done = 0; done < sectors; done += pieceSectorsMax) {
          const count = Math.min(pieceSectorsMax, sectors - done);
          const piece = data.subarray(done * SECTOR_BYTES, (done + count) * SECTOR_BYTES);
          const bytesAfter = (sectors - done - count) * SECTOR_BYTES;
          this.pending.push({ lba: lba + done, sectors: count, data: piece, waiter, copiedFrom: null, isCopy: false, bytesAfter });
        }
        this.stats.writes += 1;
        this.stats.writeBytes += data.byteLength;
      }
      this.schedulePump();
    });
  }

  /**
   * Queues garbage collection's copy of [lba, lba+data/512), read from object `obj` at data-area sector `offset`.
   * When its record is formed, only the sectors the map still points at (obj, offset) are written: anything a client
   * wrote meanwhile is newer and wins, because it either formed its record first (so the map moved) or forms it
   * later (so it is later in the log). Resolves when the copy is journaled (or found to be wholly superseded).
   */
  copy(lba: number, data: Uint8Array, obj: number, offset: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const sectors = data.byteLength / SECTOR_BYTES;
    const bytesMax = Math.min(JOURNAL_RECORD_DATA_BYTES_MAX, this.options.batchBytes);
    assert(Number.isInteger(sectors) && sectors > 0 && data.byteLength <= bytesMax, "a GC copy is whole sectors and fits a record and a batch");
    return new Promise<void>((resolve, reject) => {
      const waiter: WriteWaiter = { piecesLeft: 1, fua: false, resolve, reject };
      this.pending.push({ lba, sectors, data, waiter, copiedFrom: { obj, offset }, isCopy: true, bytesAfter: 0 });
      this.schedulePump();
    });
  }

  /**
   * Replaces the GC copy at pending[index] by the runs of it the map still points at where it was copied from (none,
   * one, or several). Synchronous, and only the pump changes the map, so the answer holds until the record forms.
   */
  private resolveCopy(index: number): void {
    const piece = this.pending[index]!;
    const from = piece.copiedFrom!;
    const runs: Piece[] = [];
    this.options.map.runsMappedTo(piece.lba, piece.sectors, from.obj, from.offset, (lba, sectors) => {
      const start = (lba - piece.lba) * SECTOR_BYTES;
      const data = piece.data!.subarray(start, start + sectors * SECTOR_BYTES);
      runs.push({ lba, sectors, data, waiter: piece.waiter, copiedFrom: null, isCopy: true, bytesAfter: 0 });
    });
    let copied = 0;
    for (const run of runs) copied += run.sectors;
    this.stats.gcCopiedSectors += copied;
    this.stats.gcSupersededSectors += piece.sectors - copied;
    this.pending.splice(index, 1, ...runs);
    piece.waiter.piecesLeft += runs.length - 1;
    if (piece.waiter.piecesLeft === 0) piece.waiter.resolve();
  }

  private schedulePump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    // Run after the current turn: writes that arrive in the same turn go into one record (group commit).
    queueMicrotask(() => void this.pump());
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        this.pumpAgain = false;
        while (this.pendingFront < this.pending.length) {
          await this.formRecord();
        }
        this.compactPending();
        if (!this.pumpAgain) break;
      }
      assert(!this.writeOpen, "a write's pieces are queued together, so none is left unfinished when the queue is empty");
    } catch (error) {
      this.fail(error);
    } finally {
      this.pumping = false;
      if (this.pendingFront < this.pending.length && !this.failure) this.schedulePump();
    }
    this.armIdleTimer();
  }

  private compactPending(): void {
    if (this.pendingFront === this.pending.length) {
      this.pending.length = 0;
      this.pendingFront = 0;
    }
  }

  /** Forms one record from the front of `pending` and starts its journal write. */
  private async formRecord(): Promise<void> {
    const journal = this.options.journal;
    // Choose the pieces: bounded by extents per header, bytes per record, and what one batch can take.
    let end = this.pendingFront;
    let dataBytes = 0;
    let zeroCount = 0;
    const batchBytes = this.options.batchBytes;
    let clientPiecesAhead = false;
    while (end < this.pending.length && end - this.pendingFront < JOURNAL_RECORD_EXTENTS_MAX) {
      if (this.pending[end]!.copiedFrom !== null) {
        // A copy is checked against the map only once every client write queued before it has reached the map;
        // copies queued together never overlap (garbage_collector.ts), so copies ahead do not matter.
        if (clientPiecesAhead) break;
        this.resolveCopy(end);
        continue;
      }
      if (!this.pending[end]!.isCopy) clientPiecesAhead = true;
      const piece = this.pending[end]!;
      const bytes = piece.data ? piece.data.byteLength : 0;
      if (end > this.pendingFront && (dataBytes + bytes > JOURNAL_RECORD_DATA_BYTES_MAX || dataBytes + bytes > batchBytes)) break;
      if (Journal.recordBytes(dataBytes + bytes) > journal.recordBytesMax && end > this.pendingFront) break;
      dataBytes += bytes;
      if (!piece.data) zeroCount += 1;
      end += 1;
    }
    if (end === this.pendingFront) return; // only GC copies that every sector of was superseded
    // Room in the journal. If space is short and nothing is being put that would release some, the open batch must
    // go (its records are what fills the journal: tiny writes can fill a journal before their batch fills);
    // otherwise wait for the puts in flight rather than cut a small object. Re-checked after every wake, since the
    // puts may complete and still leave the open batch holding the space.
    while (!journal.canWrite(dataBytes)) {
      if (!journal.hasSpace(dataBytes) && this.open && !this.open.isEmpty && this.writer.putsInFlight === 0 && this.sealedQueue.length === 0) {
        await this.sealOpen();
      }
      await journal.waitForProgress(dataBytes);
    }
    // Room in the batch, and a write boundary before a long write that should not share it (sealsBeforeRecord).
    const shape = this.recordShape(end);
    if (this.open && (!this.open.fits(dataBytes, zeroCount) || this.sealsBeforeRecord(this.open, shape, zeroCount))) await this.sealOpen();
    if (!this.open) await this.waitAheadRoom();
    if (!this.open) await this.openBatch();
    if (!journal.canWrite(dataBytes)) return; // space went to a pad or another writer meanwhile: try again

    // From here to the end: synchronous, so map, batch and journal agree on the record. The data goes into the
    // batch first; the journal then writes the record straight from the batch's pages when they are whole pages of
    // device memory (journalView), and copies the pieces otherwise.
    const batch = this.open!;
    const extents: JournalExtent[] = [];
    const pieces: Uint8Array[] = [];
    const waiters: WriteWaiter[] = [];
    for (let index = this.pendingFront; index < end; index++) {
      const piece = this.pending[index]!;
      extents.push({ lba: piece.lba, sectors: piece.sectors, zero: piece.data === null });
      if (piece.data) pieces.push(piece.data);
      waiters.push(piece.waiter);
    }
    const placed = journal.peekRecord(dataBytes);
    batch.beginRecord(placed.seq, shape.continuesWrite);
    const batchStartBytes = batch.dataBytes;
    let journalOffset = placed.dataOffset;
    for (let index = this.pendingFront; index < end; index++) {
      const piece = this.pending[index]!;
      this.applyPiece(batch, piece.lba, piece.sectors, piece.data, journalOffset, !piece.isCopy);
      if (piece.data) journalOffset += piece.data.byteLength;
      this.pending[index] = undefined as unknown as Piece; // drop the reference to the client's buffer
    }
    batch.endRecord(shape.endsInsideWrite);
    this.writeOpen = shape.endsInsideWrite;
    batch.checksumNewData(); // one checksum call per record, not one long one when the batch is sealed
    const deviceMemory = batch.buffer !== null && this.buffers.isDeviceMemory(batch.buffer);
    const inPlace = deviceMemory ? batch.journalView(batchStartBytes, dataBytes) : null;
    const { seq, written, dataOffset } = journal.write(extents, pieces, dataBytes, inPlace);
    assert(seq === placed.seq && dataOffset === placed.dataOffset, "the record went where it was peeked");
    this.pendingFront = end;
    this.stats.records += 1;
    written.then(
      () => this.acknowledge(waiters),
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error);
        this.fail(error);
      },
    );
  }

  /** Objects allocated and not yet durable: with no batch open, the sealed ones (DATA and checkpoints) not yet put. */
  get objectsAhead(): number {
    return this.nextSeq - 1 - this.writer.durableSeq;
  }

  /**
   * Back-pressure from the backend: no batch opens while SEALED_OBJECTS_AHEAD_MAX objects are sealed and not durable,
   * so new writes wait (in `pending`, then in the NBD layer) until puts complete. Objects not durable are thus at most
   * the limit counting the open batch, plus the checkpoint its seal may queue. Only the pump (or the journal replay)
   * waits, one at a time; onDurable wakes it, a failure ends the wait.
   */
  private async waitAheadRoom(): Promise<void> {
    while (this.objectsAhead >= this.sealedObjectsAheadMax) {
      this.throwIfFailed();
      assert(this.aheadRoomWaiter === null, "one pump waits for room ahead of the backend");
      const room = new Promise<void>((resolve) => (this.aheadRoomWaiter = resolve));
      try {
        await Promise.race([room, this.failureSignal.promise]);
      } finally {
        this.aheadRoomWaiter = null;
      }
    }
  }

  /** Where the record of pending[pendingFront, end) starts and ends relative to the client writes it holds pieces of. */
  private recordShape(end: number): RecordShape {
    let insideWrite = this.writeOpen;
    let bytesBefore = 0;
    let startsLongWriteBytes = 0;
    for (let index = this.pendingFront; index < end; index++) {
      const piece = this.pending[index]!;
      const bytes = piece.data ? piece.data.byteLength : 0;
      if (!insideWrite && piece.bytesAfter > 0) startsLongWriteBytes = bytesBefore + bytes + piece.bytesAfter;
      insideWrite = piece.bytesAfter > 0;
      bytesBefore += bytes;
    }
    return { continuesWrite: this.writeOpen, endsInsideWrite: insideWrite, startsLongWriteBytes };
  }

  /**
   * Whether the open batch is sealed (on a write boundary) before a record that starts a write longer than a piece:
   * when the batch cannot hold all of it, and when the batch itself began inside a write. Either way the long write
   * starts a new object. This bounds the run of objects that end inside a write (the objects recovery drops after
   * the cache is lost) to the objects holding pieces of one write: every object that ends inside a write W began on
   * a boundary and took W's start, or began inside W and holds nothing but W's pieces; an object that began inside
   * W and holds W's end takes no further long write, so it ends on a boundary.
   */
  private sealsBeforeRecord(open: Batch, shape: RecordShape, zeroCount: number): boolean {
    if (open.isEmpty || shape.startsLongWriteBytes === 0) return false;
    return open.startsInsideWrite || !open.fits(shape.startsLongWriteBytes, zeroCount);
  }

  /** Adds one piece to the batch and the map. Shared by live writes and journal replay. */
  private applyPiece(batch: Batch, lba: number, sectors: number, data: Uint8Array | null, journalOffset: number, invalidateReadCache = true): void {
    const { map, objects } = this.options;
    if (invalidateReadCache) this.options.readCache?.invalidate(lba, sectors);
    if (data) {
      const offset = batch.addData(lba, data, journalOffset);
      map.update(lba, sectors, batch.seq, offset, objects.displaced);
      objects.get(batch.seq)!.liveSectors += sectors;
    } else {
      batch.addTrim(lba, sectors);
      map.trim(lba, sectors, objects.displaced);
    }
  }

  private acknowledge(waiters: WriteWaiter[]): void {
    // A holder that was paused past its lease must not acknowledge what it journaled: its successor never sees it.
    try {
      this.options.fence.check();
    } catch (error) {
      for (const waiter of waiters) waiter.reject(error);
      this.fail(error);
      return;
    }
    let needSync = false;
    for (const waiter of waiters) {
      waiter.piecesLeft -= 1;
      if (waiter.piecesLeft === 0 && waiter.fua) needSync = true;
    }
    const finish = () => {
      for (const waiter of waiters) if (waiter.piecesLeft === 0) waiter.resolve();
    };
    if (!needSync) return finish();
    this.options.flusher.sync().then(finish, (error: unknown) => {
      for (const waiter of waiters) if (waiter.piecesLeft === 0) waiter.reject(error);
    });
  }

  /** Replays one journal record into the batches (the record is already in the journal). */
  async replayRecord(seq: number, extents: JournalExtent[], data: Uint8Array, dataOffset: number): Promise<void> {
    const dataBytes = extents.reduce((sum, extent) => sum + (extent.zero ? 0 : extent.sectors * SECTOR_BYTES), 0);
    const zeroCount = extents.filter((extent) => extent.zero).length;
    // Journal records do not say where client writes end, so replayed records count as ending inside one until the
    // replay is over (endReplay): after the cache is lost, recovery ends the log before them, never inside a write,
    // and no checkpoint is taken among them.
    this.writeOpen = true;
    if (this.open && !this.open.fits(dataBytes, zeroCount)) await this.sealOpen();
    if (!this.open) await this.waitAheadRoom();
    if (!this.open) await this.openBatch();
    const batch = this.open!;
    batch.beginRecord(seq, true);
    batch.endRecord(true);
    let cursor = 0;
    for (const extent of extents) {
      if (extent.zero) {
        this.applyPiece(batch, extent.lba, extent.sectors, null, 0);
      } else {
        const bytes = extent.sectors * SECTOR_BYTES;
        this.applyPiece(batch, extent.lba, extent.sectors, data.subarray(cursor, cursor + bytes), dataOffset + cursor);
        cursor += bytes;
      }
    }
  }

  /**
   * The journal replay is over: what it replayed is the history the volume goes on from (a write it holds only part
   * of was never acknowledged, and nothing will complete it), so the log ends on a write boundary here.
   */
  endReplay(): void {
    this.writeOpen = false;
    if (this.open && !this.open.isEmpty) this.open.endRecord(false);
    this.armIdleTimer();
  }

  /**
   * Opens the next batch: in memory if a buffer is free now and no journal-only batch waits for one (those are
   * older and must be put first), else journal-only. Never waits: the journal, not memory, bounds what is absorbed.
   */
  private async openBatch(): Promise<void> {
    assert(this.objectsAhead < this.sealedObjectsAheadMax, "a batch opens only with room ahead of the backend");
    const batch = new Batch(this.options.batchBytes);
    const buffer = this.batchesToBuild === 0 ? this.buffers.tryAcquire() : null;
    const seq = this.nextSeq++;
    batch.open(seq, buffer);
    this.open = batch;
    this.unflushed.set(seq, batch);
    this.options.objects.add(seq, { kind: ObjectKind.Data, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
  }

  /** Seals the open batch (if any) and queues its put, plus a checkpoint if one is due (or forced). */
  async sealOpen(forceCheckpoint = false): Promise<void> {
    const batch = this.open;
    if (batch && !batch.isEmpty) {
      this.open = null;
      const info = this.options.objects.get(batch.seq)!;
      info.hdrSectors = batch.hdrSectors;
      info.dataSectors = batch.dataBytes / SECTOR_BYTES;
      this.stats.objects += 1;
      this.sealedCacheSeqLast = batch.cacheSeqLast;
      this.writerCacheUuid = this.options.cacheUuid;
      if (batch.endsInsideWrite) this.stats.objectsEndingInsideWrite += 1;
      if (batch.dataInBuffer) {
        const sealed = batch.seal({ volUuid: this.options.volUuid, cacheUuid: this.options.cacheUuid });
        this.sealedQueue.push({ seq: sealed.seq, bytes: sealed.object, batch: null });
      } else {
        this.batchesToBuild += 1;
        this.sealedQueue.push({ seq: batch.seq, bytes: null, batch });
      }
    }
    const sinceCheckpoint = this.nextSeq - 1 - this.lastCheckpointSeq;
    // Recovery starts from a checkpoint even without the cache, so one is taken only where the log ends on a write
    // boundary: never while a client write has pieces still to come. A due one (forced ones too: the takeover
    // checkpoint before a replay that finishes a kept tail) waits for the next seal that is on a boundary.
    if (forceCheckpoint && sinceCheckpoint > 0) this.checkpointRequested = true;
    const due = this.checkpointRequested || sinceCheckpoint >= this.options.checkpointIntervalObjects;
    if (due && !this.open && !this.writeOpen) this.queueCheckpoint();
    // Puts start in the background: the pump must not wait for a put slot (during an outage there may be none for
    // a long time, and the journal is what absorbs writes then).
    this.kickPuts();
  }

  private kickPuts(): void {
    if (this.sealedQueue.length > 0) void this.startPuts().catch((error: unknown) => this.fail(error));
  }

  private queueCheckpoint(): void {
    this.checkpointRequested = false;
    const seq = this.nextSeq++;
    const bytes = buildCheckpoint({
      volUuid: this.options.volUuid,
      seq,
      map: this.options.map,
      objects: this.options.objects,
      checkpoints: this.superblock.checkpoints,
      cacheUuid: this.writerCacheUuid,
      cacheSeqFirst: 0,
      cacheSeqLast: this.sealedCacheSeqLast,
    });
    this.options.objects.add(seq, { kind: ObjectKind.Checkpoint, hdrSectors: 0, dataSectors: 0, liveSectors: 0 });
    this.lastCheckpointSeq = seq;
    this.stats.checkpoints += 1;
    this.sealedQueue.push({ seq, bytes, batch: null });
  }

  /** The cache that wrote the newest sealed object and the newest journal record in it: what a checkpoint records. */
  private writerCacheUuid: string;
  private sealedCacheSeqLast: number;

  /**
   * An open batch that never received a record gives its seq back: putting nothing under that seq would leave a
   * gap in the log. It is always the newest seq, since seqs are only allocated while no batch is open.
   */
  private discardEmptyOpen(): void {
    const batch = this.open;
    if (!batch || !batch.isEmpty) return;
    assert(batch.seq === this.nextSeq - 1, "an empty open batch holds the newest seq");
    this.open = null;
    this.unflushed.delete(batch.seq);
    this.options.objects.delete(batch.seq);
    this.nextSeq -= 1;
    const buffer = batch.reset();
    if (buffer) this.buffers.release(buffer);
  }

  /** Writes an empty DATA object that names this cache as the log's writer (see recovery decision table). */
  async writeHandover(cacheSeqLast: number): Promise<void> {
    this.discardEmptyOpen();
    assert(!this.open, "handover before any batch");
    assert(!this.writeOpen, "handover on a write boundary");
    const seq = this.nextSeq++;
    const header = encodeDataObjectHeader(
      {
        volUuid: this.options.volUuid,
        seq,
        cacheSeq: cacheSeqLast,
        cacheSeqLast,
        cacheUuid: this.options.cacheUuid,
        objsCleaned: [],
        extents: [],
        trims: [],
        writeContinues: false, // it holds no write: a boundary (handover happens before any write is formed)
      },
      new Uint8Array(0),
    );
    this.sealedCacheSeqLast = cacheSeqLast;
    this.writerCacheUuid = this.options.cacheUuid;
    this.options.objects.add(seq, { kind: ObjectKind.Data, hdrSectors: header.byteLength / SECTOR_BYTES, dataSectors: 0, liveSectors: 0 });
    this.sealedQueue.push({ seq, bytes: header, batch: null });
    this.kickPuts();
    await this.waitDurable(seq);
  }

  /** Starts puts in seq order as slots free up, building journal-only batches first. One loop at a time. */
  private async startPuts(): Promise<void> {
    if (this.startingPuts) return;
    this.startingPuts = true;
    try {
      while (this.sealedQueue.length > 0) {
        if (!this.writer.hasSlot) await this.writer.waitForSlot();
        const next = this.sealedQueue[0]!;
        if (next.batch !== null) {
          await this.buildJournalBatch(next.batch);
          const sealed = next.batch.seal({ volUuid: this.options.volUuid, cacheUuid: this.options.cacheUuid });
          next.bytes = sealed.object;
          next.batch = null;
          this.batchesToBuild -= 1;
        }
        this.sealedQueue.shift();
        this.writer.start(next.seq, next.bytes!);
      }
    } finally {
      this.startingPuts = false;
    }
  }

  /** Reads a journal-only batch's data back from the journal into a buffer (waiting for one to be free). */
  private async buildJournalBatch(batch: Batch): Promise<void> {
    const buffer = await this.buffers.acquire();
    await this.options.journal.whenWritten(batch.recordSeqLast);
    const scratch = this.options.pool.acquire(JOURNAL_RECORD_DATA_BYTES_MAX + PAGE_BYTES);
    try {
      await batch.build(buffer, this.options.readJournal, scratch);
    } finally {
      this.options.pool.release(scratch);
    }
  }

  private onDurable(seq: number): void {
    const batch = this.unflushed.get(seq);
    if (batch) {
      const recordSeqLast = batch.cacheSeqLast;
      this.options.journal.release(recordSeqLast);
      this.unflushed.delete(seq);
      const buffer = batch.reset();
      if (buffer) this.recycleBuffer(buffer, recordSeqLast);
    }
    const info = this.options.objects.get(seq);
    if (info?.kind === ObjectKind.Checkpoint) this.onCheckpointDurable(seq);
    if (this.aheadRoomWaiter !== null && this.objectsAhead < this.sealedObjectsAheadMax) this.aheadRoomWaiter();
    const waiters = this.durableWaiters.get(seq);
    if (waiters) {
      this.durableWaiters.delete(seq);
      for (const wake of waiters) wake();
    }
    this.kickPuts();
  }

  /**
   * Returns a batch buffer for reuse once the journal has written every record of it: records may have been written
   * straight from its pages, and an object can be durable in a fast store before its records are on a slow device.
   * Almost always they are, and the buffer is free at once (the next batch finds it). If the journal fails, the
   * buffer stays out: the write path has failed with it.
   */
  private recycleBuffer(buffer: Uint8Array, recordSeqLast: number): void {
    const journal = this.options.journal;
    if (recordSeqLast === 0 || journal.isWritten(recordSeqLast)) return this.buffers.release(buffer);
    journal.whenWritten(recordSeqLast).then(
      () => this.buffers.release(buffer),
      () => undefined,
    );
  }

  /** The superblock names a checkpoint only once it and every object before it are durable. */
  private onCheckpointDurable(seq: number): void {
    const previous = this.superblock.checkpoints;
    const checkpoints = [...previous, seq].slice(-CHECKPOINTS_KEPT);
    const next: SuperblockObject = { ...this.superblock, checkpoints, nextSeq: this.nextSeq };
    this.superblock = next;
    const { store, prefix, log } = this.options;
    this.superblockUpdate = this.superblockUpdate
      .then(async () => {
        await this.options.superblocks.write(next);
        // Checkpoints go only once a superblock that no longer needs them is durable (checkpointsUnneeded). One that
        // cannot be deleted now stays in the table and is tried again at the next update (or by GC, fsck --repair).
        for (const old of checkpointsUnneeded(previous, checkpoints, this.options.objects)) {
          try {
            await store.delete(objectName(prefix, old));
            this.options.objects.delete(old);
          } catch (error) {
            log(`error: cannot delete checkpoint ${objectName(prefix, old)}, no longer needed: ${String(error)}`);
          }
        }
        this.onCheckpointsPersisted?.(checkpoints);
      })
      .catch((error: unknown) => log(`error: superblock update for checkpoint ${seq} failed: ${String(error)}`));
  }

  /**
   * Every queued write journaled, the open batch sealed (with a checkpoint after it when forceCheckpoint and there is
   * something new to cover), every object durable and the superblock up to date.
   */
  async settle(forceCheckpoint = false): Promise<void> {
    this.throwIfFailed();
    await this.drainWrites();
    this.throwIfFailed();
    this.discardEmptyOpen();
    await this.sealOpen(forceCheckpoint);
    const last = this.nextSeq - 1;
    if (last > this.writer.durableSeq) await this.waitDurable(last);
    await Promise.race([this.writer.waitIdle(), this.failureSignal.promise]);
    await this.superblockUpdate;
    this.throwIfFailed();
  }

  /** A failed write path (fenced, journal error) settles nothing: puts have stopped. */
  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /**
   * A checkpoint soon, even when the newest object already is one (garbage collection needs checkpoints newer than
   * its retirements): now when no write is being formed (sealing the open batch), else at the next seal.
   */
  requestCheckpoint(): void {
    if (this.failure) return;
    this.checkpointRequested = true; // sealOpen takes it whenever no batch is left open
    if (this.pumping || this.pendingFront < this.pending.length) return;
    this.discardEmptyOpen();
    void this.sealOpen().catch((error: unknown) => this.fail(error));
  }

  /** Resolves when every object up to seq is durable; rejects if the write path fails first. */
  async waitDurable(seq: number): Promise<void> {
    if (this.writer.durableSeq >= seq) return;
    this.throwIfFailed();
    const durable = new Promise<void>((resolve) => {
      const list = this.durableWaiters.get(seq) ?? [];
      list.push(resolve);
      this.durableWaiters.set(seq, list);
    });
    await Promise.race([durable, this.failureSignal.promise]);
  }

  private armIdleTimer(): void {
    if (this.idleTimer || !this.open || this.open.isEmpty || this.failure) return;
    this.idleTimer = this.options.clock.setTimer(this.options.batchIdleMs, () => {
      this.idleTimer = null;
      if (this.pumping || this.pendingFront < this.pending.length) return this.armIdleTimer();
      void this.sealOpen().catch((error: unknown) => this.fail(error));
    });
  }

  private fail(error: unknown): void {
    if (this.failure) return;
    this.failure = error;
    this.failureSignal.reject(error);
    this.options.log(`error: write path stopped: ${String(error)}`);
    for (let index = this.pendingFront; index < this.pending.length; index++) this.pending[index]?.waiter.reject(error);
    this.pending.length = 0;
    this.pendingFront = 0;
  }

  /** Waits until every queued write has been journaled. */
  async drainWrites(): Promise<void> {
    while (this.pumping || this.pendingFront < this.pending.length) {
      await this.options.clock.sleep(1);
    }
    await this.options.journal.drain();
  }

  /** Clean shutdown: everything journaled goes to the backend, with a checkpoint, and the superblock names it. */
  async closeClean(): Promise<void> {
    this.idleTimer?.cancel();
    this.idleTimer = null;
    await this.settle(true);
  }

  /** The checkpoints the superblock names (durable once onCheckpointsPersisted reported them; at open, as read). */
  get persistedCheckpoints(): number[] {
    return this.superblock.checkpoints;
  }

  get sequenceNext(): number {
    return this.nextSeq;
  }

  get durableSeq(): number {
    return this.writer.durableSeq;
  }

  get failed(): unknown {
    return this.failure;
  }
}


/**
 * The memory batches may use: PUTS_INFLIGHT_MAX + 1 buffers (one filling while the others are put), allocated on
 * first use and reused. Waiters are served first come, first served. Buffers come from the cache device's pool
 * when its bound has room (then journal records are written from them without a copy), else from the JS heap
 * (large --batch-size); pool buffers are freed with the pool when the cache device closes.
 */
class BatchBuffers {
  private readonly free: Uint8Array[] = [];
  private allocated = 0;
  private readonly waiters: Array<(buffer: Uint8Array) => void> = [];
  private readonly deviceMemory = new WeakSet<Uint8Array>();

  constructor(
    private readonly bufferBytes: number,
    private readonly countMax: number,
    private readonly pool: AlignedPool,
  ) {}

  tryAcquire(): Uint8Array | null {
    const buffer = this.free.pop();
    if (buffer) return buffer;
    if (this.allocated < this.countMax) {
      this.allocated += 1;
      const pooled = this.pool.acquireExact(this.bufferBytes);
      if (pooled === null) return new Uint8Array(this.bufferBytes);
      // acquireExact rounds up to a page; a --batch-size that is not whole pages leaves a tail unused.
      const buffer = pooled.subarray(0, this.bufferBytes);
      this.deviceMemory.add(buffer);
      return buffer;
    }
    return null;
  }

  isDeviceMemory(buffer: Uint8Array): boolean {
    return this.deviceMemory.has(buffer);
  }

  acquire(): Promise<Uint8Array> {
    const buffer = this.tryAcquire();
    if (buffer) return Promise.resolve(buffer);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(buffer: Uint8Array): void {
    // A pool buffer comes back empty (detached) when the cache device closed first: nothing is left to recycle.
    if (buffer.byteLength === 0 && this.deviceMemory.has(buffer)) return;
    assert(buffer.byteLength === this.bufferBytes, "a batch buffer");
    const waiter = this.waiters.shift();
    if (waiter) waiter(buffer);
    else this.free.push(buffer);
  }
}
