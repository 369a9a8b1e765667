// A batch: journaled writes gathered into the next backend DATA object (format: docs/format.md, "DATA objects";
// ordering: docs/architecture.md, "The write path").
//
// A batch's data lives in one of two places:
// - memory: a buffer with header room before the data, filled as writes arrive; sealing writes the header in place
//   and the put sends one subarray of it (no copy at seal time);
// - the journal only: when every buffer is taken (puts are slow or the backend is down), the batch records where
//   each extent's data lies in the journal and takes no memory. Before its put it is built: a buffer is attached and
//   the data read back from the journal. This is what lets the journal, not memory, absorb writes while the backend
//   is away.
//
// Batch invariants:
// - A batch holds whole journal records, in seq order: cacheSeqFirst..cacheSeqLast are exactly the records whose
//   writes it holds. Recovery relies on this to know which journal records the backend already has.
// - dataBytes == sum of extent lengths; extents and trims keep arrival order (a trim applies before
//   extents[beforeIndex]).
// - extentCount <= capacity/512 and trimCount <= BATCH_TRIMS_MAX, so the header always fits the room reserved
//   before the data.
// - A batch that is not empty takes a record only if the total stays within dataBytesMax; an empty one takes any
//   record up to its capacity (a journal written with a larger --batch-size can always be replayed).
// - dataCrc is crc32c of the data area's first dataCrcBytes bytes (dataCrcBytes <= dataBytes). The data area only
//   grows at its end until reset(), so bytes once checksummed never change and the running CRC stays true.
// - endsInsideWrite says whether the newest record ends inside a client write (a piece of it comes later); sealed,
//   it is the object's WRITE_CONTINUES flag, so it must never be false while a piece is still to come (recovery
//   may end the log after an object without it). startsInsideWrite says the first record continued such a write.

import { BATCH_TRIMS_MAX, JOURNAL_RECORD_DATA_BYTES_MAX, PAGE_BYTES, SECTOR_BYTES, SECTORS_PER_PAGE } from "../constants.ts";
import { assert } from "../errors.ts";
import { crc32c, crc32cCombine } from "../format/crc32c.ts";
import { dataObjectHeaderBytes, encodeDataObjectHeader } from "../format/data_object.ts";

export interface SealedBatch {
  seq: number;
  /** Header + data, ready to put. A view into the batch buffer. */
  object: Uint8Array;
  hdrSectors: number;
  dataSectors: number;
  cacheSeqLast: number;
}

/** Reads page-aligned ranges of the cache device (the journal) into a caller's buffer. */
export type JournalReader = (offset: number, into: Uint8Array) => Promise<void>;

/** The buffer a batch of this configuration needs. */
export function batchCapacityBytes(dataBytesMax: number): number {
  return Math.max(dataBytesMax, JOURNAL_RECORD_DATA_BYTES_MAX);
}

export function batchHeaderRoomBytes(capacityBytes: number): number {
  return dataObjectHeaderBytes(capacityBytes / SECTOR_BYTES, BATCH_TRIMS_MAX, 0);
}

export class Batch {
  readonly capacityBytes: number;
  readonly headerRoomBytes: number;
  /** Memory batches from open(); journal-only batches from attachBuffer() before their put. */
  buffer: Uint8Array | null = null;
  /** The buffer holds the data (false while a journal-only batch is being built). */
  dataInBuffer = false;
  seq = 0;
  dataBytes = 0;
  cacheSeqFirst = 0;
  cacheSeqLast = 0;
  /** See the invariants above; set by beginRecord and endRecord. */
  startsInsideWrite = false;
  endsInsideWrite = false;
  private readonly extentLbas: number[] = [];
  private readonly extentSectors: number[] = [];
  /** Byte offset of each extent's data in the data area. */
  private readonly extentDataOffsets: number[] = [];
  /** Cache device byte offset of each extent's data in the journal, and the record that holds it. */
  private readonly extentJournalOffsets: number[] = [];
  private readonly extentRecordSeqs: number[] = [];
  private readonly trims: Array<{ lba: number; sectors: number; beforeIndex: number }> = [];
  /** Running checksum of the data area: see the invariants above. */
  private dataCrc = 0;
  private dataCrcBytes = 0;

