// The superblock object (`<prefix>`, type SUPER, seq 0): volume size, the newest checkpoints, clone base and
// snapshots, plus our extension's next object seq. Spec: docs/format.md, "Superblock object".
//
// Layout we write (one 4 KiB header area unless the arrays need more; data_sectors = 0):
//   0   common header (44)          76  extension block (68)          144  ckpts, clone_info, snaps, skips, snapx,
//   44  super sub-header (32)                                              clone_refs, zeros
// Ownership fields (docs/architecture.md, "Ownership and fencing"): owner_epoch, the lease epoch of the owner that
// wrote this superblock, and the skipped ranges: seqs no owner ever writes (a new ownership starts its log above
// every name that may exist), sorted, disjoint, each below next_seq. Earlier lsvd versions wrote a 28-byte
// extension block (next_seq only, arrays from 104): it decodes with ownerEpoch 0 and no skipped ranges; and a
// 44-byte block (arrays from 120): it decodes without snapshot times, clone registrations and rollback seq; and a
// 60-byte block (arrays from 136): without rollback seq.
// Snapshot facts (docs/format.md): each snapshot's creation time (`snapx`) and the clones registered as made from
// it (`clone_ref`) live in the extension; each names a snapshot the v1 snaps area lists.
// The decoder also reads reference-written superblocks (no extension: nextSeq = 0), and our own superblocks after the
// reference (lsvd-rbd) rewrote them in place, which it does at every checkpoint: it reads the superblock, sets
// ckpts_offset to 76 (the end of its sub-header) and ckpts_len, writes its list of at most 3 checkpoint seqs at 76 and
// writes the buffer back, leaving every other byte as it was, the v1 crc included (now stale). See
// undoReferenceRewrite: the bytes it did not touch are verified by the CRCs we wrote; the list it wrote has no
// checksum, so the caller must check what it names (recovery refuses a list naming a checkpoint that is missing or
// does not decode: checkpointsChecksummed false).

import { CLONE_REFS_MAX, PAGE_BYTES, SECTOR_BYTES, SKIPPED_RANGES_MAX, SNAPSHOTS_MAX, VOLUME_SECTORS_MAX } from "../constants.ts";
import { CorruptionError, assert } from "../errors.ts";
import {
  SHORT_NAME_BYTES_MAX,
  checkSpan,
  corrupt,
  decodeUtf8,
  encodeUtf8,
  getU64,
  getUuid,
  isSafeU64,
  isU32,
  isUuid,
  layout,
  roundUp,
  setU64,
  setUuid,
  viewOf,
} from "./_codec.ts";
import {
  EXT_MAGIC,
  EXT_PREAMBLE_FIELDS,
  EXT_VERSION,
  encodeExtensionPreamble,
  extensionPlaceOf as sharedExtensionPlaceOf,
  hasExtension,
  sealObjectHeader,
  verifyObjectHeader,
  type ExtensionPlace,
  type VariablePart,
} from "./_object_ext.ts";
import { COMMON_HEADER, COMMON_HEADER_BYTES, ObjectType, decodeCommonHeader, encodeCommonHeader } from "./object_header.ts";

export interface SuperblockObject {
  volUuid: string;
  volSectors: number;
  /** Checkpoint object seqs, oldest first (newest last). */
  checkpoints: number[];
  /** Objects with seq <= lastSeq are read from the base volume at prefix baseName (or its own bases). */
  clone: { baseUuid: string; lastSeq: number; baseName: string } | null;
  snapshots: { seq: number; name: string }[];
  /** Extension: the next object seq to allocate; 0 = unknown (plain v1 superblock). */
  nextSeq: number;
  /** Extension: the lease epoch of the owner that wrote this superblock; 0 = none yet (or an older superblock). */
  ownerEpoch: number;
  /** Extension: seqs first..last (inclusive) that no owner ever writes; ascending, disjoint. */
  skipped: SeqRange[];
  /** Extension: when snapshots were made, one entry per snapshot seq at most (snapshots made elsewhere have none). */
  snapshotTimes: SnapshotTime[];
  /** Extension: clones registered as made from this volume's snapshots (some may be stale: see docs/format.md). */
  cloneRefs: CloneRef[];
  /** Extension: the seq of the newest rollback checkpoint (the content restarts there; fsck); 0: never rolled back. */
  rollbackSeq: number;
}

export interface SnapshotTime {
  seq: number;
  /** Milliseconds since the Unix epoch. */
  createdMs: number;
}

/** A clone made from the snapshot at snapSeq: the clone's vol_uuid and its prefix on the same backend. */
export interface CloneRef {
  snapSeq: number;
  cloneUuid: string;
  name: string;
}

/** Object seqs first..last, inclusive. */
export interface SeqRange {
  first: number;
  last: number;
}

/** A new volume's superblock: no checkpoint, no owner yet, the log starts at seq 1. */
export function newSuperblock(volUuid: string, volSectors: number): SuperblockObject {
  return { volUuid, volSectors, checkpoints: [], clone: null, snapshots: [], nextSeq: 1, ownerEpoch: 0, skipped: [], snapshotTimes: [], cloneRefs: [], rollbackSeq: 0 };
}

