// The record former (docs/architecture.md, "The write path"): client writes and garbage collection's copies wait in
// `pending` until the pump forms a journal record from them and the pieces queued with them (group commit); a write
// is acknowledged when its record and every earlier record are on the cache device (O_DIRECT), and with FUA after an
// fdatasync that started after that.
//
// Forming a record is one synchronous step: take the record's seq, copy the data into the open batch, update the
// extent map, start the journal write (from the batch's own pages when they are whole pages of device memory, else
// from a copy). So the batch holds whole records in seq order, and a read issued after a write is acknowledged always
// finds it.
//
// Invariants (checkInvariants):
//   1. 0 <= pendingFront <= pending.length, and every piece from pendingFront on is queued (the ones before it were
//      formed into records and dropped).
//   2. While the write path runs, the pump is "idle" only when nothing is queued (a queued piece always has a pump
//      run coming); a failure rejects and drops what was queued.
//   3. While the write path runs and the pump is idle, the log is not inside a client write: a write's pieces are queued together, so none is
//      left unfinished when the queue is empty (during the journal replay, the boundary is "replaying").
//   4. Data records are formed in increasing journal seq (pads take the seqs between).
//
// Bounds: pending writes are bounded by the NBD layer's per-connection in-flight limit; records in flight by
// JOURNAL_WRITES_INFLIGHT_MAX.

import { GC_COPY_BYTES_MAX, JOURNAL_RECORD_DATA_BYTES_MAX, JOURNAL_RECORD_EXTENTS_MAX, SECTOR_BYTES } from "../../constants.ts";
import { assert } from "../../errors.ts";
import { Journal, type RecordListener } from "../../cache/journal.ts";
import type { DataExtent } from "../../format/data_object.ts";
import type { JournalExtent } from "../../format/journal_record.ts";
import type { ExtentMap } from "../../map/extent_map.ts";
import type { Batch } from "../batch.ts";
import type { Clock, TimerHandle } from "../../util/clock.ts";
import type { FlushCoordinator } from "../flush_coordinator.ts";
import type { Fence } from "../lease.ts";
import type { ObjectTable } from "../object_table.ts";
import { debugChecks } from "../../util/debug_checks.ts";
import type { WriteListener } from "../../nbd/block_device.ts";
import type { Halt } from "./halt.ts";
import type { ObjectPipeline } from "./object_pipeline.ts";
import type { SpaceGate } from "./space_gate.ts";
import type { WriteStats } from "./stats.ts";

interface WriteWaiter {
  piecesLeft: number;
  fua: boolean;
  /** Told once (`settled` then): a write of several pieces may fail on each of them. */
  listener: WriteListener;
  settled: boolean;
  /** A client write's or trim's counter of those not yet told (null for garbage collection's copies). */
  counter: ClientWritesCounter | null;
}

/** Client writes and trims queued and not yet told: the write load read-cache migration looks at. */
interface ClientWritesCounter {
  inFlight: number;
}

function settleDone(waiter: WriteWaiter): void {
  if (waiter.settled) return;
  waiter.settled = true;
  if (waiter.counter !== null) waiter.counter.inFlight -= 1;
  waiter.listener.writeDone();
}

function settleFailed(waiter: WriteWaiter, error: unknown): void {
  if (waiter.settled) return;
  waiter.settled = true;
  if (waiter.counter !== null) waiter.counter.inFlight -= 1;
  waiter.listener.writeFailed(error);
}

/** Tells the writes a written (and, with FUA, synced) record finished. */
function finishRecord(record: readonly Piece[]): void {
  for (const piece of record) if (piece.waiter.piecesLeft === 0) settleDone(piece.waiter);
}

const NO_PIECES: Uint8Array[] = [];

/** A record's data buffers, for a journal write that copies them (the record is not in device memory). */
function dataOf(record: readonly Piece[]): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (const piece of record) if (piece.data) pieces.push(piece.data);
  return pieces;
}

/** Sectors [lba, lba+sectors) of GC copy `piece`, in the victim's data area it was read into. */
function copiedBytes(piece: Piece, from: CopySource, lba: number, sectors: number): Uint8Array {
  const start = (piece.copyOffset + lba - piece.lba) * SECTOR_BYTES;
  return from.area.subarray(start, start + sectors * SECTOR_BYTES);
}

/** How a formed record's journal write ended, for the record former to act on (RecordFormer.outcome). */
interface RecordOutcome {
  written(record: Piece[]): void;
  failed(record: Piece[], error: unknown): void;
}

