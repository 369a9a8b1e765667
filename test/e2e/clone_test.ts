// Clones through the real binary (docs/architecture.md, "Clones"): `lsvd clone VOLUME@SNAP NEWVOLUME`, then
// `lsvd serve` of every level driven by qemu-io and nbdsh. A chain of depth 3 written at every level reads right after
// the base's head is overwritten; a clone survives `kill -9` and the loss of its cache; `lsvd gc` on a clone never
// touches a base object; a clone laid out as lsvd-rbd's clone tool writes it (built here byte by byte from the layout
// in docs/format.md, "Clones") is served with the base's content, and lsvd's own clone has the reference's field
// values at the v1 offsets.
//
// The chain's snapshots are made with `lsvd snapshot create`; the other tests list the newest checkpoint as a
// snapshot by hand (test/e2e/_snapshot_fixture.ts), as the reference tool clones the newest checkpoint. Every level
// is served with garbage collection on: the snapshots' pins keep what the clones read.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, lsvd, run, runOk, type VolumePaths } from "./_harness.ts";
import { listNewestCheckpointAsSnapshot } from "./_snapshot_fixture.ts";
import { decodeSuperblock } from "../../src/format/superblock_object.ts";

const MIB = 1024 * 1024;
const VOLUME_MIB = 16;
const TEST_TIMEOUT_MS = 240_000;

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

/** A volume's content as one byte value per MiB (every write here fills whole MiBs with one value). */
type Model = number[];

function write(model: Model, fromMib: number, toMib: number, value: number): Model {
  const next = [...model];
  for (let mib = fromMib; mib < toMib; mib++) next[mib] = value;
  return next;
}

/** qemu-io commands that write [fromMib, toMib) with `value`. */
function writeCommands(fromMib: number, toMib: number, value: number): string[] {
  return ["-c", `write -P ${value} ${fromMib * MIB} ${(toMib - fromMib) * MIB}`];
}

/** One `read -P` per run of equal MiBs: qemu-io exits 1 when any byte differs. */
function readCommands(model: Model): string[] {
  const commands: string[] = [];
  for (let start = 0; start < model.length; ) {
    let end = start + 1;
    while (end < model.length && model[end] === model[start]) end += 1;
    commands.push("-c", `read -P ${model[start]} ${start * MIB} ${(end - start) * MIB}`);
    start = end;
  }
  return commands;
}

async function qemuIo(uri: string, commands: string[]): Promise<void> {
  const result = await run(["qemu-io", "-f", "raw", ...commands, uri], { env: TOOL_ENV });
  if (result.exitCode !== 0 || /fail/i.test(result.stdout + result.stderr)) {
    throw new Error(`qemu-io ${commands.join(" ")} failed (exit ${result.exitCode}):\n${result.stdout}${result.stderr}`);
  }
}

/** The volume at `prefix` next to `of`, with a cache of its own (made by mkcache once the volume exists). */
function sibling(of: VolumePaths, prefix: string): VolumePaths {
  if (prefix === "vol") return of;
  return { ...of, volume: join(of.backendDir, prefix), cache: join(of.dir, `cache-${prefix}`) };
}

async function mkcache(volume: VolumePaths): Promise<void> {
  await runOk([await ensureBuilt(), "mkcache", "--force", "--volume", volume.volume, "--size", "64m", volume.cache]);
}

async function serve(volume: VolumePaths, extraArgs: string[] = []): Promise<LsvdServer> {
  return LsvdServer.start({ ...volume, transport: "unix", extraArgs });
}

/** Serves `volume`, runs the qemu-io commands, stops cleanly. */
async function session(volume: VolumePaths, commands: string[]): Promise<void> {
  const server = await serve(volume);
  try {
    await qemuIo(server.uri, commands);
  } finally {
    expect((await server.stop()).exitCode).toBe(0);
  }
}

async function cloneOf(base: VolumePaths, snapshot: string, clone: VolumePaths): Promise<{ snapshotSeq: number; cloneUuid: string; baseUuid: string }> {
  const result = await lsvd(["clone", "--json", `${base.volume}@${snapshot}`, clone.volume]);
  if (result.exitCode !== 0) throw new Error(`lsvd clone failed: ${result.stderr}`);
  await mkcache(clone);
  return JSON.parse(result.stdout);
}

