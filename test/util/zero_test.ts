import { expect, test } from "bun:test";
import { isAllZero } from "../../src/util/zero.ts";

test("isAllZero: empty, short, page-sized and multi-page views, a non-zero byte anywhere", () => {
  expect(isAllZero(new Uint8Array(0))).toBe(true);
  for (const length of [1, 511, 4096, 4097, 3 * 4096 + 17]) {
    const backing = new Uint8Array(length + 8).fill(7);
    const view = backing.subarray(4, 4 + length).fill(0); // a view with an offset, non-zero bytes beside it
    expect(isAllZero(view)).toBe(true);
    for (const at of [0, length >> 1, length - 1]) {
      view[at] = 1;
      expect(isAllZero(view)).toBe(false);
      view[at] = 0;
    }
  }
});
