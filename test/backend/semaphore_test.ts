// Semaphore (src/backend/semaphore.ts): bounded, FIFO, permits returned on failure.
import { expect, test } from "bun:test";
import { Semaphore } from "../../src/backend/semaphore.ts";

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

test("at most `permits` holders; waiters are served first come, first served", async () => {
  const semaphore = new Semaphore(2);
  const order: number[] = [];
  const releases: Array<() => void> = [];
  const tasks = Array.from({ length: 6 }, (_, i) =>
    semaphore.run(async () => {
      order.push(i);
      await new Promise<void>((resolve) => releases.push(resolve));
    }),
  );
  await flush();
  expect(order).toEqual([0, 1]);
  expect(semaphore.inUse).toBe(2);
  expect(semaphore.waiting).toBe(4);
  for (let step = 0; step < 6; step++) {
    releases.shift()!();
    await flush();
    expect(semaphore.inUse).toBeLessThanOrEqual(2);
  }
  await Promise.all(tasks);
  expect(order).toEqual([0, 1, 2, 3, 4, 5]);
  expect(semaphore.inUse).toBe(0);
});

test("a failing task gives its permit back", async () => {
  const semaphore = new Semaphore(1);
  await expect(semaphore.run(async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
  expect(semaphore.inUse).toBe(0);
  expect(await semaphore.run(async () => 5)).toBe(5);
});

test("the wait queue is bounded", async () => {
  const semaphore = new Semaphore(1, 2);
  await semaphore.acquire();
  const waiting = [semaphore.acquire(), semaphore.acquire()];
  expect(() => semaphore.acquire()).toThrow("waiting");
  semaphore.release();
  semaphore.release();
  await Promise.all(waiting);
  semaphore.release();
  expect(semaphore.inUse).toBe(0);
});
