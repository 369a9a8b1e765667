// koffi bindings to liburing 2.3 (Debian liburing2, liburing.so.2) and the memory layout JS reads and writes directly.
// Spec: /usr/include/liburing.h (struct io_uring, io_uring_sq, io_uring_cq), /usr/include/linux/io_uring.h
// (struct io_uring_sqe / io_uring_cqe, enum io_uring_op); what is exported and the offsets: docs/platform.md, "liburing".
//
// Why JS touches ring memory at all: every io_uring_prep_* helper, io_uring_cqe_seen and io_uring_cq_advance are
// static inline in liburing.h, so they are not in the .so. liburing sets the ring up (io_uring_queue_init: setup,
// mmap, SQ array filled 0..n-1) and flushes the SQ tail (io_uring_submit); JS fills SQEs, bumps sq.sqe_tail in
// struct io_uring, and consumes CQEs by moving *cq.khead. Those offsets are liburing's ABI for this build and not
// promised stable across versions, so they are checked twice: against the header text when it is installed
// (checkHeaderLayout), and always against the live ring after setup (checkRingLayout), which fails loudly on a
// liburing whose struct moved.

import { NotSupportedError } from "../src/errors.ts";
import { koffi } from "./koffi.ts";

/** sizeof(struct io_uring) in liburing 2.3 on x86-64. */
export const RING_STRUCT_BYTES = 216;

/** Byte offsets of the struct io_uring fields we use (liburing 2.3, x86-64, LP64). */
export const RingOffset = {
  sqKhead: 0,
  sqKtail: 8,
  sqKringMask: 16,
  sqKringEntries: 24,
  sqArray: 48,
  sqSqes: 56,
  sqSqeHead: 64,
  sqSqeTail: 68,
  sqRingMask: 88,
  sqRingEntries: 92,
  cqKhead: 104,
  cqKtail: 112,
  cqKringMask: 120,
  cqKringEntries: 128,
  cqKflags: 136,
  cqKoverflow: 144,
  cqCqes: 152,
  cqRingMask: 176,
  cqRingEntries: 180,
  flags: 192,
  ringFd: 196,
} as const;

/** The same fields as "struct.member" paths, for checking against the header. */
const RING_OFFSET_FIELDS: ReadonlyArray<readonly [keyof typeof RingOffset, string]> = [
  ["sqKhead", "sq.khead"],
  ["sqKtail", "sq.ktail"],
  ["sqKringMask", "sq.kring_mask"],
  ["sqKringEntries", "sq.kring_entries"],
  ["sqArray", "sq.array"],
  ["sqSqes", "sq.sqes"],
  ["sqSqeHead", "sq.sqe_head"],
  ["sqSqeTail", "sq.sqe_tail"],
  ["sqRingMask", "sq.ring_mask"],
  ["sqRingEntries", "sq.ring_entries"],
  ["cqKhead", "cq.khead"],
  ["cqKtail", "cq.ktail"],
  ["cqKringMask", "cq.kring_mask"],
  ["cqKringEntries", "cq.kring_entries"],
  ["cqKflags", "cq.kflags"],
  ["cqKoverflow", "cq.koverflow"],
  ["cqCqes", "cq.cqes"],
  ["cqRingMask", "cq.ring_mask"],
  ["cqRingEntries", "cq.ring_entries"],
  ["flags", "flags"],
  ["ringFd", "ring_fd"],
];

/** struct io_uring_sqe: 64 bytes. Offsets in 32-bit words, as uring.ts writes them through a Uint32Array. */
export const SQE_BYTES = 64;
export const SqeWord = {
  opcodeFlagsIoprio: 0, // u8 opcode | u8 flags << 8 | u16 ioprio << 16
  fd: 1,
  offsetLow: 2, // u64 off
  offsetHigh: 3,
  addressLow: 4, // u64 addr
  addressHigh: 5,
  length: 6, // u32 len
  opFlags: 7, // u32 rw_flags / fsync_flags
  userDataLow: 8, // u64 user_data
  userDataHigh: 9,
  bufferGroup: 10, // u16 buf_index / buf_group | u16 personality << 16
  // words 11..15: file_index, addr3, pad: always zero here.
} as const;

/** struct io_uring_cqe: 16 bytes (no IORING_SETUP_CQE32). Word offsets. */
export const CQE_BYTES = 16;
export const CqeWord = { userDataLow: 0, userDataHigh: 1, result: 2, flags: 3 } as const;