/** The range holding seq, or null. */
export function skippedRangeOf(skipped: readonly SeqRange[], seq: number): SeqRange | null {
  for (const range of skipped) if (range.first <= seq && seq <= range.last) return range;
  return null;
}

const SUPER_SUB = layout(
  [
    ["volSectors", 8], // u64 volume size in sectors; 1 .. VOLUME_SECTORS_MAX
    ["ckptsOffset", 4], // u32 checkpoint seqs; len % 4 == 0
    ["ckptsLen", 4],
    ["clonesOffset", 4], // zero or one clone_info; len == 22 + name_len
    ["clonesLen", 4],
    ["snapsOffset", 4], // snap_info entries back to back; must fill len exactly
    ["snapsLen", 4],
  ],
  COMMON_HEADER_BYTES,
);
// A description of the reference's format says "40 bytes", but its field list (and the reference's packed super_hdr)
// add up to 32: u64 vol_size and three offset/length pairs. The fields are what v1 readers parse, so 32 it is
// (docs/format.md, "Superblock object").
export const SUPER_SUBHEADER_BYTES = 32;
assert(SUPER_SUB.BYTES === SUPER_SUBHEADER_BYTES, "the v1 super sub-header is 32 bytes");

const SUPER_EXT = layout(
  [
    ...EXT_PREAMBLE_FIELDS,
    ["nextSeq", 8], // u64 <= 2^32
    ["ownerEpoch", 8], // u64 (from here on: absent in the 28-byte block of earlier versions)
    ["skipsOffset", 4], // seq_range {u32 first, u32 last} entries; len % 8 == 0
    ["skipsLen", 4],
    ["snapxOffset", 4], // snapx entries {u32 seq, u64 created_ms}; len % 12 == 0 (absent in the 44-byte block)
    ["snapxLen", 4],
    ["cloneRefsOffset", 4], // clone_ref entries {u32 snap seq, 16-byte vol_uuid, u8 name_len, name}; fill len
    ["cloneRefsLen", 4],
    ["rollbackSeq", 8], // u64 < next_seq (when next_seq != 0), <= 2^32; 0: never rolled back
  ],
  COMMON_HEADER_BYTES + SUPER_SUBHEADER_BYTES,
);
export const SUPER_EXTENSION_BYTES = 68;
assert(SUPER_EXT.BYTES === SUPER_EXTENSION_BYTES, "the superblock extension block is 68 bytes");
const EXT_PLACE: ExtensionPlace = { offset: SUPER_EXT.extMagic, bytes: SUPER_EXTENSION_BYTES };
/** The block of the ownership versions: up to the skipped ranges. Decoded, never written. */
export const SUPER_EXTENSION_V2_BYTES = 44;
const EXT_PLACE_V2: ExtensionPlace = { offset: SUPER_EXT.extMagic, bytes: SUPER_EXTENSION_V2_BYTES };
assert(SUPER_EXT.snapxOffset === EXT_PLACE_V2.offset + SUPER_EXTENSION_V2_BYTES, "the snapshot fields follow the ownership block");
/** The block earlier lsvd versions wrote: preamble and next_seq. Decoded, never written. */
export const SUPER_EXTENSION_V1_BYTES = 28;
const EXT_PLACE_V1: ExtensionPlace = { offset: SUPER_EXT.extMagic, bytes: SUPER_EXTENSION_V1_BYTES };
assert(SUPER_EXT.ownerEpoch === EXT_PLACE_V1.offset + SUPER_EXTENSION_V1_BYTES, "the ownership fields follow the earlier block");
/** The block of the first snapshot version: up to the clone registrations, no rollback_seq. Decoded, never written. */
export const SUPER_EXTENSION_V3_BYTES = 60;
const EXT_PLACE_V3: ExtensionPlace = { offset: SUPER_EXT.extMagic, bytes: SUPER_EXTENSION_V3_BYTES };
assert(SUPER_EXT.rollbackSeq === EXT_PLACE_V3.offset + SUPER_EXTENSION_V3_BYTES, "rollback_seq follows the first snapshot block");
/** Every block length ever written, oldest first (extensionPlaceOf). */
const EXT_PLACES: readonly ExtensionPlace[] = [EXT_PLACE_V1, EXT_PLACE_V2, EXT_PLACE_V3, EXT_PLACE];
/** Where our variable parts start: 144 (136, 120 or 104 in superblocks of earlier versions). */
const SUPER_FIXED_BYTES = EXT_PLACE.offset + EXT_PLACE.bytes;
assert(SUPER_FIXED_BYTES === 144, "superblock fixed part is 144 bytes");
const SEQ_RANGE_BYTES = 8;
const SNAPX_BYTES = 12;
// clone_ref: u32 snap seq, vol_uuid[16], u8 name_len, name (no NUL).
const CLONE_REF = layout([["snapSeq", 4], ["cloneUuid", 16], ["nameLen", 1]]);
assert(CLONE_REF.BYTES === 21, "clone_ref is 21 bytes before its name");

