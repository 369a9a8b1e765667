// Batch (src/volume/batch.ts): the data checksum a batch keeps record by record must be the checksum of the object it
// seals, however the records and the checksum calls interleave, for memory and journal-only batches, across reuse.
import { describe, expect, test } from "bun:test";
import { CorruptionError } from "../../src/errors.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import { decodeDataObjectHeader, encodeDataObjectHeader, verifyDataArea } from "../../src/format/data_object.ts";
import { Batch } from "../../src/volume/batch.ts";
import { CACHE_UUID, VOL_UUID, seededRandom } from "../format/_helpers.ts";

const SECTOR = 512;
const PAGE = 4096;
const identity = { volUuid: VOL_UUID, cacheUuid: CACHE_UUID };

function randomBytes(random: () => number, bytes: number): Uint8Array {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = Math.floor(random() * 256);
  return data;
}

function newMemoryBatch(seq: number): Batch {
  const batch = new Batch(1024 * 1024);
  batch.open(seq, new Uint8Array(batch.headerRoomBytes + batch.capacityBytes));
  return batch;
}

/** Decodes a sealed object, checks its data against its header CRC, and returns the header. */
function verifySealed(object: Uint8Array) {
  const header = decodeDataObjectHeader(object);
  const dataArea = object.subarray(header.hdrSectors * SECTOR);
  verifyDataArea(header, dataArea);
  return { header, dataArea };
}

/**
 * Adds `records` records of 1..3 writes each (sizes from one sector to 64 KiB) and calls checksumNewData after the
 * records `checksumAfter` picks. Returns the data area it should have.
 */
function fill(batch: Batch, random: () => number, records: number, firstSeq: number, checksumAfter: (record: number) => boolean): Uint8Array {
  const pieces: Uint8Array[] = [];
  for (let record = 0; record < records; record++) {
    batch.beginRecord(firstSeq + record, false);
    const writes = 1 + Math.floor(random() * 3);
    for (let w = 0; w < writes; w++) {
      const sectors = random() < 0.5 ? 1 + Math.floor(random() * 7) : 8 * (1 + Math.floor(random() * 16));
      const data = randomBytes(random, sectors * SECTOR);
      batch.addData(Math.floor(random() * 1_000_000) * 8, data, PAGE * (record + 1));
      pieces.push(data);
    }
    if (checksumAfter(record)) batch.checksumNewData();
  }
  return Buffer.concat(pieces);
}

