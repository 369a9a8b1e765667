// RadosStore (src/backend/rados_store.ts, ffi/librados.ts) against a real single-node Ceph started by
// test/ceph/up.sh: the ObjectStore contract, opening errors, and that the event loop keeps running during I/O.
import { beforeAll, describe, expect, test } from "bun:test";
import { openBackend } from "../../src/backend/backend_uri.ts";
import { RadosStore } from "../../src/backend/rados_store.ts";
import { ConflictError, InvalidArgumentError, IOError, NotFoundError } from "../../src/errors.ts";
import { type CephEnv, cephUp } from "./_ceph.ts";
import { objectStoreContract, pattern } from "./object_store_contract.ts";

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

function open(): Promise<RadosStore> {
  return RadosStore.open({ pool: env.LSVD_CEPH_POOL!, confPath: env.CEPH_CONF, keyringPath: env.CEPH_KEYRING });
}

objectStoreContract("RadosStore", open);

describe("RadosStore specifics", () => {
  test("a pool that does not exist is NotFoundError naming it", async () => {
    const opening = RadosStore.open({ pool: "no-such-pool", confPath: env.CEPH_CONF });
    await expect(opening).rejects.toBeInstanceOf(NotFoundError);
    await expect(opening).rejects.toThrow("no-such-pool");
  });

  test("a missing ceph.conf is a permanent IOError naming the file", async () => {
    const opening = RadosStore.open({ pool: env.LSVD_CEPH_POOL!, confPath: "/nonexistent/ceph.conf" });
    await expect(opening).rejects.toBeInstanceOf(IOError);
    await expect(opening).rejects.toThrow("/nonexistent/ceph.conf");
  });

  test("versions are RADOS object versions: the same bytes written twice are two versions", async () => {
    const store = await open();
    const name = `version.test.${Date.now().toString(36)}`;
    try {
      const first = await store.putIfAbsent(name, pattern(100, 1));
      await store.put(name, pattern(100, 1));
      const second = (await store.getVersioned(name))!.version;
      expect(second).not.toBe(first);
      expect(BigInt(second) > BigInt(first)).toBe(true);
      // The older version no longer names the object, though its bytes are the same.
      await expect(store.putIfVersion(name, pattern(100, 2), first)).rejects.toBeInstanceOf(ConflictError);
      // Not a RADOS version at all: the caller's mistake, not a conflict.
      await expect(store.putIfVersion(name, pattern(100, 2), "0")).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(store.putIfVersion(name, pattern(100, 2), "12:ab")).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(await store.get(name)).toEqual(pattern(100, 1));
    } finally {
      await store.delete(name);
      await store.close();
    }
  });

  // Garbage collection lends the same buffer from victim to victim: the read lands in it, no copy, no new buffer.
  test("a whole-object get into a lent buffer that holds the size asked for reads into it; a smaller one does not", async () => {
    const store = await open();
    const name = `into.test.${Date.now().toString(36)}`;
    try {
      const data = pattern(3 * 1024 * 1024 + 512, 4);
      await store.put(name, data);
      const lent = new Uint8Array(4 * 1024 * 1024);
      const read = await store.get(name, lent);
      expect({ shared: read.buffer === lent.buffer, same: Buffer.from(read).equals(Buffer.from(data)) }).toEqual({ shared: true, same: true });
      // The size and one byte more is what a get asks for (see rados_store.ts): a buffer of exactly the size is not used.
      const exact = new Uint8Array(data.byteLength);
      const exactRead = await store.get(name, exact);
      expect({ shared: exactRead.buffer === exact.buffer, same: Buffer.from(exactRead).equals(Buffer.from(data)) }).toEqual({ shared: false, same: true });
    } finally {
      await store.delete(name);
      await store.close();
    }
  });

  test("the event loop runs while objects are written and read", async () => {
    const store = await open();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const data = pattern(4 * 1024 * 1024, 1);
      for (let i = 0; i < 5; i++) {
        await store.put(`loop.test.${i}`, data);
        expect(await store.getRange(`loop.test.${i}`, 4096, 4096)).toEqual(data.subarray(4096, 8192));
      }
      // A blocking librados call would starve the timer for the whole loop.
      expect(ticks).toBeGreaterThan(0);
      for (let i = 0; i < 5; i++) await store.delete(`loop.test.${i}`);
    } finally {
      clearInterval(timer);
      await store.close();
    }
  });

  test("openBackend(rados://POOL/PREFIX) opens a store on the pool", async () => {
    const { store, prefix, uri } = await openBackend(`rados://${env.LSVD_CEPH_POOL}/vol1`, {
      cephConf: env.CEPH_CONF,
      cephKeyring: env.CEPH_KEYRING,
      cephClient: env.CEPH_CLIENT_NAME,
    });
    try {
      expect(prefix).toBe("vol1");
      expect(uri).toBe(`rados://${env.LSVD_CEPH_POOL}/vol1`);
      expect(store.description).toBe(`rados://${env.LSVD_CEPH_POOL}`);
      await store.put("uri.test", pattern(10, 1));
      expect(await store.get("uri.test")).toEqual(pattern(10, 1));
      await store.delete("uri.test");
    } finally {
      await store.close();
    }
  });
});
