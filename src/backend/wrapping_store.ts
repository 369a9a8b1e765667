// The base of every store that adds behaviour around another one (retries, injected faults, crash fencing), as
// nbdkit's filters wrap a plugin: each operation is forwarded through one `call` hook that sees the operation's name
// and object, so a wrapper says what it adds once instead of once per method.

import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";

export type StoreOp =
  | "put"
  | "get"
  | "getRange"
  | "delete"
  | "list"
  | "stat"
  | "getVersioned"
  | "putIfAbsent"
  | "putIfVersion";
export const STORE_OPS: readonly StoreOp[] = [
  "put",
  "get",
  "getRange",
  "delete",
  "list",
  "stat",
  "getVersioned",
  "putIfAbsent",
  "putIfVersion",
];

export abstract class WrappingStore implements ObjectStore {
  readonly description: string;

  constructor(readonly inner: ObjectStore) {
    this.description = inner.description;
  }

  /**
   * Runs `forward` (the inner store's operation) with this wrapper's behaviour around it. `data`: the bytes a put,
   * putIfAbsent or putIfVersion writes. `lent`: the buffer a get was lent (its `into`): `forward` may write into the
   * caller's memory, so no attempt of it may still run once the call has ended.
   */
  protected abstract call<T>(op: StoreOp, name: string, forward: () => Promise<T>, data?: Uint8Array, lent?: Uint8Array): Promise<T>;

  abstract close(): Promise<void>;

  put(name: string, data: Uint8Array): Promise<void> {
    return this.call("put", name, () => this.inner.put(name, data), data);
  }

  get(name: string, into?: Uint8Array): Promise<Uint8Array> {
    return this.call("get", name, () => this.inner.get(name, into), undefined, into);
  }

  getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    return this.call("getRange", name, () => this.inner.getRange(name, offset, length));
  }

  delete(name: string): Promise<void> {
    return this.call("delete", name, () => this.inner.delete(name));
  }

  list(prefix: string): Promise<string[]> {
    return this.call("list", `${prefix}*`, () => this.inner.list(prefix));
  }

  stat(name: string): Promise<ObjectStat | null> {
    return this.call("stat", name, () => this.inner.stat(name));
  }

  getVersioned(name: string): Promise<VersionedObject | null> {
    return this.call("getVersioned", name, () => this.inner.getVersioned(name));
  }

  putIfAbsent(name: string, data: Uint8Array, versionNeeded = true): Promise<ObjectVersion> {
    return this.call("putIfAbsent", name, () => this.inner.putIfAbsent(name, data, versionNeeded), data);
  }

  putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    return this.call("putIfVersion", name, () => this.inner.putIfVersion(name, data, expected), data);
  }
}
