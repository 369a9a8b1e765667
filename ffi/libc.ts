// The few libc calls the cache-I/O layer needs (glibc 2.36, x86-64 Linux), bound with koffi.
// Spec: man 2 open / fstat / ftruncate / eventfd / ioctl_blk(BLKGETSIZE64) / madvise, man 3 posix_memalign.
//
// Every wrapper checks the return value and throws IOError carrying errno and a message naming what was being done
// ("Cannot open /dev/sdb: EACCES (errno 13)"); callers turn ENOENT into NotFoundError where that means something.
// Pointers cross this module as plain numbers: x86-64 user addresses fit in 47 bits, so they are exact doubles,
// and the hot path (filling SQEs) never has to touch a BigInt.

import { assert, IOError } from "../src/errors.ts";
import { koffi } from "./koffi.ts";

// Flag values from <asm-generic/fcntl.h> as used on x86-64 (octal, as the header writes them).
export const O_RDONLY = 0o0;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_DIRECT = 0o40000;
export const O_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
/** _IOR(0x12, 114, size_t): size of a block device in bytes. */
const BLKGETSIZE64 = 0x80081272;

// struct stat on x86-64 glibc: 144 bytes, st_mode (u32) at 24, st_size (i64) at 48.
const STAT_BYTES = 144;
const STAT_MODE_OFFSET = 24;
const STAT_SIZE_OFFSET = 48;
const S_IFMT = 0o170000;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
/** madvise(2) advice: back the range with transparent huge pages where the kernel can. */
const MADV_HUGEPAGE = 14;
/** The size of a PMD-mapped transparent huge page with 4 KiB base pages (x86-64, and arm64 with 4 KiB pages). */
export const HUGE_PAGE_BYTES = 2 * 1024 * 1024;

const lib = koffi.load("libc.so.6");
const openNative = lib.func("int open(const char *path, int flags, uint32_t mode)");
const closeNative = lib.func("int close(int fd)");
const fstatNative = lib.func("int fstat(int fd, void *st)");
const ftruncateNative = lib.func("int ftruncate(int fd, int64_t length)");
const ioctlNative = lib.func("int ioctl(int fd, unsigned long request, ...)");
const eventfdNative = lib.func("int eventfd(unsigned int initval, int flags)");
const flockNative = lib.func("int flock(int fd, int operation)");
const posixMemalignNative = lib.func("int posix_memalign(_Out_ void **memptr, size_t alignment, size_t size)");
const freeNative = lib.func("void free(void *ptr)");
const memsetNative = lib.func("void *memset(void *ptr, int value, size_t bytes)");
const madviseNative = lib.func("int madvise(void *addr, size_t length, int advice)");

// errno number -> name ("EIO"), from koffi's table of this platform's errno values.
const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

export const ENOENT = koffi.os.errno.ENOENT ?? 2;
export const EBADF = koffi.os.errno.EBADF ?? 9;
export const EINTR = koffi.os.errno.EINTR ?? 4;
export const EAGAIN = koffi.os.errno.EAGAIN ?? 11;
export const EBUSY = koffi.os.errno.EBUSY ?? 16;
export const EINVAL = koffi.os.errno.EINVAL ?? 22;
export const ENOBUFS = koffi.os.errno.ENOBUFS ?? 105;
export const ECANCELED = koffi.os.errno.ECANCELED ?? 125;
export const EADDRINUSE = koffi.os.errno.EADDRINUSE ?? 98;

/** "EIO (errno 5)": the form every error message in this layer uses. */
export function describeErrno(errno: number): string {
  return `${errnoNames.get(errno) ?? "unknown error"} (errno ${errno})`;
}

function fail(what: string): never {
  const errno = koffi.errno();
  throw new IOError(`Cannot ${what}: ${describeErrno(errno)}`, errno === EINTR || errno === EAGAIN, { errno });
}

/** open(2). Throws IOError (errno ENOENT when the path does not exist and O_CREAT is not given). */
export function openFile(path: string, flags: number, mode: number): number {
  const fd = openNative(path, flags, mode) as number;
  if (fd < 0) fail(`open ${path}`);
  return fd;
}

export function closeFile(fd: number, what: string): void {
  // Linux releases the descriptor even when close fails (EINTR/EIO), so there is nothing to retry.
  if ((closeNative(fd) as number) < 0) fail(`close ${what}`);
}