/** A formed record, listening for its journal write: one object per record, where a promise chain took several. */
class FormedRecord implements RecordListener {
  constructor(
    private readonly outcome: RecordOutcome,
    private readonly pieces: Piece[],
  ) {}

  recordWritten(): void {
    this.outcome.written(this.pieces);
  }

  recordFailed(error: unknown): void {
    this.outcome.failed(this.pieces, error);
  }
}

/** A promise's resolve and reject as a listener (the paths that are not hot keep their promises). */
function promiseListener(resolve: () => void, reject: (error: unknown) => void): WriteListener {
  return { writeDone: resolve, writeFailed: reject };
}

/** Where garbage collection read the extents it copies: one victim's whole data area. */
export interface CopySource {
  obj: number;
  /** The victim's data area (sector 0 is its first data sector). */
  area: Uint8Array;
}

/** A piece is also its record's journal extent (JournalExtent: lba, sectors, zero), so a record makes no extent list. */
interface Piece {
  lba: number;
  sectors: number;
  /** TRIM / WRITE_ZEROES: data is null. */
  zero: boolean;
  /** null: TRIM / WRITE_ZEROES, and a GC copy not resolved yet. */
  data: Uint8Array | null;
  waiter: WriteWaiter;
  /**
   * A GC copy not resolved yet: the victim it is copied from, at area sector `copyOffset`. When its record is formed
   * the piece keeps only the sectors the map still points at there (resolveCopy), and this becomes null; null for
   * client writes.
   */
  copiedFrom: CopySource | null;
  copyOffset: number;
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

/** The pieces pending[pendingFront, end) the next record takes. */
interface RecordChoice {
  end: number;
  dataBytes: number;
  zeroCount: number;
}

/** "rerun": writes arrived while the pump ran; it goes round again before going idle. */
type PumpState = "idle" | "running" | "rerun";
/** Where the newest record formed (or replayed) ends relative to client writes. */
type Boundary = "onBoundary" | "insideWrite" | "replaying";

export interface RecordFormerOptions {
  map: ExtentMap;
  objects: ObjectTable;
  journal: Journal;
  flusher: FlushCoordinator;
  fence: Fence;
  clock: Clock;
  halt: Halt;
  stats: WriteStats;
  pipeline: ObjectPipeline;
  /** Client writes with data wait here while the backend is over its space high-water mark (space_gate.ts). */
  spaceGate: SpaceGate;
  batchBytes: number;
  batchIdleMs: number;
  /** Seals the open batch (and takes a checkpoint if one is due): the write path's sealOpen. */
  seal: () => Promise<void>;
  /** The log ends inside a client write whose rest the journal replay brings. */
  logEndsInsideWrite: boolean;
}

export class RecordFormer {
  private readonly pending: Piece[] = [];
  private pendingFront = 0;
  private pump: PumpState = "idle";
  private boundary: Boundary;
  private idleTimer: TimerHandle | null = null;
  private lastRecordSeq = 0;
  /** drain() callers, woken whenever the pump goes idle (they check again). */
  private drainWaiters: Array<() => void> = [];
  private readonly clientWrites: ClientWritesCounter = { inFlight: 0 };
  /** The runs resolveCopy finds, as (lba, sectors) pairs: reused, so resolving a GC copy allocates no list or closure. */
  private readonly copyRuns: number[] = [];
  private readonly noteCopyRun = (lba: number, sectors: number): void => void this.copyRuns.push(lba, sectors);
  /** What each formed record tells when its journal write ends (made once: no promise or closure per record). */
  private readonly outcome: RecordOutcome = {
    written: (record) => this.acknowledge(record),
    // The journal tells this inside its own failure handling: the write path stops after that, not during it.
    failed: (record, error) => queueMicrotask(() => this.failRecord(record, error)),
  };

  constructor(private readonly options: RecordFormerOptions) {
    this.boundary = options.logEndsInsideWrite ? "replaying" : "onBoundary";
    options.halt.onFail((error) => this.rejectQueued(error));
  }

  /** The log ends on a write boundary: no client write has pieces still to come (nor may the replay bring some). */
  get onBoundary(): boolean {
    return this.boundary === "onBoundary";
  }

  /** Client writes and trims queued (past the space gate) and not yet acknowledged or failed. */
  get clientWritesInFlight(): number {
    return this.clientWrites.inFlight;
  }