/** Where the reference writes its checkpoint list when it rewrites a superblock: right after its sub-header. */
export const REFERENCE_CKPTS_OFFSET = COMMON_HEADER_BYTES + SUPER_SUBHEADER_BYTES;
/** The reference keeps the newest 3 checkpoints; so its list never reaches our header_crc32c (76 + 12 = 88). */
export const REFERENCE_CKPTS_MAX = 3;
assert(REFERENCE_CKPTS_OFFSET === SUPER_EXT.extMagic, "the reference's list overwrites our extension preamble");
assert(REFERENCE_CKPTS_OFFSET + 4 * REFERENCE_CKPTS_MAX <= SUPER_EXT.headerCrc32c, "the reference's list leaves header_crc32c intact");

// clone_info: vol_uuid[16], u32 last_seq, u8 name_len, name, NUL.
const CLONE = layout([["baseUuid", 16], ["lastSeq", 4], ["nameLen", 1]]);
assert(CLONE.BYTES === 21, "clone_info is 21 bytes before its name");
// snap_info: u32 seq, u8 name_len, name.
const SNAP = layout([["seq", 4], ["nameLen", 1]]);
assert(SNAP.BYTES === 5, "snap_info is 5 bytes before its name");

/** The header area holds the whole object; at least one page so the data area would be page aligned. */
export const SUPERBLOCK_HEADER_SECTORS_MIN = PAGE_BYTES / SECTOR_BYTES;

function checkSuperblock(s: SuperblockObject): void {
  assert(isUuid(s.volUuid), "superblock volUuid is a UUID");
  assert(Number.isSafeInteger(s.volSectors) && s.volSectors > 0 && s.volSectors <= VOLUME_SECTORS_MAX, "volSectors");
  for (const seq of s.checkpoints) if (!(isU32(seq) && seq > 0)) assert(false, `checkpoint seq ${seq} is a positive uint32`);
  if (s.clone !== null) {
    assert(isUuid(s.clone.baseUuid), "clone baseUuid is a UUID");
    assert(isU32(s.clone.lastSeq), "clone lastSeq is a uint32");
  }
  for (const snap of s.snapshots) if (!isU32(snap.seq)) assert(false, `snapshot seq ${snap.seq} is a uint32`);
  assert(isSafeU64(s.nextSeq) && s.nextSeq <= 2 ** 32, "nextSeq is 0 .. 2^32 (object seqs are uint32)");
  assert(isSafeU64(s.ownerEpoch), "ownerEpoch is a u64");
  const problem = skippedProblem(s);
  assert(problem === null, `superblock skipped ranges: ${problem}`);
  const snapProblem = snapshotFactsProblem(s);
  assert(snapProblem === null, `superblock snapshots: ${snapProblem}`);
}

/** Why the snapshot list, times and clone registrations are not well formed, or null. Shared by encode and decode. */
function snapshotFactsProblem(s: SuperblockObject): string | null {
  if (s.snapshots.length > SNAPSHOTS_MAX) return `${s.snapshots.length} snapshots, more than ${SNAPSHOTS_MAX}`;
  if (s.cloneRefs.length > CLONE_REFS_MAX) return `${s.cloneRefs.length} clone registrations, more than ${CLONE_REFS_MAX}`;
  const snapSeqs = new Set(s.snapshots.map((snap) => snap.seq));
  const timed = new Set<number>();
  for (const { seq, createdMs } of s.snapshotTimes) {
    if (!snapSeqs.has(seq)) return `a creation time names seq ${seq}, which no snapshot has`;
    if (timed.has(seq)) return `two creation times for snapshot seq ${seq}`;
    if (!isSafeU64(createdMs)) return `creation time ${createdMs} of snapshot seq ${seq} is not a u64`;
    timed.add(seq);
  }
  for (const ref of s.cloneRefs) {
    if (!snapSeqs.has(ref.snapSeq)) return `clone ${ref.name} is registered on seq ${ref.snapSeq}, which no snapshot has`;
    if (!isUuid(ref.cloneUuid)) return `clone ${ref.name} has no valid vol_uuid`;
  }
  for (const snap of s.snapshots) if (skippedRangeOf(s.skipped, snap.seq) !== null) return `snapshot ${snap.name} (seq ${snap.seq}) lies in a skipped range`;
  if (!(isSafeU64(s.rollbackSeq) && s.rollbackSeq < 2 ** 32)) return `rollback_seq ${s.rollbackSeq} is not a uint32`;
  if (s.nextSeq !== 0 && s.rollbackSeq >= s.nextSeq) return `rollback_seq ${s.rollbackSeq} is not below next_seq ${s.nextSeq}`;
  return null;
}

