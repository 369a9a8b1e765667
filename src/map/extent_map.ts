// The volume's LBA -> location map: ordered, non-overlapping extents (lba, sectors) -> (obj, offset).
// Pure data structure, no I/O. Units are 512-byte sectors throughout. `offset` counts sectors from the start of the
// object's DATA AREA (the checkpoint codec adds hdr_sectors when it writes ckpt_mapentry, see docs/format.md,
// "Checkpoint object"). Extents are at most EXTENT_SECTORS_MAX long so each one maps
// to exactly one ckpt_mapentry / data_map entry (28-bit len).
//
// Layout. Extents live in fixed-capacity chunks of `chunkExtentsMax` packed extents sorted by lba, 4 words (16 bytes)
// per extent:
//   word 0: lba bits 0..31
//   word 1: lba bits 32..35 in bits 0..3, sectors (1..2^28-1) in bits 4..31
//   word 2: obj (object sequence number, 1..2^32-1)
//   word 3: offset (sectors into the object's data area; offset + sectors <= 2^32)
// Chunks are slots in a few large Uint32Array segments (about 1 MiB each), not objects of their own: on this kind of
// VM a dependent cache+TLB miss costs ~300 ns, and a typed-array object per chunk would add one such miss to every
// lookup, plus ~200 bytes of engine overhead per chunk. A chunk id is (segment << segmentShift) | slot. Three
// parallel typed arrays indexed by the chunk's position in lba order form the index: `chunkIds`, `counts` (extents
// in the chunk) and `firstLbas` (lba of the chunk's first extent). A lookup searches firstLbas, then one chunk.
// No JS object exists per extent or per chunk: the cost is 16 bytes per extent divided by the chunk fill, plus
// 16 bytes of index per chunk. Slots of removed chunks go on a free list for reuse; segments are released by clear().
//
// ExtentMap invariants (checkInvariants() verifies every one of them):
//   1. chunkIds, counts and firstLbas have room for chunkCount entries; every chunk id in use is an allocated slot,
//      used by exactly one position and not on the free list; used + free slots = allocated slots.
//   2. Every chunk holds 1..chunkExtentsMax extents (an empty chunk is removed at once), and
//      firstLbas[c] equals the lba of chunk c's first extent.
//   3. Every extent has 1 <= sectors <= EXTENT_SECTORS_MAX, lba + sectors <= 2^36, obj >= 1,
//      offset + sectors <= 2^32.
//   4. Extents are sorted and do not overlap, within a chunk and across chunk boundaries (gaps are unmapped).
//   5. Canonical merging: no two neighbouring extents are contiguous in lba and in (obj, offset) unless their
//      combined length exceeds EXTENT_SECTORS_MAX. So for maps whose runs are shorter than EXTENT_SECTORS_MAX the
//      extent list depends only on the sector -> location function, not on the history that built it (tests compare
//      it against a per-sector model). Merging keeps sequential writes to one object at one extent.
//   6. extentCount equals the sum of counts.
//
// Chunk shape is a performance policy, not an invariant: a full chunk first lends extents to a neighbour with room,
// and only splits when both neighbours are full (B*-tree style), which keeps random fills near 85% rather than the
// ~69% of plain halving; an append to a full chunk starts a new chunk rather than halving it, so sorted loads (e.g.
// from a checkpoint) fill chunks completely. A chunk that drops below a quarter full is merged into or rebalanced
// with a neighbour; merging only up to three quarters full leaves room, so insert/delete at a boundary cannot thrash.

import { EXTENT_LEN_BITS, EXTENT_SECTORS_MAX, LBA_BITS, VOLUME_SECTORS_MAX } from "../constants.ts";
import { assert } from "../errors.ts";

/** Default extents per chunk: 256 x 16 bytes = one 4 KiB chunk, so an insert shifts ~2 KiB on average. */
export const MAP_CHUNK_EXTENTS_DEFAULT = 256;
/** Chunk capacity bounds accepted by the constructor (tests use tiny chunks to force splits and merges). */
export const MAP_CHUNK_EXTENTS_MIN = 4;
export const MAP_CHUNK_EXTENTS_MAX = 65536;
/** Chunks are allocated in segments of about this many bytes (the first segment grows up to it from small). */
const SEGMENT_BYTES_TARGET = 1024 * 1024;
/** Chunk slots the first segment starts with; it doubles until it is a full segment. */
const SEGMENT_CHUNKS_INITIAL = 4;
/** Index arrays start with room for this many chunks and double. */
const INDEX_CAPACITY_MIN = 16;
/**
 * Estimated bytes the engine spends per typed array besides its data (object header, allocator rounding), counted
 * by bytesUsed(). Measured with Bun 1.4: a 4 KiB Uint32Array costs ~4.3 KB of RSS.
 */
const TYPED_ARRAY_OVERHEAD_BYTES = 256;

const WORDS_PER_EXTENT = 4;
const LBA_LOW_RANGE = 2 ** 32;
const LBA_HIGH_BITS = LBA_BITS - 32;
const LBA_HIGH_MASK = (1 << LBA_HIGH_BITS) - 1;
const OFFSET_RANGE = 2 ** 32;

// The packing above puts lba's high bits and the length into one 32-bit word.
assert(LBA_HIGH_BITS === 4, "extent map packs lba bits 32..35 into 4 bits");
assert(LBA_HIGH_BITS + EXTENT_LEN_BITS === 32, "lba high bits and extent length share one 32-bit word");
assert(VOLUME_SECTORS_MAX === 2 ** LBA_BITS, "volume sectors match LBA bits");
// A chunk of the largest size must fit in a segment, and chunk ids (segment, slot) must fit in 32 bits.
assert(MAP_CHUNK_EXTENTS_MAX * WORDS_PER_EXTENT * 4 <= SEGMENT_BYTES_TARGET, "a chunk fits in a segment");

export type DisplacedCallback = (obj: number, sectors: number) => void;
export type ExtentVisitor = (lba: number, sectors: number, obj: number, offset: number) => void;
export type RunVisitor = (lba: number, sectors: number) => void;

/** runsMappedTo's state: the object and offset a run must continue, the run so far, and whom to tell (null: none). */
interface RunScan {
  obj: number;
  /** The copy's offset minus its lba: a piece continues the copy when its offset is its lba plus this. */
  offsetMinusLba: number;
  lba: number;
  sectors: number;
  visit: RunVisitor | null;
}

// Extent helpers take the extent's absolute position in its segment: chunk slot * chunkExtentsMax + index.

