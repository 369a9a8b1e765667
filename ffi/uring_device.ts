// CacheDevice (src/cache/cache_device.ts) on a file or block device, through io_uring with O_DIRECT.
// Spec: the contract in cache_device.ts; mechanics in ./uring.ts.
//
// Every request is checked before anything is queued, because O_DIRECT turns misalignment into EINVAL far from the
// caller, and a read past the end into a short read: offsets and buffer lengths must be multiples of PAGE_BYTES,
// buffers must be pool memory (alignedAddress; plain Uint8Arrays are refused rather than copied on the hot path:
// copyToAligned in aligned_pool.ts is the explicit slow path) at a page-aligned address, and the whole range must
// lie inside the device. Such failures are InvalidArgumentError; failures of the device itself are IOError.
//
// sizeBytes is the file or device size rounded down to PAGE_BYTES: a partial last page cannot be read with O_DIRECT.

import { PAGE_BYTES, URING_IOVECS_PER_OP_MAX, URING_POLL_IDLE_TURNS, URING_QUEUE_DEPTH } from "../src/constants.ts";
import type { CacheDevice } from "../src/cache/cache_device.ts";
import { InvalidArgumentError, IOError, NotFoundError } from "../src/errors.ts";
import { AlignedBufferPool, alignedAddress } from "./aligned_pool.ts";
import {
  closeFile,
  EBADF,
  EBUSY,
  ENOENT,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  openFile,
  statFile,
  truncateFile,
  tryLockExclusive,
} from "./libc.ts";
import { Uring } from "./uring.ts";

export interface UringDeviceOptions {
  /** Create the file if missing, and grow a smaller regular file to this size (never shrinks; ignored for devices). */
  createSizeBytes?: number;
  /** io_uring slots (ops in flight); default URING_QUEUE_DEPTH. */
  queueDepth?: number;
  /** Empty event-loop turns the ring polls its completions after a submit; default URING_POLL_IDLE_TURNS (0). */
  pollIdleTurns?: number;
  /** Bound on the device's aligned buffer pool; default ALIGNED_POOL_BYTES_DEFAULT. */
  poolBytesMax?: number;
  /**
   * Take an exclusive flock(2) on it, and refuse (IOError, errno EBUSY) if another process holds one: two processes
   * writing one journal would each overwrite the other's records. serve, gc and mkcache ask for it.
   */
  exclusive?: boolean;
  /**
   * A ring shared with others (lsvd serve --nbd-io uring: the NBD sockets' ops and the journal's on one ring): the
   * device uses it instead of opening its own, waits for its own ops on close, and never closes it.
   */
  ring?: Uring;
}

/**
 * Opens `path` with O_RDWR|O_DIRECT|O_CLOEXEC (plus O_CREAT when createSizeBytes is given) and sets up its ring.
 * NotFoundError when the path does not exist and createSizeBytes is not given.
 */