/** Why the skipped ranges are not well formed (see the file comment), or null. Shared by encode and decode. */
function skippedProblem(s: SuperblockObject): string | null {
  if (s.skipped.length > SKIPPED_RANGES_MAX) return `${s.skipped.length} ranges, more than ${SKIPPED_RANGES_MAX}`;
  let previousLast = 0;
  for (const { first, last } of s.skipped) {
    if (!(isU32(first) && isU32(last) && first >= 1 && first <= last)) return `range ${first}..${last} is not 1 <= first <= last < 2^32`;
    if (first <= previousLast) return `range ${first}..${last} is not above the previous one`;
    if (s.nextSeq !== 0 && last >= s.nextSeq) return `range ${first}..${last} reaches next_seq ${s.nextSeq}`;
    previousLast = last;
  }
  for (const seq of s.checkpoints) if (skippedRangeOf(s.skipped, seq) !== null) return `checkpoint ${seq} lies in a skipped range`;
  return null;
}

function shortName(name: string): Uint8Array {
  const bytes = encodeUtf8(name);
  assert(bytes.byteLength <= SHORT_NAME_BYTES_MAX, `name "${name}" fits in ${SHORT_NAME_BYTES_MAX} UTF-8 bytes`);
  return bytes;
}

export function encodeSuperblock(s: SuperblockObject): Uint8Array {
  checkSuperblock(s);
  const baseName = s.clone === null ? null : shortName(s.clone.baseName);
  const snapNames = s.snapshots.map((snap) => shortName(snap.name));
  const ckptsOffset = SUPER_FIXED_BYTES;
  const ckptsLen = 4 * s.checkpoints.length;
  const clonesOffset = ckptsOffset + ckptsLen;
  const clonesLen = baseName === null ? 0 : CLONE.BYTES + baseName.byteLength + 1;
  const snapsOffset = clonesOffset + clonesLen;
  const snapsLen = snapNames.reduce((sum, name) => sum + SNAP.BYTES + name.byteLength, 0);
  const skipsOffset = snapsOffset + snapsLen;
  const skipsLen = SEQ_RANGE_BYTES * s.skipped.length;
  const snapxOffset = skipsOffset + skipsLen;
  const snapxLen = SNAPX_BYTES * s.snapshotTimes.length;
  const refNames = s.cloneRefs.map((ref) => shortName(ref.name));
  const cloneRefsOffset = snapxOffset + snapxLen;
  const cloneRefsLen = refNames.reduce((sum, name) => sum + CLONE_REF.BYTES + name.byteLength, 0);
  const hdrBytes = Math.max(roundUp(cloneRefsOffset + cloneRefsLen, PAGE_BYTES), PAGE_BYTES);

  const header = new Uint8Array(hdrBytes);
  const view = viewOf(header);
  encodeCommonHeader(header, {
    volUuid: s.volUuid,
    type: ObjectType.Super,
    seq: 0,
    hdrSectors: hdrBytes / SECTOR_BYTES,
    dataSectors: 0,
  });
  setU64(view, SUPER_SUB.volSectors, s.volSectors);
  view.setUint32(SUPER_SUB.ckptsOffset, ckptsOffset, true);
  view.setUint32(SUPER_SUB.ckptsLen, ckptsLen, true);
  view.setUint32(SUPER_SUB.clonesOffset, clonesOffset, true);
  view.setUint32(SUPER_SUB.clonesLen, clonesLen, true);
  view.setUint32(SUPER_SUB.snapsOffset, snapsOffset, true);
  view.setUint32(SUPER_SUB.snapsLen, snapsLen, true);
  encodeExtensionPreamble(header, EXT_PLACE);
  setU64(view, SUPER_EXT.nextSeq, s.nextSeq);
  setU64(view, SUPER_EXT.ownerEpoch, s.ownerEpoch);
  view.setUint32(SUPER_EXT.skipsOffset, skipsOffset, true);
  view.setUint32(SUPER_EXT.skipsLen, skipsLen, true);
  s.skipped.forEach((range, i) => {
    view.setUint32(skipsOffset + SEQ_RANGE_BYTES * i, range.first, true);
    view.setUint32(skipsOffset + SEQ_RANGE_BYTES * i + 4, range.last, true);
  });
  encodeSnapshotFacts(header, s, { snapxOffset, snapxLen, cloneRefsOffset, cloneRefsLen }, refNames);

  s.checkpoints.forEach((seq, i) => view.setUint32(ckptsOffset + 4 * i, seq, true));
  if (s.clone !== null && baseName !== null) {
    setUuid(header, clonesOffset + CLONE.baseUuid, s.clone.baseUuid);
    view.setUint32(clonesOffset + CLONE.lastSeq, s.clone.lastSeq, true);
    view.setUint8(clonesOffset + CLONE.nameLen, baseName.byteLength);
    header.set(baseName, clonesOffset + CLONE.BYTES); // the NUL after it is already 0
  }
  let position = snapsOffset;
  s.snapshots.forEach((snap, i) => {
    const name = snapNames[i]!;
    view.setUint32(position + SNAP.seq, snap.seq, true);
    view.setUint8(position + SNAP.nameLen, name.byteLength);
    header.set(name, position + SNAP.BYTES);
    position += SNAP.BYTES + name.byteLength;
  });
  assert(position === snapsOffset + snapsLen, "snapshots fill snaps_len");
  sealObjectHeader(header, EXT_PLACE, 0);
  return header;
}