  constructor(readonly dataBytesMax: number) {
    assert(dataBytesMax % SECTOR_BYTES === 0, "batch size in sectors");
    this.capacityBytes = batchCapacityBytes(dataBytesMax);
    this.headerRoomBytes = batchHeaderRoomBytes(this.capacityBytes);
  }

  get isEmpty(): boolean {
    return this.cacheSeqFirst === 0;
  }

  get extentCount(): number {
    return this.extentLbas.length;
  }

  get trimCount(): number {
    return this.trims.length;
  }

  /** Opens the batch as object seq, in memory (with a buffer) or journal-only (null). */
  open(seq: number, buffer: Uint8Array | null): void {
    assert(this.isEmpty && this.seq === 0 && this.buffer === null, "batch opened twice");
    assert(buffer === null || buffer.byteLength === this.headerRoomBytes + this.capacityBytes, "batch buffer size");
    assert(this.headerRoomBytes % PAGE_BYTES === 0, "the data area starts on a page of the buffer");
    this.seq = seq;
    this.buffer = buffer;
    this.dataInBuffer = buffer !== null;
  }

  /**
   * The data area's bytes [startBytes, +bytes) as a view a journal record can be written from in place (when the
   * buffer is the cache device's memory: the caller knows), or null when the data is not in the buffer or the range
   * does not start and end on a page. Whole pages matter beyond alignment: the next record's data starts on a fresh
   * page, so nothing writes into pages the device may still be reading.
   */
  journalView(startBytes: number, bytes: number): Uint8Array | null {
    if (!this.dataInBuffer || this.buffer === null) return null;
    if (bytes === 0 || startBytes % PAGE_BYTES !== 0 || bytes % PAGE_BYTES !== 0) return null;
    assert(startBytes + bytes <= this.dataBytes, "journal view inside the data written");
    const start = this.headerRoomBytes + startBytes;
    return this.buffer.subarray(start, start + bytes);
  }

  /** Whether a record of dataBytes with zeroCount trims still fits. */
  fits(dataBytes: number, zeroCount: number): boolean {
    if (this.trims.length + zeroCount > BATCH_TRIMS_MAX) return false;
    if (this.isEmpty) return dataBytes <= this.capacityBytes;
    return this.dataBytes + dataBytes <= this.dataBytesMax;
  }

  /**
   * Marks the start of a journal record's worth of writes; `continuesWrite`: its first piece belongs to a client
   * write whose earlier pieces are in earlier records.
   */
  beginRecord(cacheSeq: number, continuesWrite: boolean): void {
    assert(this.seq !== 0, "batch is open");
    assert(cacheSeq > this.cacheSeqLast, "records in seq order");
    if (this.cacheSeqFirst === 0) {
      this.cacheSeqFirst = cacheSeq;
      this.startsInsideWrite = continuesWrite;
    }
    this.cacheSeqLast = cacheSeq;
  }

  /** Marks the end of the record begun last: `insideWrite` when a client write it holds a piece of goes on. */
  endRecord(insideWrite: boolean): void {
    assert(!this.isEmpty, "a record was begun");
    this.endsInsideWrite = insideWrite;
  }

  /**
   * Appends data for [lba, lba+sectors) whose journal copy lies at journalOffset (cache device bytes);
   * returns its offset in sectors from the start of the data area.
   */
  addData(lba: number, data: Uint8Array, journalOffset: number): number {
    assert(data.byteLength % SECTOR_BYTES === 0, "data in whole sectors");
    assert(this.dataBytes + data.byteLength <= this.capacityBytes, "batch overflow");
    const offsetSectors = this.dataBytes / SECTOR_BYTES;
    if (this.buffer !== null) this.buffer.set(data, this.headerRoomBytes + this.dataBytes);
    this.extentLbas.push(lba);
    this.extentSectors.push(data.byteLength / SECTOR_BYTES);
    this.extentDataOffsets.push(this.dataBytes);
    this.extentJournalOffsets.push(journalOffset);
    this.extentRecordSeqs.push(this.cacheSeqLast);
    this.dataBytes += data.byteLength;
    return offsetSectors;
  }

