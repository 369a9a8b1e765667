// Recognising mimalloc's option table in a memory snapshot (ffi/mimalloc_option_table.ts): found exactly when its
// shape and names are right, refused (with the reason) when anything is off, so a different allocator build is left
// alone rather than written to.

import { describe, expect, test } from "bun:test";
import { encodeOptionValue, findOptionDescriptor, OPTION_DESCRIPTOR_BYTES, OPTION_INITIALIZED, type MemoryRegion, type ReadName } from "../../ffi/mimalloc_option_table.ts";

const NAMES = ["show_errors", "show_stats", "verbose", "eager_commit", "arena_eager_commit", "purge_decommits", "purge_delay", "use_numa_nodes"];
const REGION_ADDRESS = 0x6840000n;
const NAME_BASE = 0x200000n;

/** Name i lives at NAME_BASE + 64 i; a fake memory reader answers for those addresses only. */
const readName: ReadName = (address) => {
  const index = Number((address - NAME_BASE) / 64n);
  return address >= NAME_BASE && (address - NAME_BASE) % 64n === 0n && index < NAMES.length ? NAMES[index]! : null;
};

interface TableSpec {
  offset: number;
  names?: readonly string[];
  values?: readonly number[];
  init?: number;
  nameAddress?: (index: number) => bigint;
}

function region(bytes: number, tables: readonly TableSpec[]): MemoryRegion {
  const memory = new Uint8Array(bytes);
  const view = new DataView(memory.buffer);
  for (const table of tables) {
    const names = table.names ?? NAMES;
    names.forEach((_, index) => {
      const at = table.offset + index * OPTION_DESCRIPTOR_BYTES;
      view.setBigInt64(at, BigInt(table.values?.[index] ?? index * 10), true);
      view.setInt32(at + 8, table.init ?? 1, true);
      view.setInt32(at + 12, index, true);
      view.setBigUint64(at + 16, table.nameAddress?.(index) ?? NAME_BASE + BigInt(NAMES.indexOf(names[index]!)) * 64n, true);
    });
  }
  return { address: REGION_ADDRESS, bytes: memory };
}

describe("findOptionDescriptor", () => {
  test("finds the named descriptor: its address, index, value and state", () => {
    const lookup = findOptionDescriptor([region(4096, [{ offset: 1024, values: [0, 0, 0, 0, 0, 0, 100] }])], readName, "purge_delay");
    expect(lookup).toEqual({ found: { address: REGION_ADDRESS + 1024n + 6n * 32n, index: 6, value: 100n, init: 1 } });
  });

  test("looks in every region, at any eight-byte aligned place", () => {
    const empty = region(512, []);
    const lookup = findOptionDescriptor([empty, region(8192, [{ offset: 4096 + 8 }])], readName, "verbose");
    expect("found" in lookup && lookup.found.index).toBe(2);
  });

  test("no table, or a table only at an unaligned place: not found", () => {
    expect(findOptionDescriptor([region(4096, [])], readName, "purge_delay")).toEqual({ failure: "mimalloc's option table was not found" });
    expect(findOptionDescriptor([region(4096, [{ offset: 1028 }])], readName, "purge_delay")).toEqual({ failure: "mimalloc's option table was not found" });
  });

  test("two tables: refused, since either could be the live one", () => {
    const lookup = findOptionDescriptor([region(8192, [{ offset: 0 }, { offset: 4096 }])], readName, "purge_delay");
    expect(lookup).toEqual({ failure: "2 candidates for mimalloc's option table were found" });
  });

  test("a table whose first name is not show_errors is not the option table", () => {
    const names = ["show_stats", "show_errors", ...NAMES.slice(2)];
    expect(findOptionDescriptor([region(4096, [{ offset: 0, names }])], readName, "purge_delay")).toEqual({ failure: "mimalloc's option table was not found" });
  });

  test("a descriptor on the way without a readable name: refused", () => {
    const lookup = findOptionDescriptor([region(4096, [{ offset: 0, nameAddress: (index) => (index === 4 ? 0x1234n : NAME_BASE + BigInt(index) * 64n) }])], readName, "purge_delay");
    expect(lookup).toEqual({ failure: "mimalloc's option 4 has no readable name" });
  });

  test("an unknown initialisation state: refused", () => {
    expect(findOptionDescriptor([region(4096, [{ offset: 0, init: 7 }])], readName, "purge_delay")).toEqual({ failure: "mimalloc's option show_errors has an unknown state 7" });
  });

  test("a table without the option, or ending at the region's end: refused", () => {
    expect(findOptionDescriptor([region(4096, [{ offset: 0 }])], readName, "arena_reserve")).toEqual({ failure: "mimalloc's option table has no option arena_reserve" });
    const cut = region(4 * OPTION_DESCRIPTOR_BYTES, [{ offset: 0, names: NAMES.slice(0, 4) }]);
    expect(findOptionDescriptor([cut], readName, "purge_delay")).toEqual({ failure: "mimalloc's option table has no option purge_delay" });
  });
});

test("encodeOptionValue: the value, the initialised state and the descriptor's own index, little-endian", () => {
  const view = new DataView(encodeOptionValue(15, -1n).buffer);
  expect(view.byteLength).toBe(16);
  expect(view.getBigInt64(0, true)).toBe(-1n);
  expect(view.getInt32(8, true)).toBe(OPTION_INITIALIZED);
  expect(view.getInt32(12, true)).toBe(15);
});