export async function openUringDevice(path: string, options: UringDeviceOptions = {}): Promise<UringDevice> {
  const { createSizeBytes, queueDepth = URING_QUEUE_DEPTH, pollIdleTurns = URING_POLL_IDLE_TURNS } = options;
  if (createSizeBytes !== undefined && !isPageMultiple(createSizeBytes)) {
    throw new InvalidArgumentError(`Cannot create cache device ${path}: size ${createSizeBytes} is not a positive multiple of ${PAGE_BYTES}`);
  }
  if (!Number.isSafeInteger(queueDepth) || queueDepth < 1 || queueDepth > 4096) {
    throw new InvalidArgumentError(`Cannot open cache device ${path}: queue depth ${queueDepth} is not in 1..4096`);
  }
  if (!Number.isSafeInteger(pollIdleTurns) || pollIdleTurns < 0) {
    throw new InvalidArgumentError(`Cannot open cache device ${path}: poll idle turns ${pollIdleTurns} is not a whole number >= 0`);
  }
  let fd: number;
  try {
    fd = openFile(path, O_RDWR | O_DIRECT | O_CLOEXEC | (createSizeBytes === undefined ? 0 : O_CREAT), 0o600);
  } catch (error) {
    if (error instanceof IOError && error.errno === ENOENT) {
      throw new NotFoundError(`Cannot open cache device ${path}: no such file or directory`, { cause: error });
    }
    throw error;
  }
  let uring: Uring | undefined;
  let cachedFd = -1;
  try {
    if (options.exclusive === true && !tryLockExclusive(fd, path)) {
      throw new IOError(`Cache ${path} is in use by another process (an lsvd serve or gc holds its lock): stop that first`, false, { errno: EBUSY });
    }
    let stat = statFile(fd, path);
    if (!stat.isRegularFile && !stat.isBlockDevice) {
      throw new InvalidArgumentError(`Cannot use ${path} as a cache device: not a regular file or block device`);
    }
    if (createSizeBytes !== undefined && stat.isRegularFile && stat.sizeBytes < createSizeBytes) {
      truncateFile(fd, createSizeBytes, path);
      stat = statFile(fd, path);
    }
    const sizeBytes = Math.floor(stat.sizeBytes / PAGE_BYTES) * PAGE_BYTES;
    if (sizeBytes === 0) throw new InvalidArgumentError(`Cannot use ${path} as a cache device: it is smaller than a page`);
    // The second descriptor, without O_DIRECT, serves readCached() through the page cache.
    cachedFd = openFile(path, O_RDONLY | O_CLOEXEC, 0);
    uring = options.ring ?? Uring.open(queueDepth, pollIdleTurns);
    return new UringDevice(path, fd, sizeBytes, uring, new AlignedBufferPool(options.poolBytesMax), stat.isBlockDevice, cachedFd, options.ring === undefined);
  } catch (error) {
    if (uring !== undefined && options.ring === undefined) await uring.close();
    if (cachedFd >= 0) closeFile(cachedFd, path);
    closeFile(fd, path);
    throw error;
  }
}

export class UringDevice implements CacheDevice {
  private closing: Promise<void> | undefined;

