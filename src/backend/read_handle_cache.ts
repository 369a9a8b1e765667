// Open read handles of a FileStore's objects, kept between ranged reads (least recently used out first).
//
// Why: a backend read of a small range used to be three thread-pool round trips (open, read, close); with the
// handle kept it is one. Random reads of backend objects spend most of their time there (bench/RESULTS.md).
//
// Why it is safe: an object's file is only ever replaced whole (put renames a new file over the name) or removed
// (delete unlinks it). A kept handle would go on reading the old file, so the store drops the name here after every
// rename or unlink, before the put or delete resolves: a read that starts after that opens the new file. A read that
// runs alongside a put of the same name may see either version, as on any store.
//
// Handles are plain descriptors, not fs.promises FileHandles: Bun treats a FileHandle reclaimed by the garbage
// collector as an error, and a store nobody closed (a CLI command's) must not fail for holding one.
//
// Invariants:
// - At most `capacity` handles are idle (kept with no read on them); more are open only while reads use them, so
//   open handles <= capacity + reads in flight (bounded by the caller's read concurrency).
// - A handle is closed exactly once: when it is evicted or dropped with no reader, or by the last reader after that.

import { close as closeFd } from "node:fs";
import { assert } from "../errors.ts";

interface Entry {
  readonly name: string;
  /** Resolves to the open descriptor; rejects when the open failed (the entry is then gone from the cache). */
  readonly handle: Promise<number>;
  readers: number;
  /** Out of the cache (evicted, dropped, or cache closed): closed when the last reader is done. */
  detached: boolean;
}

export class ReadHandleCache {
  /** Insertion order is recency: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private closed = false;
  private handlesOpen = 0;

  constructor(
    private readonly capacity: number,
    private readonly open: (name: string) => Promise<number>,
  ) {
    assert(Number.isInteger(capacity) && capacity >= 1, "read handle cache holds at least one handle");
  }

  /** Runs `use` with an open descriptor of `name`, opening it if none is kept. Errors of open and use pass through. */
  async withHandle<T>(name: string, use: (fd: number) => Promise<T>): Promise<T> {
    assert(!this.closed, "read handle cache used after close");
    const entry = this.acquire(name);
    try {
      return await use(await entry.handle);
    } finally {
      this.release(entry);
    }
  }

  /** The object behind `name` was replaced or removed: the next read must open it anew. */
  drop(name: string): void {
    const entry = this.entries.get(name);
    if (entry === undefined) return;
    this.entries.delete(name);
    this.detach(entry);
  }

  /** Closes every idle handle; handles in use close when their reads finish. */
  close(): void {
    this.closed = true;
    for (const entry of [...this.entries.values()]) this.drop(entry.name);
  }

  /** Handles open now (idle or in use), for tests and stats. */
  get openCount(): number {
    return this.handlesOpen;
  }

  private acquire(name: string): Entry {
    let entry = this.entries.get(name);
    if (entry !== undefined) {
      this.entries.delete(name); // re-inserted below as the most recently used
    } else {
      const handle = this.open(name);
      entry = { name, handle, readers: 0, detached: false };
      const opened = entry;
      handle.then(
        () => {
          this.handlesOpen += 1;
        },
        () => {
          // A failed open keeps nothing: the next read tries again (the object may appear, or the error be gone).
          if (this.entries.get(name) === opened) this.entries.delete(name);
          opened.detached = true;
        },
      );
    }
    entry.readers += 1;
    this.entries.set(name, entry);
    this.evictIdle();
    return entry;
  }

  private release(entry: Entry): void {
    assert(entry.readers > 0, "released handle had a reader");
    entry.readers -= 1;
    if (entry.detached && entry.readers === 0) this.closeHandle(entry);
    else this.evictIdle();
  }

  /** Evicts least recently used idle handles while more than `capacity` are kept. */
  private evictIdle(): void {
    if (this.entries.size <= this.capacity) return;
    for (const entry of this.entries.values()) {
      if (this.entries.size <= this.capacity) break;
      if (entry.readers > 0) continue;
      this.entries.delete(entry.name);
      this.detach(entry);
    }
  }

  private detach(entry: Entry): void {
    if (entry.detached) return;
    entry.detached = true;
    if (entry.readers === 0) this.closeHandle(entry);
  }

  private closeHandle(entry: Entry): void {
    entry.handle.then(
      (fd) => {
        this.handlesOpen -= 1;
        // A close error leaves nothing to do: the descriptor is released either way.
        closeFd(fd, () => undefined);
      },
      () => undefined,
    );
  }
}