function extentStart(words: Uint32Array, position: number): number {
  const base = position << 2;
  return (words[base + 1]! & LBA_HIGH_MASK) * LBA_LOW_RANGE + words[base]!;
}

function extentSectors(words: Uint32Array, position: number): number {
  return words[(position << 2) + 1]! >>> LBA_HIGH_BITS;
}

function extentObj(words: Uint32Array, position: number): number {
  return words[(position << 2) + 2]!;
}

function extentOffset(words: Uint32Array, position: number): number {
  return words[(position << 2) + 3]!;
}

function setExtent(
  words: Uint32Array,
  position: number,
  lba: number,
  sectors: number,
  obj: number,
  offset: number,
): void {
  const base = position << 2;
  words[base] = lba >>> 0;
  words[base + 1] = Math.floor(lba / LBA_LOW_RANGE) | (sectors << LBA_HIGH_BITS);
  words[base + 2] = obj;
  words[base + 3] = offset;
}

function setExtentStart(words: Uint32Array, position: number, lba: number): void {
  const base = position << 2;
  words[base] = lba >>> 0;
  words[base + 1] = (words[base + 1]! & ~LBA_HIGH_MASK) | Math.floor(lba / LBA_LOW_RANGE);
}

function setExtentSectors(words: Uint32Array, position: number, sectors: number): void {
  const base = position << 2;
  words[base + 1] = (words[base + 1]! & LBA_HIGH_MASK) | (sectors << LBA_HIGH_BITS);
}

/** True if extent b directly follows extent a in lba and in (obj, offset), and the two fit in one extent. */
function mergeable(wordsA: Uint32Array, a: number, wordsB: Uint32Array, b: number): boolean {
  const sectorsA = extentSectors(wordsA, a);
  return (
    extentStart(wordsA, a) + sectorsA === extentStart(wordsB, b) &&
    extentObj(wordsA, a) === extentObj(wordsB, b) &&
    extentOffset(wordsA, a) + sectorsA === extentOffset(wordsB, b) &&
    sectorsA + extentSectors(wordsB, b) <= EXTENT_SECTORS_MAX
  );
}

// Searches. Both levels use interpolation search: LBAs inside a chunk, and chunk first-LBAs across the map, tend to
// be spread evenly, so the first guess usually lands within a few entries and a lookup touches ~2-3 cache lines of
// the chunk instead of the ~8 of a binary search (the map is far larger than the CPU caches; misses are the cost).
// A step that fails to halve the candidate range is followed by a bisection, so skewed keys cost at most about
// 2 log2(n) probes.

/** Last position in [0, count) whose firstLbas entry is <= lba, or 0 if there is none. count >= 1. */
function lastChunkAtOrBefore(firstLbas: Float64Array, count: number, lba: number): number {
  let low = 0;
  let high = count - 1;
  if (firstLbas[high]! <= lba) return high;
  if (firstLbas[0]! > lba) return 0;
  // firstLbas[low] <= lba < firstLbas[high]: the answer is in [low, high).
  let bisect = false;
  while (high - low > 1) {
    const width = high - low;
    let middle: number;
    if (bisect) {
      middle = low + (width >>> 1);
    } else {
      const lowKey = firstLbas[low]!;
      middle = low + Math.floor(((lba - lowKey) / (firstLbas[high]! - lowKey)) * width);
      if (middle <= low) middle = low + 1;
      else if (middle >= high) middle = high - 1;
    }
    if (firstLbas[middle]! <= lba) low = middle;
    else high = middle;
    bisect = (high - low) * 2 > width;
  }
  return low;
}

/**
 * Index (relative to the chunk, which starts at position `first` in words and holds count >= 1 extents) of the last
 * extent starting at or before lba, or -1 if none does. firstKey is the chunk's first lba and upperKey the next
 * chunk's (or Infinity for the last chunk): both come from the index, which is hot in cache, so the first probe into
 * the chunk's data is already the interpolated guess.
 */
function lastExtentAtOrBefore(
  words: Uint32Array,
  first: number,
  count: number,
  lba: number,
  firstKey: number,
  upperKey: number,
): number {
  if (firstKey > lba) return -1;
  let low = first;
  let lowKey = firstKey;
  let high = first + count; // one past the chunk: its key, upperKey, is above every key in the chunk
  let highKey = upperKey;
  if (highKey === Infinity) {
    high -= 1;
    highKey = extentStart(words, high);
    if (highKey <= lba) return count - 1;
  }
  // lowKey <= lba < highKey: the answer is in [low, high).
  let bisect = false;
  while (high - low > 1) {
    const width = high - low;
    let middle: number;
    if (bisect) {
      middle = low + (width >>> 1);
    } else {
      middle = low + Math.floor(((lba - lowKey) / (highKey - lowKey)) * width);
      if (middle <= low) middle = low + 1;
      else if (middle >= high) middle = high - 1;
    }
    const base = middle << 2;
    const key = (words[base + 1]! & LBA_HIGH_MASK) * LBA_LOW_RANGE + words[base]!;
    if (key <= lba) {
      low = middle;
      lowKey = key;
    } else {
      high = middle;
      highKey = key;
    }
    bisect = (high - low) * 2 > width;
  }
  return low - first;
}

// Argument checks run on every call, so their messages are built only on failure.

function assertRange(lba: number, sectors: number): void {
  if (!(Number.isSafeInteger(lba) && lba >= 0)) {
    assert(false, `extent map: lba ${lba} must be a non-negative integer`);
  }
  if (!(Number.isSafeInteger(sectors) && sectors > 0)) {
    assert(false, `extent map: sectors ${sectors} must be a positive integer`);
  }
  if (!(lba + sectors <= VOLUME_SECTORS_MAX)) {
    assert(false, `extent map: range ${lba}+${sectors} exceeds 2^${LBA_BITS} sectors`);
  }
}

function assertTarget(obj: number, offset: number, sectors: number): void {
  if (!(Number.isInteger(obj) && obj >= 1 && obj < OFFSET_RANGE)) {
    assert(false, `extent map: obj ${obj} must be in 1..2^32-1`);
  }
  if (!(Number.isInteger(offset) && offset >= 0)) {
    assert(false, `extent map: offset ${offset} must be a non-negative integer`);
  }
  if (!(offset + sectors <= OFFSET_RANGE)) {
    assert(false, `extent map: offset ${offset}+${sectors} exceeds 2^32 sectors`);
  }
}