  /** The pump is running or has pieces to form: a record may be formed at any moment. */
  get busy(): boolean {
    return this.pump !== "idle" || this.pendingFront < this.pending.length;
  }

  /**
   * Queues [lba, lba+data/512) (or a zeroing of sectors when data is null); resolves when acknowledged-safe. Every
   * client write and trim first passes the space gate (it may wait there, boundedly, for garbage collection); the
   * gate queues them in the order they came.
   */
  write(lba: number, sectors: number, data: Uint8Array | null, fua: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => this.writeThen(lba, sectors, data, fua, promiseListener(resolve, reject)));
  }

  /** write() without a promise: `listener` is told once (maybe at once, when the write path has failed). */
  writeThen(lba: number, sectors: number, data: Uint8Array | null, fua: boolean, listener: WriteListener): void {
    if (this.options.halt.failed) return listener.writeFailed(this.options.halt.error);
    const gate = this.options.spaceGate;
    if (gate.admitsNow()) return this.queueWrite(lba, sectors, data, fua, listener);
    gate.wait(() => this.queueWrite(lba, sectors, data, fua, listener));
  }

  /** Queues a client write or trim that passed the space gate. */
  private queueWrite(lba: number, sectors: number, data: Uint8Array | null, fua: boolean, listener: WriteListener): void {
    if (this.options.halt.failed) return listener.writeFailed(this.options.halt.error);
    // A write larger than a journal record or a batch is split; it is acknowledged when all its pieces are.
    const pieceSectorsMax = Math.min(JOURNAL_RECORD_DATA_BYTES_MAX, this.options.batchBytes) / SECTOR_BYTES;
    const piecesLeft = data === null ? 1 : Math.ceil(sectors / pieceSectorsMax);
    const waiter: WriteWaiter = { piecesLeft, fua, listener, settled: false, counter: this.clientWrites };
    this.clientWrites.inFlight += 1;
    const stats = this.options.stats;
    if (data === null) {
      this.pending.push({ lba, sectors, zero: true, data: null, waiter, copiedFrom: null, copyOffset: 0, isCopy: false, bytesAfter: 0 });
      stats.trims += 1;
    } else {
      this.queuePieces(lba, sectors, data, waiter, pieceSectorsMax);
      stats.writes += 1;
      stats.writeBytes += data.byteLength;
    }
    this.schedulePump();
  }

  /**
   * Queues a client write's pieces, all in this one step, so they are contiguous in `pending` and in the journal. A
   * write of one piece (nearly every write) is queued as it came: no view of it is made.
   */
  private queuePieces(lba: number, sectors: number, data: Uint8Array, waiter: WriteWaiter, pieceSectorsMax: number): void {
    if (sectors <= pieceSectorsMax) {
      this.pending.push({ lba, sectors, zero: false, data, waiter, copiedFrom: null, copyOffset: 0, isCopy: false, bytesAfter: 0 });
      return;
    }
    for (let done = 0; done < sectors; done += pieceSectorsMax) {
      const count = Math.min(pieceSectorsMax, sectors - done);
      const piece = data.subarray(done * SECTOR_BYTES, (done + count) * SECTOR_BYTES);
      const bytesAfter = (sectors - done - count) * SECTOR_BYTES;
      this.pending.push({ lba: lba + done, sectors: count, zero: false, data: piece, waiter, copiedFrom: null, copyOffset: 0, isCopy: false, bytesAfter });
    }
  }

  /**
   * Queues garbage collection's copy of every extent of `extents`, which lie one after another in `source.area` from
   * sector `firstOffset` on (a slice of the victim's extents, in its data order; an extent longer than
   * GC_COPY_BYTES_MAX goes as several copies). When a copy's record is formed, only the sectors the map still points
   * at in the victim are written: anything a client wrote meanwhile is newer and wins, because it either formed its
   * record first (so the map moved) or forms it later (so it is later in the log); an extent already dead costs that
   * one lookup. Resolves when every copy is journaled or found wholly superseded.
   */
  copyExtents(source: CopySource, extents: readonly DataExtent[], firstOffset: number): Promise<void> {
    if (this.options.halt.failed) return Promise.reject(this.options.halt.error);
    const copySectorsMax = Math.min(GC_COPY_BYTES_MAX, this.options.batchBytes) / SECTOR_BYTES;
    return new Promise<void>((resolve, reject) => {
      const waiter: WriteWaiter = { piecesLeft: 0, fua: false, listener: promiseListener(resolve, reject), settled: false, counter: null };
      let offset = firstOffset;
      for (const extent of extents) {
        for (let done = 0; done < extent.sectors; done += copySectorsMax) {
          const sectors = Math.min(copySectorsMax, extent.sectors - done);
          this.pending.push({ lba: extent.lba + done, sectors, zero: false, data: null, waiter, copiedFrom: source, copyOffset: offset + done, isCopy: true, bytesAfter: 0 });
          waiter.piecesLeft += 1;
        }
        offset += extent.sectors;
      }
      assert((offset - firstOffset) * SECTOR_BYTES <= source.area.byteLength, "GC copies lie inside the victim's data area");
      if (waiter.piecesLeft === 0) settleDone(waiter);
      else this.schedulePump();
    });
  }

