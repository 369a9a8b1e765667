// A clone's chain of bases (docs/architecture.md, "Clones"): a clone's superblock names its base (clone_info: base
// vol_uuid, last_seq, base prefix); objects with seq <= last_seq are the base's, read under the base's prefix, and
// recursively from the base's own base for seqs at or below its last_seq. The chain is loaded once at open (each
// base's superblock, its vol_uuid checked against the clone_info naming it) and is immutable from then on: the objects
// a clone reads from a base are below the base snapshot's checkpoint, which the base pins while the clone is registered.
//
// ChainStore is the one place that turns a clone's object name into the name the object really has. Everything that
// works on a volume (recovery, the read path, the write path, GC, fsck) goes through it with the clone's own prefix;
// it refuses to write or delete any name that resolves into a base, so a clone can never change its bases.

import { CLONE_DEPTH_MAX } from "../constants.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "../backend/object_store.ts";
import { CorruptionError, InvalidArgumentError, NotFoundError, assert } from "../errors.ts";
import { objectName, parseObjectName } from "../format/object_name.ts";
import { decodeSuperblockChecked, type SuperblockObject } from "../format/superblock_object.ts";

/** One volume of a chain: its prefix and uuid, and the seqs at or below which its own base answers (0: no base). */
export interface ChainLevel {
  prefix: string;
  volUuid: string;
  baseLastSeq: number;
}

export class CloneChain {
  /** levels[0] is the volume itself, levels[i + 1] the base of levels[i]. */
  constructor(readonly levels: readonly ChainLevel[]) {
    assert(levels.length >= 1, "a chain holds the volume itself");
    for (let i = 1; i < levels.length; i++) {
      assert(levels[i]!.baseLastSeq < levels[i - 1]!.baseLastSeq, "last_seq decreases down the chain");
    }
    assert(levels[levels.length - 1]!.baseLastSeq === 0, "the chain ends at a volume without a base");
  }

  /** Objects with seq <= floor are not the volume's own (0 for a volume that is no clone). */
  get floor(): number {
    return this.levels[0]!.baseLastSeq;
  }

  get isClone(): boolean {
    return this.levels.length > 1;
  }

  /** The level holding object `seq` of the volume. */
  levelOf(seq: number): ChainLevel {
    let index = 0;
    while (index + 1 < this.levels.length && seq <= this.levels[index]!.baseLastSeq) index += 1;
    return this.levels[index]!;
  }

  /** The real name of `name` (a name of the volume's own prefix): unchanged unless it resolves into a base. */
  resolve(name: string): string {
    const self = this.levels[0]!;
    if (!this.isClone) return name;
    const seq = parseObjectName(self.prefix, name);
    if (seq === null || seq === 0 || seq > self.baseLastSeq) return name;
    return objectName(this.levelOf(seq).prefix, seq);
  }

  /** The store the volume works through: reads resolve through the chain, writes into a base are refused. */
  wrap(store: ObjectStore): ObjectStore {
    return this.isClone ? new ChainStore(store, this) : store;
  }
}

/** The prefix a clone_info name designates in the clone's own store. lsvd records the prefix itself; the reference
 * tool records the path (file backend) or "pool/object" (RADOS) it was given: the part after the last '/'. */
export function basePrefixOf(baseName: string): string {
  const slash = baseName.lastIndexOf("/");
  return slash < 0 ? baseName : baseName.slice(slash + 1);
}

/** Reads every base's superblock from `superblock` down: the chain, or a clear error if a base is gone or foreign. */
export async function loadCloneChain(store: ObjectStore, prefix: string, superblock: SuperblockObject): Promise<CloneChain> {
  const levels: ChainLevel[] = [];
  let current = { prefix, superblock };
  for (;;) {
    const clone = current.superblock.clone;
    levels.push({ prefix: current.prefix, volUuid: current.superblock.volUuid, baseLastSeq: clone?.lastSeq ?? 0 });
    if (clone === null) return new CloneChain(levels);
    if (levels.length > CLONE_DEPTH_MAX) throw new CorruptionError(`Volume ${prefix}: its chain of bases is deeper than ${CLONE_DEPTH_MAX}`);
    if (clone.lastSeq === 0) throw new CorruptionError(`Volume ${current.prefix}: its clone_info names last_seq 0`);
    const basePrefix = basePrefixOf(clone.baseName);
    const where = `volume ${current.prefix} is a clone of ${basePrefix} (last_seq ${clone.lastSeq})`;
    const bytes = await readBaseSuperblock(store, basePrefix, where);
    let base: SuperblockObject;
    try {
      base = decodeSuperblockChecked(bytes).superblock;
    } catch (error) {
      if (error instanceof CorruptionError) throw new CorruptionError(`Cannot read the base of a clone: ${where}, whose superblock does not decode: ${error.message}`);
      throw error;
    }
    if (base.volUuid !== clone.baseUuid) {
      throw new CorruptionError(`Cannot read the base of a clone: ${where}, but ${basePrefix} is volume ${base.volUuid}, not ${clone.baseUuid}`);
    }
    if (base.clone !== null && base.clone.lastSeq >= clone.lastSeq) {
      throw new CorruptionError(`Cannot read the base of a clone: ${where}, but its own base answers seqs up to ${base.clone.lastSeq}`);
    }
    current = { prefix: basePrefix, superblock: base };
  }
}

async function readBaseSuperblock(store: ObjectStore, basePrefix: string, where: string): Promise<Uint8Array> {
  try {
    return await store.get(basePrefix);
  } catch (error) {
    if (error instanceof NotFoundError) throw new NotFoundError(`Cannot read the base of a clone: ${where}, whose superblock is missing from ${store.description}`);
    throw error;
  }
}

/** A volume's view of the store through its chain (see the file comment). close() leaves the inner store open. */
export class ChainStore implements ObjectStore {
  readonly description: string;
  /** Writes or deletes refused because the name is a base's (tests). */
  refused = 0;

  constructor(
    readonly inner: ObjectStore,
    readonly chain: CloneChain,
  ) {
    this.description = inner.description;
  }

  private writable(name: string, what: string): string {
    const resolved = this.chain.resolve(name);
    if (resolved !== name) {
      this.refused += 1;
      throw new InvalidArgumentError(`${what} of ${name} refused: it is object ${resolved} of a base of this clone, which a clone never changes`);
    }
    return name;
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    return this.inner.put(this.writable(name, "put"), data);
  }
  get(name: string, into?: Uint8Array): Promise<Uint8Array> {
    return this.inner.get(this.chain.resolve(name), into);
  }
  getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    return this.inner.getRange(this.chain.resolve(name), offset, length);
  }
  async delete(name: string): Promise<void> {
    return this.inner.delete(this.writable(name, "delete"));
  }
  /** The clone's own names only: base objects are never listed as the clone's. */
  list(prefix: string): Promise<string[]> {
    return this.inner.list(prefix);
  }
  stat(name: string): Promise<ObjectStat | null> {
    return this.inner.stat(this.chain.resolve(name));
  }
  getVersioned(name: string): Promise<VersionedObject | null> {
    return this.inner.getVersioned(this.chain.resolve(name));
  }
  async putIfAbsent(name: string, data: Uint8Array, versionNeeded = true): Promise<ObjectVersion> {
    return this.inner.putIfAbsent(this.writable(name, "put"), data, versionNeeded);
  }
  async putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    return this.inner.putIfVersion(this.writable(name, "put"), data, expected);
  }
  async close(): Promise<void> {}
}