export class ExtentMap {
  private readonly chunkExtentsMax: number;
  /** A chunk below this many extents is merged into or rebalanced with a neighbour. */
  private readonly chunkExtentsMin: number;
  /** Merging two chunks is allowed only up to this many extents, so the result is not split by the next insert. */
  private readonly chunkMergeExtentsMax: number;
  private readonly chunkWords: number;
  /** Chunk slots per full segment: a power of two, so a chunk id splits into (segment, slot) by shift and mask. */
  private readonly segmentShift: number;
  private readonly segmentMask: number;

  // Storage: segments[s] holds chunk slots; the first segment grows by doubling until it is full size.
  private segments: Uint32Array[] = [];
  /** Slots handed out so far, in id order (ids below this are either in use or on the free list). */
  private slotsAllocated = 0;
  private freeIds: Uint32Array = new Uint32Array(INDEX_CAPACITY_MIN);
  private freeCount = 0;

  // Index, by chunk position in lba order.
  private chunkIds: Uint32Array = new Uint32Array(INDEX_CAPACITY_MIN);
  private counts: Uint32Array = new Uint32Array(INDEX_CAPACITY_MIN);
  private firstLbas: Float64Array = new Float64Array(INDEX_CAPACITY_MIN);
  private chunkCount = 0;
  private extents = 0;
  /**
   * Longest extent ever stored since the last clear(). Two contiguous neighbours can only stay unmerged when one is
   * longer than half of EXTENT_SECTORS_MAX; while this is below that, trims need not look for merges they enable.
   */
  private sectorsHighWater = 0;

  // Result of seek(), kept in fields so lookups do not allocate.
  private seekChunk = 0;
  private seekIndex = 0;
  /** runsMappedTo's run in progress, so a call allocates nothing: the run it extends and whom to tell. */
  private readonly runScan: RunScan = { obj: 0, offsetMinusLba: 0, lba: -1, sectors: 0, visit: null };
  /** lookup's visitor for runsMappedTo: extends the run, or tells the one before and starts the next. */
  private readonly extendRun: ExtentVisitor = (pieceLba, pieceSectors, pieceObj, pieceOffset) => {
    const scan = this.runScan;
    if (pieceObj !== scan.obj || pieceOffset !== pieceLba + scan.offsetMinusLba) return;
    if (scan.sectors > 0 && scan.lba + scan.sectors === pieceLba) {
      scan.sectors += pieceSectors;
      return;
    }
    if (scan.sectors > 0) scan.visit!(scan.lba, scan.sectors);
    scan.lba = pieceLba;
    scan.sectors = pieceSectors;
  };
  /** Scratch results of cutLeftEdge and removeFrom (no allocation per removal). */
  private cutNextIndex = 0;
  private cutRemnantStart = -1;
  private cutRemnantStop = -1;

  constructor(options?: { chunkExtentsMax?: number }) {
    const chunkExtentsMax = options?.chunkExtentsMax ?? MAP_CHUNK_EXTENTS_DEFAULT;
    if (
      !(
        Number.isInteger(chunkExtentsMax) &&
        chunkExtentsMax >= MAP_CHUNK_EXTENTS_MIN &&
        chunkExtentsMax <= MAP_CHUNK_EXTENTS_MAX
      )
    ) {
      const bounds = `${MAP_CHUNK_EXTENTS_MIN}..${MAP_CHUNK_EXTENTS_MAX}`;
      assert(false, `extent map: chunkExtentsMax ${chunkExtentsMax} must be in ${bounds}`);
    }
    this.chunkExtentsMax = chunkExtentsMax;
    this.chunkExtentsMin = Math.max(1, Math.floor(chunkExtentsMax / 4));
    this.chunkMergeExtentsMax = chunkExtentsMax - Math.floor(chunkExtentsMax / 4);
    this.chunkWords = chunkExtentsMax * WORDS_PER_EXTENT;
    this.segmentShift = Math.floor(Math.log2(SEGMENT_BYTES_TARGET / (this.chunkWords * 4)));
    this.segmentMask = (1 << this.segmentShift) - 1;
  }

  get extentCount(): number {
    return this.extents;
  }

  /**
   * Map [lba, lba+sectors) to (obj, offset..offset+sectors). Returns the number of sectors that were mapped before in
   * that range; displaced(obj, sectors) is called for each overwritten piece (so callers can keep per-object live
   * counts). Rewriting a range to the location it already has still reports it as displaced.
   */
  update(lba: number, sectors: number, obj: number, offset: number, displaced?: DisplacedCallback): number {
    assertRange(lba, sectors);
    assertTarget(obj, offset, sectors);
    if (this.chunkCount === 0 || sectors > EXTENT_SECTORS_MAX) {
      const displacedSectors = this.removeRange(lba, lba + sectors, displaced, false);
      this.insertPieces(lba, sectors, obj, offset);
      return displacedSectors;
    }
    // One seek serves the common cases, which is worth it: on a large map each seek costs a few cache misses.
    this.seek(lba);
    const chunk = this.seekChunk;
    const index = this.seekIndex;
    const words = this.wordsOf(chunk);
    const first = this.firstOf(chunk);
    const position = first + index;
    if (index >= 0 && extentStart(words, position) === lba && extentSectors(words, position) === sectors) {
      // The range is exactly one existing extent (a block rewritten with the same size): replace the location in
      // place without shifting any extents.
      const base = position << 2;
      displaced?.(words[base + 2]!, sectors);
      words[base + 2] = obj;
      words[base + 3] = offset;
      if (this.mergeableWithNeighbours(chunk, index)) {
        // Rare: take it out and insert it again, which merges it.
        this.removeExtent(chunk, index);
        this.insertExtent(lba, sectors, obj, offset);
      }
      return sectors;
    }
    const end = lba + sectors;
    const previousClear = index < 0 || extentStart(words, position) + extentSectors(words, position) <= lba;
    let nextStart = Infinity;
    if (index + 1 < this.counts[chunk]!) nextStart = extentStart(words, position + 1);
    else if (chunk + 1 < this.chunkCount) nextStart = this.firstLbas[chunk + 1]!;
    if (previousClear && nextStart >= end) {
      // The range is unmapped (a first write): insert using this seek.
      this.insertExtentAtSeek(lba, sectors, obj, offset);
      return 0;
    }
    const displacedSectors = this.removeRange(lba, end, displaced, true);
    this.insertExtent(lba, sectors, obj, offset);
    return displacedSectors;
  }

  /** Unmap [lba, lba+sectors) (TRIM). Returns the sectors that were mapped; displaced as for update(). */
  trim(lba: number, sectors: number, displaced?: DisplacedCallback): number {
    assertRange(lba, sectors);
    return this.removeRange(lba, lba + sectors, displaced, false);
  }

