import { describe, expect, test } from "bun:test";
import { NIL as NIL_UUID } from "uuid";
import {
  CKPT_MAP_ENTRY_BYTES,
  decodeCheckpoint,
  encodeCheckpoint,
  encodeCheckpointFilling,
  packCheckpointMapEntry,
  unpackCheckpointMapEntry,
  type CheckpointObject,
} from "../../src/format/checkpoint_object.ts";
import {
  ByteBuilder,
  CACHE_UUID,
  VOL_UUID,
  crcWithZeroed,
  expectCorruption,
  expectEachEditRejected,
  expectEveryFlipDetected,
  expectEveryTruncationRejected,
  resealObject,
  seededRandom,
  setU32,
  zlibCrc,
} from "./_helpers.ts";

const EXT_CRC_OFFSET = 84 + 12;
const LBA_LAST = 2 ** 36 - 16;

/** Two ckpt_mapentry records, byte by byte. */
function mapBytes(): Uint8Array {
  return new ByteBuilder()
    .u64(BigInt(100) | (8n << 36n)).u32(0x2a).u32(8)
    .u64(BigInt(LBA_LAST) | (16n << 36n)).u32(0x2a).u32(16)
    .build();
}

const value: CheckpointObject = {
  volUuid: VOL_UUID,
  seq: 0x40,
  cacheSeq: 1000,
  checkpoints: [0x20],
  objects: [{ seq: 0x2a, hdrSectors: 8, dataSectors: 24, liveSectors: 20 }],
  deferredDeletes: [{ seq: 5, time: 0x41 }],
  mapEntries: mapBytes(),
  cacheUuid: CACHE_UUID,
  cacheSeqLast: 1010,
};

function ourCheckpoint(): Uint8Array {
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(3).u32(0x40).u32(8).u32(0).u32(0)
    .u64(1000)
    .u32(128).u32(4) // ckpts
    .u32(132).u32(16) // objs
    .u32(148).u32(8) // deletes
    .u32(156).u32(32) // map
    .ascii("LSVX").u32(1).u32(44).u32(0).u32(0) // data CRC32C of an empty data area is 0
    .u64(1010).uuid(CACHE_UUID);
  expect(b.length).toBe(128);
  b.u32(0x20);
  b.u32(0x2a).u32(8).u32(24).u32(20);
  b.u32(5).u32(0x41);
  b.raw(mapBytes());
  const bytes = b.padTo(4096).build();
  resealObject(bytes, EXT_CRC_OFFSET);
  return bytes;
}

/** As the v1 reference writes it: arrays right after the sub-header; optionally the map in a data sector. */
function plainV1Checkpoint(mapInDataArea: boolean): Uint8Array {
  const mapOffset = mapInDataArea ? 512 : 84 + 4 + 16 + 8;
  const b = new ByteBuilder()
    .ascii("LSVD").u32(1).uuid(VOL_UUID).u32(3).u32(0x40).u32(1).u32(mapInDataArea ? 1 : 0).u32(0)
    .u64(1000)
    .u32(84).u32(4)
    .u32(88).u32(16)
    .u32(104).u32(8)
    .u32(mapOffset).u32(32);
  b.u32(0x20);
  b.u32(0x2a).u32(8).u32(24).u32(20);
  b.u32(5).u32(0x41);
  if (mapInDataArea) b.padTo(512);
  b.raw(mapBytes());
  const bytes = b.padTo(mapInDataArea ? 1024 : 512).build();
  const header = bytes.subarray(0, 512);
  setU32(header, 40, crcWithZeroed(header, [40], zlibCrc));
  return bytes;
}