  /**
   * Extends the data checksum over what was added since the last call (nothing for a batch whose data is not in
   * memory: its checksum is taken when it is sealed). The write path calls this once per journal record, so the
   * checksum of an 8 MiB object is spread over its records instead of stalling the event loop at seal time.
   *
   * The added bytes are checksummed on their own and combined into the running checksum (crc32cCombine), so a
   * journal record whose data is exactly those bytes takes their checksum from here instead of reading them again.
   * Returns it when the added bytes are exactly the record's, [recordStartBytes, recordStartBytes + recordBytes),
   * else null (nothing added, or not that range).
   */
  checksumNewData(recordStartBytes = -1, recordBytes = 0): number | null {
    if (!this.dataInBuffer || this.buffer === null || this.dataCrcBytes === this.dataBytes) return null;
    const fromBytes = this.dataCrcBytes;
    const added = this.buffer.subarray(this.headerRoomBytes + fromBytes, this.headerRoomBytes + this.dataBytes);
    const addedCrc = crc32c(added);
    this.dataCrc = crc32cCombine(this.dataCrc, addedCrc, added.byteLength);
    this.dataCrcBytes = this.dataBytes;
    return fromBytes === recordStartBytes && added.byteLength === recordBytes ? addedCrc : null;
  }

  addTrim(lba: number, sectors: number): void {
    assert(this.trims.length < BATCH_TRIMS_MAX, "batch trim overflow");
    this.trims.push({ lba, sectors, beforeIndex: this.extentLbas.length });
  }

  /** Each whole 4 KiB volume block (LBA / 8) the batch's extents hold, with its offset in the data area. */
  forEachWholeBlock(visit: (block: number, offsetSectors: number) => void): void {
    for (let index = 0; index < this.extentLbas.length; index++) {
      const lba = this.extentLbas[index]!;
      const end = lba + this.extentSectors[index]!;
      const dataSector = this.extentDataOffsets[index]! / SECTOR_BYTES;
      for (let blockLba = Math.ceil(lba / SECTORS_PER_PAGE) * SECTORS_PER_PAGE; blockLba + SECTORS_PER_PAGE <= end; blockLba += SECTORS_PER_PAGE) {
        visit(blockLba / SECTORS_PER_PAGE, dataSector + blockLba - lba);
      }
    }
  }

  /** Bytes of the data area at [offsetSectors, +sectors), when the data is in the buffer. */
  dataView(offsetSectors: number, sectors: number): Uint8Array {
    assert(this.dataInBuffer && this.buffer !== null, "batch data is in memory");
    const start = this.headerRoomBytes + offsetSectors * SECTOR_BYTES;
    return this.buffer.subarray(start, start + sectors * SECTOR_BYTES);
  }