describe("Batch data checksum", () => {
  const patterns: Array<[string, (record: number) => boolean]> = [
    ["after every record (the write path)", () => true],
    ["never before the seal", () => false],
    ["after some records", (record) => record % 3 === 1],
  ];
  for (const [name, checksumAfter] of patterns) {
    test(`checksummed ${name}: the sealed object verifies and its header is the one computed from scratch`, () => {
      const random = seededRandom(`batch checksum ${name}`).next;
      const batch = newMemoryBatch(7);
      const expected = fill(batch, random, 40, 100, checksumAfter);
      const sealed = batch.seal(identity);
      const { header, dataArea } = verifySealed(sealed.object);
      expect(Buffer.from(dataArea).equals(Buffer.from(expected))).toBe(true);
      expect(header.dataCrc32c).toBe(crc32c(expected));
      const fromScratch = encodeDataObjectHeader(
        {
          volUuid: VOL_UUID,
          seq: 7,
          cacheSeq: 100,
          cacheSeqLast: 139,
          cacheUuid: CACHE_UUID,
          objsCleaned: [],
          extents: header.extents,
          trims: [],
          writeContinues: false,
        },
        dataArea,
      );
      expect(Buffer.from(sealed.object.subarray(0, fromScratch.byteLength)).equals(Buffer.from(fromScratch))).toBe(true);
    });
  }

  test("a batch with only trims seals the checksum of an empty data area", () => {
    const batch = newMemoryBatch(3);
    batch.beginRecord(1, false);
    batch.addTrim(0, 8);
    batch.checksumNewData();
    const { header, dataArea } = verifySealed(batch.seal(identity).object);
    expect(dataArea.byteLength).toBe(0);
    expect(header.dataCrc32c).toBe(crc32c(new Uint8Array(0)));
  });

  test("the checksum starts over when a batch is reset and reused", () => {
    const random = seededRandom("batch checksum reuse").next;
    const batch = newMemoryBatch(1);
    fill(batch, random, 10, 1, () => true);
    batch.seal(identity);
    const buffer = batch.reset()!;
    batch.open(2, buffer);
    const expected = fill(batch, random, 10, 11, () => true);
    const { header } = verifySealed(batch.seal(identity).object);
    expect(header.dataCrc32c).toBe(crc32c(expected));
  });

  test("checksumNewData hands back the checksum of just the bytes it took when they are the record's", () => {
    const random = seededRandom("batch checksum per record").next;
    const batch = newMemoryBatch(5);
    const add = (seq: number, sectors: number): Uint8Array => {
      batch.beginRecord(seq, false);
      const data = randomBytes(random, sectors * SECTOR);
      batch.addData(seq * 64, data, PAGE * seq);
      batch.endRecord(false);
      return data;
    };
    expect(batch.checksumNewData(0, 0)).toBeNull(); // nothing added yet
    const first = add(1, 8);
    expect(batch.checksumNewData(0, first.byteLength)).toBe(crc32c(first));
    expect(batch.checksumNewData(first.byteLength, 0)).toBeNull(); // nothing new
    const second = add(2, 24);
    expect(batch.checksumNewData(first.byteLength, second.byteLength)).toBe(crc32c(second));
    const third = add(3, 3);
    const fourth = add(4, 16);
    // Two records since the last call: the bytes taken are not the fourth record's alone.
    expect(batch.checksumNewData(first.byteLength + second.byteLength + third.byteLength, fourth.byteLength)).toBeNull();
    const fifth = add(5, 8);
    // Starting where the record starts but longer than it said: not the record's bytes either.
    expect(batch.checksumNewData(first.byteLength + second.byteLength + third.byteLength + fourth.byteLength, 8)).toBeNull();
    const { header } = verifySealed(batch.seal(identity).object);
    expect(header.dataCrc32c).toBe(crc32c(Buffer.concat([first, second, third, fourth, fifth])));
  });

  test("a journal-only batch is checksummed when built and sealed", async () => {
    const random = seededRandom("batch checksum journal-only").next;
    const journal = randomBytes(random, 64 * PAGE);
    const batch = new Batch(1024 * 1024);
    batch.open(4, null);
    const pieces: Uint8Array[] = [];
    for (let record = 0; record < 8; record++) {
      batch.beginRecord(50 + record, false);
      batch.endRecord(record % 2 === 0); // the last record (7) ends on a write boundary
      const journalOffset = (1 + record * 4) * PAGE + SECTOR * record;
      const data = journal.subarray(journalOffset, journalOffset + 3 * SECTOR);
      batch.addData(record * 64, data, journalOffset);
      pieces.push(data);
      batch.checksumNewData(); // no buffer yet: nothing to checksum
    }
    const readJournal = async (offset: number, into: Uint8Array) => {
      into.set(journal.subarray(offset, offset + into.byteLength));
    };
    await batch.build(new Uint8Array(batch.headerRoomBytes + batch.capacityBytes), readJournal, new Uint8Array(4 * 1024 * 1024 + PAGE));
    const { header } = verifySealed(batch.seal(identity).object);
    expect(header.dataCrc32c).toBe(crc32c(Buffer.concat(pieces)));
    expect(header.writeContinues).toBe(false);
  });

  test("the checksum covers what was added: a checksummed byte changed before the seal fails verification", () => {
    const random = seededRandom("batch checksum changed byte").next;
    const batch = newMemoryBatch(9);
    fill(batch, random, 5, 1, () => true);
    batch.dataView(0, 1)[0]! ^= 0xff; // the data area must only grow; this breaks that on purpose
    const sealed = batch.seal(identity);
    expect(() => verifySealed(sealed.object)).toThrow(CorruptionError);
  });
});

describe("Batch write boundary", () => {
  // The sealed object's WRITE_CONTINUES flag is what the batch's newest record said: recovery ends the log only
  // after an object without it (src/volume/recovery/rules.ts, @L6), so a wrong "no" tears a client write after cache loss.
  test("the flag is the newest record's, also for a journal-only batch sealed later; reset clears it", async () => {
    for (const endsInside of [true, false, true]) {
      const batch = newMemoryBatch(5);
      batch.beginRecord(10, true);
      batch.addData(0, new Uint8Array(SECTOR), PAGE);
      batch.endRecord(!endsInside);
      batch.beginRecord(11, !endsInside);
      batch.addData(8, new Uint8Array(SECTOR), 3 * PAGE);
      batch.endRecord(endsInside);
      expect(batch.startsInsideWrite).toBe(true);
      expect(verifySealed(batch.seal(identity).object).header.writeContinues).toBe(endsInside);
      batch.reset();
      expect([batch.startsInsideWrite, batch.endsInsideWrite]).toEqual([false, false]);
    }
    const journal = new Uint8Array(8 * PAGE);
    const batch = new Batch(1024 * 1024);
    batch.open(6, null);
    batch.beginRecord(20, false);
    batch.addData(0, journal.subarray(PAGE, PAGE + SECTOR), PAGE);
    batch.endRecord(true);
    expect(batch.startsInsideWrite).toBe(false);
    const readJournal = async (offset: number, into: Uint8Array) => into.set(journal.subarray(offset, offset + into.byteLength));
    await batch.build(new Uint8Array(batch.headerRoomBytes + batch.capacityBytes), readJournal, new Uint8Array(4 * 1024 * 1024 + PAGE));
    expect(verifySealed(batch.seal(identity).object).header.writeContinues).toBe(true);
  });
});