  /**
   * Resolves the GC copy at pending[index] to the runs of it the map still points at where it was copied from: the
   * whole piece (it is kept, with its data), none (it is dropped), or several (it is replaced by them). Synchronous,
   * and only the pump changes the map, so the answer holds until the record forms. Returns whether it dropped the
   * piece, which moves the pieces already chosen for the record (pending[pendingFront, index)) up by one.
   */
  private resolveCopy(index: number): boolean {
    const piece = this.pending[index]!;
    const from = piece.copiedFrom!;
    const runs = this.copyRuns;
    runs.length = 0;
    this.options.map.runsMappedTo(piece.lba, piece.sectors, from.obj, piece.copyOffset, this.noteCopyRun);
    let copied = 0;
    for (let at = 1; at < runs.length; at += 2) copied += runs[at]!;
    this.options.stats.gcCopiedSectors += copied;
    this.options.stats.gcSupersededSectors += piece.sectors - copied;
    if (runs.length === 0) {
      this.dropResolved(index);
      return true;
    }
    piece.copiedFrom = null;
    if (copied === piece.sectors) {
      piece.data = copiedBytes(piece, from, piece.lba, piece.sectors);
      return false;
    }
    const pieces: Piece[] = [];
    for (let at = 0; at < runs.length; at += 2) {
      const lba = runs[at]!;
      const sectors = runs[at + 1]!;
      pieces.push({ ...piece, lba, sectors, data: copiedBytes(piece, from, lba, sectors) });
    }
    this.pending.splice(index, 1, ...pieces);
    piece.waiter.piecesLeft += pieces.length - 1;
    return false;
  }

  /** Drops the GC copy at pending[index], found wholly superseded (resolveCopy). */
  private dropResolved(index: number): void {
    const piece = this.pending[index]!;
    for (let at = index; at > this.pendingFront; at--) this.pending[at] = this.pending[at - 1]!;
    this.pending[this.pendingFront] = undefined as unknown as Piece; // dropped: no longer queued
    this.pendingFront += 1;
    piece.waiter.piecesLeft -= 1;
    if (piece.waiter.piecesLeft === 0) settleDone(piece.waiter);
  }

  private schedulePump(): void {
    if (this.pump !== "idle") {
      this.pump = "rerun";
      return;
    }
    this.pump = "running";
    // Run after the current turn: writes that arrive in the same turn go into one record (group commit).
    queueMicrotask(() => void this.runPump());
  }

  private async runPump(): Promise<void> {
    try {
      for (;;) {
        this.pump = "running";
        while (this.pendingFront < this.pending.length) {
          await this.formRecord();
        }
        this.compactPending();
        if (!this.rerunAsked()) break;
      }
      assert(this.boundary !== "insideWrite", "a write's pieces are queued together, so none is left unfinished when the queue is empty");
    } catch (error) {
      this.options.halt.fail(error);
    } finally {
      this.pump = "idle";
      if (this.pendingFront < this.pending.length && !this.options.halt.failed) this.schedulePump();
      this.afterChange();
      this.wakeDrainers();
    }
    this.armIdleTimer();
  }

  /** Writes arrived while the pump ran (schedulePump moved it to "rerun" during an await). */
  private rerunAsked(): boolean {
    return this.pump === "rerun";
  }

  private compactPending(): void {
    if (this.pendingFront === this.pending.length) {
      this.pending.length = 0;
      this.pendingFront = 0;
    }
  }