  /**
   * Where the journal holds [offsetSectors, +sectors) of the data area: runs of (journal offset, bytes, record seq,
   * target byte offset within the range), split where consecutive extents are not adjacent in the journal.
   */
  journalRuns(offsetSectors: number, sectors: number): Array<{ journalOffset: number; bytes: number; recordSeq: number; target: number }> {
    const start = offsetSectors * SECTOR_BYTES;
    const end = start + sectors * SECTOR_BYTES;
    assert(end <= this.dataBytes, "range inside the batch data");
    // Binary search for the extent holding `start`.
    let low = 0;
    let high = this.extentDataOffsets.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if (this.extentDataOffsets[middle]! <= start) low = middle;
      else high = middle - 1;
    }
    const runs: Array<{ journalOffset: number; bytes: number; recordSeq: number; target: number }> = [];
    for (let index = low; index < this.extentDataOffsets.length; index++) {
      const extentStart = this.extentDataOffsets[index]!;
      if (extentStart >= end) break;
      const extentEnd = extentStart + this.extentSectors[index]! * SECTOR_BYTES;
      const from = Math.max(start, extentStart);
      const to = Math.min(end, extentEnd);
      const journalOffset = this.extentJournalOffsets[index]! + (from - extentStart);
      const last = runs[runs.length - 1];
      if (last && last.journalOffset + last.bytes === journalOffset && last.recordSeq === this.extentRecordSeqs[index]) {
        last.bytes += to - from;
      } else {
        runs.push({ journalOffset, bytes: to - from, recordSeq: this.extentRecordSeqs[index]!, target: from - start });
      }
    }
    return runs;
  }

  /** The newest journal record this batch's data depends on. */
  get recordSeqLast(): number {
    return this.cacheSeqLast;
  }

  /** Header sectors the sealed object will have (known before the data, for journal-only batches). */
  get hdrSectors(): number {
    return dataObjectHeaderBytes(this.extentLbas.length, this.trims.length, 0) / SECTOR_BYTES;
  }

  /**
   * Builds a journal-only batch: attaches a buffer and reads the data back from the journal (whose records must be
   * written, and are not released before this batch's put is durable).
   */
  async build(buffer: Uint8Array, readJournal: JournalReader, scratch: Uint8Array): Promise<void> {
    assert(this.buffer === null && !this.dataInBuffer, "building a journal-only batch");
    assert(buffer.byteLength === this.headerRoomBytes + this.capacityBytes, "batch buffer size");
    assert(scratch.byteLength >= JOURNAL_RECORD_DATA_BYTES_MAX + PAGE_BYTES, "scratch holds a record");
    this.buffer = buffer;
    if (this.dataBytes > 0) {
      for (const run of this.journalRuns(0, this.dataBytes / SECTOR_BYTES)) {
        const alignedStart = Math.floor(run.journalOffset / PAGE_BYTES) * PAGE_BYTES;
        const alignedEnd = Math.ceil((run.journalOffset + run.bytes) / PAGE_BYTES) * PAGE_BYTES;
        assert(alignedEnd - alignedStart <= scratch.byteLength, "a run fits the scratch buffer");
        const pages = scratch.subarray(0, alignedEnd - alignedStart);
        await readJournal(alignedStart, pages);
        const from = run.journalOffset - alignedStart;
        buffer.set(pages.subarray(from, from + run.bytes), this.headerRoomBytes + run.target);
      }
    }
    this.dataInBuffer = true;
  }

  seal(identity: { volUuid: string; cacheUuid: string }): SealedBatch {
    assert(!this.isEmpty, "sealing an empty batch");
    assert(this.dataInBuffer && this.buffer !== null, "sealing needs the data in memory");
    const extents = this.extentLbas.map((lba, index) => ({ lba, sectors: this.extentSectors[index]! }));
    const dataArea = this.buffer.subarray(this.headerRoomBytes, this.headerRoomBytes + this.dataBytes);
    this.checksumNewData();
    const header = encodeDataObjectHeader(
      {
        volUuid: identity.volUuid,
        seq: this.seq,
        cacheSeq: this.cacheSeqFirst,
        cacheSeqLast: this.cacheSeqLast,
        cacheUuid: identity.cacheUuid,
        objsCleaned: [],
        extents,
        trims: this.trims,
        writeContinues: this.endsInsideWrite,
      },
      dataArea,
      this.dataCrc,
    );
    assert(header.byteLength <= this.headerRoomBytes, "header fits its room");
    assert(header.byteLength === this.hdrSectors * SECTOR_BYTES, "header size as predicted");
    const start = this.headerRoomBytes - header.byteLength;
    this.buffer.set(header, start);
    return {
      seq: this.seq,
      object: this.buffer.subarray(start, this.headerRoomBytes + this.dataBytes),
      hdrSectors: header.byteLength / SECTOR_BYTES,
      dataSectors: this.dataBytes / SECTOR_BYTES,
      cacheSeqLast: this.cacheSeqLast,
    };
  }

  /** Empties the batch once its put is durable; returns the buffer it held, if any, for reuse. */
  reset(): Uint8Array | null {
    const buffer = this.buffer;
    this.buffer = null;
    this.dataInBuffer = false;
    this.seq = 0;
    this.dataBytes = 0;
    this.cacheSeqFirst = 0;
    this.cacheSeqLast = 0;
    this.startsInsideWrite = false;
    this.endsInsideWrite = false;
    this.extentLbas.length = 0;
    this.extentSectors.length = 0;
    this.extentDataOffsets.length = 0;
    this.extentJournalOffsets.length = 0;
    this.extentRecordSeqs.length = 0;
    this.trims.length = 0;
    this.dataCrc = 0;
    this.dataCrcBytes = 0;
    return buffer;
  }
}
