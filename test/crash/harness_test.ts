// The crash harness's own checker must be able to fail: synthetic histories and reads that are, and are not, a
// prefix of the history (torn ops, reordered ops, lost acknowledged ops, misplaced or garbled blocks).

import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { decodeSuperblock, encodeSuperblock } from "../../src/format/superblock_object.ts";
import { BLOCK_BYTES, CrashEnv, History, checkPrefix, decodeBlock, stampBlock } from "./_harness.ts";

/** A history on 8 blocks, 2 blocks per piece: w1 [0,4) (2 pieces), t2 [2,3), w3 [4,6), w4 [0,2). */
function sample(): History {
  const history = new History(8, 2);
  history.add("write", 0, 4);
  history.add("trim", 2, 1);
  history.add("write", 4, 2);
  history.add("write", 0, 2);
  return history;
}

describe("crash harness checker", () => {
  test("units: a 4-block write in 2-block pieces is two units", () => {
    const history = sample();
    expect(history.ops.map((op) => [op.firstUnit, op.pieces])).toEqual([[1, 2], [3, 1], [4, 1], [5, 1]]);
    expect(history.lastUnit).toBe(5);
    expect(history.throughOp(1)).toBe(2);
    expect(history.throughPiece(1, 3)).toBe(2);
    expect(history.throughPiece(1, 1)).toBe(1);
  });

  test("every prefix is accepted, with the right k", () => {
    const history = sample();
    const states: Array<Array<number>> = [
      [0, 0, 0, 0, 0, 0, 0, 0], // k=0
      [1, 1, 0, 0, 0, 0, 0, 0], // k=1: first piece of w1
      [1, 1, 1, 1, 0, 0, 0, 0], // k=2
      [1, 1, 0, 1, 0, 0, 0, 0], // k=3: trim
      [1, 1, 0, 1, 3, 3, 0, 0], // k=4
      [4, 4, 0, 1, 3, 3, 0, 0], // k=5
    ];
    states.forEach((state, k) => {
      const result = checkPrefix(history, state, 0);
      expect(result.ok).toBe(true);
      expect(result.kMin).toBeLessThanOrEqual(k);
      expect(result.kMax).toBeGreaterThanOrEqual(k);
    });
    expect(checkPrefix(history, states[5]!, 5).ok).toBe(true);
  });

  test("a torn piece, a reordering, a lost acknowledged op, garbage: rejected", () => {
    const history = sample();
    // Half of w1's first piece.
    expect(checkPrefix(history, [1, 0, 0, 0, 0, 0, 0, 0], 0).ok).toBe(false);
    // w3 without the trim before it.
    expect(checkPrefix(history, [1, 1, 1, 1, 3, 3, 0, 0], 0).ok).toBe(false);
    // w4 is there but w3 (earlier) is not.
    expect(checkPrefix(history, [4, 4, 0, 1, 0, 0, 0, 0], 0).ok).toBe(false);
    // A valid prefix (k=2), but op 3 was acknowledged: k >= 4 is promised.
    const lost = checkPrefix(history, [1, 1, 1, 1, 0, 0, 0, 0], 4);
    expect(lost.ok).toBe(false);
    expect(lost.message).toContain("not a prefix");
    // A block read back with something no op wrote there.
    expect(checkPrefix(history, [1, 1, 1, 1, 0, 0, 0, 9], 0).ok).toBe(false);
    expect(checkPrefix(history, [1, 1, 1, 1, 0, 0, 0, "garbage (no stamp)"], 0).ok).toBe(false);
  });

  test("rounds start from the verified state", () => {
    const history = sample();
    history.nextRound(Int32Array.from([4, 4, 0, 1, 3, 3, 0, 0]));
    history.add("zero", 4, 4);
    expect(checkPrefix(history, [4, 4, 0, 1, 3, 3, 0, 0], 0).ok).toBe(true);
    expect(checkPrefix(history, [4, 4, 0, 1, 0, 0, 0, 0], 0).ok).toBe(true);
    expect(checkPrefix(history, [4, 4, 0, 1, 0, 3, 0, 0], 0).ok).toBe(false);
    expect(checkPrefix(history, [0, 4, 0, 1, 3, 3, 0, 0], 0).ok).toBe(false);
  });

  test("a finished round stays checkable, capped at the units its end state could hold", () => {
    const history = sample();
    // The round ended reading back k=4 (w4 lost); the next round starts there.
    history.nextRound(Int32Array.from([1, 1, 0, 1, 3, 3, 0, 0]), 4);
    history.add("write", 6, 2);
    const past = history.past[0]!;
    expect(past.lastUnit).toBe(4);
    // Back into the past round: any of its prefixes up to k=4 ...
    expect(checkPrefix(past, [1, 1, 1, 1, 0, 0, 0, 0], past.firstUnit - 1).ok).toBe(true);
    expect(checkPrefix(past, [0, 0, 0, 0, 0, 0, 0, 0], past.firstUnit - 1).ok).toBe(true);
    // ... but not w4, which that round's end state did not hold, nor anything torn.
    expect(checkPrefix(past, [4, 4, 0, 1, 3, 3, 0, 0], past.firstUnit - 1).ok).toBe(false);
    expect(checkPrefix(past, [1, 0, 0, 0, 0, 0, 0, 0], past.firstUnit - 1).ok).toBe(false);
    // The current round still needs its own base.
    expect(checkPrefix(history, [1, 1, 1, 1, 0, 0, 0, 0], 0).ok).toBe(false);
  });

  test("stamps: round trip, zero, misplaced and torn blocks", () => {
    const block = new Uint8Array(BLOCK_BYTES);
    stampBlock(block, 77, 5);
    expect(decodeBlock(block, 5)).toBe(77);
    expect(decodeBlock(block, 6)).toContain("misplaced");
    expect(decodeBlock(new Uint8Array(BLOCK_BYTES), 5)).toBe(0);
    const torn = block.slice();
    torn.fill(0, 2048);
    expect(decodeBlock(torn, 5)).toContain("bad CRC");
    const other = new Uint8Array(BLOCK_BYTES);
    stampBlock(other, 78, 5);
    expect(other).not.toEqual(block);
  });
});

test("objects-lost deletes only what a crash can leave missing: objects above the newest listed checkpoint, and listed checkpoints", async () => {
  const env = new CrashEnv(1024 * 1024, "64m");
  try {
    const superblock = decodeSuperblock(new Uint8Array(readFileSync(env.volumePath)));
    writeFileSync(env.volumePath, encodeSuperblock({ ...superblock, checkpoints: [5, 6, 7], nextSeq: 11 }));
    for (let seq = 1; seq <= 10; seq++) writeFileSync(path.join(env.backendDir, `vol.${seq.toString(16).padStart(8, "0")}`), "");
    expect(env.objectSeqs()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(env.losableObjectSeqs()).toEqual([5, 6, 7, 8, 9, 10]);
  } finally {
    await env.cleanup();
  }
}, 60_000);
