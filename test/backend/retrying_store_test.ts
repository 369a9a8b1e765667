// RetryingStore (src/backend/retrying_store.ts): what is retried and what is not, give-up and "forever", per-attempt
// timeouts, the in-flight bound, backoff bounds, close(). Faults come from FaultyStore over a MemoryStore; the
// backoff sleep is injected, so no test waits on real delays.
import { describe, expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { RetryingStore, type RetryingStoreOptions } from "../../src/backend/retrying_store.ts";
import { BACKEND_RETRY_DELAY_MS_MAX, BACKEND_RETRY_DELAY_MS_MIN } from "../../src/constants.ts";
import { IOError, NotFoundError } from "../../src/errors.ts";

function setup(options: RetryingStoreOptions = {}) {
  const memory = new MemoryStore();
  const faulty = new FaultyStore(memory, { seed: 7 });
  const delays: number[] = [];
  const logs: string[] = [];
  const store = new RetryingStore(faulty, {
    sleep: async (ms) => {
      delays.push(ms);
    },
    log: (message) => logs.push(message),
    ...options,
  });
  return { memory, faulty, store, delays, logs };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a rejection");
}

/** Lets pending promise callbacks run (bounded). */
async function settle(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).toBe(true);
}

describe("RetryingStore", () => {
  test("transient failures are retried until the call succeeds, logging each retry", async () => {
    const { faulty, store, delays, logs, memory } = setup();
    faulty.failNext("put", 3);
    await store.put("obj.1", new Uint8Array([1, 2, 3]));
    expect(faulty.calls.put).toBe(4);
    expect(store.retries).toBe(3);
    expect(delays.length).toBe(3);
    expect(logs.length).toBe(3);
    expect(logs[0]).toContain("obj.1");
    expect(logs[0]).toContain("injected");
    expect(await memory.get("obj.1")).toEqual(new Uint8Array([1, 2, 3]));
  });

  test("permanent failures are not retried", async () => {
    const { faulty, store, delays } = setup();
    await store.put("obj.1", new Uint8Array([1]));
    faulty.failNext("get", 1, { transient: false });
    const error = await rejection(store.get("obj.1"));
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).transient).toBe(false);
    expect(faulty.calls.get).toBe(1);
    expect(delays.length).toBe(0);
  });

  test("NotFoundError is an answer, not a failure: no retry", async () => {
    const { faulty, store } = setup();
    expect(await rejection(store.get("missing"))).toBeInstanceOf(NotFoundError);
    expect(faulty.calls.get).toBe(1);
    expect(store.retries).toBe(0);
  });

  test("gives up after retriesMax retries with the last error", async () => {
    const { faulty, store } = setup({ retriesMax: 2 });
    faulty.failNext("stat", 10);
    const error = await rejection(store.stat("obj.1"));
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).transient).toBe(true);
    expect(faulty.calls.stat).toBe(3);
  });

  test('retriesMax "forever" outlasts a long outage', async () => {
    const memory = new MemoryStore();
    const faulty = new FaultyStore(memory);
    let sleeps = 0;
    const store = new RetryingStore(faulty, {
      retriesMax: "forever",
      // The outage ends after 100 backoffs: far beyond BACKEND_RETRIES_MAX.
      sleep: async () => {
        sleeps += 1;
        if (sleeps === 100) faulty.setOutage(false);
      },
    });
    faulty.setOutage(true);
    await store.put("obj.1", new Uint8Array([9]));
    expect(faulty.calls.put).toBe(101);
    expect(await memory.get("obj.1")).toEqual(new Uint8Array([9]));
  });

  test("a put whose reply was lost is retried and lands once", async () => {
    const { faulty, store, memory } = setup();
    faulty.failNextAfterApply("put", 1);
    await store.put("obj.1", new Uint8Array([4, 5]));
    expect(faulty.calls.put).toBe(2);
    expect(await memory.get("obj.1")).toEqual(new Uint8Array([4, 5]));
  });

  test("an attempt that does not answer in requestTimeoutMs counts as transient and is retried", async () => {
    const memory = new MemoryStore();
    const faulty = new FaultyStore(memory);
    await memory.put("obj.1", new Uint8Array([7]));
    const store = new RetryingStore(faulty, {
      requestTimeoutMs: 20,
      // The backend un-sticks during the first backoff; the retry then answers.
      sleep: async () => faulty.release(),
    });
    faulty.hang("get");
    expect(await store.get("obj.1")).toEqual(new Uint8Array([7]));
    expect(store.retries).toBe(1);
    expect(faulty.calls.get).toBe(2);
  });

  test("a timeout with no retries left fails transient, naming the object", async () => {
    const { faulty, store } = setup({ requestTimeoutMs: 10, retriesMax: 0 });
    faulty.hang("put");
    const error = await rejection(store.put("obj.9", new Uint8Array([1])));
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).transient).toBe(true);
    expect(error.message).toContain("obj.9");
    faulty.release();
  });

  test("no more than inflightMax attempts reach the inner store; the rest wait in order", async () => {
    const { faulty, store, memory } = setup({ inflightMax: 3, requestTimeoutMs: 0 });
    faulty.hang("put");
    const puts = Array.from({ length: 10 }, (_, i) => store.put(`obj.${i}`, new Uint8Array([i])));
    await settle(() => faulty.hungCount === 3);
    expect(store.inflight).toBe(3);
    expect(faulty.calls.put).toBe(3);
    faulty.release();
    await Promise.all(puts);
    expect(faulty.calls.put).toBe(10);
    expect(store.inflight).toBe(0);
    expect(await memory.list("obj")).toHaveLength(10);
  });

  test("the bound holds while calls keep failing and retrying", async () => {
    const memory = new MemoryStore();
    let inflight = 0;
    let inflightMaxSeen = 0;
    // An inner store that counts its own concurrency and fails the first attempt of every name.
    const failedOnce = new Set<string>();
    const counting = Object.create(memory) as MemoryStore;
    counting.put = async (name: string, data: Uint8Array) => {
      inflight += 1;
      inflightMaxSeen = Math.max(inflightMaxSeen, inflight);
      await new Promise((resolve) => setImmediate(resolve));
      inflight -= 1;
      if (!failedOnce.has(name)) {
        failedOnce.add(name);
        throw new IOError(`Cannot write object ${name}: test failure`, true);
      }
      return memory.put(name, data);
    };
    const store = new RetryingStore(counting, { inflightMax: 4, sleep: async () => undefined });
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.put(`obj.${i}`, new Uint8Array([i]))));
    expect(inflightMaxSeen).toBe(4);
    expect(store.retries).toBe(50);
    expect(await memory.list("obj")).toHaveLength(50);
  });

  test("backoff: full jitter between the minimum and a doubling ceiling, capped at the maximum", () => {
    const at = (random: number) => new RetryingStore(new MemoryStore(), { random: () => random });
    expect(at(0).delayMs(0)).toBe(BACKEND_RETRY_DELAY_MS_MIN);
    expect(at(0).delayMs(30)).toBe(BACKEND_RETRY_DELAY_MS_MIN);
    expect(at(1).delayMs(0)).toBe(2 * BACKEND_RETRY_DELAY_MS_MIN);
    expect(at(1).delayMs(1)).toBe(4 * BACKEND_RETRY_DELAY_MS_MIN);
    expect(at(1).delayMs(30)).toBe(BACKEND_RETRY_DELAY_MS_MAX);
    expect(at(1).delayMs(5000)).toBe(BACKEND_RETRY_DELAY_MS_MAX);
    const half = at(0.5).delayMs(2);
    expect(half).toBeGreaterThan(BACKEND_RETRY_DELAY_MS_MIN);
    expect(half).toBeLessThan(8 * BACKEND_RETRY_DELAY_MS_MIN);
  });

  test("close() ends a call that would retry forever, then closes the inner store", async () => {
    const memory = new MemoryStore();
    const faulty = new FaultyStore(memory);
    faulty.setOutage(true);
    const store = new RetryingStore(faulty, {
      retriesMax: "forever",
      sleep: () => new Promise(() => undefined), // a backoff that never ends by itself
    });
    const put = rejection(store.put("obj.1", new Uint8Array([1])));
    await settle(() => store.retries === 1);
    await store.close();
    const error = await put;
    expect(error).toBeInstanceOf(IOError);
    expect((error as IOError).transient).toBe(true);
    // The inner store was closed too: using it now is a programmer error.
    expect((await rejection(memory.get("obj.1"))).message).toContain("after close");
  });
});
