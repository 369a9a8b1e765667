// A store view that a simulated crash cuts off: after fence(), every call of the dead incarnation fails and does
// nothing, as a killed process cannot write any more. Calls already forwarded complete normally.

import { IOError } from "../../src/errors.ts";
import type { ObjectStat, ObjectStore } from "../../src/backend/object_store.ts";

export class FencedStore implements ObjectStore {
  private fenced = false;
  readonly description: string;

  constructor(private readonly inner: ObjectStore) {
    this.description = inner.description;
  }

  fence(): void {
    this.fenced = true;
  }

  private check(): void {
    if (this.fenced) throw new IOError("this incarnation crashed");
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    this.check();
    return this.inner.put(name, data);
  }
  async get(name: string): Promise<Uint8Array> {
    this.check();
    return this.inner.get(name);
  }
  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    this.check();
    return this.inner.getRange(name, offset, length);
  }
  async delete(name: string): Promise<void> {
    this.check();
    return this.inner.delete(name);
  }
  async list(prefix: string): Promise<string[]> {
    this.check();
    return this.inner.list(prefix);
  }
  async stat(name: string): Promise<ObjectStat | null> {
    this.check();
    return this.inner.stat(name);
  }
  async close(): Promise<void> {}
}
