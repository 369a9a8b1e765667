// An ObjectStore in memory, for deterministic simulation tests (test/sim/) and unit tests. The interface is in
// object_store.ts. Data is copied on put and on get so a caller can neither change a stored object by reusing its
// buffer nor see another caller's changes: the aliasing bugs this prevents would hide real-store bugs.

import { assert, NotFoundError } from "../errors.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore } from "./object_store.ts";

export class MemoryStore implements ObjectStore {
  readonly description: string;
  private readonly objects = new Map<string, Uint8Array>();
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
  }

  async get(name: string): Promise<Uint8Array> {
    return this.object(name).slice();
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
