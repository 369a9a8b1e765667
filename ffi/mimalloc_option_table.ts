// Finding mimalloc's option table in a snapshot of a process's writable memory: pure, no I/O (the reading and the
// one write are in ./mimalloc_options.ts). Facts and the reason in docs/platform.md, "The allocator's purge".
//
// mimalloc (Bun's allocator) keeps its options in one static array of descriptors, on 64-bit Linux 32 bytes each:
//   0  value        i64    the option's value (purge_delay: milliseconds; -1 = never purge)
//   8  init         i32    0 not read yet, 1 defaulted, 2 initialised (what a MIMALLOC_* variable or mi_option_set gives)
//   12 option       i32    the descriptor's own index in the array
//   16 name         char*  the name without the "mimalloc_" prefix ("show_errors" first)
//   24 legacy name  char*  or NULL
// The array is found by its shape, not by an address: eight-byte aligned, descriptor k's `option` field equals k, and
// descriptor 0's name reads "show_errors". It must be found exactly once, and every descriptor up to the wanted one
// must carry a plausible option name; anything else means another allocator build, and the caller leaves it alone.

export const OPTION_DESCRIPTOR_BYTES = 32;
const VALUE_OFFSET = 0;
const INIT_OFFSET = 8;
const OPTION_OFFSET = 12;
const NAME_OFFSET = 16;
/** Descriptors checked by their `option` field before a candidate's names are read (cheap rejection). */
const SHAPE_DESCRIPTORS = 4;
/** mimalloc has about 30 options; a table claiming more is not one. */
const DESCRIPTORS_MAX = 64;
const FIRST_OPTION_NAME = "show_errors";
const OPTION_NAME = /^[a-z][a-z0-9_]{0,47}$/;
/** mi_init_t: UNINIT, DEFAULTED, INITIALIZED. */
export const OPTION_INITIALIZED = 2;

/** A copy of one writable mapping: its bytes and the address of the first. */
export interface MemoryRegion {
  readonly address: bigint;
  readonly bytes: Uint8Array;
}

/** The NUL-terminated string at `address`, or null when it cannot be read. */
export type ReadName = (address: bigint) => string | null;

export interface OptionDescriptor {
  /** Address of the descriptor (its `value` field). */
  readonly address: bigint;
  readonly index: number;
  readonly value: bigint;
  readonly init: number;
}

export type OptionLookup = { readonly found: OptionDescriptor } | { readonly failure: string };

/** The descriptor of option `name` in the one option table the regions hold, or why there is none to trust. */
export function findOptionDescriptor(regions: readonly MemoryRegion[], readName: ReadName, name: string): OptionLookup {
  const tables: OptionLookup[] = [];
  for (const region of regions) {
    const view = new DataView(region.bytes.buffer, region.bytes.byteOffset, region.bytes.byteLength);
    const lastStart = region.bytes.byteLength - SHAPE_DESCRIPTORS * OPTION_DESCRIPTOR_BYTES;
    for (let offset = 0; offset <= lastStart; offset += 8) {
      if (!hasTableShape(view, offset)) continue;
      if (readName(view.getBigUint64(offset + NAME_OFFSET, true)) !== FIRST_OPTION_NAME) continue;
      tables.push(descriptorIn(region.address, view, offset, readName, name));
    }
  }
  if (tables.length === 0) return { failure: "mimalloc's option table was not found" };
  if (tables.length > 1) return { failure: `${tables.length} candidates for mimalloc's option table were found` };
  return tables[0]!;
}

function hasTableShape(view: DataView, offset: number): boolean {
  for (let index = 0; index < SHAPE_DESCRIPTORS; index++) {
    if (view.getInt32(offset + index * OPTION_DESCRIPTOR_BYTES + OPTION_OFFSET, true) !== index) return false;
  }
  return true;
}

/** Walks the table at `offset` to the descriptor named `name`; each one on the way must look like an option. */
function descriptorIn(base: bigint, view: DataView, offset: number, readName: ReadName, name: string): OptionLookup {
  for (let index = 0; index < DESCRIPTORS_MAX; index++) {
    const at = offset + index * OPTION_DESCRIPTOR_BYTES;
    if (at + OPTION_DESCRIPTOR_BYTES > view.byteLength) break;
    if (view.getInt32(at + OPTION_OFFSET, true) !== index) break;
    const descriptorName = readName(view.getBigUint64(at + NAME_OFFSET, true));
    if (descriptorName === null || !OPTION_NAME.test(descriptorName)) {
      return { failure: `mimalloc's option ${index} has no readable name` };
    }
    const init = view.getInt32(at + INIT_OFFSET, true);
    if (init < 0 || init > OPTION_INITIALIZED) return { failure: `mimalloc's option ${descriptorName} has an unknown state ${init}` };
    if (descriptorName === name) {
      return { found: { address: base + BigInt(at), index, value: view.getBigInt64(at + VALUE_OFFSET, true), init } };
    }
  }
  return { failure: `mimalloc's option table has no option ${name}` };
}

/** The 16 bytes written over a descriptor's value, init and option fields: `value`, initialised, its own index. */
export function encodeOptionValue(index: number, value: bigint): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigInt64(VALUE_OFFSET, value, true);
  view.setInt32(INIT_OFFSET, OPTION_INITIALIZED, true);
  view.setInt32(OPTION_OFFSET, index, true);
  return bytes;
}