/** The extension's snapshot parts: the pointer pairs, the snapx entries, the clone_ref entries. */
function encodeSnapshotFacts(
  header: Uint8Array,
  s: SuperblockObject,
  at: { snapxOffset: number; snapxLen: number; cloneRefsOffset: number; cloneRefsLen: number },
  refNames: Uint8Array[],
): void {
  const view = viewOf(header);
  view.setUint32(SUPER_EXT.snapxOffset, at.snapxOffset, true);
  view.setUint32(SUPER_EXT.snapxLen, at.snapxLen, true);
  view.setUint32(SUPER_EXT.cloneRefsOffset, at.cloneRefsOffset, true);
  view.setUint32(SUPER_EXT.cloneRefsLen, at.cloneRefsLen, true);
  setU64(view, SUPER_EXT.rollbackSeq, s.rollbackSeq);
  s.snapshotTimes.forEach((time, i) => {
    view.setUint32(at.snapxOffset + SNAPX_BYTES * i, time.seq, true);
    setU64(view, at.snapxOffset + SNAPX_BYTES * i + 4, time.createdMs);
  });
  let position = at.cloneRefsOffset;
  s.cloneRefs.forEach((ref, i) => {
    const name = refNames[i]!;
    view.setUint32(position + CLONE_REF.snapSeq, ref.snapSeq, true);
    setUuid(header, position + CLONE_REF.cloneUuid, ref.cloneUuid);
    view.setUint8(position + CLONE_REF.nameLen, name.byteLength);
    header.set(name, position + CLONE_REF.BYTES);
    position += CLONE_REF.BYTES + name.byteLength;
  });
  assert(position === at.cloneRefsOffset + at.cloneRefsLen, "clone registrations fill clone_refs_len");
}

export interface DecodedSuperblock {
  superblock: SuperblockObject;
  /**
   * A CRC covers the checkpoint list: false for a plain v1 superblock with crc 0 and for one the reference rewrote
   * (its list then has no checksum: each checkpoint it names must exist and decode before it is trusted).
   */
  checkpointsChecksummed: boolean;
  /** The reference rewrote the checkpoint list of a superblock we wrote (undoReferenceRewrite). */
  rewrittenByReference: boolean;
}

/** `bytes` is the whole superblock object (exactly hdr_sectors*512 bytes). Verifies both CRCs when present. */
export function decodeSuperblock(bytes: Uint8Array): SuperblockObject {
  return decodeSuperblockChecked(bytes).superblock;
}

/** decodeSuperblock, and whether a CRC covers the checkpoint list (see DecodedSuperblock). */
export function decodeSuperblockChecked(bytes: Uint8Array): DecodedSuperblock {
  // Our superblock as the reference left it, in the current layout or in that of earlier versions (whose extension
  // block was 44 or 28 bytes long and whose arrays started at 120 or 104): the first whose CRCs verify.
  let undone: { original: Uint8Array; checkpoints: number[] } | null = null;
  let original: SuperblockObject | null = null;
  let failure: CorruptionError | null = null;
  for (const place of [...EXT_PLACES].reverse()) {
    undone = undoReferenceRewrite(bytes, place);
    if (undone === null) continue;
    try {
      const decoded = decodeSuperblockBytes(undone.original);
      assert(decoded.extended, "a reconstruction carries the extension");
      original = decoded.superblock;
      break;
    } catch (error) {
      if (!(error instanceof CorruptionError)) throw error;
      failure ??= error;
    }
  }
  if (undone === null && failure === null) {
    const { superblock, extended } = decodeSuperblockBytes(bytes);
    const checksummed = extended || viewOf(bytes).getUint32(COMMON_HEADER.crc, true) !== 0;
    return { superblock, checkpointsChecksummed: checksummed, rewrittenByReference: false };
  }
  if (original === null || undone === null) {
    throw corrupt(
      "superblock",
      `${failure!.message.replace(/^Cannot decode superblock: /, "")} (its checkpoint list sits at offset ${REFERENCE_CKPTS_OFFSET} as lsvd-rbd writes it, but the rest is not the lsvd superblock it would have rewritten)`,
    );
  }
  const checkpoints = undone.checkpoints;
  if (checkpoints.includes(0)) throw corrupt("superblock", `checkpoint list at offset ${REFERENCE_CKPTS_OFFSET} names seq 0`);
  for (let i = 1; i < checkpoints.length; i++) {
    if (checkpoints[i]! <= checkpoints[i - 1]!) throw corrupt("superblock", `checkpoint list at offset ${REFERENCE_CKPTS_OFFSET} is not in increasing order: ${checkpoints.join(", ")}`);
  }
  // next_seq is stale: the reference allocated seqs without updating it. 0 = unknown, as for plain v1. Skipped ranges
  // above the reference's newest checkpoint are dropped: knowing nothing of them, it may have written there.
  const newest = checkpoints[checkpoints.length - 1]!;
  const superblock: SuperblockObject = { ...original, checkpoints, nextSeq: 0, skipped: original.skipped.filter((range) => range.last < newest) };
  checkSuperblock(superblock);
  return { superblock, checkpointsChecksummed: false, rewrittenByReference: true };
}

