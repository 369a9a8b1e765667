// The lease (src/volume/lease.ts): the acquisition decision table (exhaustive), acquisition by the table on a memory
// store, renewal and the local deadline on virtual time, fencing by a successor or by running out, transient renewal
// failures, lost replies, broken and corrupt leases, and a race of two acquirers.

import { describe, expect, test } from "bun:test";
import { v4 as uuidv4, NIL as NIL_UUID } from "uuid";
import { FaultyStore } from "../../src/backend/faulty_store.ts";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { LEASE_MARGIN_DIVISOR, LEASE_RENEW_DIVISOR } from "../../src/constants.ts";
import { decodeLease, encodeLease, LeaseState, type LeaseRecord } from "../../src/format/lease_object.ts";
import { leaseName } from "../../src/format/object_name.ts";
import { decodeSuperblock, encodeSuperblock, newSuperblock } from "../../src/format/superblock_object.ts";
import {
  decideAcquisition,
  FencedError,
  holderLiveness,
  Lease,
  LeaseHeldError,
  type HolderLiveness,
  type LeaseFound,
  type LeaseOptions,
} from "../../src/volume/lease.ts";
import type { ProcessIdentity } from "../../src/util/process_identity.ts";
import { settleMicrotasks, VirtualLeaseClock } from "../sim/virtual_lease_clock.ts";
import { rejection } from "../_support/rejection.ts";

const PREFIX = "vol";
const DURATION_MS = 30_000;
const BOOT = "3f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const HOST_A: ProcessIdentity = { host: "a", bootId: BOOT, pid: 100, processStartTicks: 5000 };
const HOST_A_OTHER: ProcessIdentity = { host: "a", bootId: BOOT, pid: 200, processStartTicks: 6000 };
const HOST_B: ProcessIdentity = { host: "b", bootId: "4f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b", pid: 100, processStartTicks: 5000 };

function sampleLease(state: LeaseState, renewedAtMs = 1000): LeaseRecord {
  return { state, epoch: 3, durationMs: DURATION_MS, acquiredAtMs: 0, renewedAtMs, cookie: uuidv4(), ...HOST_A, command: "serve", addresses: [] };
}

async function volumeStore(epoch = 0): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.put(PREFIX, encodeSuperblock({ ...newSuperblock(uuidv4(), 2048), ownerEpoch: epoch }));
  return store;
}

/** The processes that run on host a: pid -> start ticks. */
type Processes = Map<number, number>;

function options(store: LeaseOptions["store"], clock: VirtualLeaseClock, identity: ProcessIdentity, running: Processes, logs: string[] = []): LeaseOptions {
  return {
    store,
    prefix: PREFIX,
    command: "serve",
    addresses: [`nbd+unix:///?socket=/run/${identity.pid}.sock`],
    durationMs: DURATION_MS,
    clock,
    identity,
    processRuns: (pid, ticks) => running.get(pid) === ticks,
    log: (line) => logs.push(line),
  };
}

async function storedLease(store: MemoryStore): Promise<LeaseRecord> {
  return decodeLease(await store.get(leaseName(PREFIX)));
}