describe("checkpoint map entries", () => {
  test("pack and unpack, at the edges of the 36/28-bit fields", () => {
    const view = new DataView(new ArrayBuffer(3 * CKPT_MAP_ENTRY_BYTES));
    packCheckpointMapEntry(view, 0, 0, 1, 1, 1);
    packCheckpointMapEntry(view, 1, 2 ** 36 - 1, 2 ** 28 - 1, 2 ** 32 - 1, 2 ** 32 - 1);
    packCheckpointMapEntry(view, 2, 100, 8, 0x2a, 8);
    expect(unpackCheckpointMapEntry(view, 0)).toEqual({ lba: 0, sectors: 1, obj: 1, offsetSectors: 1 });
    expect(unpackCheckpointMapEntry(view, 1)).toEqual({ lba: 2 ** 36 - 1, sectors: 2 ** 28 - 1, obj: 2 ** 32 - 1, offsetSectors: 2 ** 32 - 1 });
    expect<Uint8Array>(new Uint8Array(view.buffer, 32, 16)).toEqual(mapBytes().subarray(0, 16));
    expect(new Uint8Array(view.buffer, 16, 8)).toEqual(new Uint8Array(8).fill(0xff));
    expect(() => packCheckpointMapEntry(view, 0, 2 ** 36, 1, 1, 1)).toThrow();
    expect(() => packCheckpointMapEntry(view, 0, 0, 2 ** 28, 1, 1)).toThrow();
    expect(() => packCheckpointMapEntry(view, 0, 0, 0, 1, 1)).toThrow();
    expect(() => packCheckpointMapEntry(view, 0, 0, 1, 0, 1)).toThrow();
  });
});