/**
 * If `bytes` is a superblock we wrote (with its extension block at `place`) whose checkpoint list the reference
 * rewrote in place, returns the superblock as we wrote it (the pointer pair and the overwritten preamble bytes put
 * back, the old list still right after the block: 144, or 136, 120 or 104 for earlier versions) and the list the reference wrote;
 * else null. Recognised by: ckpts_offset 76 with 1..3 entries, no extension magic at 76 (the list replaced it), and a
 * v1 crc that is set but does not match (the reference left ours). Our encoder puts the clone part right after our
 * own list, so clones_offset - (end of the block) was our ckpts_len. The caller then verifies both CRCs of the
 * reconstruction: every byte the reference did not write must be as we wrote it.
 */
function undoReferenceRewrite(bytes: Uint8Array, place: ExtensionPlace): { original: Uint8Array; checkpoints: number[] } | null {
  const fixedBytes = place.offset + place.bytes;
  if (bytes.byteLength < fixedBytes) return null;
  const view = viewOf(bytes);
  const ckptsOffset = view.getUint32(SUPER_SUB.ckptsOffset, true);
  const ckptsLen = view.getUint32(SUPER_SUB.ckptsLen, true);
  const clonesOffset = view.getUint32(SUPER_SUB.clonesOffset, true);
  const storedCrc = view.getUint32(COMMON_HEADER.crc, true);
  if (ckptsOffset !== REFERENCE_CKPTS_OFFSET || ckptsLen === 0 || ckptsLen % 4 !== 0 || ckptsLen > 4 * REFERENCE_CKPTS_MAX) return null;
  if (view.getUint32(REFERENCE_CKPTS_OFFSET, true) === EXT_MAGIC || storedCrc === 0) return null;
  if (clonesOffset < fixedBytes || (clonesOffset - fixedBytes) % 4 !== 0 || clonesOffset > bytes.byteLength) return null;
  if (verifiesAsPlainV1(bytes)) return null;
  const checkpoints: number[] = [];
  for (let i = 0; i < ckptsLen / 4; i++) checkpoints.push(view.getUint32(REFERENCE_CKPTS_OFFSET + 4 * i, true));
  const original = bytes.slice();
  const originalView = viewOf(original);
  originalView.setUint32(SUPER_SUB.ckptsOffset, fixedBytes, true);
  originalView.setUint32(SUPER_SUB.ckptsLen, clonesOffset - fixedBytes, true);
  const preamble = new Uint8Array(12);
  const preambleView = viewOf(preamble);
  preambleView.setUint32(0, EXT_MAGIC, true);
  preambleView.setUint32(4, EXT_VERSION, true);
  preambleView.setUint32(8, place.bytes, true);
  original.set(preamble.subarray(0, ckptsLen), REFERENCE_CKPTS_OFFSET); // only the bytes the list overwrote
  return { original, checkpoints };
}

/** True if the v1 crc matches as stored (a plain v1 superblock: nothing to undo). */
function verifiesAsPlainV1(bytes: Uint8Array): boolean {
  try {
    verifyObjectHeader(bytes, null, "superblock");
    return true;
  } catch (error) {
    if (error instanceof CorruptionError) return false;
    throw error;
  }
}