describe("acquisition decision table", () => {
  // The table in lease.ts, written out independently: every input pattern has exactly one expected decision.
  type Expected = { case: string; action: string; clean?: boolean };
  function expected(kind: string, liveness: HolderLiveness, expired: boolean): Expected {
    if (kind === "absent") return { case: "@A", action: "take", clean: false };
    if (kind === "corrupt") return { case: "@B", action: "refuse" };
    if (kind === "released") return { case: "@C", action: "take", clean: true };
    if (liveness === "dead") return { case: "@D", action: "take", clean: false };
    if (expired) return { case: "@E", action: "take", clean: false };
    return kind === "held" ? { case: "@F", action: "refuse" } : { case: "@G", action: "wait" };
  }

  test("every lease state x holder liveness x expiry decides as the table says", () => {
    let combinations = 0;
    const cases = new Set<string>();
    for (const kind of ["absent", "corrupt", "held", "released", "broken"]) {
      for (const liveness of ["alive", "dead", "unknown"] as HolderLiveness[]) {
        for (const expired of [false, true]) {
          const state = { held: LeaseState.Held, released: LeaseState.Released, broken: LeaseState.Broken }[kind as "held"];
          const found: LeaseFound =
            kind === "absent" ? { kind: "absent" } : kind === "corrupt" ? { kind: "corrupt", reason: "bad CRC" } : { kind: "lease", lease: sampleLease(state, 1000) };
          // Expiry at renewedAt + duration: one ms before it is not expired, at it is.
          const nowMs = 1000 + DURATION_MS + (expired ? 0 : -1);
          const decision = decideAcquisition(found, nowMs, liveness);
          const want = expected(kind, liveness, expired);
          const got: Expected = { case: decision.case, action: decision.action, ...(decision.action === "take" ? { clean: decision.clean } : {}) };
          expect(got).toEqual(want);
          if (decision.action === "wait") expect(decision.untilMs).toBe(1000 + DURATION_MS);
          cases.add(decision.case);
          combinations += 1;
        }
      }
    }
    expect(combinations).toBe(30);
    expect([...cases].sort()).toEqual(["@A", "@B", "@C", "@D", "@E", "@F", "@G"]);
  });

  test("holder liveness: only a holder of this host and boot is looked up", () => {
    const lease = sampleLease(LeaseState.Held);
    expect(holderLiveness(lease, HOST_A_OTHER, () => true)).toBe("alive");
    expect(holderLiveness(lease, HOST_A_OTHER, () => false)).toBe("dead");
    expect(holderLiveness(lease, HOST_B, () => false)).toBe("unknown"); // another host: /proc says nothing
    // Another host name on the same kernel (a container with its own pid namespace): its pids are not ours to see.
    expect(holderLiveness(lease, { ...HOST_B, bootId: BOOT }, () => false)).toBe("unknown");
    expect(holderLiveness(lease, { ...HOST_A_OTHER, bootId: HOST_B.bootId }, () => false)).toBe("unknown"); // another boot
    expect(holderLiveness({ ...lease, bootId: NIL_UUID }, { ...HOST_A_OTHER, bootId: NIL_UUID }, () => false)).toBe("unknown");
    let asked: [number, number] | null = null;
    holderLiveness(lease, HOST_A_OTHER, (pid, ticks) => ((asked = [pid, ticks]), true));
    expect(asked).toEqual([100, 5000] as unknown as null);
  });
});

function runningOn(...identities: ProcessIdentity[]): Processes {
  return new Map(identities.map((identity) => [identity.pid, identity.processStartTicks]));
}

