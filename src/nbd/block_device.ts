// What the NBD layer serves: a small block-device interface, never volume internals (cf. nbdkit plugins).
// Offsets and lengths are in bytes and have been range-checked by nbd/session.ts before these are called.

export interface BlockStatusExtent {
  /** Bytes covered by this run. */
  length: number;
  /** Unallocated: reads as zeroes and holds no data (NBD_STATE_HOLE). */
  hole: boolean;
  /** Reads as zeroes (NBD_STATE_ZERO). */
  zero: boolean;
}

/**
 * Told once when a write ends: the hot path's form of BlockDevice.write, with no promise per request (the NBD
 * session's request slots implement it).
 */
export interface WriteListener {
  writeDone(): void;
  writeFailed(error: unknown): void;
}

export interface BlockDevice {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Granularity of offsets and lengths the device accepts, a power of two (1: any; the device does any read-modify-write). */
  readonly blockSizeMinBytes: number;
  readonly blockSizePreferredBytes: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Resolves when the write is acknowledged-safe (journaled); with fua, also durable. The device may keep `data` until
   * then, never modifying it; not after (the NBD session reuses the buffers it assembles payloads in).
   */
  write(offset: number, data: Uint8Array, fua: boolean): Promise<void>;
  /**
   * Optional: write() without a promise. Either throws at once (bad arguments; the listener is not told) or tells
   * `listener` exactly once, maybe before it returns. The same rules as write() otherwise.
   */
  writeThen?(offset: number, data: Uint8Array, fua: boolean, listener: WriteListener): void;
  /** Every write acknowledged before flush() was called, on any connection, is durable when it resolves. */
  flush(): Promise<void>;
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  /** Runs covering [offset, offset+length) in order; may stop early (at least one run). */
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]>;
  /** Prefetch hint. */
  cache(offset: number, length: number): Promise<void>;
}
