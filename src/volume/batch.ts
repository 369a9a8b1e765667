// The open batch: journaled writes gathered in memory into the next backend DATA object (format: docs/format.md,
// "DATA objects"). One buffer holds header room and data, so sealing writes the header in place and the put sends
// one subarray: no copy of the data at seal time.
//
// Batch invariants:
// - A batch holds whole journal records, in seq order: cacheSeqFirst..cacheSeqLast are exactly the records whose
//   writes it holds. Recovery relies on this to know which journal records the backend already has.
// - dataBytes == sum of extent lengths; extents and trims keep arrival order (a trim applies before
//   extents[beforeIndex]).
// - extentCount <= extentsMax and trimCount <= trimsMax, so the header always fits the room reserved before the data.

import { BATCH_TRIMS_MAX, SECTOR_BYTES } from "../constants.ts";
import { assert } from "../errors.ts";
import { dataObjectHeaderBytes, encodeDataObjectHeader } from "../format/data_object.ts";

export interface SealedBatch {
  seq: number;
  /** Header + data, ready to put. A view into the batch buffer. */
  object: Uint8Array;
  hdrSectors: number;
  dataSectors: number;
  cacheSeqLast: number;
}

export class Batch {
  readonly extentsMax: number;
  readonly headerRoomBytes: number;
  readonly buffer: Uint8Array;
  seq = 0;
  dataBytes = 0;
  cacheSeqFirst = 0;
  cacheSeqLast = 0;
  private extentLbas: number[] = [];
  private extentSectors: number[] = [];
  private trims: Array<{ lba: number; sectors: number; beforeIndex: number }> = [];

  constructor(readonly dataBytesMax: number) {
    assert(dataBytesMax % SECTOR_BYTES === 0, "batch size in sectors");
    this.extentsMax = dataBytesMax / SECTOR_BYTES;
    this.headerRoomBytes = dataObjectHeaderBytes(this.extentsMax, BATCH_TRIMS_MAX, 0);
    this.buffer = new Uint8Array(this.headerRoomBytes + dataBytesMax);
  }

  get isEmpty(): boolean {
    return this.cacheSeqFirst === 0;
  }

  get extentCount(): number {
    return this.extentLbas.length;
  }

  /** Opens the batch as object seq. */
  open(seq: number): void {
    assert(this.isEmpty && this.seq === 0, "batch opened twice");
    this.seq = seq;
  }

  /** Whether a record of dataBytes with zeroCount trims still fits. */
  fits(dataBytes: number, zeroCount: number): boolean {
    return this.dataBytes + dataBytes <= this.dataBytesMax && this.trims.length + zeroCount <= BATCH_TRIMS_MAX;
  }

  /** Marks the start of a journal record's worth of writes. */
  beginRecord(cacheSeq: number): void {
    assert(this.seq !== 0, "batch is open");
    assert(cacheSeq > this.cacheSeqLast, "records in seq order");
    if (this.cacheSeqFirst === 0) this.cacheSeqFirst = cacheSeq;
    this.cacheSeqLast = cacheSeq;
  }

  /** Appends data for [lba, lba+sectors); returns its offset in sectors from the start of the data area. */
  addData(lba: number, data: Uint8Array): number {
    assert(data.byteLength % SECTOR_BYTES === 0, "data in whole sectors");
    assert(this.dataBytes + data.byteLength <= this.dataBytesMax, "batch overflow");
    const offsetSectors = this.dataBytes / SECTOR_BYTES;
    this.buffer.set(data, this.headerRoomBytes + this.dataBytes);
    this.dataBytes += data.byteLength;
    this.extentLbas.push(lba);
    this.extentSectors.push(data.byteLength / SECTOR_BYTES);
    return offsetSectors;
  }

  addTrim(lba: number, sectors: number): void {
    assert(this.trims.length < BATCH_TRIMS_MAX, "batch trim overflow");
    this.trims.push({ lba, sectors, beforeIndex: this.extentLbas.length });
  }

  /** Bytes of the data area at [offsetSectors, +sectors). */
  dataView(offsetSectors: number, sectors: number): Uint8Array {
    const start = this.headerRoomBytes + offsetSectors * SECTOR_BYTES;
    return this.buffer.subarray(start, start + sectors * SECTOR_BYTES);
  }

  seal(identity: { volUuid: string; cacheUuid: string }): SealedBatch {
    assert(!this.isEmpty, "sealing an empty batch");
    const extents = this.extentLbas.map((lba, index) => ({ lba, sectors: this.extentSectors[index]! }));
    const dataArea = this.buffer.subarray(this.headerRoomBytes, this.headerRoomBytes + this.dataBytes);
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
      },
      dataArea,
    );
    assert(header.byteLength <= this.headerRoomBytes, "header fits its room");
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

  /** Empties the batch for reuse once its put is durable. */
  reset(): void {
    this.seq = 0;
    this.dataBytes = 0;
    this.cacheSeqFirst = 0;
    this.cacheSeqLast = 0;
    this.extentLbas = [];
    this.extentSectors = [];
    this.trims = [];
  }
}