function decodeSuperblockBytes(bytes: Uint8Array): { superblock: SuperblockObject; extended: boolean } {
  const common = decodeCommonHeader(bytes);
  const context = "superblock";
  if (common.type !== ObjectType.Super) throw corrupt(context, `object type ${common.type}, expected SUPER`);
  if (common.dataSectors !== 0) throw corrupt(context, `data_sectors ${common.dataSectors}, expected 0`);
  const hdrBytes = common.hdrSectors * SECTOR_BYTES;
  if (bytes.byteLength !== hdrBytes) throw corrupt(context, `length ${bytes.byteLength}, expected ${hdrBytes}`);
  if (hdrBytes < COMMON_HEADER_BYTES + SUPER_SUBHEADER_BYTES) throw corrupt(context, "header area too short");

  const view = viewOf(bytes);
  const ckpts = { offset: view.getUint32(SUPER_SUB.ckptsOffset, true), length: view.getUint32(SUPER_SUB.ckptsLen, true) };
  const clones = { offset: view.getUint32(SUPER_SUB.clonesOffset, true), length: view.getUint32(SUPER_SUB.clonesLen, true) };
  const snaps = { offset: view.getUint32(SUPER_SUB.snapsOffset, true), length: view.getUint32(SUPER_SUB.snapsLen, true) };
  const place = extensionPlaceOf(bytes);
  const extended = hasExtension(bytes, place, [ckpts, clones, snaps]);
  verifyObjectHeader(bytes, extended ? place : null, context);
  const blockBytes = extended ? place.bytes : 0;

  const lowest = extended ? place.offset + place.bytes : COMMON_HEADER_BYTES + SUPER_SUBHEADER_BYTES;
  checkSpan(ckpts.offset, ckpts.length, lowest, hdrBytes, context, "ckpts");
  checkSpan(clones.offset, clones.length, lowest, hdrBytes, context, "clones");
  checkSpan(snaps.offset, snaps.length, lowest, hdrBytes, context, "snaps");

  const volSectors = getU64(view, SUPER_SUB.volSectors, context, "vol_size");
  if (volSectors === 0 || volSectors > VOLUME_SECTORS_MAX) throw corrupt(context, `vol_size ${volSectors} out of range`);

  const checkpoints = decodeCheckpointSeqs(view, ckpts, context);
  const clone = decodeCloneInfo(bytes, view, clones, context);
  const snapshots = decodeSnapInfos(bytes, view, snaps, context);

  const nextSeq = extended ? getU64(view, SUPER_EXT.nextSeq, context, "next_seq") : 0;
  if (nextSeq > 2 ** 32) throw corrupt(context, `next_seq ${nextSeq} out of range`);
  const ownerEpoch = blockBytes >= SUPER_EXTENSION_V2_BYTES ? getU64(view, SUPER_EXT.ownerEpoch, context, "owner_epoch") : 0;
  const skipped = blockBytes >= SUPER_EXTENSION_V2_BYTES ? decodeSkipped(bytes, lowest, hdrBytes) : [];
  const facts = blockBytes >= SUPER_EXTENSION_V3_BYTES ? decodeSnapshotFacts(bytes, lowest, hdrBytes, blockBytes) : { snapshotTimes: [], cloneRefs: [], rollbackSeq: 0 };
  const result: SuperblockObject = { volUuid: common.volUuid, volSectors, checkpoints, clone, snapshots, nextSeq, ownerEpoch, skipped, ...facts };
  const problem = skippedProblem(result) ?? snapshotFactsProblem(result);
  if (problem !== null) throw corrupt(context, problem);
  checkSuperblock(result); // pair assertion: whatever decodes would encode again
  return { superblock: result, extended };
}

/** The ckpts part: a list of u32 checkpoint seqs, none of them 0. */
function decodeCheckpointSeqs(view: DataView, ckpts: VariablePart, context: string): number[] {
  if (ckpts.length % 4 !== 0) throw corrupt(context, `ckpts_len ${ckpts.length} is not a multiple of 4`);
  const checkpoints: number[] = [];
  for (let i = 0; i < ckpts.length / 4; i++) {
    const seq = view.getUint32(ckpts.offset + 4 * i, true);
    if (seq === 0) throw corrupt(context, "checkpoint seq 0");
    checkpoints.push(seq);
  }
  return checkpoints;
}

/** The clones part: empty, or exactly one clone_info followed by its NUL-terminated base name. */
function decodeCloneInfo(bytes: Uint8Array, view: DataView, clones: VariablePart, context: string): SuperblockObject["clone"] {
  if (clones.length === 0) return null;
  if (clones.length < CLONE.BYTES + 1) throw corrupt(context, `clones_len ${clones.length} too short`);
  const nameLen = view.getUint8(clones.offset + CLONE.nameLen);
  if (clones.length !== CLONE.BYTES + nameLen + 1) {
    throw corrupt(context, `clones_len ${clones.length} does not hold one clone_info with a ${nameLen}-byte name`);
  }
  const nameStart = clones.offset + CLONE.BYTES;
  if (bytes[nameStart + nameLen] !== 0) throw corrupt(context, "clone base name is not NUL-terminated");
  return {
    baseUuid: getUuid(bytes, clones.offset + CLONE.baseUuid, context, "clone base vol_uuid"),
    lastSeq: view.getUint32(clones.offset + CLONE.lastSeq, true),
    baseName: decodeUtf8(bytes.subarray(nameStart, nameStart + nameLen), context, "clone base name"),
  };
}

/**
 * Records back to back in `part`, each `fixedBytes` long with its name's length in the u8 at `nameLenAt`, then the
 * name: calls `visit` with each record's offset and its decoded name. `what` names the record and the part in errors
 * ("snap_info runs past snaps_len"); `nameWhat` the name ("snapshot name").
 */