  /**
   * Calls visit for each mapped piece overlapping [lba, lba+sectors), clipped to the range, in LBA order. Gaps are
   * not visited. Allocates nothing. visit must not modify the map.
   */
  lookup(lba: number, sectors: number, visit: ExtentVisitor): void {
    assertRange(lba, sectors);
    if (this.chunkCount === 0) return;
    const end = lba + sectors;
    this.seek(lba);
    let chunk = this.seekChunk;
    let index = this.seekIndex;
    if (index < 0) {
      index = 0;
    } else {
      const words = this.wordsOf(chunk);
      const position = this.firstOf(chunk) + index;
      if (extentStart(words, position) + extentSectors(words, position) <= lba) index += 1;
    }
    const chunkCount = this.chunkCount;
    for (; chunk < chunkCount; chunk += 1, index = 0) {
      const words = this.wordsOf(chunk);
      const first = this.firstOf(chunk);
      const stopPosition = first + this.counts[chunk]!;
      for (let position = first + index; position < stopPosition; position += 1) {
        const base = position << 2;
        const start = (words[base + 1]! & LBA_HIGH_MASK) * LBA_LOW_RANGE + words[base]!;
        if (start >= end) return;
        const stop = start + (words[base + 1]! >>> LBA_HIGH_BITS);
        const from = start < lba ? lba : start;
        const to = stop > end ? end : stop;
        visit(from, to - from, words[base + 2]!, words[base + 3]! + (from - start));
      }
    }
  }

  /**
   * Calls visit(lba, sectors) for each maximal run of [lba, lba+sectors) that the map sends to object `obj` at
   * `offset + (run's lba - lba)`: what of a copy of that range taken from obj at offset is still current. In LBA
   * order; adjacent pieces that continue each other in obj form one run. visit must not modify the map.
   */
  runsMappedTo(lba: number, sectors: number, obj: number, offset: number, visit: RunVisitor): void {
    const scan = this.runScan;
    assert(scan.visit === null, "extent map: runsMappedTo's visit does not scan runs again");
    scan.obj = obj;
    scan.offsetMinusLba = offset - lba;
    scan.lba = -1;
    scan.sectors = 0;
    scan.visit = visit;
    try {
      this.lookup(lba, sectors, this.extendRun);
      if (scan.sectors > 0) visit(scan.lba, scan.sectors);
    } finally {
      scan.visit = null;
    }
  }

  /** All extents in LBA order (for checkpoints). visit must not modify the map. */
  forEach(visit: ExtentVisitor): void {
    for (let chunk = 0; chunk < this.chunkCount; chunk += 1) {
      const words = this.wordsOf(chunk);
      const first = this.firstOf(chunk);
      const stopPosition = first + this.counts[chunk]!;
      for (let position = first; position < stopPosition; position += 1) {
        visit(
          extentStart(words, position),
          extentSectors(words, position),
          extentObj(words, position),
          extentOffset(words, position),
        );
      }
    }
  }

  /**
   * Every extent in LBA order, copied into `into` as four 32-bit words each, the layout the map keeps them in: lba
   * bits 0..31; lba bits 32..35 | sectors << 4; obj; offset. One copy per chunk and no call per extent: ~3 ns per
   * extent at 200k extents, where a checkpoint built through forEach cost ~40. `into` holds at least extentCount * 4
   * words. Returns how many extents it copied.
   */
  copyExtentWords(into: Uint32Array): number {
    assert(into.length >= this.extents * WORDS_PER_EXTENT, `extent map: ${into.length} words hold ${this.extents} extents`);
    let at = 0;
    for (let chunk = 0; chunk < this.chunkCount; chunk += 1) {
      const first = this.firstOf(chunk) * WORDS_PER_EXTENT;
      const words = this.counts[chunk]! * WORDS_PER_EXTENT;
      into.set(this.wordsOf(chunk).subarray(first, first + words), at);
      at += words;
    }
    return at / WORDS_PER_EXTENT;
  }

  /**
   * GC relocation: within [lba, lba+sectors), every piece that still maps to (expectObj, expectOffset + (x - lba))
   * is remapped to (obj, offset + (x - lba)); pieces that were overwritten or trimmed since are left alone.
   * Returns the sectors remapped; displaced is called for the remapped pieces (all of them from expectObj).
   */
  updateIfUnchanged(
    lba: number,
    sectors: number,
    expectObj: number,
    expectOffset: number,
    obj: number,
    offset: number,
    displaced?: DisplacedCallback,
  ): number {
    assertRange(lba, sectors);
    assertTarget(expectObj, expectOffset, sectors);
    assertTarget(obj, offset, sectors);
    const end = lba + sectors;
    // A piece matches when its offset runs in step with the expected one: offset - start == expectOffset - lba.
    const expectDelta = expectOffset - lba;
    let remapped = 0;
    let cursor = lba;
    while (cursor < end && this.chunkCount > 0) {
      // Find the first matching piece at or after cursor. Each remap may restructure chunks, so seek afresh.
      this.seek(cursor);
      let chunk = this.seekChunk;
      let index = this.seekIndex;
      if (index < 0) {
        index = 0;
      } else {
        const words = this.wordsOf(chunk);
        const position = this.firstOf(chunk) + index;
        if (extentStart(words, position) + extentSectors(words, position) <= cursor) index += 1;
      }
      let pieceStart = -1;
      let pieceStop = -1;
      scan: for (; chunk < this.chunkCount; chunk += 1, index = 0) {
        const words = this.wordsOf(chunk);
        const first = this.firstOf(chunk);
        const stopPosition = first + this.counts[chunk]!;
        for (let position = first + index; position < stopPosition; position += 1) {
          const start = extentStart(words, position);
          if (start >= end) break scan;
          if (extentObj(words, position) === expectObj && extentOffset(words, position) - start === expectDelta) {
            const stop = start + extentSectors(words, position);
            pieceStart = start < cursor ? cursor : start;
            pieceStop = stop > end ? end : stop;
            break scan;
          }
        }
      }
      if (pieceStart < 0) break;
      const pieceSectors = pieceStop - pieceStart;
      const moved = this.update(pieceStart, pieceSectors, obj, offset + (pieceStart - lba), displaced);
      assert(moved === pieceSectors, "extent map: a matching piece is fully mapped");
      remapped += pieceSectors;
      cursor = pieceStop;
    }
    return remapped;
  }

  clear(): void {
    this.segments = [];
    this.slotsAllocated = 0;
    this.freeIds = new Uint32Array(INDEX_CAPACITY_MIN);
    this.freeCount = 0;
    this.chunkIds = new Uint32Array(INDEX_CAPACITY_MIN);
    this.counts = new Uint32Array(INDEX_CAPACITY_MIN);
    this.firstLbas = new Float64Array(INDEX_CAPACITY_MIN);
    this.chunkCount = 0;
    this.extents = 0;
    this.sectorsHighWater = 0;
  }

