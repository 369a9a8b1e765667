// RetryingStore (src/backend/retrying_store.ts): what is retried and what is not, give-up and "forever", per-attempt
// timeouts, the in-flight bound, backoff bounds, close(), and "nothing late can land": a timed-out attempt that is
// held (FaultyStore.holdNext) while the test writes the name, then released, must not undo the newer write;
// conditional retries that meet their own landed attempt succeed. Faults come from FaultyStore over a MemoryStore;
// the backoff sleep is injected, so no test waits on real delays.
import { describe, expect, test } from "bun:test";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { RetryingStore, type RetryingStoreOptions } from "../../src/backend/retrying_store.ts";
import { BACKEND_RETRY_DELAY_MS_MAX, BACKEND_RETRY_DELAY_MS_MIN } from "../../src/constants.ts";
import { ConflictError, IOError, NotFoundError } from "../../src/errors.ts";
import { rejection } from "../_support/rejection.ts";

function setup(options: RetryingStoreOptions = {}) {
  const memory = new MemoryStore();
  const faulty = new FaultyStore(memory, { seed: 7 });
  const delays: number[] = [];
  const logs: string[] = [];
  const fields: unknown[] = [];
  const store = new RetryingStore(faulty, {
    sleep: async (ms) => {
      delays.push(ms);
    },
    log: (message, messageFields) => {
      logs.push(message);
      if (messageFields !== undefined) fields.push(messageFields);
    },
    ...options,
  });
  return { memory, faulty, store, delays, logs, fields };
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
    expect(logs.length).toBe(4); // three retries, then the line saying the store answers again
    expect(logs[3]).toStartWith("reachable again after ");
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

  test("an outage ends with one line: how long it lasted (first failure to first answer) and how many retries", async () => {
    let nowMs = 1_000_000;
    const clock = {
      nowMs: () => nowMs,
      setTimer: () => ({ cancel: () => undefined }),
      sleep: async (ms: number) => void (nowMs += ms),
    };
    const { faulty, store, logs, fields } = setup({ clock, sleep: clock.sleep, random: () => 1, requestTimeoutMs: 0, delayMsMin: 1000, delayMsMax: 8000 });
    await store.put("obj.1", new Uint8Array([1]));
    expect(logs).toEqual([]); // no outage, no line
    faulty.failNext("put", 3);
    await store.put("obj.2", new Uint8Array([2]));
    // Delays at random() = 1: 2000, 4000, 8000 ms.
    expect(logs.slice(3)).toEqual(["reachable again after 14.0 s, 3 retries"]);
    expect(fields).toEqual([{ outageSeconds: 14, retries: 3 }]); // for json logs
    await store.put("obj.3", new Uint8Array([3]));
    expect(logs.length).toBe(4); // said once
    // A permanent failure after transient ones is an answer too: the store is reachable.
    faulty.failNext("get", 1);
    faulty.failNext("get", 1, { transient: false });
    await rejection(store.get("obj.1"));
    expect(logs.slice(4)).toEqual([expect.stringContaining("retry 1 of"), "reachable again after 2.0 s, 1 retry"]);
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

const bytes = (...values: number[]) => new Uint8Array(values);

/** A RetryingStore whose attempts time out quickly (held ones do), retrying forever like the volume's put path. */
function lateSetup() {
  return setup({ requestTimeoutMs: 20, retriesMax: "forever" });
}

describe("RetryingStore: nothing late can land", () => {
  test("a plain put held past its timeout is waited for, not retried over, and a newer put of the name lands last", async () => {
    const { faulty, store, memory, logs } = lateSetup();
    faulty.holdNext("put", 1);
    const first = store.put("sb", bytes(1));
    await settleLong(() => store.timeouts === 1 && logs.some((line) => line.includes("waiting for that attempt")));
    // The call waits for its attempt: no second attempt was started.
    expect(faulty.calls.put).toBe(1);
    // A newer write of the name, issued while the old attempt is still travelling.
    const second = store.put("sb", bytes(2));
    await settleLong(() => faulty.heldCount === 1);
    expect(faulty.calls.put).toBe(1); // the newer put waits its turn too
    await faulty.releaseHeld();
    await Promise.all([first, second]);
    // The late attempt landed first, then the newer one: the newer write is what stays.
    expect(await memory.get("sb")).toEqual(bytes(2));
    expect(faulty.calls.put).toBe(2); // the held attempt landed, so its call did not put again
  });

  test("a delete held past its timeout cannot remove an object written after it", async () => {
    const { faulty, store, memory } = lateSetup();
    await memory.put("obj", bytes(1));
    faulty.holdNext("delete", 1);
    const deleting = store.delete("obj");
    await settleLong(() => store.timeouts === 1);
    const rewriting = store.put("obj", bytes(2));
    await faulty.releaseHeld();
    await Promise.all([deleting, rewriting]);
    expect(await memory.get("obj")).toEqual(bytes(2));
  });

  test("a held attempt that fails after its timeout is retried only then", async () => {
    const { faulty, store, memory } = lateSetup();
    faulty.holdNext("put", 1);
    const putting = store.put("obj", bytes(3));
    await settleLong(() => store.timeouts === 1);
    expect(faulty.calls.put).toBe(1);
    expect(store.retries).toBe(0);
    // The held attempt is lost: a transient failure, and only now a retry, which lands.
    await faulty.releaseHeld({ fail: true });
    await putting;
    expect(store.retries).toBe(1);
    expect(faulty.calls.put).toBe(2);
    expect(await memory.get("obj")).toEqual(bytes(3));
  });

  test("a late putIfAbsent that lands after another writer created the name changes nothing and reports Conflict", async () => {
    const { faulty, store, memory } = lateSetup();
    faulty.holdNext("putIfAbsent", 1);
    const creating = store.putIfAbsent("vol.00000010", bytes(1, 1));
    await settleLong(() => store.timeouts === 1);
    // The new owner reuses the name meanwhile (behind this store's back, as another process would).
    const theirs = await memory.putIfAbsent("vol.00000010", bytes(2, 2));
    await faulty.releaseHeld();
    expect(await rejection(creating)).toBeInstanceOf(ConflictError);
    expect(await memory.getVersioned("vol.00000010")).toEqual({ data: bytes(2, 2), version: theirs });
  });

  test("a late putIfVersion (CAS) is refused once another writer replaced the object", async () => {
    const { faulty, store, memory } = lateSetup();
    const v1 = await memory.putIfAbsent("vol.lease", bytes(1));
    faulty.holdNext("putIfVersion", 1);
    const renewing = store.putIfVersion("vol.lease", bytes(1, 1), v1);
    await settleLong(() => store.timeouts === 1);
    const taken = await memory.putIfVersion("vol.lease", bytes(2), v1);
    await faulty.releaseHeld();
    expect(await rejection(renewing)).toBeInstanceOf(ConflictError);
    expect(await memory.getVersioned("vol.lease")).toEqual({ data: bytes(2), version: taken });
  });

  test("a retried putIfAbsent whose first attempt landed (reply lost) reads back its own bytes and succeeds", async () => {
    const { faulty, store, memory, logs } = setup();
    faulty.failNextAfterApply("putIfAbsent", 1);
    const version = await store.putIfAbsent("obj", bytes(7));
    expect(await memory.getVersioned("obj")).toEqual({ data: bytes(7), version });
    expect(faulty.calls.putIfAbsent).toBe(2);
    expect(logs.some((line) => line.includes("an earlier attempt landed"))).toBe(true);
  });

  test("a retried putIfVersion whose first attempt landed (reply lost) returns the current version", async () => {
    const { faulty, store, memory } = setup();
    const v1 = await memory.putIfAbsent("obj", bytes(1));
    faulty.failNextAfterApply("putIfVersion", 1);
    const version = await store.putIfVersion("obj", bytes(2), v1);
    expect(await memory.getVersioned("obj")).toEqual({ data: bytes(2), version });
  });

  test("a retried conditional write that meets another writer's bytes is Conflict", async () => {
    const memory = new MemoryStore();
    const faulty = new FaultyStore(memory);
    // The first attempt fails (transient, nothing applied); during the backoff another writer creates the name.
    const store = new RetryingStore(faulty, { sleep: async () => void (await memory.putIfAbsent("obj", bytes(9))) });
    faulty.failNext("putIfAbsent", 1);
    expect(await rejection(store.putIfAbsent("obj", bytes(7)))).toBeInstanceOf(ConflictError);
    expect(await memory.get("obj")).toEqual(bytes(9));
    // The same for CAS: our version was taken by someone else during the backoff.
    const v = (await memory.getVersioned("obj"))!.version;
    const cas = new RetryingStore(faulty, { sleep: async () => void (await memory.put("obj", bytes(8))) });
    faulty.failNext("putIfVersion", 1);
    expect(await rejection(cas.putIfVersion("obj", bytes(7), v))).toBeInstanceOf(ConflictError);
    expect(await memory.get("obj")).toEqual(bytes(8));
  });

  test("a first-attempt Conflict is final: no read-back, no retry", async () => {
    const { faulty, store, memory } = setup();
    await memory.put("obj", bytes(7));
    // Even though the object holds exactly our bytes: nothing of ours can have landed.
    expect(await rejection(store.putIfAbsent("obj", bytes(7)))).toBeInstanceOf(ConflictError);
    expect(faulty.calls.putIfAbsent).toBe(1);
    expect(faulty.calls.getVersioned).toBe(0);
  });

  // Garbage collection lends one buffer from victim to victim: a read still travelling after its call ended would
  // write an old victim's bytes over the next one's.
  test("a get into a lent buffer held past its timeout is waited for, not retried over, even with no retry left", async () => {
    for (const retriesMax of ["forever", 0] as const) {
      const { faulty, store, memory, logs } = setup({ requestTimeoutMs: 20, retriesMax });
      await memory.put("obj", bytes(5));
      faulty.holdNext("get", 1);
      const lent = new Uint8Array(64);
      let ended = false;
      const reading = store.get("obj", lent).finally(() => (ended = true));
      await settleLong(() => store.timeouts === 1 && logs.some((line) => line.includes("reads into the caller's buffer")));
      expect({ retriesMax, attempts: faulty.calls.get, ended }).toEqual({ retriesMax, attempts: 1, ended: false });
      await faulty.releaseHeld();
      expect(await reading).toEqual(bytes(5));
      expect(faulty.calls.get).toBe(1); // the held attempt answered: no second one
    }
  });

  test("a get into a lent buffer whose held attempt fails after its timeout is retried only then", async () => {
    const { faulty, store, memory } = lateSetup();
    await memory.put("obj", bytes(6));
    faulty.holdNext("get", 1);
    const reading = store.get("obj", new Uint8Array(64));
    await settleLong(() => store.timeouts === 1);
    expect(store.retries).toBe(0);
    await faulty.releaseHeld({ fail: true });
    expect(await reading).toEqual(bytes(6));
    expect({ retries: store.retries, attempts: faulty.calls.get }).toEqual({ retries: 1, attempts: 2 });
  });

  test("close() ends a call waiting for its held attempt", async () => {
    const { faulty, store } = lateSetup();
    faulty.holdNext("put", 1);
    const putting = rejection(store.put("obj", bytes(1)));
    await settleLong(() => store.timeouts === 1);
    const closing = store.close();
    expect(await putting).toBeInstanceOf(IOError);
    await closing; // FaultyStore.close released the held call
  });
});

/** Waits (bounded, real time: the attempt timeouts are real timers) for a condition. */
async function settleLong(condition: () => boolean): Promise<void> {
  for (let waited = 0; waited < 10_000 && !condition(); waited += 2) await Bun.sleep(2);
  expect(condition()).toBe(true);
}
