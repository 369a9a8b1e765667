// Backend faults against a real Ceph: a RetryingStore put loop keeps going while the OSD (RADOS) or radosgw (S3) is
// killed, its writes stall (they are retried, none completes), and once the daemon is back every write completes
// and every object (written before, during and after the outage) reads back intact.
//
// The cluster: a second one from test/ceph/up.sh (FAULT_CLUSTER: own directory, free ports picked by up.sh), so
// killing its daemons cannot disturb other tests using the default cluster, and with bluestore on a sparse file
// instead of memstore: a memstore OSD loses every object when it stops, which is not the crash-and-restart we mean
// to test (it would also take the pool's placement groups with it). It is torn down in afterAll, and by _ceph.ts's
// reaper if this process dies first.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RadosStore } from "../../src/backend/rados_store.ts";
import { RetryingStore } from "../../src/backend/retrying_store.ts";
import { S3Store } from "../../src/backend/s3_store.ts";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { type CephEnv, cephCommand, cephDown, cephUp, FAULT_CLUSTER } from "./_ceph.ts";
import { forEachLimited, pattern } from "./object_store_contract.ts";

let env: CephEnv;
beforeAll(() => {
  env = cephUp(FAULT_CLUSTER);
}, 600_000);
afterAll(() => {
  cephDown(FAULT_CLUSTER);
}, 120_000);

/** Waits (bounded) for a condition while the event loop runs. */
async function waitFor(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

async function stallAndResume(inner: ObjectStore, prefix: string, kill: string, start: string): Promise<void> {
  const logs: string[] = [];
  const store = new RetryingStore(inner, {
    retriesMax: "forever", // the volume's put path
    delayMsMin: 50,
    delayMsMax: 500,
    requestTimeoutMs: 10_000,
    log: (message) => logs.push(message),
  });
  const size = 256 * 1024;
  const before = Array.from({ length: 4 }, (_, i) => `${prefix}.before.${i}`);
  const during = Array.from({ length: 8 }, (_, i) => `${prefix}.during.${i}`);
  try {
    for (const name of before) await store.put(name, pattern(size, name.length * 31 + name.charCodeAt(name.length - 1)));
    await cephCommand(kill, FAULT_CLUSTER);

    let completed = 0;
    const writes = forEachLimited(during, 2, async (name) => {
      await store.put(name, pattern(size, name.length * 31 + name.charCodeAt(name.length - 1)));
      completed += 1;
    });
    // Stalled: the daemon is gone, so attempts fail and are retried, and nothing completes.
    await waitFor("retries while the daemon is down", () => store.retries >= 3, 60_000);
    expect(completed).toBe(0);
    expect(logs.some((line) => line.includes(`${prefix}.during.`))).toBe(true);

    await cephCommand(start, FAULT_CLUSTER);
    await writes;
    expect(completed).toBe(during.length);

    for (const name of [...before, ...during]) {
      expect(await store.get(name)).toEqual(pattern(size, name.length * 31 + name.charCodeAt(name.length - 1)));
    }
    expect(await store.list(`${prefix}.`)).toEqual([...before, ...during].sort());
    for (const name of [...before, ...during]) await store.delete(name);
  } finally {
    await store.close();
  }
}

describe("backend faults on a real Ceph", () => {
  test("RADOS: writes stall while the OSD is down (killed), then complete after it restarts", async () => {
    const rados = await RadosStore.open({
      pool: env.LSVD_CEPH_POOL!,
      confPath: env.CEPH_CONF,
      keyringPath: env.CEPH_KEYRING,
      // librados answers ETIMEDOUT (transient) after 2 s instead of waiting for the OSD forever.
      opTimeoutMs: 2000,
    });
    await stallAndResume(rados, `fault${Date.now().toString(36)}`, "kill-osd", "start-osd");
  }, 180_000);

  test("S3: writes stall while radosgw is down (killed), then complete after it restarts", async () => {
    const s3 = new S3Store({
      bucket: env.LSVD_S3_BUCKET!,
      endpoint: env.AWS_ENDPOINT_URL,
      region: env.AWS_REGION,
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
    });
    await stallAndResume(s3, `fault${Date.now().toString(36)}`, "kill-rgw", "start-rgw");
  }, 180_000);
});
