// The superblock as its owner holds it: the decoded object and the store version it read or last wrote. Every
// rewrite is a compare-and-swap (putIfVersion) on that version, so a writer that lost the volume cannot overwrite
// its successor's superblock, and a late attempt of an old rewrite cannot land over a newer one
// (docs/architecture.md, "Ownership and fencing", rule 5). A ConflictError that is not explained by our own earlier
// attempt means someone else wrote it: the owner is fenced.
//
// One write at a time (the write path chains them); asserted.

import { assert, ConflictError, CorruptionError, NotFoundError } from "../errors.ts";
import type { ObjectStore, ObjectVersion } from "../backend/object_store.ts";
import { decodeSuperblockChecked, encodeSuperblock, type DecodedSuperblock, type SuperblockObject } from "../format/superblock_object.ts";
import { FencedError, type Fence } from "./lease.ts";

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Decodes a superblock object, naming the volume in the error. */
export function decodeVolumeSuperblock(prefix: string, bytes: Uint8Array): DecodedSuperblock {
  try {
    return decodeSuperblockChecked(bytes);
  } catch (error) {
    if (error instanceof CorruptionError) throw new CorruptionError(`Cannot read superblock '${prefix}': ${error.message}`);
    throw error;
  }
}

export class SuperblockStore {
  private writing = false;
  /** Bytes of a write whose outcome is unknown (it failed with an error other than a conflict): it may have landed. */
  private unconfirmed: Uint8Array | null = null;
  /** Superblock writes that landed (tests, stats). */
  writes = 0;

  private current: SuperblockObject;
  /** How the superblock was read (its checkpoint list may lack a checksum), until we write another list. */
  private read: DecodedSuperblock;

  constructor(
    private readonly store: ObjectStore,
    readonly prefix: string,
    decoded: DecodedSuperblock,
    private version: ObjectVersion,
    private readonly fence: Fence,
  ) {
    this.current = decoded.superblock;
    this.read = decoded;
  }

  static async read(store: ObjectStore, prefix: string, fence: Fence): Promise<SuperblockStore> {
    const object = await store.getVersioned(prefix);
    if (object === null) throw new NotFoundError(`No volume at ${store.description}/${prefix}: superblock object '${prefix}' is missing`);
    return new SuperblockStore(store, prefix, decodeVolumeSuperblock(prefix, object.data), object.version, fence);
  }

  get superblock(): SuperblockObject {
    return this.current;
  }

  /** The superblock with what is known of its checkpoint list: unchecksummed as read, until we write another list. */
  get decoded(): DecodedSuperblock {
    return { ...this.read, superblock: this.current };
  }

  /** Replaces the superblock by `next`, conditioned on the version this owner last saw. */
  async write(next: SuperblockObject): Promise<void> {
    assert(!this.writing, "one superblock write at a time");
    this.fence.check();
    const bytes = encodeSuperblock(next);
    this.writing = true;
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          this.version = await this.store.putIfVersion(this.prefix, bytes, this.version);
          this.unconfirmed = null;
          if (JSON.stringify(next.checkpoints) !== JSON.stringify(this.current.checkpoints)) {
            this.read = { superblock: next, checkpointsChecksummed: true, rewrittenByReference: false };
          }
          this.current = next;
          this.writes += 1;
          return;
        } catch (error) {
          if (error instanceof FencedError) throw error;
          if (!(error instanceof ConflictError)) {
            this.unconfirmed = bytes;
            throw error;
          }
          // Our own earlier write whose reply was lost explains the conflict: continue from its version.
          if (attempt === 0 && (await this.adoptUnconfirmed())) continue;
          const reason = `the superblock of ${this.prefix} was changed by another writer (${error.message})`;
          this.fence.fence(reason);
          throw new FencedError(`Volume ${this.prefix}: this process no longer owns it (${reason})`);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** If the stored superblock is the one our unconfirmed write carried, take its version; true if so. */
  private async adoptUnconfirmed(): Promise<boolean> {
    const unconfirmed = this.unconfirmed;
    if (unconfirmed === null) return false;
    this.unconfirmed = null;
    const stored = await this.store.getVersioned(this.prefix);
    if (stored === null || !sameBytes(stored.data, unconfirmed)) return false;
    this.version = stored.version;
    this.current = decodeSuperblockChecked(stored.data).superblock;
    return true;
  }
}