  /** Forms one record from the front of `pending` and starts its journal write. */
  private async formRecord(): Promise<void> {
    const { journal, pipeline } = this.options;
    // Each wait is awaited only when it has to wait: an await costs a promise and a microtask turn per record.
    if (!journal.hasWriteSlot(0)) await this.waitForWriteSlot();
    const choice = this.choosePieces();
    if (choice === null) return; // only GC copies that every sector of was superseded
    if (!journal.canWrite(choice.dataBytes)) await this.waitForJournalRoom(choice.dataBytes);
    // Room in the batch, and a write boundary before a long write that should not share it (sealsBeforeRecord).
    const shape = this.recordShape(choice.end);
    const open = pipeline.open;
    if (open && (!open.fits(choice.dataBytes, choice.zeroCount) || this.sealsBeforeRecord(open, shape, choice.zeroCount))) await this.options.seal();
    if (!pipeline.open && !pipeline.hasAheadRoom) await this.waitAheadRoom();
    const batch = pipeline.open ?? pipeline.openNext();
    if (!journal.canWrite(choice.dataBytes)) return; // space went to a pad or another writer meanwhile: try again
    this.writeRecord(batch, choice, shape);
  }

  /** Chooses the pieces: bounded by extents per header, bytes per record, and what one batch can take. */
  private choosePieces(): RecordChoice | null {
    const { journal, batchBytes } = this.options;
    let end = this.pendingFront;
    let dataBytes = 0;
    let zeroCount = 0;
    let clientPiecesAhead = false;
    while (end < this.pending.length && end - this.pendingFront < JOURNAL_RECORD_EXTENTS_MAX) {
      if (this.pending[end]!.copiedFrom !== null) {
        // A copy is checked against the map only once every client write queued before it has reached the map;
        // copies ahead do not matter: what copies resolve to never overlaps (each sector has one place in the map).
        if (clientPiecesAhead) break;
        if (this.resolveCopy(end)) end += 1; // dropped: the pieces chosen so far moved up by one (dropResolved)
        continue;
      }
      const piece = this.pending[end]!;
      if (!piece.isCopy) clientPiecesAhead = true;
      const bytes = piece.data ? piece.data.byteLength : 0;
      if (end > this.pendingFront && (dataBytes + bytes > JOURNAL_RECORD_DATA_BYTES_MAX || dataBytes + bytes > batchBytes)) break;
      if (Journal.recordBytes(dataBytes + bytes) > journal.recordBytesMax && end > this.pendingFront) break;
      dataBytes += bytes;
      if (!piece.data) zeroCount += 1;
      end += 1;
    }
    return end === this.pendingFront ? null : { end, dataBytes, zeroCount };
  }

  /**
   * Group commit: while every journal write slot is taken, the pieces that arrive meanwhile join the next record, so
   * it is chosen only once a slot is free (a wait counted in stats like waitForJournalRoom's).
   */
  private async waitForWriteSlot(): Promise<void> {
    const { journal, stats } = this.options;
    if (journal.hasWriteSlot(0)) return;
    const since = performance.now();
    while (!journal.hasWriteSlot(0)) await journal.waitForProgress(0);
    stats.journalSlotWaits += 1;
    stats.journalSlotWaitMs += performance.now() - since;
  }

  /**
   * Room in the journal. If space is short and nothing is being put that would release some, the open batch must
   * go (its records are what fills the journal: tiny writes can fill a journal before their batch fills); otherwise
   * wait for the puts in flight rather than cut a small object. Re-checked after every wake, since the puts may
   * complete and still leave the open batch holding the space. A wait is counted in stats by what stopped the record
   * first: every write slot taken, or no space.
   */
  private async waitForJournalRoom(dataBytes: number): Promise<void> {
    const { journal, pipeline, stats } = this.options;
    if (journal.canWrite(dataBytes)) return;
    const slotsFull = !journal.hasWriteSlot(dataBytes);
    const since = performance.now();
    while (!journal.canWrite(dataBytes)) {
      const open = pipeline.open;
      if (!journal.hasSpace(dataBytes) && open && !open.isEmpty && pipeline.putsIdle) await this.options.seal();
      await journal.waitForProgress(dataBytes);
    }
    const waitedMs = performance.now() - since;
    if (slotsFull) {
      stats.journalSlotWaits += 1;
      stats.journalSlotWaitMs += waitedMs;
    } else {
      stats.journalSpaceWaits += 1;
      stats.journalSpaceWaitMs += waitedMs;
    }
  }