describe("lease on a memory store", () => {
  test("a new lease: epoch above the superblock's, the holder recorded, renewed every third of its duration", async () => {
    const store = await volumeStore(6);
    const clock = new VirtualLeaseClock();
    const lease = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    expect(lease.epoch).toBe(7);
    expect(lease.taken).toEqual({ case: "@A", clean: false, previous: null });
    const record = await storedLease(store);
    expect(record).toMatchObject({ state: LeaseState.Held, epoch: 7, host: "a", pid: 100, processStartTicks: 5000, command: "serve" });
    expect(record.addresses).toEqual(["nbd+unix:///?socket=/run/100.sock"]);
    const acquiredAt = record.renewedAtMs;
    await clock.advance(DURATION_MS / LEASE_RENEW_DIVISOR);
    expect(lease.renewals).toBe(1);
    expect((await storedLease(store)).renewedAtMs).toBe(acquiredAt + DURATION_MS / LEASE_RENEW_DIVISOR);
    await clock.advance(10 * DURATION_MS);
    expect(lease.renewals).toBe(1 + 10 * LEASE_RENEW_DIVISOR);
    expect(lease.fencedReason).toBeNull();
    lease.check();
    // Taken from no lease at all (unclean: who wrote last is unknown): not released until the log start is settled.
    await lease.release();
    expect(await storedLease(store)).toMatchObject({ state: LeaseState.Held, epoch: 7 });
    const again = await Lease.acquire(options(store, clock, HOST_A, runningOn()));
    expect(again.taken).toMatchObject({ case: "@D", clean: false });
    again.markSettled(); // (what an owner does once its log starts above every name: ownership.ts, beginLog)
    await again.release();
    expect(await storedLease(store)).toMatchObject({ state: LeaseState.Released, epoch: 8 });
    // Released: the next owner takes it cleanly, one epoch up.
    const next = await Lease.acquire(options(store, clock, HOST_B, runningOn()));
    expect(next.taken).toMatchObject({ case: "@C", clean: true });
    expect(next.epoch).toBe(9);
    // Taken clean: released clean without further ado.
    await next.release();
    expect(await storedLease(store)).toMatchObject({ state: LeaseState.Released, epoch: 9 });
  });

  test("a held lease refuses others at once, naming the holder; a dead holder on this host is taken over at once", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const running = runningOn(HOST_A, HOST_A_OTHER);
    const first = await Lease.acquire(options(store, clock, HOST_A, running));
    const refused = await rejection(Lease.acquire(options(store, clock, HOST_A_OTHER, running)));
    expect(refused).toBeInstanceOf(LeaseHeldError);
    expect(refused.message).toContain("owned by serve pid 100 on host a serving nbd+unix:///?socket=/run/100.sock");
    expect(refused.message).toContain("lsvd lock show");
    expect(await rejection(Lease.acquire(options(store, clock, HOST_B, running)))).toBeInstanceOf(LeaseHeldError);
    // The holder's pid now belongs to a process that started later (pid reuse): the holder is gone.
    running.set(100, 9999);
    first.abandon();
    const second = await Lease.acquire(options(store, clock, HOST_A_OTHER, running));
    expect(second.taken).toMatchObject({ case: "@D", clean: false });
    expect(second.epoch).toBe(first.epoch + 1);
    // kill -9: the pid is gone altogether.
    running.delete(200);
    second.abandon();
    const third = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    expect(third.taken).toMatchObject({ case: "@D", clean: false });
    third.abandon();
  });

  test("a holder on another host is waited out: refused until the lease expires, then taken", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const holder = await Lease.acquire(options(store, clock, HOST_B, runningOn()));
    holder.abandon(); // host b is cut off: no more renewals
    await clock.advance(DURATION_MS - 1);
    expect(await rejection(Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A))))).toBeInstanceOf(LeaseHeldError);
    await clock.advance(1);
    const taken = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    expect(taken.taken).toMatchObject({ case: "@E", clean: false });
    taken.abandon();
  });

  test("the local deadline comes before anyone may take over, and fences the holder even with no store call", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const lease = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    const fencedBy: string[] = [];
    lease.onFenced((reason) => fencedBy.push(reason));
    // SIGSTOP: time passes, nothing runs. Just before the deadline the holder may still write...
    const validityMs = DURATION_MS - DURATION_MS / LEASE_MARGIN_DIVISOR;
    clock.stop(validityMs - 1);
    lease.check();
    // ...at it, it may not, before any timer or store call tells it so; and nobody could have taken over yet.
    clock.stop(1);
    expect(() => lease.check()).toThrow(FencedError);
    expect(fencedBy.length).toBe(1);
    expect(fencedBy[0]).toContain("ran out");
    expect(await rejection(Lease.acquire(options(store, clock, HOST_B, runningOn())))).toBeInstanceOf(LeaseHeldError);
    // Resumed: its overdue renewal does not run; fencing is final.
    await clock.advance(0);
    expect(lease.renewals).toBe(0);
    expect(() => lease.check()).toThrow(FencedError);
  });

  test("a holder resumed after a successor took over learns it from its renewal and is fenced", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const logs: string[] = [];
    const old = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A), logs));
    clock.stop(DURATION_MS);
    const successor = await Lease.acquire(options(store, clock, HOST_B, runningOn()));
    expect(successor.taken.case).toBe("@E");
    // Mutant guard: with the deadline check removed, the renewal below is what must fence it.
    await clock.advance(0);
    expect(old.fencedReason).not.toBeNull();
    expect(() => old.check()).toThrow(FencedError);
    expect((await storedLease(store)).cookie).toBe(successor.holder.cookie);
    successor.check();
    successor.abandon();
  });

  test("a renewal refused by the store (a successor's compare-and-swap won) fences at once", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const old = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    // `lsvd lock break`: the lease is rewritten (Broken, epoch + 1) while the holder runs.
    const record = await storedLease(store);
    await store.put(leaseName(PREFIX), encodeLease({ ...record, state: LeaseState.Broken, epoch: record.epoch + 1 }));
    old.check(); // not yet known
    await clock.advance(DURATION_MS / LEASE_RENEW_DIVISOR);
    expect(() => old.check()).toThrow(FencedError);
    expect(old.fencedReason).toContain("taken over");
    expect(old.fencedReason).toContain("broken");
  });

  test("transient renewal failures are retried until the deadline; an outage past it fences", async () => {
    const memory = await volumeStore();
    const faulty = new FaultyStore(memory);
    const clock = new VirtualLeaseClock();
    const logs: string[] = [];
    const lease = await Lease.acquire(options(faulty, clock, HOST_A, runningOn(HOST_A), logs));
    faulty.setOutage(true);
    await clock.advance(DURATION_MS / 2);
    expect(lease.fencedReason).toBeNull();
    expect(logs.some((line) => line.includes("renewal failed"))).toBe(true);
    faulty.setOutage(false);
    await clock.advance(DURATION_MS / 4);
    expect(lease.fencedReason).toBeNull();
    expect(lease.renewals).toBeGreaterThan(0);
    faulty.setOutage(true);
    await clock.advance(DURATION_MS);
    expect(lease.fencedReason).toContain("ran out");
    faulty.setOutage(false);
    lease.abandon();
  });

  test("a renewal whose reply was lost is not a conflict: the retry finds its own bytes", async () => {
    const memory = await volumeStore();
    const faulty = new FaultyStore(memory);
    const store = new RetryingStore(faulty, { sleep: async () => {} });
    const clock = new VirtualLeaseClock();
    const lease = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    faulty.failNextAfterApply("putIfVersion", 1);
    await clock.advance(DURATION_MS / LEASE_RENEW_DIVISOR);
    expect(faulty.injected).toBe(1);
    expect(lease.fencedReason).toBeNull();
    await clock.advance(DURATION_MS);
    expect(lease.fencedReason).toBeNull();
    lease.markSettled();
    await lease.release();
    expect((await storedLease(memory)).state).toBe(LeaseState.Released);
  });

  test("a renewal that landed though its caller saw it fail (no retrying store) is adopted at the next renewal", async () => {
    const memory = await volumeStore();
    const faulty = new FaultyStore(memory);
    const clock = new VirtualLeaseClock();
    const lease = await Lease.acquire(options(faulty, clock, HOST_A, runningOn(HOST_A)));
    faulty.failNextAfterApply("putIfVersion", 1); // lands, then reports a failure: the lease keeps the old version
    await clock.advance(DURATION_MS / LEASE_RENEW_DIVISOR + 1);
    expect(faulty.injected).toBe(1);
    await clock.advance(DURATION_MS);
    expect(lease.fencedReason).toBeNull();
    expect(lease.renewals).toBeGreaterThan(2);
    lease.abandon();
  });

  test("a broken lease is waited for until its holder has certainly stopped, then taken (unclean)", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const old = await Lease.acquire(options(store, clock, HOST_B, runningOn()));
    old.abandon();
    const record = await storedLease(store);
    await store.put(leaseName(PREFIX), encodeLease({ ...record, state: LeaseState.Broken, epoch: record.epoch + 1 }));
    const logs: string[] = [];
    let taken: Lease | null = null;
    void Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A), logs)).then((lease) => (taken = lease));
    await clock.advance(DURATION_MS - 1);
    expect(taken).toBeNull();
    expect(logs.join("\n")).toContain("was broken; waiting");
    await clock.advance(2);
    expect(taken).not.toBeNull();
    expect(taken!.taken).toMatchObject({ case: "@E", clean: false });
    expect(taken!.epoch).toBe(record.epoch + 2);
    taken!.abandon();
  });

  test("a corrupt lease is refused with the way out; no volume means no lease is created", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    await store.put(leaseName(PREFIX), new Uint8Array(100));
    const refused = await rejection(Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A))));
    expect(refused).toBeInstanceOf(LeaseHeldError);
    expect(refused.message).toContain("lock break --force");
    const empty = new MemoryStore();
    expect((await rejection(Lease.acquire(options(empty, clock, HOST_A, runningOn(HOST_A))))).message).toContain("No volume");
    expect(await empty.list("")).toEqual([]);
    const created = await Lease.acquire({ ...options(empty, clock, HOST_A, runningOn(HOST_A)), volumeMayBeAbsent: true });
    expect(created.epoch).toBe(1);
    created.abandon();
  });

  test("two acquirers at once: exactly one wins, the other is refused naming it", async () => {
    for (let round = 0; round < 20; round++) {
      const store = await volumeStore();
      const clock = new VirtualLeaseClock();
      const running = runningOn(HOST_A, HOST_A_OTHER);
      const results = await Promise.allSettled([
        Lease.acquire(options(store, clock, HOST_A, running)),
        Lease.acquire(options(store, clock, HOST_A_OTHER, running)),
      ]);
      const won = results.filter((result) => result.status === "fulfilled");
      const lost = results.filter((result) => result.status === "rejected") as PromiseRejectedResult[];
      expect(won.length).toBe(1);
      expect(lost.length).toBe(1);
      expect(lost[0]!.reason).toBeInstanceOf(LeaseHeldError);
      const winner = (won[0] as PromiseFulfilledResult<Lease>).value;
      expect((await storedLease(store)).cookie).toBe(winner.holder.cookie);
      winner.abandon();
    }
  });

  test("release after fencing writes nothing; a lease that ran out is not released either", async () => {
    const store = await volumeStore();
    const clock = new VirtualLeaseClock();
    const lease = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
    clock.stop(DURATION_MS);
    await lease.release();
    expect((await storedLease(store)).state).toBe(LeaseState.Held);
    expect(lease.fencedReason).toContain("ran out");
    await settleMicrotasks();
  });
});

test("superblock epoch: decoded from the store the lease reads", async () => {
  const store = await volumeStore(41);
  const clock = new VirtualLeaseClock();
  const lease = await Lease.acquire(options(store, clock, HOST_A, runningOn(HOST_A)));
  expect(lease.epoch).toBe(42);
  expect(decodeSuperblock(await store.get(PREFIX)).ownerEpoch).toBe(41); // the lease alone does not write it
  lease.abandon();
});
