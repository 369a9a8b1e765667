// `lsvd lock show` / `lsvd lock break` logic (src/volume/lease_admin.ts) on a memory store and virtual time: what the
// lease says in each state, what breaking refuses, and what a break does to a holder that still runs and to the next
// owner.

import { describe, expect, test } from "bun:test";
import { v4 as uuidv4 } from "uuid";
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { decodeLease, LeaseState } from "../../src/format/lease_object.ts";
import { leaseName } from "../../src/format/object_name.ts";
import { encodeSuperblock, newSuperblock } from "../../src/format/superblock_object.ts";
import { FencedError, Lease, LeaseHeldError, type LeaseOptions } from "../../src/volume/lease.ts";
import { breakLease, inspectLease, type LeaseAdminContext } from "../../src/volume/lease_admin.ts";
import type { ProcessIdentity } from "../../src/util/process_identity.ts";
import { VirtualLeaseClock } from "../sim/virtual_lease_clock.ts";
import { rejection } from "../_support/rejection.ts";

const PREFIX = "vol";
const DURATION_MS = 10_000;
const BOOT = "3f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const HOLDER: ProcessIdentity = { host: "a", bootId: BOOT, pid: 100, processStartTicks: 7 };
const ADMIN: ProcessIdentity = { host: "a", bootId: BOOT, pid: 300, processStartTicks: 9 };

async function setup(running: Set<number>) {
  const store = new MemoryStore();
  await store.put(PREFIX, encodeSuperblock(newSuperblock(uuidv4(), 2048)));
  const clock = new VirtualLeaseClock();
  const runs = (pid: number) => running.has(pid);
  const leaseOptions = (identity: ProcessIdentity): LeaseOptions => ({ store, prefix: PREFIX, command: "serve", durationMs: DURATION_MS, clock, identity, processRuns: runs });
  const context = (): LeaseAdminContext => ({ nowMs: clock.wallMs(), identity: ADMIN, processRuns: runs });
  return { store, clock, leaseOptions, context };
}

describe("lock show", () => {
  test("absent, held (process running or gone), expired, released, unreadable", async () => {
    const running = new Set([100]);
    const { store, clock, leaseOptions, context } = await setup(running);
    expect((await inspectLease(store, PREFIX, context())).status).toBe("absent");
    const lease = await Lease.acquire(leaseOptions(HOLDER));
    await clock.advance(1000);
    let seen = await inspectLease(store, PREFIX, context());
    expect(seen).toMatchObject({ status: "held", liveness: "alive", renewedAgoMs: 1000, expiresInMs: DURATION_MS - 1000, superblockEpoch: 0 });
    expect(seen.lease).toMatchObject({ pid: 100, host: "a", command: "serve", epoch: 1 });
    running.delete(100);
    expect((await inspectLease(store, PREFIX, context())).liveness).toBe("dead");
    lease.abandon();
    clock.stop(DURATION_MS);
    seen = await inspectLease(store, PREFIX, context());
    expect(seen.status).toBe("expired");
    expect(seen.expiresInMs!).toBeLessThan(0);
    running.add(100);
    const next = await Lease.acquire(leaseOptions(HOLDER));
    next.markSettled();
    await next.release();
    expect((await inspectLease(store, PREFIX, context())).status).toBe("released");
    await store.put(leaseName(PREFIX), new Uint8Array(10));
    seen = await inspectLease(store, PREFIX, context());
    expect(seen.status).toBe("unreadable");
    expect(seen.unreadable).toContain("shorter than");
  });
});

describe("lock break", () => {
  test("refuses a running holder on this host unless --force; forced, the holder is fenced and the next owner waits its lease out", async () => {
    const running = new Set([100]);
    const { store, clock, leaseOptions, context } = await setup(running);
    const holder = await Lease.acquire(leaseOptions(HOLDER));
    const refused = await rejection(breakLease(store, PREFIX, false, context()));
    expect(refused).toBeInstanceOf(LeaseHeldError);
    expect(refused.message).toContain("running on this host");
    expect(refused.message).toContain("--force");
    await clock.advance(2000);
    const renewedAt = decodeLease(await store.get(leaseName(PREFIX))).renewedAtMs;
    const result = await breakLease(store, PREFIX, true, context());
    expect(result.broke).toBe(true);
    expect(result.after).toMatchObject({ state: LeaseState.Broken, epoch: 2, renewedAtMs: renewedAt });
    expect(result.message).toContain("Writes it acknowledged but had not yet put to the backend are not part of the volume");
    expect(result.message).toContain("stops writing");
    // The holder's next renewal is refused: it is fenced.
    await clock.advance(DURATION_MS / 3);
    expect(() => holder.check()).toThrow(FencedError);
    expect(holder.fencedReason).toContain("broken");
    // The next owner (another process on this host, holder still "running") waits until the holder's lease ran out.
    let next: Lease | null = null;
    void Lease.acquire(leaseOptions(ADMIN)).then((lease) => (next = lease));
    await clock.advance(renewedAt + DURATION_MS - clock.wallMs() - 1);
    expect(next).toBeNull();
    await clock.advance(2);
    expect(next).not.toBeNull();
    expect(next!.epoch).toBe(3);
    next!.abandon();
  });

  test("a holder that is gone, or on another host, is broken without --force; nothing to break is said so", async () => {
    const running = new Set<number>();
    const { store, leaseOptions, context } = await setup(running);
    expect((await breakLease(store, PREFIX, false, context())).broke).toBe(false);
    const gone = await Lease.acquire(leaseOptions(HOLDER));
    gone.abandon();
    const result = await breakLease(store, PREFIX, false, context());
    expect(result.broke).toBe(true);
    expect(result.message).toContain("Its process is gone");
    // Broken, holder gone on this host: the next owner here takes it at once.
    const next = await Lease.acquire(leaseOptions(ADMIN));
    expect(next.taken.case).toBe("@D");
    next.markSettled();
    await next.release();
    expect((await breakLease(store, PREFIX, false, context())).message).toContain("nothing to break");
    // A holder on another host cannot be looked up: breaking it needs no --force.
    const remote = await Lease.acquire(leaseOptions({ ...HOLDER, host: "b" }));
    const broken = await breakLease(store, PREFIX, false, context());
    expect(broken.broke).toBe(true);
    expect(broken.message).toContain("the next owner waits until its lease has run out");
    remote.abandon();
  });

  test("an unreadable lease is replaced only with --force, and then waited out for a whole default lease", async () => {
    const { store, clock, leaseOptions, context } = await setup(new Set());
    await store.put(leaseName(PREFIX), new Uint8Array(200).fill(3));
    expect(await rejection(breakLease(store, PREFIX, false, context()))).toBeInstanceOf(LeaseHeldError);
    const result = await breakLease(store, PREFIX, true, context());
    expect(result.after).toMatchObject({ state: LeaseState.Broken, epoch: 1, pid: 0 });
    let next: Lease | null = null;
    void Lease.acquire(leaseOptions(ADMIN)).then((lease) => (next = lease));
    await clock.advance(29_000);
    expect(next).toBeNull();
    await clock.advance(1_001);
    expect(next).not.toBeNull();
    next!.abandon();
  });
});