/** enum io_uring_op values (stable kernel ABI; checked against linux/io_uring.h when installed). */
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;
export const IORING_OP_ACCEPT = 13;
export const IORING_OP_ASYNC_CANCEL = 14;
export const IORING_OP_SEND = 26;
export const IORING_OP_RECV = 27;
export const IORING_FSYNC_DATASYNC = 1;
/**
 * io_uring_setup flags (kernel 5.19+): a completion's task work waits for the thread's next kernel entry instead of
 * interrupting it, and the SQ flags say when some is pending (io_uring_submit then enters with GETEVENTS).
 */
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
/** SQE flag (byte 1 of word 0): the kernel picks the buffer from the group in the SQE's buf_group (provided buffers). */
export const IOSQE_BUFFER_SELECT = 1 << 5;
/** Receive flag (the SQE's ioprio): one receive SQE posts a CQE per chunk until it ends (kernel 6.0+). */
export const IORING_RECV_MULTISHOT = 1 << 1;
/** CQE flags: the upper 16 bits hold the id of the provided buffer used; more CQEs of this SQE will follow. */
export const IORING_CQE_F_BUFFER = 1 << 0;
export const IORING_CQE_F_MORE = 1 << 1;
export const IORING_CQE_BUFFER_SHIFT = 16;
/** Bit of *cq.kflags (kernel 5.8+): while set, the kernel does not signal the registered eventfd. */
export const IORING_CQ_EVENTFD_DISABLED = 1;

const OPCODE_NAMES: ReadonlyArray<readonly [number, string]> = [
  [IORING_OP_READV, "IORING_OP_READV"],
  [IORING_OP_WRITEV, "IORING_OP_WRITEV"],
  [IORING_OP_FSYNC, "IORING_OP_FSYNC"],
  [IORING_OP_READ, "IORING_OP_READ"],
  [IORING_OP_WRITE, "IORING_OP_WRITE"],
  [IORING_OP_ACCEPT, "IORING_OP_ACCEPT"],
  [IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"],
  [IORING_OP_SEND, "IORING_OP_SEND"],
  [IORING_OP_RECV, "IORING_OP_RECV"],
];

export const LIBURING_HEADER_PATH = "/usr/include/liburing.h";
export const KERNEL_HEADER_PATH = "/usr/include/linux/io_uring.h";

export interface Liburing {
  /** io_uring_queue_init(entries, ring, flags): 0 or -errno. */
  queueInit(entries: number, ringAddress: number, flags: number): number;
  queueExit(ringAddress: number): void;
  /** io_uring_submit: flushes sq.sqe_tail to the kernel and enters once. Returns SQEs consumed or -errno. */
  submit(ringAddress: number): number;
  registerEventfd(ringAddress: number, fd: number): number;
  /** io_uring_register_buf_ring(ring, reg, 0) with reg a struct io_uring_buf_reg in native memory: 0 or -errno. */
  registerBufRing(ringAddress: number, registrationAddress: number): number;
  unregisterBufRing(ringAddress: number, groupId: number): number;
}

let loaded: Liburing | undefined;

/** Loads liburing.so.2 once. NotSupportedError when it is not installed (Debian: apt install liburing2). */
export function liburing(): Liburing {
  if (loaded !== undefined) return loaded;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load("liburing.so.2");
  } catch (error) {
    throw new NotSupportedError("Cannot load liburing.so.2: install liburing2 (liburing 2.3)", { cause: error });
  }
  const queueInit = lib.func("int io_uring_queue_init(unsigned int entries, void *ring, unsigned int flags)");
  const queueExit = lib.func("void io_uring_queue_exit(void *ring)");
  const submit = lib.func("int io_uring_submit(void *ring)");
  const registerEventfd = lib.func("int io_uring_register_eventfd(void *ring, int fd)");
  const registerBufRing = lib.func("int io_uring_register_buf_ring(void *ring, void *reg, unsigned int flags)");
  const unregisterBufRing = lib.func("int io_uring_unregister_buf_ring(void *ring, int bgid)");
  loaded = {
    queueInit: (entries, ringAddress, flags) => queueInit(entries, ringAddress, flags) as number,
    queueExit: (ringAddress) => void queueExit(ringAddress),
    submit: (ringAddress) => submit(ringAddress) as number,
    registerEventfd: (ringAddress, fd) => registerEventfd(ringAddress, fd) as number,
    registerBufRing: (ringAddress, registrationAddress) => registerBufRing(ringAddress, registrationAddress, 0) as number,
    unregisterBufRing: (ringAddress, groupId) => unregisterBufRing(ringAddress, groupId) as number,
  };
  return loaded;
}