describe("checkpoint object", () => {
  test("encoder output equals the hand-made bytes, and decodes back", () => {
    const expected = ourCheckpoint();
    expect(encodeCheckpoint(value)).toEqual(expected);
    expect(decodeCheckpoint(expected)).toEqual(value);
  });

  test("decodes plain v1 checkpoints, with the map in the header or the data area", () => {
    const plain = { ...value, cacheUuid: NIL_UUID, cacheSeqLast: 0 };
    expect(decodeCheckpoint(plainV1Checkpoint(false))).toEqual(plain);
    expect(decodeCheckpoint(plainV1Checkpoint(true))).toEqual(plain);
  });

  test("encodeCheckpointFilling writes the same bytes as encodeCheckpoint, the map filled in place", () => {
    const { mapEntries, ...fields } = value;
    const areas: number[] = [];
    const filled = encodeCheckpointFilling(fields, mapEntries.byteLength / CKPT_MAP_ENTRY_BYTES, (area) => {
      areas.push(area.byteLength);
      expect(area.every((byte) => byte === 0)).toBe(true);
      area.set(mapEntries);
    });
    expect(areas).toEqual([mapEntries.byteLength]);
    expect(filled).toEqual(ourCheckpoint());
    expect(decodeCheckpoint(filled).mapEntries).toEqual(mapEntries);
    const empty = encodeCheckpointFilling({ ...fields, seq: 0x41 }, 0, (area) => expect(area.byteLength).toBe(0));
    expect(empty).toEqual(encodeCheckpoint({ ...fields, seq: 0x41, mapEntries: new Uint8Array(0) }));
  });

  test("randomized round trips", () => {
    const random = seededRandom("checkpoint round trips");
    for (let round = 0; round < 50; round++) {
      const entries = random.int(3000);
      const mapEntries = new Uint8Array(entries * CKPT_MAP_ENTRY_BYTES);
      const view = new DataView(mapEntries.buffer);
      for (let i = 0; i < entries; i++) {
        packCheckpointMapEntry(view, i, random.int(2 ** 36 - 2 ** 28), 1 + random.int(2 ** 28 - 1), 1 + random.int(2 ** 32 - 1), 1 + random.int(2 ** 32 - 1));
      }
      const c: CheckpointObject = {
        volUuid: VOL_UUID,
        seq: 1 + random.int(2 ** 32 - 1),
        cacheSeq: random.int(2 ** 53),
        checkpoints: Array.from({ length: random.int(4) }, () => 1 + random.int(1000)),
        objects: Array.from({ length: random.int(500) }, () => ({
          seq: 1 + random.int(2 ** 32 - 1), hdrSectors: random.int(2 ** 32), dataSectors: random.int(2 ** 32), liveSectors: random.int(2 ** 32),
        })),
        deferredDeletes: Array.from({ length: random.int(50) }, () => ({ seq: 1 + random.int(1000), time: random.int(2 ** 32) })),
        mapEntries,
        cacheUuid: random.int(2) ? CACHE_UUID : NIL_UUID,
        cacheSeqLast: random.int(2 ** 53),
      };
      const bytes = encodeCheckpoint(c);
      expect(bytes.byteLength % 4096).toBe(0);
      expect(decodeCheckpoint(bytes)).toEqual(c);
    }
  });

  test("a million map entries round trip", () => {
    const entries = 1_000_000;
    const mapEntries = new Uint8Array(entries * CKPT_MAP_ENTRY_BYTES);
    const view = new DataView(mapEntries.buffer);
    for (let i = 0; i < entries; i++) packCheckpointMapEntry(view, i, i * 8, 8, 1 + (i >>> 10), 8 + 8 * (i & 1023));
    const bytes = encodeCheckpoint({ ...value, mapEntries });
    const back = decodeCheckpoint(bytes);
    expect(back.mapEntries).toEqual(mapEntries);
    expect(unpackCheckpointMapEntry(new DataView(back.mapEntries.buffer, back.mapEntries.byteOffset), entries - 1)).toEqual({
      lba: (entries - 1) * 8, sectors: 8, obj: 1 + ((entries - 1) >>> 10), offsetSectors: 8 + 8 * ((entries - 1) & 1023),
    });
  });

  test("every single-byte corruption is detected", () => {
    expectEveryFlipDetected(ourCheckpoint(), decodeCheckpoint);
    expectEveryFlipDetected(plainV1Checkpoint(false), decodeCheckpoint);
  });

  test("every truncation is rejected", () => {
    expectEveryTruncationRejected(ourCheckpoint(), decodeCheckpoint);
    expectEveryTruncationRejected(plainV1Checkpoint(true), decodeCheckpoint);
  });

  test("absurd offsets, lengths and values are rejected (CRCs made valid again)", () => {
    const edits: [string, (b: Uint8Array) => void][] = [
      ["map offset past the end", (b) => setU32(b, 76, 0xfffffff0)],
      ["map length past the end", (b) => setU32(b, 80, 0xfffffff0)],
      ["map length not a multiple of 16", (b) => setU32(b, 80, 24)],
      ["objs length not a multiple of 16", (b) => setU32(b, 64, 8)],
      ["deletes length not a multiple of 8", (b) => setU32(b, 72, 4)],
      ["ckpts length not a multiple of 4", (b) => setU32(b, 56, 2)],
      ["ckpts over the common header", (b) => setU32(b, 52, 0)],
      ["ckpt seq 0", (b) => setU32(b, 128, 0)],
      ["object seq 0", (b) => setU32(b, 132, 0)],
      ["delete seq 0", (b) => setU32(b, 148, 0)],
      ["map entry length 0", (b) => setU32(b, 156 + 4, 0)],
      ["map entry obj 0", (b) => setU32(b, 156 + 8, 0)],
      ["map entry offset 0", (b) => setU32(b, 156 + 12, 0)],
      ["map entry past 2^36", (b) => (setU32(b, 156, 0xffffffff), setU32(b, 156 + 4, 8 * 16 + 15))],
      ["cache uuid invalid", (b) => (b[112 + 6] = 0)],
      ["data_sectors beyond the object", (b) => setU32(b, 36, 1)],
      ["extension length wrong", (b) => setU32(b, 92, 40)],
    ];
    expectEachEditRejected(edits, ourCheckpoint, EXT_CRC_OFFSET, decodeCheckpoint);
  });

  test("the data area is checked when the extension is present", () => {
    const bytes = ourCheckpoint();
    setU32(bytes, 36, 8); // claim a one-page data area: its CRC32C (of zeros) will not be the stored 0
    resealObject(bytes, EXT_CRC_OFFSET);
    const object = new Uint8Array(8192);
    object.set(bytes);
    expect(expectCorruption(() => decodeCheckpoint(object)).message).toContain("data CRC32C");
  });
});
