// ReusedBuffers (src/volume/reused_buffers.ts): buffers lent and given back (GC victims, checkpoints).
import { describe, expect, test } from "bun:test";
import { REUSED_BUFFER_GRAIN_BYTES, REUSED_BUFFER_POISON, ReusedBuffers } from "../../src/volume/reused_buffers.ts";

const GRAIN = REUSED_BUFFER_GRAIN_BYTES;

describe("ReusedBuffers", () => {
  test("a buffer given back is lent again to a victim it holds, not to a larger one", () => {
    const buffers = new ReusedBuffers(4 * GRAIN);
    const first = buffers.take(GRAIN + 4096);
    expect(first.byteLength).toBe(2 * GRAIN); // whole grains
    expect(buffers.lentCount).toBe(1);
    buffers.give(first);
    expect(buffers.lentCount).toBe(0);
    expect(buffers.idleBytes).toBe(2 * GRAIN);
    expect(buffers.take(2 * GRAIN)).toBe(first);
    const larger = buffers.take(2 * GRAIN + 1);
    expect(larger).not.toBe(first);
    expect(larger.byteLength).toBe(3 * GRAIN);
  });

  test("two victims in flight get two buffers", () => {
    const buffers = new ReusedBuffers(4 * GRAIN);
    const a = buffers.take(GRAIN);
    const b = buffers.take(GRAIN);
    expect(a).not.toBe(b);
    expect(buffers.lentCount).toBe(2);
  });

  test("idle buffers stay within their byte bound, the smallest dropped first; clear frees them", () => {
    const buffers = new ReusedBuffers(3 * GRAIN);
    const [small, alsoSmall, large] = [buffers.take(GRAIN), buffers.take(GRAIN), buffers.take(2 * GRAIN)];
    for (const buffer of [small!, alsoSmall!, large!]) buffers.give(buffer);
    expect(buffers.idleBytes).toBe(3 * GRAIN); // one small one went, so the large one stays
    expect(buffers.take(2 * GRAIN)).toBe(large!); // a large use again: no fresh memory
    const smallAgain = buffers.take(GRAIN);
    expect([small, alsoSmall]).toContain(smallAgain);
    buffers.give(large!);
    buffers.give(smallAgain);
    const tooLarge = buffers.take(4 * GRAIN); // larger than the bound: given back, it is the one dropped
    buffers.give(tooLarge);
    expect(buffers.idleBytes).toBe(3 * GRAIN);
    buffers.clear();
    expect(buffers.idleBytes).toBe(0);
  });

  test("a use takes the smallest idle buffer that holds it", () => {
    const buffers = new ReusedBuffers(8 * GRAIN);
    const [large, middle, small] = [buffers.take(4 * GRAIN), buffers.take(2 * GRAIN), buffers.take(GRAIN)];
    for (const buffer of [large!, middle!, small!]) buffers.give(buffer);
    expect(buffers.take(GRAIN + 1)).toBe(middle!);
    expect(buffers.take(1)).toBe(small!);
    expect(buffers.take(1)).toBe(large!);
  });

  test("under debug checks a buffer given back is poisoned, so a copy still reading it would show", () => {
    const buffers = new ReusedBuffers(GRAIN);
    const buffer = buffers.take(4096);
    buffer.fill(1);
    buffers.give(buffer);
    expect(buffer.every((byte) => byte === REUSED_BUFFER_POISON)).toBe(true); // bun test runs with debug checks
  });

  test("giving back a buffer that was not lent (or twice) is a bug, caught", () => {
    const buffers = new ReusedBuffers(GRAIN);
    const buffer = buffers.take(4096);
    buffers.give(buffer);
    expect(() => buffers.give(buffer)).toThrow(/was lent/);
    expect(() => buffers.give(new Uint8Array(GRAIN))).toThrow(/was lent/);
  });
});