/** Thrown when liburing's struct layout is not the one this module was written for. */
function layoutError(detail: string): NotSupportedError {
  return new NotSupportedError(
    `Cannot use liburing: struct io_uring layout differs from liburing 2.3 on x86-64 (${detail}); ` +
      "ffi/liburing.ts RingOffset needs updating",
  );
}

// ---- Header check ------------------------------------------------------------------------------------------------

interface CLayout {
  sizeBytes: number;
  alignment: number;
  /** "member" or "member.sub" -> byte offset. */
  offsets: Map<string, number>;
}

const SCALAR_BYTES: Record<string, number> = {
  unsigned: 4,
  "unsigned int": 4,
  int: 4,
  __u8: 1,
  __u16: 2,
  __u32: 4,
  __u64: 8,
  size_t: 8,
};

function structBody(text: string, name: string): string | undefined {
  const match = new RegExp(`struct\\s+${name}\\s*\\{([^}]*)\\}`).exec(text);
  return match?.[1];
}

/**
 * Lays out a C struct body the way the x86-64 SysV ABI does (natural alignment). Enough C for liburing.h's ring
 * structs: scalars, pointers, fixed arrays and previously laid out structs. Unknown types return undefined.
 */
function layoutStruct(body: string, known: Map<string, CLayout>): CLayout | undefined {
  const code = body.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  const offsets = new Map<string, number>();
  let offset = 0;
  let alignmentMax = 1;
  for (const raw of code.split(";")) {
    const declaration = raw.trim().replace(/\s+/g, " ");
    if (declaration === "") continue;
    const match = /^(.*?)\s*(\*?)\s*(\w+)\s*(?:\[(\d+)\])?$/.exec(declaration);
    if (match === null) return undefined;
    const [, typeName, star, member, count] = match as unknown as [string, string, string, string, string | undefined];
    let bytes: number;
    let alignment: number;
    let nested: CLayout | undefined;
    if (star === "*") {
      bytes = 8;
      alignment = 8;
    } else if (typeName.startsWith("struct ")) {
      nested = known.get(typeName.slice("struct ".length));
      if (nested === undefined) return undefined;
      bytes = nested.sizeBytes;
      alignment = nested.alignment;
    } else {
      const scalar = SCALAR_BYTES[typeName];
      if (scalar === undefined) return undefined;
      bytes = scalar;
      alignment = scalar;
    }
    offset = Math.ceil(offset / alignment) * alignment;
    offsets.set(member, offset);
    if (nested !== undefined) {
      for (const [sub, subOffset] of nested.offsets) offsets.set(`${member}.${sub}`, offset + subOffset);
    }
    offset += bytes * (count === undefined ? 1 : Number(count));
    alignmentMax = Math.max(alignmentMax, alignment);
  }
  return { sizeBytes: Math.ceil(offset / alignmentMax) * alignmentMax, alignment: alignmentMax, offsets };
}

/** The struct io_uring layout described by liburing.h text, or undefined when the text cannot be parsed. */
export function ringLayoutFromHeader(text: string): CLayout | undefined {
  const known = new Map<string, CLayout>();
  for (const name of ["io_uring_sq", "io_uring_cq", "io_uring"]) {
    const body = structBody(text, name);
    if (body === undefined) return undefined;
    const layout = layoutStruct(body, known);
    if (layout === undefined) return undefined;
    known.set(name, layout);
  }
  return known.get("io_uring");
}

/** The enum io_uring_op value of each name, from linux/io_uring.h text. */
export function opcodesFromHeader(text: string): Map<string, number> {
  const opcodes = new Map<string, number>();
  const body = /enum\s+io_uring_op\s*\{([^}]*)\}/.exec(text)?.[1];
  if (body === undefined) return opcodes;
  let next = 0;
  for (const raw of body.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "").split(",")) {
    const match = /^\s*(\w+)\s*(?:=\s*(\d+))?\s*$/.exec(raw);
    if (match === null) continue;
    const value = match[2] === undefined ? next : Number(match[2]);
    opcodes.set(match[1]!, value);
    next = value + 1;
  }
  return opcodes;
}

/**
 * Compares RingOffset and the opcodes with the installed headers. Headers come with liburing-dev, which a
 * production host may lack: then this checks nothing and checkRingLayout (always run) is the guard.
 */
