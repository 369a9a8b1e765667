// The serving purge delay (src/ops/allocator_purge.ts): which environment a server re-executes with, and the /proc
// decoding that must pass arguments and environment on unchanged or not at all.
import { describe, expect, test } from "bun:test";
import { PURGE_DELAY_VARIABLE, SERVING_PURGE_DELAY, nulSeparatedStrings, servingEnvironment } from "../../src/ops/allocator_purge.ts";

const encode = (text: string) => new TextEncoder().encode(text);

describe("servingEnvironment", () => {
  test("adds the serving purge delay to an environment without it, keeping every other entry in order", () => {
    expect(servingEnvironment(["PATH=/usr/bin", "HOME=/root", "EMPTY="])).toEqual([
      "PATH=/usr/bin",
      "HOME=/root",
      "EMPTY=",
      `${PURGE_DELAY_VARIABLE}=${SERVING_PURGE_DELAY}`,
    ]);
    expect(servingEnvironment([])).toEqual([`${PURGE_DELAY_VARIABLE}=-1`]);
  });

  test("keeps an operator's value, whatever it is, and never re-executes twice", () => {
    for (const value of ["10", "-1", "", "1000"]) {
      expect(servingEnvironment(["PATH=/usr/bin", `${PURGE_DELAY_VARIABLE}=${value}`])).toBeNull();
    }
  });

  test("a variable whose name only starts the same is another variable", () => {
    const environ = [`${PURGE_DELAY_VARIABLE}_X=1`, `X${PURGE_DELAY_VARIABLE}=1`];
    expect(servingEnvironment(environ)).toEqual([...environ, `${PURGE_DELAY_VARIABLE}=-1`]);
  });
});

describe("nulSeparatedStrings", () => {
  test("splits at each NUL, the last string ended by one as /proc writes them", () => {
    expect(nulSeparatedStrings(encode("lsvd\0serve\0--socket\0/tmp/é s\0"))).toEqual(["lsvd", "serve", "--socket", "/tmp/é s"]);
    expect(nulSeparatedStrings(encode("A=1\0\0B=2\0"))).toEqual(["A=1", "", "B=2"]);
    expect(nulSeparatedStrings(new Uint8Array(0))).toEqual([]);
  });

  test("refuses bytes that are not UTF-8, which could not be passed on unchanged", () => {
    expect(nulSeparatedStrings(new Uint8Array([0x6c, 0xff, 0x00]))).toBeNull();
    expect(nulSeparatedStrings(new Uint8Array([0x41, 0x00, 0xc3, 0x00]))).toBeNull();
  });
});