/** Name, size, mtime and sha256 of every object of `prefix` (the lease excepted). */
function objectsOf(backendDir: string, prefix: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const name of readdirSync(backendDir)) {
    if (!new RegExp(`^${prefix}(\\.[0-9a-f]{8})?$`).test(name)) continue;
    const path = join(backendDir, name);
    const stat = statSync(path);
    found.set(name, `${stat.size} ${stat.mtimeMs} ${createHash("sha256").update(readFileSync(path)).digest("hex")}`);
  }
  return found;
}

const u32 = (bytes: Uint8Array, offset: number) => new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset, true);
const setU32 = (bytes: Uint8Array, offset: number, value: number) => new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, value, true);
const uuidBytes = (text: string) => Buffer.from(text.replaceAll("-", ""), "hex");
const uuidText = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex").replace(/^(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-");

/** The map part of a CKPT object: map_offset and map_len at 76 and 80 (v1 ckpt sub-header). */
function mapOf(checkpoint: Uint8Array): Uint8Array {
  return checkpoint.subarray(u32(checkpoint, 76), u32(checkpoint, 76) + u32(checkpoint, 80));
}

/**
 * The two objects lsvd-rbd's clone tool writes for a clone of `baseName` (as it was given the base: here its path)
 * from checkpoint `seq` (docs/format.md, "Clones"): CKPT `seq + 1` (the base checkpoint's common header and sub-header
 * copied, its v1 crc included, with seq, vol_uuid, hdr_sectors, cache_seq and the parts changed: ckpts [seq + 1] at
 * 84, no objects, no deletes, the base map at 88; not padded to a sector), and a plain v1 superblock (crc 0): ckpts
 * [seq + 1] at 76, clone_info at 80, 4096 bytes.
 */
function referenceClone(baseSuperblock: Uint8Array, baseCheckpoint: Uint8Array, seq: number, baseName: string, cloneUuid: string) {
  const map = mapOf(baseCheckpoint);
  const checkpoint = new Uint8Array(88 + map.byteLength);
  checkpoint.set(baseCheckpoint.subarray(0, 84));
  checkpoint.set(uuidBytes(cloneUuid), 8);
  setU32(checkpoint, 28, seq + 1);
  setU32(checkpoint, 32, Math.ceil(checkpoint.byteLength / 512));
  new DataView(checkpoint.buffer).setBigUint64(44, 0n, true); // cache_seq
  setU32(checkpoint, 52, 84); // ckpts_offset
  setU32(checkpoint, 56, 4);
  setU32(checkpoint, 64, 0); // objs_len (objs_offset left as copied)
  setU32(checkpoint, 72, 0); // deletes_len
  setU32(checkpoint, 76, 88); // map_offset
  setU32(checkpoint, 80, map.byteLength);
  setU32(checkpoint, 84, seq + 1);
  checkpoint.set(map, 88);
  const name = Buffer.from(baseName, "utf8");
  const superblock = new Uint8Array(4096);
  superblock.set(Buffer.from("LSVD", "ascii"), 0);
  setU32(superblock, 4, 1);
  superblock.set(uuidBytes(cloneUuid), 8);
  setU32(superblock, 24, 1); // SUPER
  setU32(superblock, 32, 8); // hdr_sectors; seq, data_sectors and crc 0
  superblock.set(baseSuperblock.subarray(44, 52), 44); // vol_size
  setU32(superblock, 52, 76);
  setU32(superblock, 56, 4);
  setU32(superblock, 60, 80);
  setU32(superblock, 64, 21 + name.byteLength + 1);
  setU32(superblock, 76, seq + 1);
  superblock.set(baseSuperblock.subarray(8, 24), 80); // clone_info: base vol_uuid
  setU32(superblock, 96, seq);
  superblock[100] = name.byteLength;
  superblock.set(name, 101);
  return { checkpoint, superblock };
}