  /** Memory held by the map: segments (including free slots), the index and the free list, with engine overhead. */
  bytesUsed(): number {
    let bytes = 0;
    for (const segment of this.segments) bytes += segment.byteLength + TYPED_ARRAY_OVERHEAD_BYTES;
    bytes += this.chunkIds.byteLength + this.counts.byteLength + this.firstLbas.byteLength + this.freeIds.byteLength;
    return bytes + 4 * TYPED_ARRAY_OVERHEAD_BYTES;
  }

  /** Checks invariants 1-6 from the top of this file; throws on the first violation. */
  checkInvariants(): void {
    const check = (condition: boolean, message: () => string): void => {
      if (!condition) assert(false, `extent map invariant: ${message()}`);
    };
    check(this.chunkIds.length >= this.chunkCount, () => "chunkIds has room for every chunk");
    check(this.counts.length >= this.chunkCount, () => "counts has room for every chunk");
    check(this.firstLbas.length >= this.chunkCount, () => "firstLbas has room for every chunk");
    check(this.chunkCount + this.freeCount === this.slotsAllocated, () => "used + free slots = allocated slots");
    const owner = new Int32Array(this.slotsAllocated).fill(-1);
    for (let chunk = 0; chunk < this.chunkCount; chunk += 1) {
      const id = this.chunkIds[chunk]!;
      check(id < this.slotsAllocated, () => `chunk ${chunk} has unallocated id ${id}`);
      check(owner[id] === -1, () => `chunk ${chunk} shares id ${id} with chunk ${owner[id]}`);
      owner[id] = chunk;
      const segment = this.segments[id >>> this.segmentShift];
      check(
        segment !== undefined && ((id & this.segmentMask) + 1) * this.chunkWords <= segment.length,
        () => `chunk ${chunk} id ${id} lies outside its segment`,
      );
    }
    for (let free = 0; free < this.freeCount; free += 1) {
      const id = this.freeIds[free]!;
      check(id < this.slotsAllocated && owner[id] === -1, () => `free id ${id} is unallocated or in use`);
      owner[id] = -2;
    }
    let extents = 0;
    let previousWords: Uint32Array | undefined;
    let previousPosition = 0;
    for (let chunk = 0; chunk < this.chunkCount; chunk += 1) {
      const words = this.wordsOf(chunk);
      const first = this.firstOf(chunk);
      const count = this.counts[chunk]!;
      check(count >= 1 && count <= this.chunkExtentsMax, () => `chunk ${chunk} holds ${count} extents`);
      check(this.firstLbas[chunk] === extentStart(words, first), () => `firstLbas[${chunk}] is its first extent's lba`);
      for (let position = first; position < first + count; position += 1) {
        const start = extentStart(words, position);
        const sectors = extentSectors(words, position);
        const where = (): string => `extent ${start}+${sectors} (chunk ${chunk} index ${position - first})`;
        check(sectors >= 1 && sectors <= EXTENT_SECTORS_MAX, () => `${where()}: length out of range`);
        check(start + sectors <= VOLUME_SECTORS_MAX, () => `${where()}: ends beyond 2^${LBA_BITS}`);
        check(extentObj(words, position) >= 1, () => `${where()}: obj 0`);
        check(extentOffset(words, position) + sectors <= OFFSET_RANGE, () => `${where()}: offset runs past 2^32`);
        if (previousWords !== undefined) {
          const previousStop =
            extentStart(previousWords, previousPosition) + extentSectors(previousWords, previousPosition);
          check(start >= previousStop, () => `${where()}: overlaps or precedes the previous extent`);
          const separate = !mergeable(previousWords, previousPosition, words, position);
          check(separate, () => `${where()}: not merged with previous`);
        }
        previousWords = words;
        previousPosition = position;
        extents += 1;
      }
    }
    check(extents === this.extents, () => `extentCount ${this.extents} != ${extents} extents stored`);
  }

  // ---- storage ----

  private wordsOf(chunk: number): Uint32Array {
    return this.segments[this.chunkIds[chunk]! >>> this.segmentShift]!;
  }

  /** Position of the chunk's first extent within its segment. */
  private firstOf(chunk: number): number {
    return (this.chunkIds[chunk]! & this.segmentMask) * this.chunkExtentsMax;
  }

  private allocateId(): number {
    if (this.freeCount > 0) {
      this.freeCount -= 1;
      return this.freeIds[this.freeCount]!;
    }
    const id = this.slotsAllocated;
    const segmentIndex = id >>> this.segmentShift;
    const slot = id & this.segmentMask;
    const fullWords = (this.segmentMask + 1) * this.chunkWords;
    if (segmentIndex === this.segments.length) {
      // A later segment starts full size; the first starts small so that small maps stay small.
      const words = segmentIndex === 0 ? Math.min(fullWords, SEGMENT_CHUNKS_INITIAL * this.chunkWords) : fullWords;
      this.segments.push(new Uint32Array(words));
    } else {
      const segment = this.segments[segmentIndex]!;
      if ((slot + 1) * this.chunkWords > segment.length) {
        const grown = new Uint32Array(Math.min(fullWords, segment.length * 2));
        grown.set(segment);
        this.segments[segmentIndex] = grown;
      }
    }
    this.slotsAllocated += 1;
    return id;
  }

  private releaseId(id: number): void {
    if (this.freeCount === this.freeIds.length) {
      const grown = new Uint32Array(this.freeIds.length * 2);
      grown.set(this.freeIds);
      this.freeIds = grown;
    }
    this.freeIds[this.freeCount] = id;
    this.freeCount += 1;
  }

  // ---- search ----

  /**
   * Sets seekChunk to the last chunk whose first lba is <= lba (or 0), and seekIndex to the last extent in it that
   * starts at or before lba (or -1 when lba precedes every extent, which only happens in chunk 0). Needs a chunk.
   */
  private seek(lba: number): void {
    const chunk = lastChunkAtOrBefore(this.firstLbas, this.chunkCount, lba);
    this.seekChunk = chunk;
    const upperKey = chunk + 1 < this.chunkCount ? this.firstLbas[chunk + 1]! : Infinity;
    this.seekIndex = lastExtentAtOrBefore(
      this.wordsOf(chunk),
      this.firstOf(chunk),
      this.counts[chunk]!,
      lba,
      this.firstLbas[chunk]!,
      upperKey,
    );
  }

