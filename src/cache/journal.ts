// The write journal: a circular log of records in the cache device's journal region (format: docs/format.md,
// "Journal records"; ordering: docs/architecture.md, "The write path").
//
// Journal invariants:
// - Positions are logical byte counters that only grow; physical offset = regionStart + (position mod regionBytes).
//   persistedTail <= tail <= head, and head - persistedTail <= regionBytes.
// - The live records (from the tail) lie back to back: consecutive seqs and positions, the last one ending at head
//   with seq nextSeq - 1; slotsFront <= reportedEnd <= slots; records before reportedEnd are written; the writes in
//   flight are the unwritten records, at most JOURNAL_WRITES_INFLIGHT_MAX; the front record is not both released and
//   reported (advanceTail would have dropped it).
// checkOrder() asserts the O(1) part (tail/head order, counts) after every move of head, tail, persisted tail or
// reported end; checkInvariants() walks every live record too (tests and the simulator call it after each step).
// - A record never straddles the end of the region: when the next record does not fit, a Pad record covers the rest
//   of the region first. Pad records take a sequence number like any other, so the chain of seqs has no holes.
// - Bytes in [persistedTail, head) are never overwritten: recovery walks from the tail the cache superblock names,
//   so that superblock is rewritten (and fdatasync'ed) before the space behind it is reused.
// - Record seqs are consecutive. A record is reported written only when it and every earlier record are on the device,
//   so an acknowledged write never depends on a record that recovery would stop before.
// - Each record carries the cache superblock generation of the run that wrote it; generations never decrease along
//   the chain, which tells recovery a stale record from an earlier run (same seq reused after a torn tail) from ours.

