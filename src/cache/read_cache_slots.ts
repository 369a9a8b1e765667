// The read cache's slots and its in-memory index (docs/architecture.md, "The read path"): which 4 KiB of which backend
// object each slot holds, with its CRC-32C, clock replacement, and generations that tell a reader its slot was reused.
// No I/O here: the fill queue (read_cache_fills.ts) writes slots, the index store (read_cache_index_store.ts) persists
// what `changed` reports, read_cache.ts reads them.
//
// Invariants:
// - A slot is empty, reserved (a fill is writing it) or full; only a full slot is in the index, under exactly one key,
//   and `indexed` counts the full slots.
// - A slot is reused only after it left the index (takeSlot evicts first); every reuse bumps its generation.
// - Memory: per slot 22 bytes of state and, when full, one index map entry.

import { assert } from "../errors.ts";
import type { IndexEntry } from "../format/read_cache_index.ts";

/** Keys: seq * 2^21 + offset (offsets of a 1 GiB data area fit 21 bits; seq is u32): below 2^53. */
export const OFFSET_KEY_SPAN = 2 ** 21;
const SLOT_EMPTY = -1;
const SLOT_RESERVED = -2;
/** Logs (volume uuids) one cache tells apart in memory. */
const LOGS_MAX = 0x7fff_ffff;

function keyOf(seq: number, offsetSectors: number): number {
  assert(offsetSectors < OFFSET_KEY_SPAN, "read cache offsets fit the key");
  return seq * OFFSET_KEY_SPAN + offsetSectors;
}

export class CacheSlots {
  /** slot -> log id of the block it holds, SLOT_EMPTY, or SLOT_RESERVED (a fill is writing it). */
  private readonly slotLogs: Int32Array;
  private readonly slotSeqs: Uint32Array;
  private readonly slotOffsets: Uint32Array;
  private readonly slotCrcs: Uint32Array;
  /** slot -> bumped on every reuse, so readers can tell their slot was taken. */
  private readonly slotGenerations: Uint32Array;
  /** slot -> clock reference bit. */
  private readonly referenced: Uint8Array;
  /** log id -> (seq * 2^21 + offset) -> slot. */
  private readonly index: Array<Map<number, number>> = [];
  private readonly logIds = new Map<string, number>();
  private readonly logUuids: string[] = [];
  private hand = 0;
  /** Full slots. */
  indexed = 0;

  constructor(
    readonly count: number,
    /** Told of every slot whose entry changed (filled or emptied): its index page must be persisted again. */
    private readonly changed: (slot: number) => void,
  ) {
    this.slotLogs = new Int32Array(count).fill(SLOT_EMPTY);
    this.slotSeqs = new Uint32Array(count);
    this.slotOffsets = new Uint32Array(count);
    this.slotCrcs = new Uint32Array(count);
    this.slotGenerations = new Uint32Array(count);
    this.referenced = new Uint8Array(count);
  }

  /** The small id of the log of volume `uuid` (registered on first use). */
  logId(uuid: string): number {
    let id = this.logIds.get(uuid);
    if (id === undefined) {
      assert(this.logUuids.length < LOGS_MAX, "read cache log ids");
      id = this.logUuids.length;
      this.logIds.set(uuid, id);
      this.logUuids.push(uuid);
      this.index.push(new Map());
    }
    return id;
  }

  logUuid(log: number): string {
    return this.logUuids[log]!;
  }

  slotOf(log: number, seq: number, offsetSectors: number): number | undefined {
    return this.indexed === 0 ? undefined : this.index[log]!.get(keyOf(seq, offsetSectors));
  }

  generation(slot: number): number {
    return this.slotGenerations[slot]!;
  }

  /** Whether `slot` still holds a block of `log` at the generation a reader saw, and that block's CRC-32C. */
  holds(slot: number, generation: number, log: number): boolean {
    return this.slotGenerations[slot] === generation && this.slotLogs[slot] === log;
  }

  crcOf(slot: number): number {
    return this.slotCrcs[slot]!;
  }

  /** A hit: the clock keeps the slot one more turn. */
  touch(slot: number): void {
    this.referenced[slot] = 1;
  }

  /** A reserved slot's fill ended: indexed under `entry` if it is still reserved and the block is not cached elsewhere. */
  settle(slot: number, entry: IndexEntry, log: number, written: boolean): boolean {
    const reserved = this.slotLogs[slot] === SLOT_RESERVED;
    if (written && reserved && this.slotOf(log, entry.seq, entry.offsetSectors) === undefined) {
      this.fill(slot, entry, log);
      return true;
    }
    if (reserved) this.slotLogs[slot] = SLOT_EMPTY;
    return false;
  }

  private fill(slot: number, entry: IndexEntry, log: number): void {
    this.slotLogs[slot] = log;
    this.slotSeqs[slot] = entry.seq;
    this.slotOffsets[slot] = entry.offsetSectors;
    this.slotCrcs[slot] = entry.dataCrc;
    this.referenced[slot] = 1;
    this.index[log]!.set(keyOf(entry.seq, entry.offsetSectors), slot);
    this.indexed += 1;
    this.changed(slot);
  }

  evict(slot: number): void {
    const log = this.slotLogs[slot]!;
    assert(log >= 0, "evicting a full slot");
    this.index[log]!.delete(keyOf(this.slotSeqs[slot]!, this.slotOffsets[slot]!));
    this.indexed -= 1;
    this.slotLogs[slot] = SLOT_EMPTY;
    this.changed(slot);
  }

  /** Clock replacement; the slot comes back reserved and with a new generation; -1 if every slot is reserved. */
  takeSlot(): number {
    for (let step = 0; step < 2 * this.count + 1; step++) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.count;
      const log = this.slotLogs[slot]!;
      if (log === SLOT_RESERVED) continue; // a fill is writing it
      if (log >= 0 && this.referenced[slot] === 1) {
        this.referenced[slot] = 0;
        continue;
      }
      if (log >= 0) this.evict(slot);
      this.slotLogs[slot] = SLOT_RESERVED;
      this.slotGenerations[slot] = (this.slotGenerations[slot]! + 1) >>> 0;
      return slot;
    }
    return -1;
  }

  /** The entries of slots [first, end): null for a slot that is not full. */
  entries(first: number, end: number): Array<IndexEntry | null> {
    const entries: Array<IndexEntry | null> = [];
    for (let slot = first; slot < Math.min(end, this.count); slot++) {
      const log = this.slotLogs[slot]!;
      entries.push(log < 0 ? null : { logUuid: this.logUuids[log]!, seq: this.slotSeqs[slot]!, offsetSectors: this.slotOffsets[slot]!, dataCrc: this.slotCrcs[slot]! });
    }
    return entries;
  }

  /** At load: an empty slot takes a persisted entry; false (dropped) if the entry cannot be keyed or its block is already cached. */
  load(slot: number, entry: IndexEntry): boolean {
    assert(slot < this.count && this.slotLogs[slot] === SLOT_EMPTY, "a loaded entry goes to an empty slot");
    const log = this.logId(entry.logUuid);
    if (entry.offsetSectors >= OFFSET_KEY_SPAN || this.slotOf(log, entry.seq, entry.offsetSectors) !== undefined) return false;
    this.slotLogs[slot] = log;
    this.slotSeqs[slot] = entry.seq;
    this.slotOffsets[slot] = entry.offsetSectors;
    this.slotCrcs[slot] = entry.dataCrc;
    this.index[log]!.set(keyOf(entry.seq, entry.offsetSectors), slot);
    this.indexed += 1;
    return true;
  }
}