function forEachNamedRecord(
  bytes: Uint8Array,
  part: VariablePart,
  layout: { fixedBytes: number; nameLenAt: number; what: string; nameWhat: string; partLen: string },
  context: string,
  visit: (at: number, name: string) => void,
): void {
  const view = viewOf(bytes);
  const end = part.offset + part.length;
  for (let at = part.offset; at < end; ) {
    if (end - at < layout.fixedBytes) throw corrupt(context, `${layout.what} runs past ${layout.partLen}`);
    const nameStart = at + layout.fixedBytes;
    const nameEnd = nameStart + view.getUint8(at + layout.nameLenAt);
    if (nameEnd > end) throw corrupt(context, `${layout.nameWhat} runs past ${layout.partLen}`);
    visit(at, decodeUtf8(bytes.subarray(nameStart, nameEnd), context, layout.nameWhat));
    at = nameEnd;
  }
}

const SNAP_RECORD = { fixedBytes: SNAP.BYTES, nameLenAt: SNAP.nameLen, what: "snap_info", nameWhat: "snapshot name", partLen: "snaps_len" };

/** The snaps part: snap_info records back to back, each followed by its name. */
function decodeSnapInfos(bytes: Uint8Array, view: DataView, snaps: VariablePart, context: string): SuperblockObject["snapshots"] {
  const snapshots: SuperblockObject["snapshots"] = [];
  forEachNamedRecord(bytes, snaps, SNAP_RECORD, context, (at, name) => snapshots.push({ seq: view.getUint32(at + SNAP.seq, true), name }));
  return snapshots;
}

/** The extension block's place: the current 68-byte block, or the 44- or 28-byte one of earlier versions (by ext_bytes). */
function extensionPlaceOf(bytes: Uint8Array): ExtensionPlace {
  return sharedExtensionPlaceOf(bytes, EXT_PLACES);
}

function decodeSnapshotFacts(bytes: Uint8Array, lowest: number, hdrBytes: number, blockBytes: number): Pick<SuperblockObject, "snapshotTimes" | "cloneRefs" | "rollbackSeq"> {
  const context = "superblock";
  const view = viewOf(bytes);
  const snapx = { offset: view.getUint32(SUPER_EXT.snapxOffset, true), length: view.getUint32(SUPER_EXT.snapxLen, true) };
  const refs = { offset: view.getUint32(SUPER_EXT.cloneRefsOffset, true), length: view.getUint32(SUPER_EXT.cloneRefsLen, true) };
  checkSpan(snapx.offset, snapx.length, lowest, hdrBytes, context, "snapx");
  checkSpan(refs.offset, refs.length, lowest, hdrBytes, context, "clone_refs");
  if (snapx.length % SNAPX_BYTES !== 0) throw corrupt(context, `snapx_len ${snapx.length} is not a multiple of ${SNAPX_BYTES}`);
  if (snapx.length / SNAPX_BYTES > SNAPSHOTS_MAX) throw corrupt(context, `${snapx.length / SNAPX_BYTES} snapshot times, more than ${SNAPSHOTS_MAX}`);
  const snapshotTimes: SnapshotTime[] = [];
  for (let at = snapx.offset; at < snapx.offset + snapx.length; at += SNAPX_BYTES) {
    snapshotTimes.push({ seq: view.getUint32(at, true), createdMs: getU64(view, at + 4, context, "created_ms") });
  }
  const cloneRefs: CloneRef[] = [];
  const record = { fixedBytes: CLONE_REF.BYTES, nameLenAt: CLONE_REF.nameLen, what: "clone_ref", nameWhat: "clone name", partLen: "clone_refs_len" };
  forEachNamedRecord(bytes, refs, record, context, (at, name) => {
    if (cloneRefs.length >= CLONE_REFS_MAX) throw corrupt(context, `more than ${CLONE_REFS_MAX} clone registrations`);
    cloneRefs.push({ snapSeq: view.getUint32(at + CLONE_REF.snapSeq, true), cloneUuid: getUuid(bytes, at + CLONE_REF.cloneUuid, context, "clone vol_uuid"), name });
  });
  const rollbackSeq = blockBytes >= SUPER_EXTENSION_BYTES ? getU64(view, SUPER_EXT.rollbackSeq, context, "rollback_seq") : 0;
  return { snapshotTimes, cloneRefs, rollbackSeq };
}

function decodeSkipped(bytes: Uint8Array, lowest: number, hdrBytes: number): SeqRange[] {
  const context = "superblock";
  const view = viewOf(bytes);
  const offset = view.getUint32(SUPER_EXT.skipsOffset, true);
  const length = view.getUint32(SUPER_EXT.skipsLen, true);
  checkSpan(offset, length, lowest, hdrBytes, context, "skips");
  if (length % SEQ_RANGE_BYTES !== 0) throw corrupt(context, `skips_len ${length} is not a multiple of ${SEQ_RANGE_BYTES}`);
  if (length / SEQ_RANGE_BYTES > SKIPPED_RANGES_MAX) throw corrupt(context, `${length / SEQ_RANGE_BYTES} skipped ranges, more than ${SKIPPED_RANGES_MAX}`);
  const skipped: SeqRange[] = [];
  for (let at = offset; at < offset + length; at += SEQ_RANGE_BYTES) {
    skipped.push({ first: view.getUint32(at, true), last: view.getUint32(at + 4, true) });
  }
  return skipped;
}