  // ---- removal ----

  /**
   * Unmaps [lba, end): trims the extents that straddle its edges and drops the ones inside. seeked: the caller has
   * just run seek(lba).
   */
  private removeRange(lba: number, end: number, displaced: DisplacedCallback | undefined, seeked: boolean): number {
    if (this.chunkCount === 0) return 0;
    if (!seeked) this.seek(lba);
    let removedSectors = this.cutLeftEdge(lba, end, displaced);
    if (this.cutNextIndex < 0) return removedSectors;
    // Outer edges of trimmed extents whose remnant may now merge with its outer neighbour (see sectorsHighWater).
    const leftRemnantStart = this.cutRemnantStart;
    removedSectors += this.removeFrom(this.seekChunk, this.cutNextIndex, end, displaced);
    const rightRemnantStop = this.cutRemnantStop;
    if (leftRemnantStart >= 0 || rightRemnantStop >= 0) this.mergeRemnants(leftRemnantStart, rightRemnantStop);
    return removedSectors;
  }

  /**
   * The extent at the seek position, if it straddles lba: keeps its part before lba. Returns the sectors removed.
   * Sets cutNextIndex to the first index in seekChunk that starts at or after lba, or -1 when the range lay inside
   * that one extent (then split in two and done), and cutRemnantStart to the trimmed extent's start (or -1).
   */
  private cutLeftEdge(lba: number, end: number, displaced: DisplacedCallback | undefined): number {
    const chunk = this.seekChunk;
    const index = this.seekIndex;
    this.cutRemnantStart = -1;
    this.cutNextIndex = index < 0 ? 0 : index;
    if (index < 0) return 0;
    const words = this.wordsOf(chunk);
    const position = this.firstOf(chunk) + index;
    const start = extentStart(words, position);
    const stop = start + extentSectors(words, position);
    if (stop <= lba) {
      this.cutNextIndex = index + 1;
      return 0;
    }
    if (start >= lba) return 0;
    const obj = extentObj(words, position);
    if (stop > end) {
      // The range lies inside one extent: keep [start, lba) and [end, stop).
      const removedSectors = end - lba;
      displaced?.(obj, removedSectors);
      setExtentSectors(words, position, lba - start);
      const offset = extentOffset(words, position);
      this.insertAt(chunk, index + 1, end, stop - end, obj, offset + (end - start));
      this.mergeRemnants(start, stop);
      this.cutNextIndex = -1;
      return removedSectors;
    }
    displaced?.(obj, stop - lba);
    setExtentSectors(words, position, lba - start);
    this.cutRemnantStart = start;
    this.cutNextIndex = index + 1;
    return stop - lba;
  }

  /**
   * Drops or trims every extent from (chunk, index) on (each starts at or after the range's lba) up to end. Returns
   * the sectors removed; sets cutRemnantStop to the stop of an extent trimmed at end (or -1).
   */
  private removeFrom(chunk: number, index: number, end: number, displaced: DisplacedCallback | undefined): number {
    this.cutRemnantStop = -1;
    let removedSectors = 0;
    const firstChunk = chunk;
    let lastChunk = chunk;
    let extentsRemoved = 0;
    for (; chunk < this.chunkCount; chunk += 1, index = 0) {
      lastChunk = chunk;
      const words = this.wordsOf(chunk);
      const first = this.firstOf(chunk);
      const count = this.counts[chunk]!;
      let stopIndex = index;
      let stoppedInside = false;
      while (stopIndex < count) {
        const position = first + stopIndex;
        const start = extentStart(words, position);
        if (start >= end) {
          stoppedInside = true;
          break;
        }
        const sectors = extentSectors(words, position);
        const stop = start + sectors;
        if (stop <= end) {
          removedSectors += sectors;
          displaced?.(extentObj(words, position), sectors);
          stopIndex += 1;
        } else {
          const cut = end - start;
          removedSectors += cut;
          displaced?.(extentObj(words, position), cut);
          setExtentStart(words, position, end);
          setExtentSectors(words, position, sectors - cut);
          words[(position << 2) + 3] = extentOffset(words, position) + cut;
          this.cutRemnantStop = stop;
          stoppedInside = true;
          break;
        }
      }
      const removed = stopIndex - index;
      if (removed > 0) {
        words.copyWithin((first + index) << 2, (first + stopIndex) << 2, (first + count) << 2);
        this.counts[chunk] = count - removed;
        this.extents -= removed;
        extentsRemoved += removed;
      }
      if (index === 0 && this.counts[chunk]! > 0) this.firstLbas[chunk] = extentStart(words, first);
      if (stoppedInside) break;
    }
    // Only chunks that lost extents can be empty or newly sparse; a new chunk holding one appended extent is
    // sparse on purpose and must not be rebalanced by a trim that removed nothing.
    if (extentsRemoved > 0) this.dropEmptyChunks(firstChunk, lastChunk);
    return removedSectors;
  }

  /**
   * After a trim left remnants [leftRemnantStart, ...) and [..., rightRemnantStop), merge each with its outer
   * neighbour if they had been kept apart only by EXTENT_SECTORS_MAX and now fit together (invariant 5).
   */
  private mergeRemnants(leftRemnantStart: number, rightRemnantStop: number): void {
    if (this.sectorsHighWater * 2 <= EXTENT_SECTORS_MAX) return;
    if (rightRemnantStop >= 0) this.mergeAt(rightRemnantStop);
    if (leftRemnantStart >= 0) this.mergeAt(leftRemnantStart);
  }

  /** Merges the extent ending at boundary with the one starting there, if they are contiguous and fit together. */
  private mergeAt(boundary: number): void {
    if (boundary === 0 || this.chunkCount === 0) return;
    this.seek(boundary - 1);
    const chunk = this.seekChunk;
    const index = this.seekIndex;
    if (index < 0) return;
    const words = this.wordsOf(chunk);
    const position = this.firstOf(chunk) + index;
    let nextChunk = chunk;
    let nextIndex = index + 1;
    if (nextIndex >= this.counts[chunk]!) {
      nextChunk += 1;
      nextIndex = 0;
      if (nextChunk >= this.chunkCount) return;
    }
    const nextWords = this.wordsOf(nextChunk);
    const nextPosition = this.firstOf(nextChunk) + nextIndex;
    if (!mergeable(words, position, nextWords, nextPosition)) return;
    const sectors = extentSectors(words, position) + extentSectors(nextWords, nextPosition);
    setExtentSectors(words, position, sectors);
    this.noteSectors(sectors);
    this.removeExtent(nextChunk, nextIndex);
  }

