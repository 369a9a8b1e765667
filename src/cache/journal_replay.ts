// Walks the journal from the tail the cache superblock names, yielding each valid record in seq order, and stops
// at the first record that is not the next one (docs/architecture.md, "Recovery", journal decision table).
//
// Why a stop is not an error: the writer may have crashed in the middle of a record (torn header or data), or the
// region beyond the head holds records of an earlier lap. Both look like "the next record is not here", and
// everything before it is exactly what was written. Every stop reason is reported, so fsck can tell them apart.

import { PAGE_BYTES } from "../constants.ts";
import { CorruptionError } from "../errors.ts";
import type { CacheSuperblock } from "../format/cache_superblock.ts";
import {
  decodeJournalHeader,
  JOURNAL_HEADER_BYTES,
  JournalRecordType,
  verifyJournalData,
  type JournalRecordHeader,
} from "../format/journal_record.ts";
import type { AlignedPool, CacheDevice } from "./cache_device.ts";
import { Journal, type JournalPosition } from "./journal.ts";

export interface ReplayRecord {
  position: number;
  bytes: number;
  header: JournalRecordHeader;
  /** dataPages*4096 bytes; valid only until the walker's next step. Empty for pads. */
  data: Uint8Array;
}

export type WalkStop =
  | "no valid header"
  | "sequence mismatch"
  | "another cache or volume"
  | "stale generation"
  | "torn data"
  | "record overruns region"
  | "walked whole region";

export class JournalWalker {
  private position: number;
  private expectedSeq: number;
  private generationMin = 0;
  private walkedBytes = 0;
  private buffer: Uint8Array | null = null;
  stopReason: WalkStop | null = null;
  stopDetail = "";
  readonly records: Array<{ position: number; bytes: number; seq: number }> = [];

  constructor(
    private readonly device: CacheDevice,
    private readonly pool: AlignedPool,
    private readonly superblock: CacheSuperblock,
  ) {
    this.position = Journal.positionOf(superblock, superblock.replayOffsetBytes);
    this.expectedSeq = superblock.replaySeq;
  }

  get tail(): JournalPosition {
    return { position: Journal.positionOf(this.superblock, this.superblock.replayOffsetBytes), seq: this.superblock.replaySeq };
  }

  /** Where the next record would go: valid after next() returned null. */
  get head(): JournalPosition {
    return { position: this.position, seq: this.expectedSeq };
  }

  private physical(position: number): number {
    return this.superblock.journalStartBytes + (position % this.superblock.journalBytes);
  }

  private stop(reason: WalkStop, detail: string): null {
    this.stopReason = reason;
    this.stopDetail = detail;
    this.close();
    return null;
  }

  async next(): Promise<ReplayRecord | null> {
    if (this.stopReason) return null;
    const regionBytes = this.superblock.journalBytes;
    if (this.walkedBytes + JOURNAL_HEADER_BYTES > regionBytes) return this.stop("walked whole region", "");
    const header = await this.readHeader();
    if (!header) return null;
    const recordBytes = JOURNAL_HEADER_BYTES + header.dataPages * PAGE_BYTES;
    if ((this.position % regionBytes) + recordBytes > regionBytes || this.walkedBytes + recordBytes > regionBytes) {
      return this.stop("record overruns region", `record ${header.seq} of ${recordBytes} bytes`);
    }
    let data: Uint8Array = new Uint8Array(0);
    if (header.type === JournalRecordType.Data && header.dataPages > 0) {
      data = this.dataBuffer(header.dataPages * PAGE_BYTES);
      await this.device.read(this.physical(this.position) + JOURNAL_HEADER_BYTES, data);
      try {
        verifyJournalData(header, data);
      } catch (error) {
        if (!(error instanceof CorruptionError)) throw error;
        return this.stop("torn data", `record ${header.seq}: ${error.message}`);
      }
    }
    const record: ReplayRecord = { position: this.position, bytes: recordBytes, header, data };
    this.records.push({ position: this.position, bytes: recordBytes, seq: header.seq });
    this.position += recordBytes;
    this.walkedBytes += recordBytes;
    this.expectedSeq += 1;
    this.generationMin = header.generation;
    return record;
  }

  private async readHeader(): Promise<JournalRecordHeader | null> {
    const page = this.dataBuffer(JOURNAL_HEADER_BYTES);
    await this.device.read(this.physical(this.position), page.subarray(0, JOURNAL_HEADER_BYTES));
    let header: JournalRecordHeader;
    try {
      header = decodeJournalHeader(page.subarray(0, JOURNAL_HEADER_BYTES));
    } catch (error) {
      if (!(error instanceof CorruptionError)) throw error;
      return this.stop("no valid header", `at journal position ${this.position}: ${error.message}`);
    }
    if (header.volUuid !== this.superblock.volUuid || header.cacheUuid !== this.superblock.cacheUuid) {
      return this.stop("another cache or volume", `record ${header.seq} belongs to cache ${header.cacheUuid}`);
    }
    if (header.seq !== this.expectedSeq) {
      return this.stop("sequence mismatch", `expected record ${this.expectedSeq}, found ${header.seq}`);
    }
    if (header.generation < this.generationMin) {
      return this.stop("stale generation", `record ${header.seq} generation ${header.generation} < ${this.generationMin}`);
    }
    return header;
  }

  /** One pooled buffer, grown to the largest record seen. */
  private dataBuffer(bytes: number): Uint8Array {
    if (!this.buffer || this.buffer.byteLength < bytes) {
      if (this.buffer) this.pool.release(this.buffer);
      this.buffer = this.pool.acquire(Math.max(bytes, JOURNAL_HEADER_BYTES));
    }
    return this.buffer.subarray(0, bytes);
  }

  close(): void {
    if (this.buffer) this.pool.release(this.buffer);
    this.buffer = null;
  }
}
