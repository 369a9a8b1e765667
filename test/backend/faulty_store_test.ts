// FaultyStore (src/backend/faulty_store.ts): each fault does what it says, and one seed gives one run.
import { describe, expect, test } from "bun:test";
import { FaultyStore, seededRandom } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { IOError } from "../../src/errors.ts";

async function outcome(promise: Promise<unknown>): Promise<"ok" | "transient" | "permanent"> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    expect(error).toBeInstanceOf(IOError);
    return (error as IOError).transient ? "transient" : "permanent";
  }
}

describe("FaultyStore", () => {
  test("with no faults it is the inner store", async () => {
    const memory = new MemoryStore();
    const store = new FaultyStore(memory);
    await store.put("a", new Uint8Array([1, 2]));
    expect(await store.get("a")).toEqual(new Uint8Array([1, 2]));
    expect(await store.getRange("a", 1, 1)).toEqual(new Uint8Array([2]));
    expect(await store.stat("a")).toEqual({ size: 2 });
    expect(await store.list("")).toEqual(["a"]);
    await store.delete("a");
    expect(memory.size).toBe(0);
    expect(store.injected).toBe(0);
  });

  test("failNext fails exactly the next n calls of that op, before the inner store", async () => {
    const memory = new MemoryStore();
    const store = new FaultyStore(memory);
    store.failNext("put", 2);
    expect(await outcome(store.put("a", new Uint8Array([1])))).toBe("transient");
    expect(await store.stat("a")).toBeNull(); // other ops are untouched
    expect(await outcome(store.put("a", new Uint8Array([1])))).toBe("transient");
    expect(memory.size).toBe(0);
    expect(await outcome(store.put("a", new Uint8Array([1])))).toBe("ok");
    expect(memory.size).toBe(1);
    store.failNext("any", 1, { transient: false });
    expect(await outcome(store.stat("a"))).toBe("permanent");
    expect(await outcome(store.stat("a"))).toBe("ok");
    expect(store.injected).toBe(3);
  });

  test("failNextAfterApply lets the call take effect, then reports failure", async () => {
    const memory = new MemoryStore();
    const store = new FaultyStore(memory);
    store.failNextAfterApply("put", 1);
    expect(await outcome(store.put("a", new Uint8Array([5])))).toBe("transient");
    expect(await memory.get("a")).toEqual(new Uint8Array([5]));
  });

  test("outage fails every call, transient, until switched off", async () => {
    const store = new FaultyStore(new MemoryStore());
    store.setOutage(true);
    for (const call of [store.put("a", new Uint8Array(1)), store.list(""), store.stat("a"), store.delete("a")]) {
      expect(await outcome(call)).toBe("transient");
    }
    store.setOutage(false);
    expect(await outcome(store.put("a", new Uint8Array(1)))).toBe("ok");
  });

  test("hang holds calls until release, which lets them through", async () => {
    const memory = new MemoryStore();
    const store = new FaultyStore(memory);
    store.hang("put");
    let done = false;
    const put = store.put("a", new Uint8Array([3])).then(() => (done = true));
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false);
    expect(store.hungCount).toBe(1);
    expect(memory.size).toBe(0);
    expect(await store.stat("a")).toBeNull(); // other ops are not held
    store.release();
    await put;
    expect(await memory.get("a")).toEqual(new Uint8Array([3]));
  });

  test("holdNext holds only the next n calls, until releaseHeld, which resolves once they landed", async () => {
    const memory = new MemoryStore();
    const store = new FaultyStore(memory);
    store.holdNext("put", 1);
    const held = store.put("a", new Uint8Array([1]));
    // Later calls pass, even to the same name.
    await store.put("a", new Uint8Array([2]));
    await store.delete("b");
    expect(store.heldCount).toBe(1);
    expect(await memory.get("a")).toEqual(new Uint8Array([2]));
    await store.releaseHeld();
    // The held put landed late, over the later one: what a late request does to an unguarded name.
    expect(await memory.get("a")).toEqual(new Uint8Array([1]));
    await held;
    expect(store.heldCount).toBe(0);
    expect(store.calls.put).toBe(2);
    // Released with `fail`: the request is lost, the inner store never sees it.
    store.holdNext("put", 1);
    const lost = outcome(store.put("a", new Uint8Array([3])));
    await store.releaseHeld({ fail: true });
    expect(await lost).toBe("transient");
    expect(await memory.get("a")).toEqual(new Uint8Array([1]));
  });

  test("probability faults follow the seed: same seed, same failures; another seed, others", async () => {
    async function pattern(seed: number): Promise<string> {
      const store = new FaultyStore(new MemoryStore(), { seed });
      store.failWithProbability("put", 0.5);
      let out = "";
      for (let i = 0; i < 200; i++) out += (await outcome(store.put(`o${i}`, new Uint8Array(1)))) === "ok" ? "." : "x";
      return out;
    }
    const first = await pattern(42);
    expect(await pattern(42)).toBe(first);
    expect(await pattern(43)).not.toBe(first);
    const failures = [...first].filter((c) => c === "x").length;
    expect(failures).toBeGreaterThan(50);
    expect(failures).toBeLessThan(150);
  });

  test("heal clears every fault", async () => {
    const store = new FaultyStore(new MemoryStore());
    store.setOutage(true);
    store.failNext("any", 5);
    store.failWithProbability("any", 1);
    store.heal();
    expect(await outcome(store.put("a", new Uint8Array(1)))).toBe("ok");
    expect(await outcome(store.get("a"))).toBe("ok");
  });

  test("seededRandom is deterministic and in [0, 1)", () => {
    const a = seededRandom(5);
    const b = seededRandom(5);
    for (let i = 0; i < 1000; i++) {
      const x = a();
      expect(x).toBe(b());
      expect(x >= 0 && x < 1).toBe(true);
    }
  });
});