export interface FileStat {
  readonly isRegularFile: boolean;
  readonly isBlockDevice: boolean;
  /** Regular file: st_size. Block device: BLKGETSIZE64 (st_size is 0 for devices). */
  readonly sizeBytes: number;
}

export function statFile(fd: number, what: string): FileStat {
  const stat = new Uint8Array(STAT_BYTES);
  if ((fstatNative(fd, stat) as number) < 0) fail(`stat ${what}`);
  const view = new DataView(stat.buffer);
  const type = view.getUint32(STAT_MODE_OFFSET, true) & S_IFMT;
  let sizeBytes = Number(view.getBigInt64(STAT_SIZE_OFFSET, true));
  if (type === S_IFBLK) {
    const size = new BigUint64Array(1);
    if ((ioctlNative(fd, BLKGETSIZE64, "void *", size) as number) < 0) fail(`get the size of block device ${what}`);
    sizeBytes = Number(size[0]);
  }
  assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `size of ${what} is a safe integer`);
  return { isRegularFile: type === S_IFREG, isBlockDevice: type === S_IFBLK, sizeBytes };
}

export function truncateFile(fd: number, sizeBytes: number, what: string): void {
  assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, "truncate size is a safe non-negative integer");
  if ((ftruncateNative(fd, sizeBytes) as number) < 0) fail(`resize ${what} to ${sizeBytes} bytes`);
}

/**
 * flock(2) LOCK_EX|LOCK_NB: false when another open file description holds a lock (EWOULDBLOCK), true when taken.
 * The lock goes with the descriptor: closed, or the process killed, it is released.
 */
export function tryLockExclusive(fd: number, what: string): boolean {
  if ((flockNative(fd, LOCK_EX | LOCK_NB) as number) === 0) return true;
  const errno = koffi.errno();
  if (errno === EAGAIN) return false;
  return fail(`lock ${what}`);
}

/** eventfd(2) with EFD_CLOEXEC|EFD_NONBLOCK: Bun's file reader only polls descriptors that do not block. */
export function openEventfd(): number {
  const fd = eventfdNative(0, EFD_CLOEXEC | EFD_NONBLOCK) as number;
  if (fd < 0) fail("create an eventfd");
  return fd;
}

/**
 * posix_memalign(3), zero-filled (ring structures must start zeroed; data buffers need not, but it is cheap once).
 * With `hugePages`, the whole huge pages of the range are advised MADV_HUGEPAGE before the first touch, so the
 * kernel may back them with transparent huge pages (alignment must then be HUGE_PAGE_BYTES). Advice only: a kernel
 * without them (or with them off) leaves base pages, and nothing fails.
 */
export function allocAligned(bytes: number, alignment: number, hugePages = false): number {
  assert(Number.isSafeInteger(bytes) && bytes > 0, "allocation size is positive");
  assert(!hugePages || alignment % HUGE_PAGE_BYTES === 0, "huge pages need huge-page alignment");
  const out: unknown[] = [null];
  const rc = posixMemalignNative(out, alignment, bytes) as number;
  // posix_memalign returns the error number instead of setting errno.
  if (rc !== 0) throw new IOError(`Cannot allocate ${bytes} bytes aligned to ${alignment}: ${describeErrno(rc)}`, false, { errno: rc });
  const address = Number(out[0] as bigint);
  assert(address !== 0 && address % alignment === 0, "posix_memalign returned an aligned pointer");
  const hugeBytes = hugePages ? Math.floor(bytes / HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES : 0;
  if (hugeBytes > 0) madviseNative(address, hugeBytes, MADV_HUGEPAGE); // the tail stays in base pages
  memsetNative(address, 0, bytes);
  return address;
}

export function freeAligned(address: number): void {
  freeNative(address);
}

/** A zero-copy ArrayBuffer over native memory. The caller must stop using it before the memory is freed. */
export function viewMemory(address: number, bytes: number): ArrayBuffer {
  return koffi.view(address, bytes);
}

/** A native pointer stored at address + offset (reading pointers out of struct io_uring). */
export function readPointer(address: number, offset: number): number {
  const value = koffi.decode(address, offset, "void *") as bigint | null;
  return value === null ? 0 : Number(value);
}