import { JOURNAL_WRITES_INFLIGHT_MAX, PAGE_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { encodeCacheSuperblock, type CacheSuperblock } from "../format/cache_superblock.ts";
import { crc32c } from "../format/crc32c.ts";
import { debugChecks } from "../util/debug_checks.ts";
import {
  encodeJournalHeader,
  JOURNAL_HEADER_BYTES,
  JournalRecordType,
  type JournalExtent,
} from "../format/journal_record.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";

export interface JournalPosition {
  /** Logical position (monotonic byte counter). */
  position: number;
  seq: number;
}

interface RecordSlot {
  position: number;
  bytes: number;
  seq: number;
  written: boolean;
  buffer: Uint8Array | null;
  waiters: RecordListener[];
}

/** Told once whether a record (and every record before it) reached the device. */
export interface RecordListener {
  recordWritten(): void;
  recordFailed(error: unknown): void;
}

/** A reported record's waiters: none are added once it is reported (whenWritten and drain resolve at once then). */
const NO_WAITERS = Object.freeze([]) as unknown as RecordListener[];

/** A promise's resolve and reject as a record listener. */
function promiseListener(resolve: () => void, reject: (error: unknown) => void): RecordListener {
  return { recordWritten: resolve, recordFailed: reject };
}

export interface JournalStart {
  /** Where the oldest still-needed record lies, and its seq (from the superblock or the replay walk). */
  tail: JournalPosition;
  /** Where the next record goes, and its seq (after the replay walk). */
  head: JournalPosition;
  /** Records found between tail and head by the replay walk, oldest first. */
  records: Array<{ position: number; bytes: number; seq: number }>;
}

export class Journal {
  readonly regionStartBytes: number;
  readonly regionBytes: number;
  private superblock: CacheSuperblock;
  private head: number;
  private nextSeq: number;
  private persistedTail: number;
  /** Live records oldest first; slots are removed from the front by release(). */
  private readonly slots: RecordSlot[] = [];
  private slotsFront = 0;
  /** slots[..reportedEnd) have had their completion reported (all written, in order). */
  private reportedEnd = 0;
  /** The highest seq release() was given: slots up to it leave as soon as they are reported written. */
  private releasedSeq = 0;
  private writesInFlight = 0;
  private spaceWaiters: Array<() => void> = [];
  /** The waiters of the records one completion reported, told once the journal's state is updated (reused). */
  private readonly toTell: RecordListener[] = [];
  private superblockWrite: Promise<void> | null = null;
  private failure: unknown = null;

  constructor(
    private readonly device: CacheDevice,
    private readonly pool: AlignedPool,
    superblock: CacheSuperblock,
    start: JournalStart,
  ) {
    this.superblock = superblock;
    this.regionStartBytes = superblock.journalStartBytes;
    this.regionBytes = superblock.journalBytes;
    assert(this.regionBytes % PAGE_BYTES === 0 && this.regionBytes >= 2 * PAGE_BYTES, "journal region size");
    this.persistedTail = start.tail.position;
    this.head = start.head.position;
    this.nextSeq = start.head.seq;
    assert(this.head >= this.persistedTail && this.head - this.persistedTail <= this.regionBytes, "journal head/tail");
    for (const record of start.records) {
      this.slots.push({ ...record, written: true, buffer: null, waiters: [] });
    }
    this.reportedEnd = this.slots.length;
    this.checkInvariants();
  }

  /** The O(1) invariants (see the top of this file): run after every move of head, tail, persisted tail, reports. */
  private checkOrder(): void {
    const tail = this.tailPosition();
    const live = this.slots.length - this.slotsFront;
    assert(this.persistedTail <= tail && tail <= this.head, "journal: persistedTail <= tail <= head");
    assert(this.head - this.persistedTail <= this.regionBytes, "journal: head - persistedTail <= region");
    assert(this.slotsFront <= this.reportedEnd && this.reportedEnd <= this.slots.length, "journal: front <= reported <= slots");
    assert(this.writesInFlight >= 0 && this.writesInFlight <= JOURNAL_WRITES_INFLIGHT_MAX, "journal: writes in flight bounded");
    assert(this.tailSeq() + live === this.nextSeq, "journal: live seqs run from the tail to nextSeq - 1");
    if (live > 0) {
      const last = this.slots[this.slots.length - 1]!;
      assert(last.position + last.bytes === this.head, "journal: the last record ends at head");
    }
  }

  /** Checks every invariant at the top of this file, walking all live records; throws on the first violation. */
  checkInvariants(): void {
    this.checkOrder();
    let position = this.tailPosition();
    let unwritten = 0;
    for (let index = this.slotsFront; index < this.slots.length; index++) {
      const slot = this.slots[index]!;
      const where = `journal record ${slot.seq} at ${slot.position}`;
      assert(slot.seq === this.tailSeq() + index - this.slotsFront, `${where}: seqs are consecutive`);
      assert(slot.position === position && slot.bytes >= JOURNAL_HEADER_BYTES && slot.bytes % PAGE_BYTES === 0, `${where}: records lie back to back, whole pages`);
      assert((slot.position % this.regionBytes) + slot.bytes <= this.regionBytes, `${where}: does not straddle the region end`);
      assert(index >= this.reportedEnd || slot.written, `${where}: reported records are written`);
      assert(index >= this.reportedEnd || slot.waiters.length === 0, `${where}: reported records have no waiters`);
      assert(slot.written === (slot.buffer === null), `${where}: a written record's buffer went back to the pool`);
      if (!slot.written) unwritten += 1;
      position += slot.bytes;
    }
    assert(this.reportedEnd === this.slots.length || !this.slots[this.reportedEnd]!.written || this.failure !== null, "journal: reports stop at the first unwritten record");
    assert(this.failure !== null || unwritten === this.writesInFlight, "journal: writes in flight are the unwritten records");
    const front = this.slots[this.slotsFront];
    assert(front === undefined || front.seq > this.releasedSeq || this.slotsFront >= this.reportedEnd, "journal: a released, reported front record is dropped");
  }

  /** Logical position of a physical offset inside the region, for a walk that starts at the superblock's tail. */
  static positionOf(superblock: CacheSuperblock, physicalOffsetBytes: number): number {
    assert(physicalOffsetBytes >= superblock.journalStartBytes, "offset inside the journal region");
    assert(physicalOffsetBytes < superblock.journalStartBytes + superblock.journalBytes, "offset inside the journal region");
    return physicalOffsetBytes - superblock.journalStartBytes;
  }

  physicalOffset(position: number): number {
    return this.regionStartBytes + (position % this.regionBytes);
  }

  get sequenceNext(): number {
    return this.nextSeq;
  }

  /** Bytes between the oldest still-needed record and the head. */
  get usedBytes(): number {
    return this.head - this.tailPosition();
  }

  get generation(): number {
    return this.superblock.generation;
  }

  /** Bytes a record of dataBytes takes on the device, header page included, plus a Pad if it would wrap. */
  private bytesNeeded(recordBytes: number): number {
    return this.padBytesBefore(recordBytes) + recordBytes;
  }

  /** The Pad a record of recordBytes written at the head needs first: the rest of the region, or 0 if it fits. */
  private padBytesBefore(recordBytes: number): number {
    const offsetInRegion = this.head % this.regionBytes;
    return offsetInRegion + recordBytes > this.regionBytes ? this.regionBytes - offsetInRegion : 0;
  }

  static recordBytes(dataBytes: number): number {
    return JOURNAL_HEADER_BYTES + Math.ceil(dataBytes / PAGE_BYTES) * PAGE_BYTES;
  }

  /** Largest record the region can ever take (a pad of the rest of the region may precede it). */
  get recordBytesMax(): number {
    return Math.floor(this.regionBytes / 2 / PAGE_BYTES) * PAGE_BYTES;
  }

  /** True when a record of dataBytes can be written now without waiting for space or a write slot. */
  canWrite(dataBytes: number): boolean {
    if (this.failure) return true; // let write() throw the failure
    if (!this.hasWriteSlot(dataBytes)) return false;
    const needed = this.bytesNeeded(Journal.recordBytes(dataBytes));
    return this.head + needed - this.persistedTail <= this.regionBytes;
  }

  /** True when fewer than the maximum record writes are in flight, counting the Pad the record may need first. */
  hasWriteSlot(dataBytes: number): boolean {
    // A record that needs a Pad first takes two write slots (docs/architecture.md: at most the maximum in flight).
    const writes = this.padBytesBefore(Journal.recordBytes(dataBytes)) > 0 ? 2 : 1;
    return this.writesInFlight + writes <= JOURNAL_WRITES_INFLIGHT_MAX;
  }

  /** True when the region has room for the record once released space is persisted (ignores write slots). */
  hasSpace(dataBytes: number): boolean {
    const needed = this.bytesNeeded(Journal.recordBytes(dataBytes));
    return this.head + needed - this.tailPosition() <= this.regionBytes;
  }

  /**
   * Waits until canWrite(dataBytes), persisting the tail when released space is not yet persisted. Callers that can
   * free space themselves (by sealing a batch) use waitForProgress instead and re-check between wakes.
   */
  async waitForWrite(dataBytes: number): Promise<void> {
    while (!this.canWrite(dataBytes)) await this.waitForProgress(dataBytes);
  }

  /**
   * One step towards canWrite(dataBytes): persists the tail if that is what frees the space, or waits for the next
   * change (a write completing, records released, the tail persisted). Returns at once if it can write now.
   */
  async waitForProgress(dataBytes: number): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.canWrite(dataBytes)) return;
    const needed = this.bytesNeeded(Journal.recordBytes(dataBytes));
    const fitsAfterPersist = this.head + needed - this.tailPosition() <= this.regionBytes;
    if (this.writesInFlight < JOURNAL_WRITES_INFLIGHT_MAX && fitsAfterPersist && this.tailPosition() > this.persistedTail) {
      await this.persistTail();
      return;
    }
    await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
  }

  /**
   * The seq and data offset (cache device bytes) that write(…, dataBytes) will give its record if called next, in
   * the same turn (a pad, when one is due, takes the seq before it). canWrite(dataBytes) must be true. Lets a
   * caller place the data where it belongs before the record exists (WritePath puts it in the batch first, then
   * journals it from there).
   */
  peekRecord(dataBytes: number): { seq: number; dataOffset: number } {
    if (this.failure) throw this.failure;
    assert(this.canWrite(dataBytes), "journal record peeked without space");
    const padBytes = this.padBytesBefore(Journal.recordBytes(dataBytes));
    return {
      seq: this.nextSeq + (padBytes > 0 ? 1 : 0),
      dataOffset: this.physicalOffset(this.head + padBytes) + JOURNAL_HEADER_BYTES,
    };
  }

  /**
   * Writes one record now (canWrite must be true). Returns the record's seq and a promise that resolves when it and
   * every earlier record are on the device.
   *
   * The data goes out one of two ways. By default the pieces are copied into a pooled aligned buffer, so the
   * caller's buffers are free as soon as this returns. With `dataInPlace` (pool memory, page-aligned, exactly the
   * record's data: the pieces back to back, dataBytes a whole number of pages) the record is written from there with
   * no copy, behind a header page of its own: the caller then must not modify those pages, nor reuse their memory,
   * until the record is reported written (isWritten / whenWritten).
   */
  write(
    extents: JournalExtent[],
    pieces: Uint8Array[],
    dataBytes: number,
    dataInPlace: Uint8Array | null = null,
  ): { seq: number; written: Promise<void>; dataOffset: number } {
    const slot = this.startRecord(extents, pieces, dataBytes, dataInPlace);
    const written = new Promise<void>((resolve, reject) => slot.waiters.push(promiseListener(resolve, reject)));
    return { seq: slot.seq, written, dataOffset: this.physicalOffset(slot.position) + JOURNAL_HEADER_BYTES };
  }

  /**
   * write() for the hot path: `listener` is told when the record and every earlier one are on the device, with no
   * promise made per record. Returns the record's seq; its data lies where peekRecord said.
   */
  writeThen(
    extents: JournalExtent[],
    pieces: Uint8Array[],
    dataBytes: number,
    dataInPlace: Uint8Array | null,
    inPlaceCrc32c: number | null,
    listener: RecordListener,
  ): number {
    const slot = this.startRecord(extents, pieces, dataBytes, dataInPlace, inPlaceCrc32c);
    slot.waiters.push(listener);
    return slot.seq;
  }

  /** Encodes a record and starts its write; its slot takes the waiters. */
  private startRecord(
    extents: JournalExtent[],
    pieces: Uint8Array[],
    dataBytes: number,
    dataInPlace: Uint8Array | null,
    inPlaceCrc32c: number | null = null,
  ): RecordSlot {
    if (this.failure) throw this.failure;
    assert(this.canWrite(dataBytes), "journal write without space");
    assert(inPlaceCrc32c === null || dataInPlace !== null, "a data checksum is given only with in-place data");
    if (debugChecks && dataInPlace !== null && inPlaceCrc32c !== null && crc32c(dataInPlace) !== inPlaceCrc32c) {
      assert(false, `journal: in-place data's crc32c given as ${inPlaceCrc32c}, not ${crc32c(dataInPlace)}`);
    }
    const recordBytes = Journal.recordBytes(dataBytes);
    const padBytes = this.padBytesBefore(recordBytes);
    if (padBytes > 0) this.writePad(padBytes);
    let header: Uint8Array;
    let data: Uint8Array;
    let owned: Uint8Array;
    if (dataInPlace !== null) {
      assert(dataInPlace.byteLength === dataBytes && dataBytes === recordBytes - JOURNAL_HEADER_BYTES, "in-place record data is whole pages");
      header = this.pool.acquire(JOURNAL_HEADER_BYTES);
      data = dataInPlace;
      owned = header;
    } else {
      owned = this.pool.acquire(recordBytes);
      let cursor = JOURNAL_HEADER_BYTES;
      for (const piece of pieces) {
        owned.set(piece, cursor);
        cursor += piece.byteLength;
      }
      assert(cursor === JOURNAL_HEADER_BYTES + dataBytes, "journal record data length");
      owned.fill(0, cursor, recordBytes);
      header = owned.subarray(0, JOURNAL_HEADER_BYTES);
      data = owned.subarray(JOURNAL_HEADER_BYTES, recordBytes);
    }
    const seq = this.nextSeq++;
    encodeJournalHeader(
      header,
      {
        type: JournalRecordType.Data,
        seq,
        volUuid: this.superblock.volUuid,
        cacheUuid: this.superblock.cacheUuid,
        generation: this.superblock.generation,
        dataPages: (recordBytes - JOURNAL_HEADER_BYTES) / PAGE_BYTES,
        extents,
      },
      [data],
      inPlaceCrc32c,
    );
    return this.submit(seq, owned, recordBytes, dataInPlace === null ? [owned] : [header, dataInPlace]);
  }

  /** True when record seq and every record before it are on the device (or were released long ago). */
  isWritten(seq: number): boolean {
    const index = this.liveIndexOf(seq);
    return index < 0 ? seq < this.nextSeq : index < this.reportedEnd;
  }

  /** Index in `slots` of live record seq, or -1 if seq is older than every live record (or none is live). */
  private liveIndexOf(seq: number): number {
    if (this.slotsFront >= this.slots.length || seq < this.slots[this.slotsFront]!.seq) return -1;
    // Seqs are consecutive, so the slot's index follows from the front's.
    return this.slotsFront + (seq - this.slots[this.slotsFront]!.seq);
  }

  /** Resolves when record seq (and every record before it) is on the device; at once if it already is. */
  whenWritten(seq: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const index = this.liveIndexOf(seq);
    if (index < 0) return Promise.resolve();
    if (index >= this.slots.length || this.slots[index]!.seq !== seq) assert(false, `record ${seq} is in the journal`);
    if (index < this.reportedEnd) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.slots[index]!.waiters.push(promiseListener(resolve, reject)));
  }

  private writePad(padBytes: number): void {
    const buffer = this.pool.acquire(JOURNAL_HEADER_BYTES);
    const seq = this.nextSeq++;
    encodeJournalHeader(
      buffer,
      {
        type: JournalRecordType.Pad,
        seq,
        volUuid: this.superblock.volUuid,
        cacheUuid: this.superblock.cacheUuid,
        generation: this.superblock.generation,
        dataPages: padBytes / PAGE_BYTES - 1,
        extents: [],
      },
      [],
    );
    // Only the header page of a pad is written: the pages it covers are skipped by readers.
    this.submit(seq, buffer, padBytes, [buffer]);
  }

  /** Starts the write of `buffers` (back to back) as record seq of recordBytes; `owned` goes back to the pool after. */
  private submit(seq: number, owned: Uint8Array, recordBytes: number, buffers: Uint8Array[]): RecordSlot {
    const slot: RecordSlot = { position: this.head, bytes: recordBytes, seq, written: false, buffer: owned, waiters: [] };
    this.slots.push(slot);
    this.head += recordBytes;
    this.writesInFlight += 1;
    this.checkOrder();
    const offset = this.physicalOffset(slot.position);
    this.device.write(offset, buffers).then(
      () => this.onWritten(slot),
      (error: unknown) => this.fail(error),
    );
    return slot;
  }

  private onWritten(slot: RecordSlot): void {
    this.writesInFlight -= 1;
    slot.written = true;
    if (slot.buffer) this.pool.release(slot.buffer);
    slot.buffer = null;
    // Report completions in seq order: a record counts as written only when all before it are. The waiters are told
    // once the journal's own state is updated (they may look at it).
    assert(this.toTell.length === 0, "journal: completions are reported one at a time");
    while (this.reportedEnd < this.slots.length) {
      const candidate = this.slots[this.reportedEnd]!;
      if (!candidate.written) break;
      this.reportedEnd += 1;
      if (candidate.waiters.length > 0) {
        for (const waiter of candidate.waiters) this.toTell.push(waiter);
        candidate.waiters = NO_WAITERS;
      }
    }
    this.checkOrder();
    this.advanceTail();
    const toTell = this.toTell;
    try {
      for (let index = 0; index < toTell.length; index++) toTell[index]!.recordWritten();
    } finally {
      toTell.length = 0;
    }
  }

  private fail(error: unknown): void {
    this.writesInFlight -= 1;
    this.failure ??= error;
    for (let index = this.slotsFront; index < this.slots.length; index++) {
      const slot = this.slots[index]!;
      for (const waiter of slot.waiters) waiter.recordFailed(this.failure);
      slot.waiters = NO_WAITERS;
    }
    this.wakeSpaceWaiters();
  }

  private wakeSpaceWaiters(): void {
    const waiters = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const wake of waiters) wake();
  }

  private tailPosition(): number {
    return this.slotsFront < this.slots.length ? this.slots[this.slotsFront]!.position : this.head;
  }

  private tailSeq(): number {
    return this.slotsFront < this.slots.length ? this.slots[this.slotsFront]!.seq : this.nextSeq;
  }

  /** Records with seq <= seq are in the backend: their space may be reused (after the tail is persisted). */
  release(seq: number): void {
    this.releasedSeq = Math.max(this.releasedSeq, seq);
    this.advanceTail();
  }

  /**
   * Drops released slots from the front, but only those reported written: an object holding a record can become
   * durable before the record's own write completes (a fast store, a slow device), so onWritten calls this again,
   * or the slot would stay live for good and its space leak until the journal is full and every write waits.
   */
  private advanceTail(): void {
    while (this.slotsFront < this.slots.length) {
      const slot = this.slots[this.slotsFront]!;
      if (slot.seq > this.releasedSeq || this.slotsFront >= this.reportedEnd) break;
      this.slotsFront += 1;
    }
    // Compact the slot array now and then so it stays bounded by the records in the region.
    if (this.slotsFront > 1024 && this.slotsFront * 2 > this.slots.length) {
      this.slots.splice(0, this.slotsFront);
      this.reportedEnd -= this.slotsFront;
      this.slotsFront = 0;
    }
    this.checkOrder();
    this.wakeSpaceWaiters();
  }

  /** Rewrites the cache superblock so it names the current tail; durable when this resolves. */
  async persistTail(): Promise<void> {
    while (this.superblockWrite) await this.superblockWrite;
    const position = this.tailPosition();
    const seq = this.tailSeq();
    if (position === this.persistedTail && seq === this.superblock.replaySeq) return;
    this.superblockWrite = this.writeSuperblock({ replayOffsetBytes: this.physicalOffset(position), replaySeq: seq });
    try {
      await this.superblockWrite;
      assert(position >= this.persistedTail, "journal: the persisted tail only moves forward");
      this.persistedTail = position;
      this.checkOrder();
    } finally {
      this.superblockWrite = null;
    }
    this.wakeSpaceWaiters();
  }

  /** Writes the superblock with changes and a new generation, then fdatasync: durable when this resolves. */
  async writeSuperblock(changes: Partial<CacheSuperblock>): Promise<void> {
    const next: CacheSuperblock = { ...this.superblock, ...changes, generation: this.superblock.generation + 1 };
    const page = this.pool.acquire(PAGE_BYTES);
    try {
      page.set(encodeCacheSuperblock(next));
      await this.device.write(0, [page]);
      await this.device.fdatasync();
    } finally {
      this.pool.release(page);
    }
    this.superblock = next;
  }

  /** Resolves when every record written so far is on the device (not yet durable: see fdatasync). */
  async drain(): Promise<void> {
    if (this.failure) throw this.failure;
    const last = this.slots[this.slots.length - 1];
    if (!last || this.reportedEnd === this.slots.length) return;
    await new Promise<void>((resolve, reject) => last.waiters.push(promiseListener(resolve, reject)));
  }

  get inFlight(): number {
    return this.writesInFlight;
  }
}
