// Tests for ffi/liburing.ts: the hard-coded struct io_uring offsets and opcodes against the installed headers,
// and that the checks fail on a layout that moved.

import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import {
  checkHeaderLayout,
  KERNEL_HEADER_PATH,
  LIBURING_HEADER_PATH,
  opcodesFromHeader,
  RING_STRUCT_BYTES,
  RingOffset,
  ringLayoutFromHeader,
} from "../../ffi/liburing.ts";

const haveHeaders = existsSync(LIBURING_HEADER_PATH) && existsSync(KERNEL_HEADER_PATH);

test.skipIf(!haveHeaders)("RingOffset matches liburing.h (liburing-dev)", () => {
  const text = readFileSync(LIBURING_HEADER_PATH, "utf8");
  const layout = ringLayoutFromHeader(text)!;
  expect(layout.sizeBytes).toBe(RING_STRUCT_BYTES);
  expect(layout.offsets.get("sq.sqes")).toBe(RingOffset.sqSqes);
  expect(layout.offsets.get("sq.sqe_tail")).toBe(RingOffset.sqSqeTail);
  expect(layout.offsets.get("cq.khead")).toBe(RingOffset.cqKhead);
  expect(layout.offsets.get("cq.ktail")).toBe(RingOffset.cqKtail);
  expect(layout.offsets.get("cq.cqes")).toBe(RingOffset.cqCqes);
  expect(() => checkHeaderLayout(text, readFileSync(KERNEL_HEADER_PATH, "utf8"))).not.toThrow();
});

test.skipIf(!haveHeaders)("opcodes match linux/io_uring.h", () => {
  const opcodes = opcodesFromHeader(readFileSync(KERNEL_HEADER_PATH, "utf8"));
  expect(opcodes.get("IORING_OP_READV")).toBe(1);
  expect(opcodes.get("IORING_OP_WRITEV")).toBe(2);
  expect(opcodes.get("IORING_OP_FSYNC")).toBe(3);
  expect(opcodes.get("IORING_OP_READ")).toBe(22);
  expect(opcodes.get("IORING_OP_WRITE")).toBe(23);
});

test("a struct that gained a field is refused", () => {
  const header = `
    struct io_uring_sq { unsigned *khead; unsigned *ktail; unsigned *kring_mask; unsigned *kring_entries;
      unsigned *kflags; unsigned *kdropped; unsigned *array; struct io_uring_sqe *sqes;
      unsigned sqe_head; unsigned sqe_tail; size_t ring_sz; void *ring_ptr; unsigned ring_mask;
      unsigned ring_entries; unsigned pad[2]; };
    struct io_uring_cq { unsigned *khead; unsigned *ktail; unsigned *kring_mask; unsigned *kring_entries;
      unsigned *kflags; unsigned *koverflow; struct io_uring_cqe *cqes; size_t ring_sz; void *ring_ptr;
      unsigned ring_mask; unsigned ring_entries; unsigned pad[2]; };
    struct io_uring { struct io_uring_sq sq; struct io_uring_cq cq; unsigned flags; int ring_fd;
      unsigned features; int enter_ring_fd; __u8 int_flags; __u8 pad[3]; unsigned pad2; };`;
  expect(() => checkHeaderLayout(header, undefined)).not.toThrow(); // this is liburing 2.3's layout
  const moved = header.replace("unsigned *kdropped;", "unsigned *kdropped; unsigned *knew;");
  expect(() => checkHeaderLayout(moved, undefined)).toThrow(/layout differs/);
  expect(() => checkHeaderLayout("struct io_uring_sq { float x; };", undefined)).toThrow(/cannot parse/);
});