export function checkHeaderLayout(liburingHeader: string | undefined, kernelHeader: string | undefined): void {
  if (liburingHeader !== undefined) {
    const layout = ringLayoutFromHeader(liburingHeader);
    if (layout === undefined) throw layoutError("cannot parse struct io_uring in liburing.h");
    if (layout.sizeBytes !== RING_STRUCT_BYTES) throw layoutError(`sizeof is ${layout.sizeBytes}, not ${RING_STRUCT_BYTES}`);
    for (const [key, path] of RING_OFFSET_FIELDS) {
      const offset = layout.offsets.get(path);
      if (offset !== RingOffset[key]) throw layoutError(`${path} is at ${offset}, not ${RingOffset[key]}`);
    }
  }
  if (kernelHeader !== undefined) {
    const opcodes = opcodesFromHeader(kernelHeader);
    for (const [value, name] of OPCODE_NAMES) {
      if (opcodes.get(name) !== value) throw layoutError(`${name} is ${opcodes.get(name)} in linux/io_uring.h, not ${value}`);
    }
  }
}

/**
 * Sanity checks on a ring just set up by io_uring_queue_init(entries): the fields we will drive must hold what the
 * kernel and liburing put there. A moved field shows up as a mask/entries mismatch, a null pointer, or a bad fd.
 */
export function checkRingLayout(ring: DataView, entriesRequested: number, readU32At: (address: number) => number): void {
  const u32 = (offset: number) => ring.getUint32(offset, true);
  const pointer = (offset: number) => Number(ring.getBigUint64(offset, true));
  const sqEntries = u32(RingOffset.sqRingEntries);
  const cqEntries = u32(RingOffset.cqRingEntries);
  if (sqEntries < entriesRequested || (sqEntries & (sqEntries - 1)) !== 0) throw layoutError(`sq.ring_entries = ${sqEntries}`);
  if (u32(RingOffset.sqRingMask) !== sqEntries - 1) throw layoutError(`sq.ring_mask = ${u32(RingOffset.sqRingMask)}`);
  if (cqEntries < sqEntries || (cqEntries & (cqEntries - 1)) !== 0) throw layoutError(`cq.ring_entries = ${cqEntries}`);
  if (u32(RingOffset.cqRingMask) !== cqEntries - 1) throw layoutError(`cq.ring_mask = ${u32(RingOffset.cqRingMask)}`);
  const pointerFields = ["sqKhead", "sqKtail", "sqKringEntries", "sqArray", "sqSqes", "cqKhead", "cqKtail", "cqKringEntries", "cqKflags", "cqCqes"] as const;
  for (const key of pointerFields) {
    const address = pointer(RingOffset[key]);
    if (address === 0 || address % 4 !== 0) throw layoutError(`${key} pointer is ${address}`);
  }
  // The kernel's own copies of the ring sizes, reached through the pointers, must agree with liburing's.
  if (readU32At(pointer(RingOffset.sqKringEntries)) !== sqEntries) throw layoutError("*sq.kring_entries differs from sq.ring_entries");
  if (readU32At(pointer(RingOffset.cqKringEntries)) !== cqEntries) throw layoutError("*cq.kring_entries differs from cq.ring_entries");
  if (pointer(RingOffset.sqSqes) % 64 !== 0) throw layoutError("sq.sqes is not page-mapped memory");
  // A fresh ring is empty: every head equals its tail, and our sqe_head/sqe_tail bookkeeping starts at the kernel's.
  const sqHead = readU32At(pointer(RingOffset.sqKhead));
  if (readU32At(pointer(RingOffset.sqKtail)) !== sqHead) throw layoutError("fresh SQ is not empty");
  if (u32(RingOffset.sqSqeTail) !== sqHead || u32(RingOffset.sqSqeHead) !== sqHead) throw layoutError("sq.sqe_tail is not the kernel SQ tail");
  if (readU32At(pointer(RingOffset.cqKtail)) !== readU32At(pointer(RingOffset.cqKhead))) throw layoutError("fresh CQ is not empty");
  // liburing >= 2.2 maps SQ slot i to SQE i once at setup; uring.ts relies on that and never writes sq.array.
  const array = pointer(RingOffset.sqArray);
  for (let index = 0; index < sqEntries; index++) {
    if (readU32At(array + index * 4) !== index) throw layoutError(`sq.array[${index}] is not ${index}`);
  }
  if (ring.getInt32(RingOffset.ringFd, true) < 0) throw layoutError("ring_fd is negative");
}
