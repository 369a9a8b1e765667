import { describe, expect, test } from "bun:test";
import { decodeSuperblock, decodeSuperblockChecked, encodeSuperblock, type SuperblockObject } from "../../src/format/superblock_object.ts";
import {
  BASE_UUID,
  ByteBuilder,
  CACHE_UUID as CLONE_UUID,
  VOL_UUID,
  crc32cBitwise,
  crcWithZeroed,
  expectCorruption,
  expectEachEditRejected,
  expectEveryFlipDetected,
  expectEveryTruncationRejected,
  getU32,
  resealObject,
  seededRandom,
  setU32,
  zlibCrc,
} from "./_helpers.ts";

const EXT_CRC_OFFSET = 76 + 12; // extension block at 76, header_crc32c 12 bytes in

const value: SuperblockObject = {
  volUuid: VOL_UUID,
  volSectors: 2097152,
  checkpoints: [5, 9],
  clone: { baseUuid: BASE_UUID, lastSeq: 7, baseName: "base" },
  snapshots: [{ seq: 3, name: "snap" }],
  nextSeq: 12,
  ownerEpoch: 4,
  skipped: [{ first: 10, last: 11 }],
  snapshotTimes: [{ seq: 3, createdMs: 1_765_000_000_123 }],
  cloneRefs: [{ snapSeq: 3, cloneUuid: CLONE_UUID, name: "c1" }],
  rollbackSeq: 8,
};
/** What a superblock of the ownership versions (44-byte block) holds: no snapshot times, no clone registrations. */
const ownershipValue: SuperblockObject = { ...value, snapshotTimes: [], cloneRefs: [], rollbackSeq: 0 };

/** A superblock as the v1 reference writes it: sub-header, then the arrays, no extension. */
function plainV1Superblock(setCrc: boolean): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(1).u32(0).u32(8).u32(0).u32(0) // common header, crc later
    .u64(2097152) // vol_size
    .u32(76).u32(8) // ckpts
    .u32(84).u32(26) // clones: 21 + "base" + NUL
    .u32(110).u32(9); // snaps: 5 + "snap"
  expect(b.length).toBe(76);
  b.u32(5).u32(9);
  b.uuid(BASE_UUID).u32(7).u8(4).ascii("base").u8(0);
  b.u32(3).u8(4).ascii("snap");
  expect(b.length).toBe(119);
  const bytes = b.padTo(4096).build();
  if (setCrc) setU32(bytes, 40, crcWithZeroed(bytes, [40], zlibCrc));
  return bytes;
}

