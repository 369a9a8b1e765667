// CoalescedSync (src/util/coalesced_sync.ts): every caller gets a sync that started after it asked; callers of one
// moment share one; a failure reaches every caller that waited on it and no later one.
import { describe, expect, test } from "bun:test";
import { CoalescedSync } from "../../src/util/coalesced_sync.ts";

/** A sync operation the test completes by hand, recording when each started (in calls of `mark`). */
class ManualSync {
  readonly started: number[] = [];
  private pending: { resolve: () => void; reject: (error: Error) => void }[] = [];
  marks = 0;

  run = (): Promise<void> => {
    this.started.push(this.marks);
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  };

  mark(): number {
    return ++this.marks;
  }

  finish(error?: Error): void {
    const next = this.pending.shift();
    if (!next) throw new Error("no sync is running");
    if (error) next.reject(error);
    else next.resolve();
  }
}

const turns = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("CoalescedSync", () => {
  test("callers that ask while a sync runs share the next one, which starts after they asked", async () => {
    const manual = new ManualSync();
    const sync = new CoalescedSync(manual.run);
    const first = sync.sync();
    await turns();
    expect(manual.started).toEqual([0]);
    const asked = manual.mark();
    const later = [sync.sync(), sync.sync(), sync.sync()];
    let laterDone = false;
    void Promise.all(later).then(() => (laterDone = true));
    manual.finish();
    await first;
    await turns();
    // The running sync may have started before the three asked: it does not count for them.
    expect(laterDone).toBe(false);
    expect(manual.started).toEqual([0, asked]);
    manual.finish();
    await Promise.all(later);
    expect(sync.syncs).toBe(2);
  });

  test("a lone caller gets one sync of its own", async () => {
    const manual = new ManualSync();
    const sync = new CoalescedSync(manual.run);
    const done = sync.sync();
    await turns();
    manual.finish();
    await done;
    expect(manual.started.length).toBe(1);
    expect(sync.syncs).toBe(1);
  });

  test("a failed sync rejects the callers it served; the next caller starts a new one", async () => {
    const manual = new ManualSync();
    const sync = new CoalescedSync(manual.run);
    const failures = [sync.sync(), sync.sync()].map((each) => each.then(() => null, (error: Error) => error.message));
    await turns();
    expect(manual.started.length).toBe(1);
    manual.finish(new Error("EIO"));
    expect(await Promise.all(failures)).toEqual(["EIO", "EIO"]);
    expect(sync.syncs).toBe(0);
    const c = sync.sync();
    await turns();
    expect(manual.started.length).toBe(2);
    manual.finish();
    await c;
    expect(sync.syncs).toBe(1);
  });

  test("idle waits for the running sync, failed or not", async () => {
    const manual = new ManualSync();
    const sync = new CoalescedSync(manual.run);
    await sync.idle(); // nothing running
    const a = sync.sync().catch(() => "failed");
    await turns();
    let idle = false;
    const waiting = sync.idle().then(() => (idle = true));
    await turns();
    expect(idle).toBe(false);
    manual.finish(new Error("EIO"));
    await waiting;
    expect(await a).toBe("failed");
  });
});
