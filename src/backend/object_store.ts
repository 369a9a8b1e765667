// The object-store seam: everything the volume needs from a backend (directory, RADOS, S3, memory).
// Extra behaviour (retries, fault injection) wraps a store rather than living in it.
// Names are plain strings relative to the store's root ("obj", "obj.0000002a"); see format/object_name.ts.

export interface ObjectStat {
  /** Object length in bytes. */
  size: number;
}

/**
 * Names one stored version of an object; opaque, only compared for equality. Each store says what it is (a content
 * digest, RADOS's object version, S3's ETag, a counter). Writes of different bytes always give different versions;
 * equal bytes may share one (file: digest; S3: the ETag is the MD5 of the bytes), which keeps compare-and-swap safe
 * as long as the bytes are the object's whole state.
 *
 * Competing writers of one name must write different bytes (the lease names its holder and a random cookie): when
 * the answer to a conditional write is lost or unclear (S3's 5xx, a timeout), the store or RetryingStore decides
 * whether it landed by reading the object back and comparing the bytes, and cannot tell two equal writes apart.
 */
export type ObjectVersion = string;

export interface VersionedObject {
  data: Uint8Array;
  /** The version of exactly these bytes. */
  version: ObjectVersion;
}

export interface ObjectStore {
  /** Human-readable location, used in messages ("file:///var/lsvd", "rados://rbd", "s3://bucket"). */
  readonly description: string;
  /**
   * Store a whole object atomically: afterwards a reader sees either the old object or the new one, never a mix,
   * and the new one is durable when the promise resolves.
   */
  put(name: string, data: Uint8Array): Promise<void>;
  /**
   * Whole object. Throws NotFoundError if absent. `into`: a buffer the caller lends for the bytes; a store may read
   * them into it (when they fit) and return a view of its start, or ignore it and return a new buffer. Either way
   * the caller must not reuse `into` while it still needs the result.
   */
  get(name: string, into?: Uint8Array): Promise<Uint8Array>;
  /** Bytes [offset, offset+length). Throws NotFoundError if absent, CorruptionError if the object is shorter. */
  getRange(name: string, offset: number, length: number): Promise<Uint8Array>;
  /** Idempotent: deleting an absent object succeeds. */
  delete(name: string): Promise<void>;
  /** Names beginning with prefix, sorted ascending. */
  list(prefix: string): Promise<string[]>;
  /** null if absent. */
  stat(name: string): Promise<ObjectStat | null>;
  /** Whole object and the version of those bytes; null if absent. */
  getVersioned(name: string): Promise<VersionedObject | null>;
  /**
   * Creates `name` only if no object has that name, atomically against every other writer of the store (other
   * processes and hosts included); throws ConflictError if one exists. Durable when it resolves. `versionNeeded`
   * false: the caller discards the version (a log object: created once, never compared-and-swapped), so a store
   * whose version costs work may skip it and resolve with "" (the file store would hash the whole object).
   */
  putIfAbsent(name: string, data: Uint8Array, versionNeeded?: boolean): Promise<ObjectVersion>;
  /**
   * Replaces `name` only if its current version is `expected`, atomically against every other writer; throws
   * ConflictError otherwise (also when the object is absent). Durable when it resolves.
   */
  putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion>;
  /** Release connections; outstanding calls finish first. */
  close(): Promise<void>;
}