/** The same superblock in our layout, byte by byte: extension block at 76 (68 bytes), arrays from 144. */
function ourSuperblock(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(1).u32(0).u32(8).u32(0).u32(0)
    .u64(2097152)
    .u32(144).u32(8)
    .u32(152).u32(26)
    .u32(178).u32(9)
    .ascii("LSVX").u32(1).u32(68).u32(0).u32(crc32cBitwise(new Uint8Array(0))).u64(12)
    .u64(4).u32(187).u32(8) // owner_epoch, skips
    .u32(195).u32(12) // snapx
    .u32(207).u32(23) // clone_refs: 21 + "c1"
    .u64(8); // rollback_seq
  expect(b.length).toBe(144);
  b.u32(5).u32(9);
  b.uuid(BASE_UUID).u32(7).u8(4).ascii("base").u8(0);
  b.u32(3).u8(4).ascii("snap");
  b.u32(10).u32(11);
  b.u32(3).u64(1_765_000_000_123);
  b.u32(3).uuid(CLONE_UUID).u8(2).ascii("c1");
  expect(b.length).toBe(230);
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As the first snapshot version wrote it: a 60-byte block (no rollback_seq), arrays from 136. */
function firstSnapshotSuperblock(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(1).u32(0).u32(8).u32(0).u32(0)
    .u64(2097152)
    .u32(136).u32(8)
    .u32(144).u32(26)
    .u32(170).u32(9)
    .ascii("LSVX").u32(1).u32(60).u32(0).u32(crc32cBitwise(new Uint8Array(0))).u64(12)
    .u64(4).u32(179).u32(8)
    .u32(187).u32(12)
    .u32(199).u32(23);
  expect(b.length).toBe(136);
  b.u32(5).u32(9);
  b.uuid(BASE_UUID).u32(7).u8(4).ascii("base").u8(0);
  b.u32(3).u8(4).ascii("snap");
  b.u32(10).u32(11);
  b.u32(3).u64(1_765_000_000_123);
  b.u32(3).uuid(CLONE_UUID).u8(2).ascii("c1");
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As the ownership versions wrote it: a 44-byte extension block (no snapshot facts), arrays from 120. */
function ownershipSuperblock(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(1).u32(0).u32(8).u32(0).u32(0)
    .u64(2097152)
    .u32(120).u32(8)
    .u32(128).u32(26)
    .u32(154).u32(9)
    .ascii("LSVX").u32(1).u32(44).u32(0).u32(crc32cBitwise(new Uint8Array(0))).u64(12)
    .u64(4).u32(163).u32(8); // owner_epoch, skips
  expect(b.length).toBe(120);
  b.u32(5).u32(9);
  b.uuid(BASE_UUID).u32(7).u8(4).ascii("base").u8(0);
  b.u32(3).u8(4).ascii("snap");
  b.u32(10).u32(11);
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As earlier lsvd versions wrote it: a 28-byte extension block (next_seq only), arrays from 104. */
function earlierSuperblock(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(1).u32(0).u32(8).u32(0).u32(0)
    .u64(2097152)
    .u32(104).u32(8)
    .u32(112).u32(26)
    .u32(138).u32(9)
    .ascii("LSVX").u32(1).u32(28).u32(0).u32(crc32cBitwise(new Uint8Array(0))).u64(12);
  expect(b.length).toBe(104);
  b.u32(5).u32(9);
  b.uuid(BASE_UUID).u32(7).u8(4).ascii("base").u8(0);
  b.u32(3).u8(4).ascii("snap");
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

describe("superblock object", () => {
  test("encoder output equals the hand-made bytes, and decodes back", () => {
    const expected = ourSuperblock();
    expect(encodeSuperblock(value)).toEqual(expected);
    expect(decodeSuperblock(expected)).toEqual(value);
  });

  test("decodes a plain v1 superblock (no extension): nextSeq defaults to 0, no owner, nothing skipped", () => {
    const plain = { ...ownershipValue, nextSeq: 0, ownerEpoch: 0, skipped: [] };
    expect(decodeSuperblock(plainV1Superblock(true))).toEqual(plain);
    // v1 says crc 0 means "not set".
    expect(decodeSuperblock(plainV1Superblock(false))).toEqual(plain);
  });

  test("decodes the first snapshot version's 60-byte extension: rollback_seq 0; rewritten by lsvd-rbd too", () => {
    expect(decodeSuperblock(firstSnapshotSuperblock())).toEqual({ ...value, rollbackSeq: 0 });
    expectEveryFlipDetected(firstSnapshotSuperblock(), decodeSuperblock);
    expect(decodeSuperblock(referenceRewrite(firstSnapshotSuperblock(), [20, 21]))).toEqual({ ...value, rollbackSeq: 0, checkpoints: [20, 21], nextSeq: 0 });
  });

  test("decodes an ownership version's 44-byte extension: no snapshot times, no clone registrations", () => {
    expect(decodeSuperblock(ownershipSuperblock())).toEqual(ownershipValue);
    expectEveryFlipDetected(ownershipSuperblock(), decodeSuperblock);
  });

  test("decodes an earlier version's 28-byte extension: no owner epoch, nothing skipped", () => {
    expect(decodeSuperblock(earlierSuperblock())).toEqual({ ...ownershipValue, ownerEpoch: 0, skipped: [] });
    expectEveryFlipDetected(earlierSuperblock(), decodeSuperblock);
  });

  test("randomized round trips", () => {
    const random = seededRandom("superblock round trips");
    for (let round = 0; round < 200; round++) {
      const name = () => "n".repeat(random.int(256)) + (random.int(2) ? "é" : "");
      const s: SuperblockObject = {
        volUuid: VOL_UUID,
        volSectors: 1 + random.int(2 ** 36),
        checkpoints: Array.from({ length: random.int(5) }, () => 1 + random.int(2 ** 32 - 1)),
        clone: random.int(2) ? { baseUuid: BASE_UUID, lastSeq: random.int(2 ** 32), baseName: name().slice(0, 250) } : null,
        snapshots: Array.from({ length: random.int(40) }, () => ({ seq: random.int(2 ** 32), name: name().slice(0, 250) })),
        nextSeq: 0,
        ownerEpoch: random.int(2 ** 53),
        skipped: [],
        snapshotTimes: [],
        cloneRefs: [],
        rollbackSeq: 0,
      };
      // Skipped ranges ascending below next_seq, and no listed checkpoint inside one.
      s.nextSeq = random.int(2) ? 0 : 2 + random.int(2 ** 32 - 2);
      for (let first = 1 + random.int(1000); first < (s.nextSeq || 2 ** 32) - 1 && s.skipped.length < 64 && random.int(4); ) {
        const last = first + random.int(Math.min(5000, (s.nextSeq || 2 ** 32) - 1 - first));
        s.skipped.push({ first, last });
        first = last + 2 + random.int(100_000);
      }
      s.checkpoints = s.checkpoints.filter((seq) => !s.skipped.some((r) => r.first <= seq && seq <= r.last));
      s.rollbackSeq = s.nextSeq === 0 ? random.int(2 ** 32) : random.int(s.nextSeq);
      s.snapshots = s.snapshots.filter((snap) => !s.skipped.some((r) => r.first <= snap.seq && snap.seq <= r.last));
      const timed = [...new Set(s.snapshots.map((snap) => snap.seq))].filter(() => random.int(2) === 1);
      s.snapshotTimes = timed.map((seq) => ({ seq, createdMs: random.int(2 ** 53) }));
      if (s.snapshots.length > 0) {
        s.cloneRefs = Array.from({ length: random.int(20) }, () => ({ snapSeq: s.snapshots[random.int(s.snapshots.length)]!.seq, cloneUuid: CLONE_UUID, name: name().slice(0, 250) }));
      }
      const bytes = encodeSuperblock(s);
      expect(bytes.byteLength % 4096).toBe(0);
      expect(decodeSuperblock(bytes)).toEqual(s);
    }
  });

  test("every single-byte corruption is detected", () => {
    expectEveryFlipDetected(ourSuperblock(), decodeSuperblock);
    expectEveryFlipDetected(encodeSuperblock({ ...value, snapshots: [...value.snapshots, { seq: 4, name: "b" }], snapshotTimes: [...value.snapshotTimes, { seq: 4, createdMs: 7 }] }), decodeSuperblock);
    expectEveryFlipDetected(plainV1Superblock(true), decodeSuperblock);
  });

  test("every truncation is rejected", () => {
    expectEveryTruncationRejected(ourSuperblock(), decodeSuperblock);
    const longer = new Uint8Array(4097);
    longer.set(ourSuperblock());
    expectCorruption(() => decodeSuperblock(longer));
  });

  test("absurd offsets, lengths and values are rejected (CRCs made valid again)", () => {
    const edits: [string, (b: Uint8Array) => void][] = [
      ["ckpts offset past the end", (b) => setU32(b, 52, 0xfffffff0)],
      ["ckpts length past the end", (b) => setU32(b, 56, 0xfffffff0)],
      ["ckpts inside the sub-header", (b) => setU32(b, 52, 48)],
      ["ckpts length not a multiple of 4", (b) => setU32(b, 56, 6)],
      ["clones length too short", (b) => setU32(b, 64, 10)],
      ["clones length disagrees with name_len", (b) => setU32(b, 64, 27)],
      ["clone name not NUL-terminated", (b) => (b[152 + 25] = 0x41)],
      ["snap name runs past snaps_len", (b) => (b[178 + 4] = 200)],
      ["snaps_len cuts an entry", (b) => setU32(b, 68, 3)],
      ["vol_size 0", (b) => b.fill(0, 44, 52)],
      ["vol_size past 2^36", (b) => (b[49] = 1)],
      ["vol_size past 2^53", (b) => (b[51] = 0x80)],
      ["checkpoint seq 0", (b) => setU32(b, 144, 0)],
      ["checkpoint in a skipped range", (b) => setU32(b, 148, 10)],
      ["clone uuid invalid", (b) => (b[152 + 6] = 0)],
      ["snap name invalid UTF-8", (b) => (b[178 + 5] = 0xff)],
      ["snapshot in a skipped range", (b) => { setU32(b, 178, 10); setU32(b, 195, 10); setU32(b, 207, 10); }],
      ["next_seq huge", (b) => (b[103] = 0x40)],
      ["owner_epoch past 2^53", (b) => (b[111] = 0x80)],
      ["skips offset past the end", (b) => setU32(b, 112, 0xfffffff0)],
      ["skips inside the extension", (b) => setU32(b, 112, 100)],
      ["skips length not a multiple of 8", (b) => setU32(b, 116, 4)],
      ["skipped range starting at 0", (b) => setU32(b, 187, 0)],
      ["skipped range first > last", (b) => setU32(b, 187, 12)],
      ["skipped range reaching next_seq", (b) => setU32(b, 191, 12)],
      ["skipped ranges out of order", (b) => { b.copyWithin(203, 195, 230); setU32(b, 116, 16); setU32(b, 120, 203); setU32(b, 128, 215); setU32(b, 195, 1); setU32(b, 199, 2); }],
      ["snapx offset past the end", (b) => setU32(b, 120, 0xfffffff0)],
      ["snapx inside the extension", (b) => setU32(b, 120, 124)],
      ["snapx length not a multiple of 12", (b) => setU32(b, 124, 8)],
      ["snapx names a seq no snapshot has", (b) => setU32(b, 195, 4)],
      ["two times for one snapshot", (b) => { b.copyWithin(219, 207, 230); setU32(b, 124, 24); setU32(b, 128, 219); setU32(b, 207, 3); setU32(b, 211, 5); setU32(b, 215, 0); }],
      ["created_ms past 2^53", (b) => (b[195 + 11] = 0x80)],
      ["clone_refs offset past the end", (b) => setU32(b, 128, 0xfffffff0)],
      ["clone_refs length cuts an entry", (b) => setU32(b, 132, 20)],
      ["clone name runs past clone_refs_len", (b) => (b[207 + 20] = 3)],
      ["clone registered on a seq no snapshot has", (b) => setU32(b, 207, 4)],
      ["clone vol_uuid invalid", (b) => (b[207 + 4 + 6] = 0)],
      ["clone name invalid UTF-8", (b) => (b[207 + 21] = 0xff)],
      ["rollback_seq at next_seq", (b) => setU32(b, 136, 12)],
      ["rollback_seq past 2^32", (b) => (b[140] = 1)],
      ["extension version 2", (b) => setU32(b, 80, 2)],
      ["extension length wrong", (b) => setU32(b, 84, 32)],
      ["data_sectors not 0", (b) => setU32(b, 36, 8)],
    ];
    expectEachEditRejected(edits, ourSuperblock, EXT_CRC_OFFSET, decodeSuperblock);
  });

  test("encode refuses invalid values", () => {
    expect(() => encodeSuperblock({ ...value, volSectors: 0 })).toThrow();
    expect(() => encodeSuperblock({ ...value, volSectors: 2 ** 36 + 1 })).toThrow();
    expect(() => encodeSuperblock({ ...value, checkpoints: [0] })).toThrow();
    expect(() => encodeSuperblock({ ...value, snapshots: [{ seq: 1, name: "x".repeat(256) }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, volUuid: "not-a-uuid" })).toThrow();
    expect(() => encodeSuperblock({ ...value, skipped: [{ first: 0, last: 3 }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, skipped: [{ first: 4, last: 3 }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, skipped: [{ first: 10, last: 12 }] })).toThrow(); // reaches next_seq
    expect(() => encodeSuperblock({ ...value, skipped: [{ first: 3, last: 4 }, { first: 2, last: 2 }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, skipped: [{ first: 9, last: 9 }] })).toThrow(); // holds checkpoint 9
    expect(() => encodeSuperblock({ ...value, snapshotTimes: [{ seq: 4, createdMs: 1 }] })).toThrow(); // no snapshot 4
    expect(() => encodeSuperblock({ ...value, snapshotTimes: [{ seq: 3, createdMs: 1 }, { seq: 3, createdMs: 2 }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, cloneRefs: [{ snapSeq: 4, cloneUuid: CLONE_UUID, name: "c" }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, cloneRefs: [{ snapSeq: 3, cloneUuid: "nope", name: "c" }] })).toThrow();
    expect(() => encodeSuperblock({ ...value, snapshots: Array.from({ length: 257 }, (_, i) => ({ seq: 100 + i, name: `s${i}` })), snapshotTimes: [], cloneRefs: [] })).toThrow();
    expect(() => encodeSuperblock({ ...value, skipped: Array.from({ length: 65 }, (_, i) => ({ first: 100 + 2 * i, last: 100 + 2 * i })), nextSeq: 0 })).toThrow();
  });

  test("grows past one page when the arrays need it", () => {
    const s = { ...value, snapshots: Array.from({ length: 40 }, (_, i) => ({ seq: 100 + i, name: "s".repeat(200) })), snapshotTimes: [], cloneRefs: [] };
    const bytes = encodeSuperblock(s);
    expect(bytes.byteLength).toBe(12288);
    expect(decodeSuperblock(bytes)).toEqual(s);
  });

  /**
   * What lsvd-rbd does to a superblock when it takes a checkpoint (docs/format.md, "Superblock object"): it sets
   * ckpts_offset to 76 (the end of the v1 sub-header) and ckpts_len, writes its list (at most 3 seqs) at 76 over
   * whatever is there, and writes the buffer back as it read it otherwise: the v1 crc is not updated.
   */
  function referenceRewrite(bytes: Uint8Array, checkpoints: number[]): Uint8Array {
    const out = bytes.slice();
    setU32(out, 52, 76);
    setU32(out, 56, 4 * checkpoints.length);
    checkpoints.forEach((seq, i) => setU32(out, 76 + 4 * i, seq));
    return out;
  }

  describe("rewritten in place by lsvd-rbd", () => {
    test("decodes with the reference's checkpoint list, the rest as lsvd wrote it; next_seq unknown; the list has no checksum", () => {
      for (const list of [[20], [20, 21], [20, 21, 22]]) {
        const rewritten = referenceRewrite(ourSuperblock(), list);
        expect(getU32(rewritten, 40)).toBe(getU32(ourSuperblock(), 40)); // the stale v1 crc
        const decoded = decodeSuperblockChecked(rewritten);
        expect(decoded.superblock).toEqual({ ...value, checkpoints: list, nextSeq: 0 });
        expect(decoded.checkpointsChecksummed).toBe(false);
        expect(decoded.rewrittenByReference).toBe(true);
        // Opened by the reference again: rewritten over its own rewrite.
        expect(decodeSuperblock(referenceRewrite(rewritten, [30, 31, 32]))).toEqual({ ...value, checkpoints: [30, 31, 32], nextSeq: 0 });
      }
      const ours = decodeSuperblockChecked(ourSuperblock());
      expect(ours).toEqual({ superblock: value, checkpointsChecksummed: true, rewrittenByReference: false });
      expect(decodeSuperblockChecked(plainV1Superblock(true)).checkpointsChecksummed).toBe(true);
      expect(decodeSuperblockChecked(plainV1Superblock(false)).checkpointsChecksummed).toBe(false);
    });

    test("an earlier version's superblock (28- or 44-byte extension) rewritten by it decodes too; ranges above its newest checkpoint go", () => {
    for (const list of [[20], [20, 21, 22]]) {
      const decoded = decodeSuperblockChecked(referenceRewrite(ownershipSuperblock(), list));
      expect(decoded.superblock).toEqual({ ...ownershipValue, checkpoints: list, nextSeq: 0 });
      expect(decoded.rewrittenByReference).toBe(true);
    }
      for (const list of [[20], [20, 21, 22]]) {
        const decoded = decodeSuperblockChecked(referenceRewrite(earlierSuperblock(), list));
        expect(decoded.superblock).toEqual({ ...ownershipValue, checkpoints: list, nextSeq: 0, ownerEpoch: 0, skipped: [] });
        expect(decoded.rewrittenByReference).toBe(true);
      }
      // It may have written inside a skipped range it knows nothing of, above its own newest checkpoint.
      expect(decodeSuperblock(referenceRewrite(ourSuperblock(), [6])).skipped).toEqual([]);
      expect(decodeSuperblock(referenceRewrite(ourSuperblock(), [12])).skipped).toEqual([{ first: 10, last: 11 }]);
    });

    test("a corrupted byte anywhere it did not write is refused (every byte, three flips each)", () => {
      for (const list of [[20], [20, 21, 22]]) {
        const rewritten = referenceRewrite(ourSuperblock(), list);
        const written = (i: number) => (i >= 52 && i < 60) || (i >= 76 && i < 76 + 4 * list.length);
        for (let i = 0; i < rewritten.byteLength; i++) {
          if (written(i)) continue;
          for (const flip of [0x01, 0x80, 0xff]) {
            const corrupted = rewritten.slice();
            corrupted[i]! ^= flip;
            try {
              expectCorruption(() => decodeSuperblock(corrupted));
            } catch (error) {
              throw new Error(`list ${list}, byte ${i} ^ 0x${flip.toString(16)}: ${(error as Error).message}`);
            }
          }
        }
      }
      const corrupted = referenceRewrite(ourSuperblock(), [20, 21, 22]);
      corrupted[200]! ^= 1;
      const error = expectCorruption(() => decodeSuperblock(corrupted));
      expect(error.message).toContain("bad v1 header CRC-32");
      expect(error.message).toContain("lsvd-rbd");
    });

    test("what it wrote is checked for shape: no seq 0, increasing, at most 3; and our own superblock never passes for a rewrite", () => {
      expectCorruption(() => decodeSuperblock(referenceRewrite(ourSuperblock(), [20, 0])));
      expectCorruption(() => decodeSuperblock(referenceRewrite(ourSuperblock(), [21, 20])));
      expectCorruption(() => decodeSuperblock(referenceRewrite(ourSuperblock(), [20, 21, 22, 23])));
      // ckpts_offset damaged to 76 in our own superblock: the extension magic is still at 76, so it is no rewrite.
      for (const checkpoints of [[5], [5, 9]]) {
        const ours = encodeSuperblock({ ...value, checkpoints });
        setU32(ours, 52, 76);
        expectCorruption(() => decodeSuperblock(ours));
      }
      // A plain v1 superblock (crc set and matching) with its list at 76 is what it says, not a rewrite.
      expect(decodeSuperblockChecked(plainV1Superblock(true)).rewrittenByReference).toBe(false);
    });
  });
});