  /** Room to open a batch (objects ahead of the backend below their bound), counted in stats when it had to wait. */
  private async waitAheadRoom(): Promise<void> {
    const { pipeline, stats } = this.options;
    if (pipeline.hasAheadRoom) return;
    const since = performance.now();
    await pipeline.waitAheadRoom();
    stats.aheadWaits += 1;
    stats.aheadWaitMs += performance.now() - since;
  }

  /**
   * Synchronous, so map, batch and journal agree on the record. The data goes into the batch first; the journal then
   * writes the record straight from the batch's pages when they are whole pages of device memory (journalView), and
   * copies the pieces otherwise.
   */
  private writeRecord(batch: Batch, choice: RecordChoice, shape: RecordShape): void {
    const { journal, pipeline } = this.options;
    const { end, dataBytes } = choice;
    // The record's pieces: its journal extents, and whose writes to tell when it is written. The record keeps the
    // client's buffers until then, which the device contract allows (a payload may be kept until its write completes).
    const record = this.pending.slice(this.pendingFront, end);
    const placed = journal.peekRecord(dataBytes);
    if (placed.seq <= this.lastRecordSeq) assert(false, `record ${placed.seq} follows record ${this.lastRecordSeq}`);
    batch.beginRecord(placed.seq, shape.continuesWrite);
    const batchStartBytes = batch.dataBytes;
    let journalOffset = placed.dataOffset;
    for (let index = this.pendingFront; index < end; index++) {
      const piece = this.pending[index]!;
      this.applyPiece(batch, piece.lba, piece.sectors, piece.data, journalOffset);
      if (piece.data) journalOffset += piece.data.byteLength;
      this.pending[index] = undefined as unknown as Piece; // formed: no longer queued
    }
    batch.endRecord(shape.endsInsideWrite);
    this.boundary = shape.endsInsideWrite ? "insideWrite" : "onBoundary";
    // One checksum call per record, not one long one when the batch is sealed; a record written in place takes
    // the checksum of its data from it (the same bytes).
    const addedCrc = batch.checksumNewData(batchStartBytes, dataBytes);
    const deviceMemory = batch.buffer !== null && pipeline.isDeviceMemory(batch.buffer);
    const inPlace = deviceMemory ? batch.journalView(batchStartBytes, dataBytes) : null;
    const inPlaceCrc = inPlace !== null ? addedCrc : null;
    const listener = new FormedRecord(this.outcome, record);
    const seq = journal.writeThen(record, inPlace === null ? dataOf(record) : NO_PIECES, dataBytes, inPlace, inPlaceCrc, listener);
    // The same seq means the same pad decision, so the data went to the offset peeked too.
    assert(seq === placed.seq, "the record went where it was peeked");
    this.lastRecordSeq = seq;
    this.pendingFront = end;
    this.options.stats.records += 1;
    this.afterChange();
  }