describe("lsvd clone", () => {
  test(
    "a chain of depth 3, written at every level; the base's head overwritten; every level reads what it should",
    async () => {
      const base = await createVolume("clone-chain", { size: `${VOLUME_MIB}m`, cacheSize: "64m" });
      const zero: Model = new Array(VOLUME_MIB).fill(0);
      const models: Record<string, Model> = {};
      models.vol = write(zero, 0, 8, 0x10);
      await session(base, writeCommands(0, 8, 0x10));
      await runOk([await ensureBuilt(), "snapshot", "create", base.volume, "s0"]);

      // Each level: clone the previous one's snapshot, write over part of what it inherits, snapshot it.
      const levels = [
        { prefix: "c1", from: "vol", writes: [[2, 4, 0x21]] },
        { prefix: "c2", from: "c1", writes: [[3, 5, 0x32]] },
        { prefix: "c3", from: "c2", writes: [[4, 6, 0x43], [12, 13, 0x44]] },
      ] as const;
      for (const level of levels) {
        const from = sibling(base, level.from);
        const clone = sibling(base, level.prefix);
        await cloneOf(from, level.from === "vol" ? "s0" : `s-${level.from}`, clone);
        let model = models[level.from]!;
        const commands: string[] = readCommands(model); // inherited content, before any write of its own
        for (const [fromMib, toMib, value] of level.writes) {
          commands.push(...writeCommands(fromMib, toMib, value));
          model = write(model, fromMib, toMib, value);
        }
        models[level.prefix] = model;
        await session(clone, [...commands, ...readCommands(model)]);
        await runOk([await ensureBuilt(), "snapshot", "create", clone.volume, `s-${level.prefix}`]);
      }

      // The base's head is overwritten whole, then every level is read back from a fresh start.
      await session(base, writeCommands(0, VOLUME_MIB, 0xee));
      models.vol = write(zero, 0, VOLUME_MIB, 0xee);
      for (const prefix of ["vol", "c1", "c2", "c3"]) await session(sibling(base, prefix), readCommands(models[prefix]!));
      expect(models.c3).toEqual([0x10, 0x10, 0x21, 0x32, 0x43, 0x43, 0x10, 0x10, 0, 0, 0, 0, 0x44, 0, 0, 0]);
      // `lsvd export` reads through the chain too.
      const image = join(base.dir, "c3.raw");
      await runOk([await ensureBuilt(), "export", sibling(base, "c3").volume, image]);
      const exported = readFileSync(image);
      expect(models.c3!.map((_, mib) => exported.subarray(mib * MIB, (mib + 1) * MIB).every((byte) => byte === models.c3![mib]))).toEqual(new Array(VOLUME_MIB).fill(true));

      // nbdsh too: the deepest clone's first byte of each level's data.
      const server = await serve(sibling(base, "c3"));
      const probe = await runOk(["nbdsh", "-u", server.uri, "-c", `print([h.pread(512, offset)[0] for offset in (${2 * MIB}, ${3 * MIB}, ${4 * MIB}, 0)])`], { env: TOOL_ENV });
      expect(probe.stdout.trim()).toBe(`[${0x21}, ${0x32}, ${0x43}, ${0x10}]`);
      expect((await server.stop()).exitCode).toBe(0);
      // A clone's snapshot, served read-only, reads through the chain too (written over since in c3's head).
      await session(sibling(base, "c3"), writeCommands(0, VOLUME_MIB, 0x55));
      const snapshot = await LsvdServer.start({ ...sibling(base, "c3"), volume: `${sibling(base, "c3").volume}@s-c3`, transport: "unix", extraArgs: ["--read-only"] });
      try {
        await qemuIo(snapshot.uri, ["-r", ...readCommands(models.c3!)]);
      } finally {
        expect((await snapshot.stop()).exitCode).toBe(0);
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a clone survives kill -9 and restart, then the loss of its cache; its refusals are clear",
    async () => {
      const base = await createVolume("clone-crash", { size: `${VOLUME_MIB}m`, cacheSize: "64m" });
      await session(base, writeCommands(0, VOLUME_MIB, 0x10));
      listNewestCheckpointAsSnapshot(base.backendDir, "vol", "s0");
      const clone = sibling(base, "c");
      await cloneOf(base, "s0", clone);

      // Refusals: a missing snapshot, an existing NEWVOLUME, another backend.
      const missing = await lsvd(["clone", `${base.volume}@nope`, join(base.backendDir, "other")]);
      expect(missing.exitCode).not.toBe(0);
      expect(missing.stderr).toContain("no snapshot 'nope'");
      const existing = await lsvd(["clone", `${base.volume}@s0`, clone.volume]);
      expect(existing.exitCode).not.toBe(0);
      expect(existing.stderr).toContain("already exists");
      const elsewhere = await lsvd(["clone", `${base.volume}@s0`, join(base.dir, "c")]);
      expect(elsewhere.exitCode).not.toBe(0);
      expect(elsewhere.stderr).toContain("base's backend");
      // A served base records the clone itself (over its admin socket, found through the lease): the clone is made
      // while the base serves, and the base's superblock lists it after the base's clean stop.
      const served = await serve(base);
      const whileServed = await lsvd(["clone", "--json", `${base.volume}@s0`, join(base.backendDir, "c-served")]);
      expect((await served.stop()).exitCode).toBe(0);
      expect(whileServed.exitCode).toBe(0);
      const baseSuperblock = decodeSuperblock(readFileSync(base.volume));
      expect(baseSuperblock.cloneRefs.map((ref) => ref.name).sort()).toEqual(["c", "c-served"]);
      await mkcache(sibling(base, "c-served"));
      await session(sibling(base, "c-served"), readCommands(new Array(VOLUME_MIB).fill(0x10)));
      // A base served without an admin socket cannot record a clone: refused, naming the holder, nothing left behind.
      const unreachable = await serve(base, ["--no-admin-socket"]);
      const owned = await lsvd(["clone", `${base.volume}@s0`, join(base.backendDir, "c-owned")]);
      expect((await unreachable.stop()).exitCode).toBe(0);
      expect(owned.exitCode).not.toBe(0);
      expect(owned.stderr).toContain("without an admin socket");
      expect(owned.stderr).toContain("serve pid");
      expect(readdirSync(base.backendDir).filter((name) => name.startsWith("c-owned") && name !== "c-owned.lease")).toEqual([]);

      // Written, flushed, killed: the restart with the same cache reads every write.
      let model = write(new Array(VOLUME_MIB).fill(0x10), 1, 3, 0x5a);
      let server = await serve(clone);
      await qemuIo(server.uri, [...writeCommands(1, 3, 0x5a), "-c", "flush"]);
      await server.kill();
      server = await serve(clone);
      await qemuIo(server.uri, readCommands(model));
      // Written until the objects are in the backend, killed, and restarted with a new cache: the writes that reached
      // the backend are there, everything the clone did not write still reads from its base.
      const ownObjects = () => readdirSync(clone.backendDir).filter((name) => /^c\.[0-9a-f]{8}$/.test(name)).length;
      const before = ownObjects();
      await qemuIo(server.uri, [...writeCommands(8, 12, 0x6b), "-c", "flush"]);
      model = write(model, 8, 12, 0x6b);
      const deadline = Date.now() + 30_000;
      while (ownObjects() <= before && Date.now() < deadline) await Bun.sleep(50);
      await Bun.sleep(500); // the object's put and the batch after it
      await server.kill();
      await mkcache(clone); // the cache is lost: a new one
      server = await serve(clone);
      await qemuIo(server.uri, readCommands(model));
      expect((await server.stop()).exitCode).toBe(0);
      const fsck = await lsvd(["fsck", "--json", clone.volume]);
      expect(JSON.parse(fsck.stdout).problems).toEqual([]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "lsvd gc on a clone deletes its own garbage and never touches a base object",
    async () => {
      const base = await createVolume("clone-gc", { size: `${VOLUME_MIB}m`, cacheSize: "64m" });
      await session(base, writeCommands(0, VOLUME_MIB, 0x10));
      listNewestCheckpointAsSnapshot(base.backendDir, "vol", "s0");
      const clone = sibling(base, "c");
      await cloneOf(base, "s0", clone);
      const baseObjects = objectsOf(base.backendDir, "vol");
      // Everything the clone read from its base is overwritten, twice: every base object is dead in the clone's
      // view (GC would delete it were it the clone's), and the first overwrite is dead too (its own garbage).
      await session(clone, [...writeCommands(0, VOLUME_MIB, 0x21), ...writeCommands(0, VOLUME_MIB, 0x22)]);
      const result = await lsvd(["gc", "--json", "--gc-threshold", "0.9", "--volume", clone.volume, "--cache", clone.cache]);
      expect(result.exitCode).toBe(0);
      const gc = JSON.parse(result.stdout);
      expect(gc.errors).toBe(0);
      expect(gc.objectsDeleted).toBeGreaterThan(0);
      expect(objectsOf(base.backendDir, "vol")).toEqual(baseObjects);
      await session(clone, readCommands(new Array(VOLUME_MIB).fill(0x22)));
      await session(base, readCommands(new Array(VOLUME_MIB).fill(0x10)));
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "a clone laid out as lsvd-rbd's clone tool writes it is served; lsvd's clone has the reference's field values",
    async () => {
      const base = await createVolume("clone-reference", { size: `${VOLUME_MIB}m`, cacheSize: "64m" });
      await session(base, [...writeCommands(0, 6, 0x10), ...writeCommands(10, 11, 0x11)]);
      const seq = listNewestCheckpointAsSnapshot(base.backendDir, "vol", "s0");
      const baseModel = write(write(new Array(VOLUME_MIB).fill(0), 0, 6, 0x10), 10, 11, 0x11);
      const baseSuperblock = readFileSync(base.volume);
      const baseCheckpoint = readFileSync(join(base.backendDir, `vol.${seq.toString(16).padStart(8, "0")}`));
      const objectPath = (prefix: string, objectSeq: number) => join(base.backendDir, `${prefix}.${objectSeq.toString(16).padStart(8, "0")}`);

      // The reference tool's clone: served with the base's content, written, served again.
      const reference = sibling(base, "ref");
      const made = referenceClone(baseSuperblock, baseCheckpoint, seq, base.volume, "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b");
      expect(u32(made.checkpoint, 40)).toBe(u32(baseCheckpoint, 40)); // the stale crc it copied
      writeFileSync(objectPath("ref", seq + 1), made.checkpoint);
      writeFileSync(reference.volume, made.superblock);
      await mkcache(reference);
      const written = write(baseModel, 2, 3, 0x7e);
      await session(reference, [...readCommands(baseModel), ...writeCommands(2, 3, 0x7e)]);
      await session(reference, readCommands(written));
      const fsck = await lsvd(["fsck", "--json", reference.volume]);
      expect(JSON.parse(fsck.stdout).problems).toEqual([]);

      // Its checkpoint has no checksum lsvd can verify: one whose map is not the base checkpoint's is refused.
      const forged = sibling(base, "forged");
      const bad = referenceClone(baseSuperblock, baseCheckpoint, seq, base.volume, "0a1b2c3d-4e5f-4a6b-bc7d-8e9fa0b1c2d3");
      bad.checkpoint[88 + 12]! += 8; // map entry 0 now points 8 sectors further into its object: well formed, wrong
      writeFileSync(objectPath("forged", seq + 1), bad.checkpoint);
      writeFileSync(forged.volume, bad.superblock);
      await mkcache(forged);
      const refused = await lsvd(["serve", "--volume", forged.volume, "--cache", forged.cache, "--socket", join(base.dir, "forged.sock")], { timeoutMs: 20_000 });
      expect(refused.exitCode).not.toBe(0);
      expect(refused.stderr).toContain("differs from the base checkpoint");

      // lsvd's own clone, read at the v1 offsets the reference's parse.py reads.
      const own = sibling(base, "own");
      const created = await cloneOf(base, "s0", own);
      const superblock = readFileSync(own.volume);
      expect(uuidText(superblock.subarray(8, 24))).toBe(created.cloneUuid);
      expect(superblock.subarray(44, 52)).toEqual(baseSuperblock.subarray(44, 52)); // vol_size
      const [ckptsOffset, ckptsLen, clonesOffset, clonesLen] = [52, 56, 60, 64].map((at) => u32(superblock, at));
      expect([ckptsLen, u32(superblock, ckptsOffset!)]).toEqual([4, seq + 1]);
      expect(clonesLen).toBe(21 + 3 + 1);
      expect(uuidText(superblock.subarray(clonesOffset!, clonesOffset! + 16))).toBe(created.baseUuid);
      expect(u32(superblock, clonesOffset! + 16)).toBe(seq); // last_seq
      expect(superblock[clonesOffset! + 20]).toBe(3);
      expect(Buffer.from(superblock.subarray(clonesOffset! + 21, clonesOffset! + 25)).toString("latin1")).toBe("vol\0");
      // The base records it (lsvd's extension: clone_ref {snapshot seq, clone vol_uuid, clone prefix}).
      expect(decodeSuperblock(readFileSync(base.volume)).cloneRefs).toEqual([{ snapSeq: seq, cloneUuid: created.cloneUuid, name: "own" }]);
      const ownCheckpoint = readFileSync(objectPath("own", seq + 1));
      expect([u32(ownCheckpoint, 24), u32(ownCheckpoint, 28)]).toEqual([3, seq + 1]); // CKPT, seq
      expect(uuidText(ownCheckpoint.subarray(8, 24))).toBe(created.cloneUuid);
      expect(Buffer.from(mapOf(ownCheckpoint)).equals(Buffer.from(mapOf(baseCheckpoint)))).toBe(true);
      await session(own, readCommands(baseModel));
      // The base cannot be removed while clones name it, the reference tool's (named by its path) included.
      const rm = await lsvd(["rm", base.volume]);
      expect(rm.exitCode).not.toBe(0);
      expect(rm.stderr).toMatch(/clones .*\bref\b/);
    },
    TEST_TIMEOUT_MS,
  );
});
