// The cache-device seam: what the journal and read cache need from the SSD (a file or block device).
// ffi/uring_device.ts implements it with io_uring + O_DIRECT; test/sim uses an in-memory twin that can drop
// or tear writes not yet made durable.
//
// Contract (all offsets/lengths in bytes):
// - offset and every buffer's byteLength are multiples of PAGE_BYTES (4096); buffers come from an AlignedPool
//   (their addresses are 4096-aligned, as O_DIRECT requires).
// - A write resolves when the data is on the device (O_DIRECT completion); it is durable across power loss only
//   after a later fdatasync() resolves.
// - Errors are IOError naming the operation, offset and errno.

export interface CacheDevice {
  readonly path: string;
  readonly sizeBytes: number;
  read(offset: number, buffer: Uint8Array): Promise<void>;
  /**
   * A read like read() through the kernel's page cache, for data read again and again (the read cache's slots): a
   * block read before is then served from memory, without a device round trip. Coherent with write() for reads that do
   * not race it: Linux drops the written range from the page cache around an O_DIRECT write. A read racing a write may
   * leave old bytes cached: callers check what they read (the read cache's CRC-32C per slot). Not for the journal or
   * anything that must see the medium itself (the index at open, recovery): those use read().
   */
  readCached(offset: number, buffer: Uint8Array): Promise<void>;
  /** Vectored write of buffers back to back starting at offset. */
  write(offset: number, buffers: Uint8Array[]): Promise<void>;
  fdatasync(): Promise<void>;
  close(): Promise<void>;
}

/** Page-aligned buffers, pooled so the hot path allocates nothing. */
export interface AlignedPool {
  /** A zero-filled? No: contents are undefined. byteLength = bytes rounded up to PAGE_BYTES. */
  acquire(bytes: number): Uint8Array;
  /**
   * A long-lived buffer of exactly `bytes` rounded up to PAGE_BYTES (no power-of-two size class, so an 8 MiB batch
   * plus its header room does not take 16 MiB), or null when the pool's bound leaves no room for it. Release it
   * with release(); it is freed then, not cached.
   */
  acquireExact(bytes: number): Uint8Array | null;
  release(buffer: Uint8Array): void;
}