  /** Where the record of pending[pendingFront, end) starts and ends relative to the client writes it holds pieces of. */
  private recordShape(end: number): RecordShape {
    const continuesWrite = this.boundary !== "onBoundary";
    let insideWrite = continuesWrite;
    let bytesBefore = 0;
    let startsLongWriteBytes = 0;
    for (let index = this.pendingFront; index < end; index++) {
      const piece = this.pending[index]!;
      const bytes = piece.data ? piece.data.byteLength : 0;
      if (!insideWrite && piece.bytesAfter > 0) startsLongWriteBytes = bytesBefore + bytes + piece.bytesAfter;
      insideWrite = piece.bytesAfter > 0;
      bytesBefore += bytes;
    }
    return { continuesWrite, endsInsideWrite: insideWrite, startsLongWriteBytes };
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
  // No read-cache invalidation: the cache is keyed by object names, which a write never reuses (read_cache.ts).
  private applyPiece(batch: Batch, lba: number, sectors: number, data: Uint8Array | null, journalOffset: number): void {
    const { map, objects } = this.options;
    if (data) {
      const offset = batch.addData(lba, data, journalOffset);
      map.update(lba, sectors, batch.seq, offset, objects.displaced);
      objects.get(batch.seq)!.liveSectors += sectors;
    } else {
      batch.addTrim(lba, sectors);
      map.trim(lba, sectors, objects.displaced);
    }
  }

  /** A record's journal write failed, or it may not be acknowledged: its writes fail, and so does the write path. */
  private failRecord(record: Piece[], error: unknown): void {
    for (const piece of record) settleFailed(piece.waiter, error);
    this.options.halt.fail(error);
  }

  private acknowledge(record: Piece[]): void {
    // A holder that was paused past its lease must not acknowledge what it journaled: its successor never sees it.
    try {
      this.options.fence.check();
    } catch (error) {
      return this.failRecord(record, error);
    }
    let needSync = false;
    for (const piece of record) {
      const waiter = piece.waiter;
      waiter.piecesLeft -= 1;
      if (waiter.piecesLeft === 0 && waiter.fua) needSync = true;
    }
    if (!needSync) return finishRecord(record);
    this.options.flusher.sync().then(
      () => finishRecord(record),
      (error: unknown) => {
        for (const piece of record) if (piece.waiter.piecesLeft === 0) settleFailed(piece.waiter, error);
      },
    );
  }

  /** Replays one journal record into the batches (the record is already in the journal). */
  async replayRecord(seq: number, extents: JournalExtent[], data: Uint8Array, dataOffset: number): Promise<void> {
    const dataBytes = extents.reduce((sum, extent) => sum + (extent.zero ? 0 : extent.sectors * SECTOR_BYTES), 0);
    const zeroCount = extents.filter((extent) => extent.zero).length;
    // Journal records do not say where client writes end, so replayed records count as ending inside one until the
    // replay is over (endReplay): after the cache is lost, recovery ends the log before them, never inside a write,
    // and no checkpoint is taken among them.
    this.boundary = "replaying";
    const pipeline = this.options.pipeline;
    if (pipeline.open && !pipeline.open.fits(dataBytes, zeroCount)) await this.options.seal();
    if (!pipeline.open) await this.waitAheadRoom();
    const batch = pipeline.open ?? pipeline.openNext();
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
    this.lastRecordSeq = Math.max(this.lastRecordSeq, seq);
  }

  /**
   * The journal replay is over: what it replayed is the history the volume goes on from (a write it holds only part
   * of was never acknowledged, and nothing will complete it), so the log ends on a write boundary here.
   */
  endReplay(): void {
    this.boundary = "onBoundary";
    const open = this.options.pipeline.open;
    if (open && !open.isEmpty) open.endRecord(false);
    this.armIdleTimer();
  }

  /** Seals the open batch after an idle pause (batchIdleMs without a record formed). */
  private armIdleTimer(): void {
    const open = this.options.pipeline.open;
    if (this.idleTimer || !open || open.isEmpty || this.options.halt.failed) return;
    this.idleTimer = this.options.clock.setTimer(this.options.batchIdleMs, () => {
      this.idleTimer = null;
      if (this.busy) return this.armIdleTimer();
      void this.options.seal().catch((error: unknown) => this.options.halt.fail(error));
    });
  }

  cancelIdleTimer(): void {
    this.idleTimer?.cancel();
    this.idleTimer = null;
  }

  /** Waits until every queued write has been journaled (woken by the pump going idle, not by polling). */
  async drain(): Promise<void> {
    while (this.busy) {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    }
    await this.options.journal.drain();
  }

  private wakeDrainers(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const wake of waiters) wake();
  }

  /** The write path failed: every queued write fails with it. */
  private rejectQueued(error: unknown): void {
    for (let index = this.pendingFront; index < this.pending.length; index++) {
      const piece = this.pending[index];
      if (piece !== undefined) settleFailed(piece.waiter, error);
    }
    this.pending.length = 0;
    this.pendingFront = 0;
    this.wakeDrainers();
  }

  private afterChange(): void {
    if (debugChecks) this.checkInvariants();
  }

  /** Checks invariants 1-3 from the top of this file (4 is asserted where a record is formed). */
  checkInvariants(): void {
    const check = (condition: boolean, message: () => string): void => {
      if (!condition) assert(false, `record former invariant: ${message()}`);
    };
    check(this.pendingFront >= 0 && this.pendingFront <= this.pending.length, () => `pendingFront ${this.pendingFront} within the queue (${this.pending.length})`);
    for (let index = this.pendingFront; index < this.pending.length; index++) check(this.pending[index] !== undefined, () => `queued piece ${index} is there`);
    if (this.pump === "idle" && !this.options.halt.failed) {
      check(this.pendingFront === this.pending.length, () => "an idle pump leaves nothing queued");
      check(this.boundary !== "insideWrite", () => "an idle pump leaves no write unfinished");
    }
  }
}