  /** Use openUringDevice. */
  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sizeBytes: number,
    private readonly uring: Uring,
    /** Buffers for this (or any) UringDevice; freed when the device closes. */
    readonly pool: AlignedBufferPool,
    /** A block device rather than a regular file (files may be sparse; devices never are). */
    readonly isBlockDevice = false,
    /** The same file opened without O_DIRECT, for readCached(); -1: readCached() reads like read(). */
    private readonly cachedFd = -1,
    /** False: the ring is shared (UringDeviceOptions.ring), and close() waits for this device's ops only. */
    private readonly ownsRing = true,
  ) {}

  /** On a shared ring: this device's ops in flight, and close()'s wait for the last one. */
  private opsInFlight = 0;
  private opsIdle: (() => void) | undefined;
  private readonly opDone = () => {
    if (--this.opsInFlight === 0) this.opsIdle?.();
  };

  /** Counts `op` while it runs when the ring is shared (an owned ring's close() waits for every op itself). */
  private tracked(op: Promise<void>): Promise<void> {
    if (this.ownsRing) return op;
    this.opsInFlight++;
    op.then(this.opDone, this.opDone);
    return op;
  }

  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.readFrom(this.fd, offset, buffer);
  }

  /**
   * read() through the page cache (the descriptor opened without O_DIRECT): a page the kernel holds completes inside
   * the submit, with no device round trip; a page it does not is read from the device (and kept). Same checks as read().
   */
  readCached(offset: number, buffer: Uint8Array): Promise<void> {
    return this.readFrom(this.cachedFd < 0 ? this.fd : this.cachedFd, offset, buffer);
  }

  /** One checked read on `fd` (the O_DIRECT descriptor or the page-cache one): the same refusals for both. */
  private readFrom(fd: number, offset: number, buffer: Uint8Array): Promise<void> {
    const refusal = this.checkRange("read", offset, buffer.byteLength);
    if (refusal !== undefined) return Promise.reject(refusal);
    const address = alignedAddress(buffer);
    const addressRefusal = this.checkAddress("read", offset, buffer, address);
    if (addressRefusal !== undefined) return Promise.reject(addressRefusal);
    if (buffer.byteLength === 0) return Promise.resolve();
    return this.tracked(this.uring.read(fd, address!, buffer.byteLength, offset, this.path));
  }

  write(offset: number, buffers: Uint8Array[]): Promise<void> {
    let bytes = 0;
    for (let index = 0; index < buffers.length; index++) bytes += buffers[index]!.byteLength;
    const refusal = this.checkRange("write", offset, bytes);
    if (refusal !== undefined) return Promise.reject(refusal);
    if (buffers.length === 1) {
      const buffer = buffers[0]!;
      const address = alignedAddress(buffer);
      const addressRefusal = this.checkAddress("write", offset, buffer, address);
      if (addressRefusal !== undefined) return Promise.reject(addressRefusal);
      if (bytes === 0) return Promise.resolve();
      return this.tracked(this.uring.write(this.fd, address!, bytes, offset, this.path));
    }
    const addresses = new Array<number>(buffers.length);
    const lengths = new Array<number>(buffers.length);
    for (let index = 0; index < buffers.length; index++) {
      const buffer = buffers[index]!;
      const address = alignedAddress(buffer);
      const addressRefusal = this.checkAddress("write", offset, buffer, address);
      if (addressRefusal !== undefined) return Promise.reject(addressRefusal);
      addresses[index] = address!;
      lengths[index] = buffer.byteLength;
    }
    if (bytes === 0) return Promise.resolve();
    if (buffers.length <= URING_IOVECS_PER_OP_MAX) return this.tracked(this.uring.writev(this.fd, addresses, lengths, offset, this.path));
    // More buffers than one op carries: consecutive ops at consecutive offsets. The write resolves when all have.
    const parts: Promise<void>[] = [];
    let partOffset = offset;
    for (let start = 0; start < buffers.length; start += URING_IOVECS_PER_OP_MAX) {
      const end = Math.min(start + URING_IOVECS_PER_OP_MAX, buffers.length);
      const partLengths = lengths.slice(start, end);
      parts.push(this.tracked(this.uring.writev(this.fd, addresses.slice(start, end), partLengths, partOffset, this.path)));
      for (const length of partLengths) partOffset += length;
    }
    return Promise.all(parts).then(() => undefined);
  }

  /** Makes writes that completed before this call durable (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC). */
  fdatasync(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(this.closedError("fdatasync", undefined));
    return this.tracked(this.uring.fsync(this.fd, true, this.path));
  }

  /** Refuses new requests, lets queued and in-flight ones finish, then closes the ring (its own), the file and the pool. */
  close(): Promise<void> {
    this.closing ??= this.drainAndClose();
    return this.closing;
  }

  private async drainAndClose(): Promise<void> {
    if (this.ownsRing) await this.uring.close();
    else if (this.opsInFlight > 0) await new Promise<void>((resolve) => (this.opsIdle = resolve));
    if (this.cachedFd >= 0) closeFile(this.cachedFd, this.path);
    closeFile(this.fd, this.path);
    this.pool.close();
  }

  private checkRange(operation: string, offset: number, bytes: number): LsvdRefusal | undefined {
    if (this.closing !== undefined) return this.closedError(operation, offset);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_BYTES !== 0) {
      return new InvalidArgumentError(`Cannot ${operation} ${this.path} at offset ${offset}: offset is not a multiple of ${PAGE_BYTES}`);
    }
    if (offset + bytes > this.sizeBytes) {
      return new InvalidArgumentError(
        `Cannot ${operation} ${this.path} at offset ${offset} (${bytes} bytes): past the end of the device (${this.sizeBytes} bytes)`,
      );
    }
    return undefined;
  }

  private checkAddress(operation: string, offset: number, buffer: Uint8Array, address: number | undefined): LsvdRefusal | undefined {
    if (buffer.byteLength % PAGE_BYTES !== 0) {
      return new InvalidArgumentError(
        `Cannot ${operation} ${this.path} at offset ${offset}: buffer length ${buffer.byteLength} is not a multiple of ${PAGE_BYTES}`,
      );
    }
    if (address === undefined) {
      return new InvalidArgumentError(
        `Cannot ${operation} ${this.path} at offset ${offset}: buffer is not from an AlignedBufferPool (use copyToAligned)`,
      );
    }
    if (address % PAGE_BYTES !== 0) {
      return new InvalidArgumentError(`Cannot ${operation} ${this.path} at offset ${offset}: buffer address is not ${PAGE_BYTES}-aligned`);
    }
    return undefined;
  }

  private closedError(operation: string, offset: number | undefined): IOError {
    const where = offset === undefined ? "" : ` at offset ${offset}`;
    return new IOError(`Cannot ${operation} ${this.path}${where}: device is closed`, false, { errno: EBADF });
  }
}

type LsvdRefusal = InvalidArgumentError | IOError;

function isPageMultiple(bytes: number): boolean {
  return Number.isSafeInteger(bytes) && bytes > 0 && bytes % PAGE_BYTES === 0;
}
