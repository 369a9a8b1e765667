// An ObjectStore in memory, for deterministic simulation tests (test/sim/) and unit tests. The interface is in
// object_store.ts. Data is copied on put and on get so a caller can neither change a stored object by reusing its
// buffer nor see another caller's changes: the aliasing bugs this prevents would hide real-store bugs.
// Versions are a counter, new for every put: two puts of equal bytes are two versions, as in RADOS.

import { assert, ConflictError, NotFoundError } from "../errors.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";

export class MemoryStore implements ObjectStore {
  readonly description: string;
  private readonly objects = new Map<string, Uint8Array>();
  private readonly versions = new Map<string, ObjectVersion>();
  private versionNext = 1;
  private closed = false;

  constructor(description = "memory:") {
    this.description = description;
  }

  /** Objects held (tests). */
  get size(): number {
    return this.objects.size;
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    this.objects.set(name, data.slice());
    this.versions.set(name, String(this.versionNext++));
  }

  async getVersioned(name: string): Promise<VersionedObject | null> {
    this.checkOpen();
    checkObjectName(name);
    const object = this.objects.get(name);
    if (object === undefined) return null;
    return { data: object.slice(), version: this.versions.get(name)! };
  }

  async putIfAbsent(name: string, data: Uint8Array): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    if (this.objects.has(name)) throw new ConflictError(`Cannot create object ${name}: it exists in ${this.description}`);
    await this.put(name, data);
    return this.versions.get(name)!;
  }

  async putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    const current = this.versions.get(name);
    if (current !== expected) {
      throw new ConflictError(
        `Cannot replace object ${name}: its version is ${current ?? "absent"}, not ${expected}, in ${this.description}`,
      );
    }
    await this.put(name, data);
    return this.versions.get(name)!;
  }

  /** Into `into` when it fits, as a store reading from a device would: the simulator then sees a lent buffer's life. */
  async get(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const object = this.object(name);
    if (into === undefined || into.byteLength < object.byteLength) return object.slice();
    into.set(object);
    return into.subarray(0, object.byteLength);
  }

  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    checkRange(name, offset, length);
    const object = this.object(name);
    if (offset + length > object.length) throw shortObjectError(name, offset, length, object.length);
    return object.slice(offset, offset + length);
  }

  async delete(name: string): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    this.objects.delete(name);
    this.versions.delete(name);
  }

  async list(prefix: string): Promise<string[]> {
    this.checkOpen();
    checkListPrefix(prefix);
    return sortNames([...this.objects.keys()].filter((name) => name.startsWith(prefix)));
  }

  async stat(name: string): Promise<ObjectStat | null> {
    this.checkOpen();
    checkObjectName(name);
    const object = this.objects.get(name);
    return object === undefined ? null : { size: object.length };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private object(name: string): Uint8Array {
    this.checkOpen();
    checkObjectName(name);
    const object = this.objects.get(name);
    if (object === undefined) throw new NotFoundError(`Cannot read object ${name}: not found in ${this.description}`);
    return object;
  }

  private checkOpen(): void {
    assert(!this.closed, `${this.description} used after close`);
  }
}
