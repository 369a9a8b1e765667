// The journal on its own: records wrap with a pad, completions are reported in seq order, released space is reused
// only after the tail is persisted, and the recovery walk stops exactly where the decision table says (torn data,
// a stale record of an older generation, an older lap); the ring's invariants hold after every step of a random
// workload (Journal.checkInvariants).

import { describe, expect, test } from "bun:test";
import { v4 as uuidv4 } from "uuid";
import { Journal } from "../../src/cache/journal.ts";
import { JournalWalker } from "../../src/cache/journal_replay.ts";
import { decodeCacheSuperblock, encodeCacheSuperblock, type CacheSuperblock } from "../../src/format/cache_superblock.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import { decodeJournalHeader, JournalRecordType } from "../../src/format/journal_record.ts";
import { MemoryCacheDevice, MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";

const PAGE = 4096;
const JOURNAL_BYTES = 64 * PAGE;

function freshJournal(seed: number): { device: MemoryCacheDevice; pool: MemoryPool; superblock: CacheSuperblock; journal: Journal } {
  const device = new MemoryCacheDevice(1024 * 1024, new Prng(seed));
  const superblock: CacheSuperblock = {
    cacheUuid: uuidv4(),
    volUuid: uuidv4(),
    sizeBytes: device.sizeBytes,
    journalStartBytes: PAGE,
    journalBytes: JOURNAL_BYTES,
    readCacheStartBytes: PAGE + JOURNAL_BYTES,
    readCacheBytes: device.sizeBytes - PAGE - JOURNAL_BYTES,
    startSeq: 500,
    replayOffsetBytes: PAGE,
    replaySeq: 500,
    generation: 1,
  };
  device.data.set(encodeCacheSuperblock(superblock), 0);
  const pool = new MemoryPool();
  const start = { position: 0, seq: 500 };
  const journal = new Journal(device, pool, superblock, { tail: start, head: start, records: [] });
  return { device, pool, superblock, journal };
}

function page(fill: number, pages = 1): Uint8Array {
  return new Uint8Array(pages * PAGE).fill(fill);
}

async function walk(device: MemoryCacheDevice, pool: MemoryPool): Promise<{ seqs: number[]; walker: JournalWalker }> {
  const superblock = decodeCacheSuperblock(device.data.subarray(0, PAGE));
  const walker = new JournalWalker(device, pool, superblock);
  const seqs: number[] = [];
  for (let step = 0; step < 1000; step++) {
    const record = await walker.next();
    if (!record) break;
    seqs.push(record.header.seq);
  }
  return { seqs, walker };
}

describe("journal", () => {
  test("records are acknowledged in seq order, and a full journal waits for release and a persisted tail", async () => {
    const { device, pool, journal } = freshJournal(1);
    const order: number[] = [];
    const writes: Promise<void>[] = [];
    for (let index = 0; index < 8; index++) {
      await journal.waitForWrite(PAGE);
      const { seq, written } = journal.write([{ lba: index * 8, sectors: 8, zero: false }], [page(index)], PAGE);
      writes.push(written.then(() => void order.push(seq)));
    }
    await Promise.all(writes);
    // The device completes writes in random order; the journal reports them in seq order.
    expect(order).toEqual([500, 501, 502, 503, 504, 505, 506, 507]);
    // 8 records of 2 pages: 16 of 64 pages. Fill the rest, then the next write must wait.
    for (let index = 0; index < 24; index++) {
      await journal.waitForWrite(PAGE);
      await journal.write([{ lba: 0, sectors: 8, zero: false }], [page(9)], PAGE).written;
    }
    expect(journal.canWrite(PAGE)).toBe(false);
    let admitted = false;
    const waiting = journal.waitForWrite(PAGE).then(() => void (admitted = true));
    await Bun.sleep(5);
    expect(admitted).toBe(false);
    // Releasing records frees space only once the superblock names the new tail (durably: fdatasync'ed).
    const syncsBefore = device.syncs;
    journal.release(510);
    await waiting;
    expect(admitted).toBe(true);
    expect(device.syncs).toBeGreaterThan(syncsBefore);
    expect(decodeCacheSuperblock(device.data.subarray(0, PAGE)).replaySeq).toBe(511);
    expect(pool.outstanding).toBe(0);
  });

  test("writeThen tells its listener once, in seq order, with the journal's state already updated; a failed write tells every waiter", async () => {
    const { device, journal } = freshJournal(2);
    const told: string[] = [];
    const listenerFor = (seq: number) => ({
      recordWritten: () => void told.push(`${seq} written ${journal.isWritten(seq)}`),
      recordFailed: (error: unknown) => void told.push(`${seq} failed ${(error as Error).message.includes("injected")}`),
    });
    for (let index = 0; index < 4; index++) {
      const { seq } = journal.peekRecord(PAGE);
      expect(journal.writeThen([{ lba: index * 8, sectors: 8, zero: false }], [page(index)], PAGE, null, null, listenerFor(seq))).toBe(seq);
    }
    await journal.drain();
    // The device completes in random order; each record is told once, in seq order, and is written when told.
    expect(told).toEqual(["500 written true", "501 written true", "502 written true", "503 written true"]);
    told.length = 0;
    device.failWritesAfter = 0;
    for (let index = 0; index < 2; index++) {
      const { seq } = journal.peekRecord(PAGE);
      journal.writeThen([{ lba: index * 8, sectors: 8, zero: false }], [page(index)], PAGE, null, null, listenerFor(seq));
    }
    await expect(journal.drain()).rejects.toThrow("injected");
    expect(told).toEqual(["504 failed true", "505 failed true"]);
  });

  test("a record that does not fit before the end of the region follows a pad; the walk follows both", async () => {
    const { device, pool, journal } = freshJournal(2);
    // 3-page records (header + 2 data pages) into a 64-page region: the 22nd does not fit at page 63.
    for (let index = 0; index < 21; index++) {
      await journal.write([{ lba: index * 16, sectors: 16, zero: false }], [page(index, 2)], 2 * PAGE).written;
      journal.release(500 + index);
    }
    await journal.persistTail();
    await journal.waitForWrite(2 * PAGE);
    const { seq, written } = journal.write([{ lba: 4096, sectors: 16, zero: false }], [page(77, 2)], 2 * PAGE);
    await written;
    expect(seq).toBe(522); // 521 is the pad
    const { seqs, walker } = await walk(device, pool);
    expect(seqs).toEqual([521, 522]);
    // Behind 522, at the start of the region, lies record 502 of the previous lap: not the next seq.
    expect(walker.stopReason).toBe("sequence mismatch");
  });

  test("a record written in place from the caller's pages: peeked seq and offset, same bytes on the device as a copied one", async () => {
    const { device, pool, journal } = freshJournal(5);
    // Copied and in-place records of the same data, one after the other, with a pad between (the region wraps).
    const data = new Uint8Array(2 * PAGE).map((_, index) => (index * 7) & 0xff);
    const extents = [{ lba: 64, sectors: 16, zero: false }];
    const copied = journal.write(extents, [data.subarray(0, PAGE), data.subarray(PAGE)], 2 * PAGE);
    await copied.written;
    for (let index = 0; index < 20; index++) {
      await journal.write(extents, [data], 2 * PAGE).written;
      journal.release(copied.seq + 1 + index);
    }
    journal.release(copied.seq);
    await journal.persistTail();
    await journal.waitForWrite(2 * PAGE);
    const peeked = journal.peekRecord(2 * PAGE);
    const inPlace = journal.write(extents, [data], 2 * PAGE, data);
    expect({ seq: inPlace.seq, dataOffset: inPlace.dataOffset }).toEqual(peeked);
    expect(inPlace.seq).toBe(copied.seq + 22); // the pad before it took copied.seq + 21
    expect(journal.isWritten(inPlace.seq)).toBe(false);
    await inPlace.written;
    expect(journal.isWritten(inPlace.seq)).toBe(true);
    expect(journal.isWritten(inPlace.seq + 1)).toBe(false); // not written yet: it does not exist
    // The device holds the same header fields and data for both; only seq and CRC differ, and the walk accepts it.
    expect(Buffer.from(device.data.subarray(inPlace.dataOffset, inPlace.dataOffset + 2 * PAGE)).equals(Buffer.from(data))).toBe(true);
    const { seqs } = await walk(device, pool);
    expect(seqs).toEqual([inPlace.seq - 1, inPlace.seq]);
    expect(pool.outstanding).toBe(0); // the header page went back to the pool; the caller's pages were never the pool's
  });

  test("an in-place record takes its data's checksum from the caller; a wrong one is refused before anything is written", async () => {
    const { device, pool, journal } = freshJournal(6);
    const data = new Uint8Array(3 * PAGE).map((_, index) => (index * 13) & 0xff);
    const extents = [{ lba: 8, sectors: 24, zero: false }];
    const told: string[] = [];
    const listener = { recordWritten: () => void told.push("written"), recordFailed: () => void told.push("failed") };
    const head = journal.peekRecord(3 * PAGE);
    expect(() => journal.writeThen(extents, [], 3 * PAGE, data, crc32c(data) ^ 1, listener)).toThrow(/crc32c given/);
    expect(journal.peekRecord(3 * PAGE)).toEqual(head); // nothing was written or taken
    expect(() => journal.writeThen(extents, [data], 3 * PAGE, null, crc32c(data), listener)).toThrow(/only with in-place data/);
    expect(journal.peekRecord(3 * PAGE)).toEqual(head);
    const seq = journal.writeThen(extents, [], 3 * PAGE, data, crc32c(data), listener);
    expect(seq).toBe(head.seq);
    await journal.whenWritten(seq);
    expect(told).toEqual(["written"]);
    const headerPage = device.data.subarray(head.dataOffset - PAGE, head.dataOffset);
    expect(decodeJournalHeader(headerPage).dataCrc32c).toBe(crc32c(data));
    const { seqs } = await walk(device, pool);
    expect(seqs).toEqual([seq]);
  });

  test("the walk stops at torn data, and at a stale record of an older generation after a reused seq", async () => {
    const { device, pool, superblock, journal } = freshJournal(3);
    for (let index = 0; index < 4; index++) await journal.write([{ lba: index * 8, sectors: 8, zero: false }], [page(index + 1)], PAGE).written;
    expect((await walk(device, pool)).seqs).toEqual([500, 501, 502, 503]);

    // Tear record 502's data: the walk ends before it, even though 503 is intact.
    const torn = device.data.slice();
    device.data[PAGE + 4 * PAGE + PAGE + 100] ^= 0xff;
    const tornWalk = await walk(device, pool);
    expect(tornWalk.seqs).toEqual([500, 501]);
    expect(tornWalk.walker.stopReason).toBe("torn data");
    device.data.set(torn);

    // A new run (higher generation) rewrites seq 502 at the same place with a record of the same size: the old 503
    // behind it has the old generation and must not be taken for the new run's next record.
    const restarted = new Journal(device, pool, superblock, {
      tail: { position: 0, seq: 500 },
      head: { position: 4 * PAGE, seq: 502 },
      records: [
        { position: 0, bytes: 2 * PAGE, seq: 500 },
        { position: 2 * PAGE, bytes: 2 * PAGE, seq: 501 },
      ],
    });
    await restarted.writeSuperblock({});
    expect(restarted.generation).toBe(2);
    await restarted.write([{ lba: 999 * 8, sectors: 8, zero: false }], [page(0x5a)], PAGE).written;
    const staleWalk = await walk(device, pool);
    expect(staleWalk.seqs).toEqual([500, 501, 502]);
    expect(staleWalk.walker.stopReason).toBe("stale generation");
  });

  test("records of another cache are not replayed", async () => {
    const { device, pool } = freshJournal(4);
    const other = freshJournal(5);
    await other.journal.write([{ lba: 0, sectors: 8, zero: false }], [page(1)], PAGE).written;
    // Copy the other cache's first record into this cache's journal.
    device.data.set(other.device.data.subarray(PAGE, 3 * PAGE), PAGE);
    const { seqs, walker } = await walk(device, pool);
    expect(seqs).toEqual([]);
    expect(walker.stopReason).toBe("another cache or volume");
    expect(JournalRecordType.Data).toBe(1);
  });

  test("the ring's invariants hold after every step and every completion of a random workload (wraps, releases, persists)", async () => {
    for (const seed of [11, 12, 13]) {
      const { pool, journal } = freshJournal(seed);
      const prng = new Prng(seed);
      const pending: Promise<void>[] = [];
      let writtenUpTo = 499;
      let released = 499;
      let records = 0;
      for (let step = 0; step < 5000 && records < 200; step++) {
        const dataBytes = PAGE * (1 + prng.int(6));
        if (journal.canWrite(dataBytes) && prng.chance(0.7)) {
          const data = page(step & 0xff, dataBytes / PAGE);
          const { seq, written } = journal.write([{ lba: 8 * step, sectors: dataBytes / 512, zero: false }], [data], dataBytes);
          records += 1;
          pending.push(written.then(() => {
            writtenUpTo = Math.max(writtenUpTo, seq);
            journal.checkInvariants();
          }));
        } else if (journal.sequenceNext - 1 > released && prng.chance(0.6)) {
          // Mostly records already written; sometimes ones still in flight (their object was durable first).
          const upTo = prng.chance(0.7) && writtenUpTo > released ? writtenUpTo : journal.sequenceNext - 1;
          released += 1 + prng.int(upTo - released);
          journal.release(released);
        } else if (prng.chance(0.5)) {
          await journal.persistTail();
        } else {
          await Promise.race([Promise.all(pending), Bun.sleep(0)]);
        }
        journal.checkInvariants();
      }
      await Promise.all(pending);
      journal.checkInvariants();
      // The workload went round the 64-page region several times.
      expect(records).toBe(200);
      expect(journal.sequenceNext - 500).toBeGreaterThanOrEqual(records);
      expect(pool.outstanding).toBe(0);
    }
  });
});