  /** True if the extent at (chunk, index) could merge with the extent before or after it. */
  private mergeableWithNeighbours(chunk: number, index: number): boolean {
    const words = this.wordsOf(chunk);
    const position = this.firstOf(chunk) + index;
    if (index > 0) {
      if (mergeable(words, position - 1, words, position)) return true;
    } else if (chunk > 0) {
      const previousPosition = this.firstOf(chunk - 1) + this.counts[chunk - 1]! - 1;
      if (mergeable(this.wordsOf(chunk - 1), previousPosition, words, position)) return true;
    }
    if (index + 1 < this.counts[chunk]!) return mergeable(words, position, words, position + 1);
    if (chunk + 1 < this.chunkCount) {
      return mergeable(words, position, this.wordsOf(chunk + 1), this.firstOf(chunk + 1));
    }
    return false;
  }

  /** Removes one extent, then drops its chunk if empty or rebalances it if sparse. */
  private removeExtent(chunk: number, index: number): void {
    const words = this.wordsOf(chunk);
    const first = this.firstOf(chunk);
    const count = this.counts[chunk]!;
    words.copyWithin((first + index) << 2, (first + index + 1) << 2, (first + count) << 2);
    this.counts[chunk] = count - 1;
    this.extents -= 1;
    if (count === 1) {
      this.removeChunks(chunk, 1);
      return;
    }
    if (index === 0) this.firstLbas[chunk] = extentStart(words, first);
    this.fixUnderflow(chunk);
  }

  /** Removes the empty chunks among [firstChunk, lastChunk] and rebalances the survivors there if sparse. */
  private dropEmptyChunks(firstChunk: number, lastChunk: number): void {
    // Only the first and last chunk of the range can keep extents; those between were wholly inside the range.
    const firstEmpty = this.counts[firstChunk] === 0;
    const lastEmpty = lastChunk !== firstChunk && this.counts[lastChunk] === 0;
    const dropFrom = firstEmpty ? firstChunk : firstChunk + 1;
    const dropTo = lastChunk !== firstChunk && !lastEmpty ? lastChunk : lastChunk + 1; // exclusive
    if (dropTo > dropFrom) this.removeChunks(dropFrom, dropTo - dropFrom);
    // Survivors are now at firstChunk (if kept) and the position after it (if the last chunk was kept).
    // Fix the later one first: fixing a chunk only moves or removes chunks at or after its left neighbour.
    if (lastChunk !== firstChunk && !lastEmpty) this.fixUnderflow(firstEmpty ? firstChunk : firstChunk + 1);
    if (!firstEmpty && firstChunk < this.chunkCount) this.fixUnderflow(firstChunk);
  }

  /** If chunk is sparse, merge it with a neighbour or even the two out. */
  private fixUnderflow(chunk: number): void {
    if (this.counts[chunk]! >= this.chunkExtentsMin || this.chunkCount === 1) return;
    const left = chunk + 1 < this.chunkCount ? chunk : chunk - 1;
    const right = left + 1;
    const total = this.counts[left]! + this.counts[right]!;
    if (total <= this.chunkMergeExtentsMax) {
      this.moveHeadToPrevious(right, this.counts[right]!);
      this.removeChunks(right, 1);
      return;
    }
    const target = Math.floor(total / 2);
    const leftCount = this.counts[left]!;
    if (leftCount < target) this.moveHeadToPrevious(right, target - leftCount);
    else if (leftCount > target) this.moveTailToNext(left, leftCount - target);
  }

  // ---- insertion ----

  private noteSectors(sectors: number): void {
    if (sectors > this.sectorsHighWater) this.sectorsHighWater = sectors;
  }

  /** Inserts an unmapped range in pieces of at most EXTENT_SECTORS_MAX sectors. */
  private insertPieces(lba: number, sectors: number, obj: number, offset: number): void {
    const end = lba + sectors;
    while (lba < end) {
      const pieceSectors = Math.min(end - lba, EXTENT_SECTORS_MAX);
      this.insertExtent(lba, pieceSectors, obj, offset);
      lba += pieceSectors;
      offset += pieceSectors;
    }
  }

  /** Inserts [lba, lba+sectors), which must be unmapped, merging it with contiguous neighbours when they fit. */
  private insertExtent(lba: number, sectors: number, obj: number, offset: number): void {
    this.noteSectors(sectors);
    if (this.chunkCount === 0) {
      this.insertChunks(0, 1);
      this.insertAt(0, 0, lba, sectors, obj, offset);
      return;
    }
    this.seek(lba);
    this.insertExtentAtSeek(lba, sectors, obj, offset);
  }

  /** insertExtent() for a non-empty map where seek(lba) has just run. */
  private insertExtentAtSeek(lba: number, sectors: number, obj: number, offset: number): void {
    this.noteSectors(sectors);
    const chunk = this.seekChunk;
    const index = this.seekIndex;
    const words = this.wordsOf(chunk);
    const position = this.firstOf(chunk) + index;
    const end = lba + sectors;
    let mergedSectors = -1;
    if (index >= 0) {
      const previousSectors = extentSectors(words, position);
      if (
        extentStart(words, position) + previousSectors === lba &&
        extentObj(words, position) === obj &&
        extentOffset(words, position) + previousSectors === offset &&
        previousSectors + sectors <= EXTENT_SECTORS_MAX
      ) {
        mergedSectors = previousSectors + sectors;
        setExtentSectors(words, position, mergedSectors);
        this.noteSectors(mergedSectors);
      }
    }
    let nextChunk = chunk;
    let nextIndex = index + 1;
    if (nextIndex >= this.counts[chunk]!) {
      nextChunk += 1;
      nextIndex = 0;
    }
    if (nextChunk < this.chunkCount) {
      const nextWords = this.wordsOf(nextChunk);
      const nextPosition = this.firstOf(nextChunk) + nextIndex;
      const nextSectors = extentSectors(nextWords, nextPosition);
      if (
        extentStart(nextWords, nextPosition) === end &&
        extentObj(nextWords, nextPosition) === obj &&
        extentOffset(nextWords, nextPosition) === offset + sectors
      ) {
        if (mergedSectors >= 0) {
          if (mergedSectors + nextSectors <= EXTENT_SECTORS_MAX) {
            setExtentSectors(words, position, mergedSectors + nextSectors);
            this.noteSectors(mergedSectors + nextSectors);
            this.removeExtent(nextChunk, nextIndex);
          }
        } else if (sectors + nextSectors <= EXTENT_SECTORS_MAX) {
          setExtentStart(nextWords, nextPosition, lba);
          setExtentSectors(nextWords, nextPosition, sectors + nextSectors);
          nextWords[(nextPosition << 2) + 3] = offset;
          this.noteSectors(sectors + nextSectors);
          if (nextIndex === 0) this.firstLbas[nextChunk] = lba;
          return;
        }
      }
    }
    if (mergedSectors >= 0) return;
    this.insertAt(chunk, index + 1, lba, sectors, obj, offset);
  }

  /** Inserts an extent at `index` of chunk (where it belongs in order), making room first if the chunk is full. */
  private insertAt(chunk: number, index: number, lba: number, sectors: number, obj: number, offset: number): void {
    const count = this.counts[chunk]!;
    const max = this.chunkExtentsMax;
    if (count < max) {
      const words = this.wordsOf(chunk);
      const position = this.firstOf(chunk) + index;
      if (index < count) words.copyWithin((position + 1) << 2, position << 2, (position - index + count) << 2);
      setExtent(words, position, lba, sectors, obj, offset);
      this.counts[chunk] = count + 1;
      if (index === 0) this.firstLbas[chunk] = lba;
      this.extents += 1;
      return;
    }
    if (index === count) {
      // Appending to a full chunk: use the next chunk's front if it has room, else start a new chunk, which keeps
      // this one full (sorted loads fill chunks completely instead of leaving halves behind).
      if (!(chunk + 1 < this.chunkCount && this.counts[chunk + 1]! < max)) this.insertChunks(chunk + 1, 1);
      this.insertAt(chunk + 1, 0, lba, sectors, obj, offset);
      return;
    }
    // Full, inserting inside: lend to a neighbour with room for at least two (so both keep room), else split.
    if (chunk + 1 < this.chunkCount && this.counts[chunk + 1]! <= max - 2) {
      this.moveTailToNext(chunk, Math.ceil((max - this.counts[chunk + 1]!) / 2));
    } else if (chunk > 0 && this.counts[chunk - 1]! <= max - 2) {
      this.moveHeadToPrevious(chunk, Math.ceil((max - this.counts[chunk - 1]!) / 2));
    } else {
      this.insertChunks(chunk + 1, 1);
      this.moveTailToNext(chunk, count >>> 1);
    }
    // The extent now belongs in a chunk with room; find it again.
    this.seek(lba);
    const target = this.seekChunk;
    assert(this.counts[target]! < max, "extent map: insert target has room after rebalancing");
    this.insertAt(target, this.seekIndex + 1, lba, sectors, obj, offset);
  }

  // ---- chunk moves ----

  /** Moves the last `moved` extents of chunk to the front of chunk+1. */
  private moveTailToNext(chunk: number, moved: number): void {
    const sourceCount = this.counts[chunk]!;
    const targetCount = this.counts[chunk + 1]!;
    assert(moved >= 1 && moved < sourceCount && targetCount + moved <= this.chunkExtentsMax, "extent map: tail move");
    const source = this.wordsOf(chunk);
    const target = this.wordsOf(chunk + 1);
    const sourceFirst = this.firstOf(chunk);
    const targetFirst = this.firstOf(chunk + 1);
    target.copyWithin((targetFirst + moved) << 2, targetFirst << 2, (targetFirst + targetCount) << 2);
    const from = (sourceFirst + sourceCount - moved) << 2;
    const to = targetFirst << 2;
    const words = moved << 2;
    if (source === target) source.copyWithin(to, from, from + words);
    else for (let word = 0; word < words; word += 1) target[to + word] = source[from + word]!;
    this.counts[chunk] = sourceCount - moved;
    this.counts[chunk + 1] = targetCount + moved;
    this.firstLbas[chunk + 1] = extentStart(target, targetFirst);
  }

  /** Moves the first `moved` extents of chunk to the end of chunk-1 (all of them when merging). */
  private moveHeadToPrevious(chunk: number, moved: number): void {
    const sourceCount = this.counts[chunk]!;
    const targetCount = this.counts[chunk - 1]!;
    assert(moved >= 1 && moved <= sourceCount && targetCount + moved <= this.chunkExtentsMax, "extent map: head move");
    const source = this.wordsOf(chunk);
    const target = this.wordsOf(chunk - 1);
    const sourceFirst = this.firstOf(chunk);
    const targetFirst = this.firstOf(chunk - 1);
    const from = sourceFirst << 2;
    const to = (targetFirst + targetCount) << 2;
    const words = moved << 2;
    if (source === target) source.copyWithin(to, from, from + words);
    else for (let word = 0; word < words; word += 1) target[to + word] = source[from + word]!;
    source.copyWithin(from, from + words, (sourceFirst + sourceCount) << 2);
    this.counts[chunk] = sourceCount - moved;
    this.counts[chunk - 1] = targetCount + moved;
    if (sourceCount > moved) this.firstLbas[chunk] = extentStart(source, sourceFirst);
  }

  /** Inserts `inserted` empty chunks at position `at`; the caller fills them before the public call returns. */
  private insertChunks(at: number, inserted: number): void {
    const needed = this.chunkCount + inserted;
    if (needed > this.counts.length) {
      const capacity = Math.max(needed, this.counts.length * 2);
      const chunkIds = new Uint32Array(capacity);
      chunkIds.set(this.chunkIds.subarray(0, this.chunkCount));
      const counts = new Uint32Array(capacity);
      counts.set(this.counts.subarray(0, this.chunkCount));
      const firstLbas = new Float64Array(capacity);
      firstLbas.set(this.firstLbas.subarray(0, this.chunkCount));
      this.chunkIds = chunkIds;
      this.counts = counts;
      this.firstLbas = firstLbas;
    }
    this.chunkIds.copyWithin(at + inserted, at, this.chunkCount);
    this.counts.copyWithin(at + inserted, at, this.chunkCount);
    this.firstLbas.copyWithin(at + inserted, at, this.chunkCount);
    for (let chunk = at; chunk < at + inserted; chunk += 1) {
      this.chunkIds[chunk] = this.allocateId();
      this.counts[chunk] = 0;
      this.firstLbas[chunk] = 0;
    }
    this.chunkCount = needed;
  }

  /** Removes `removed` chunks at position `at` (their extents must already be gone or moved). */
  private removeChunks(at: number, removed: number): void {
    for (let chunk = at; chunk < at + removed; chunk += 1) this.releaseId(this.chunkIds[chunk]!);
    this.chunkIds.copyWithin(at, at + removed, this.chunkCount);
    this.counts.copyWithin(at, at + removed, this.chunkCount);
    this.firstLbas.copyWithin(at, at + removed, this.chunkCount);
    this.chunkCount -= removed;
  }
}
