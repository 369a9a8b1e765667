// A volume on a real RADOS pool and a real S3 bucket (radosgw), driven like a user would: `lsvd mkdisk` and
// `lsvd mkcache` (RADOS: --ceph-conf/--ceph-keyring; S3: AWS_* environment), `lsvd serve` on a unix socket, known data
// written and read back with real NBD clients (nbdsh, nbdcopy), then a clean restart (SIGTERM), a crash (SIGKILL,
// recovery replays the journal), and `lsvd parse` of objects by URI. Each step reads back the whole volume and
// compares it byte for byte with the model.
//
// The cluster is the shared default one from test/ceph/up.sh (memstore), started here if needed; the tests FAIL if it
// cannot start. Every volume has its own prefix and is deleted afterwards.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { decodeSuperblock, skippedRangeOf, type SuperblockObject } from "../../src/format/superblock_object.ts";
import { type CephEnv, cephUp } from "../backend/_ceph.ts";
import {
  type Backend,
  type BackendKind,
  adminSocketOf,
  backendOf,
  deleteVolume,
  firstDifference,
  lsvd,
  lsvdCommand,
  makeTempDir,
  nbdReadAll,
  nbdWriteRanges,
  objectSeqs,
  run,
  Server,
  uniquePrefix,
  VolumeModel,
} from "./_volume_backends.ts";

/**
 * What is wrong with a volume's object log, given its seqs in the store: it must start at 1, may miss single seqs
 * before the newest checkpoint (superseded checkpoints are deleted, CHECKPOINTS_KEPT), and must have no gap after it:
 * every object was put, in order, none skipped.
 */
/**
 * Gaps in the log that recovery would trip over. Below the oldest checkpoint the superblock names, objects may be
 * gone (dropped checkpoints, and objects garbage collection deleted); from it on, every seq must be there, except
 * those in a skipped range (seqs a new owner left unused: docs/architecture.md, "Ownership and fencing").
 */
function logGaps(seqs: number[], superblock: SuperblockObject): string[] {
  const problems: string[] = [];
  const checkpoints = superblock.checkpoints;
  const oldest = Math.min(...checkpoints);
  const newest = Math.max(...checkpoints);
  if (checkpoints.length === 0) return ["the superblock names no checkpoint"];
  for (let seq = oldest; seq <= seqs[seqs.length - 1]!; seq++) {
    if (!seqs.includes(seq) && skippedRangeOf(superblock.skipped, seq) === null) problems.push(`object ${seq} is missing`);
  }
  if (!seqs.includes(newest)) problems.push(`newest checkpoint ${newest} missing`);
  return problems;
}

const VOLUME_BYTES = 64 * 1024 * 1024;
const CACHE_BYTES = 64 * 1024 * 1024;

let env: CephEnv;
beforeAll(() => {
  env = cephUp();
}, 600_000);

for (const kind of ["rados", "s3"] as BackendKind[]) {
  describe(`volume on ${kind}`, () => {
    let backend: Backend;
    let store: ObjectStore;
    let directory: string;
    let prefix: string;
    let volumeUri: string;
    let cachePath: string;
    let socketPath: string;
    let server: Server | null = null;
    const model = new VolumeModel(VOLUME_BYTES, kind === "rados" ? 11 : 12);

    beforeAll(async () => {
      backend = backendOf(kind, env);
      store = await backend.openStore();
      directory = makeTempDir(kind);
      prefix = uniquePrefix(kind);
      volumeUri = backend.uri(prefix);
      cachePath = path.join(directory, "cache");
      socketPath = path.join(directory, "sock");
    });

    afterAll(async () => {
      if (server) await server.crash();
      await deleteVolume(store, prefix);
      await store.close();
      fs.rmSync(directory, { recursive: true, force: true });
    }, 60_000);

    /** Writes `count` random ranges of the model through NBD. */
    async function writeSome(count: number): Promise<void> {
      const writes = model.randomWrites(count);
      const image = path.join(directory, "expected.img");
      fs.writeFileSync(image, model.bytes);
      await nbdWriteRanges(server!.uri, image, writes);
    }

    async function expectContents(): Promise<void> {
      const actual = await nbdReadAll(server!.uri, path.join(directory, "actual.img"));
      expect(firstDifference(actual, model.bytes)).toBe(-1);
    }

    // Small batches (64 KiB) put objects while the test writes, not only at shutdown.
    const serve = () => Server.start(backend, volumeUri, cachePath, socketPath, ["--batch-size", "64k"]);

    test("mkdisk and mkcache through the CLI", async () => {
      const made = await lsvd(backend, ["mkdisk", "--size", "64m", "--json", volumeUri, ...backend.cliArgs]);
      const created = JSON.parse(made.stdout) as { volume: string; uuid: string; sizeBytes: number };
      expect(created).toMatchObject({ volume: volumeUri, sizeBytes: VOLUME_BYTES });
      expect(await store.stat(prefix)).not.toBeNull();
      await lsvd(backend, ["mkcache", "--volume", volumeUri, "--size", String(CACHE_BYTES), cachePath, ...backend.cliArgs]);
      // mkdisk refuses to overwrite a volume without --force.
      const again = await lsvd(backend, ["mkdisk", "--size", "64m", volumeUri, ...backend.cliArgs]).catch((error: Error) => error);
      expect(again).toBeInstanceOf(Error);
      expect(String(again)).toContain("already exists");
    }, 60_000);

    test("serve: known data written over NBD reads back", async () => {
      server = await serve();
      expect(server.log).toContain("journal case @D");
      await writeSome(300);
      await expectContents();
    }, 120_000);

    test("one owner: a second serve, mkdisk --force, fsck --repair and gc are refused at once, naming the server", async () => {
      const holder = `is owned by serve pid ${server!.child.pid}`;
      const otherCache = path.join(directory, "cache2");
      await lsvd(backend, ["mkcache", "--volume", volumeUri, "--size", String(CACHE_BYTES), otherCache, ...backend.cliArgs]);
      const attempts = [
        ["serve", "--volume", volumeUri, "--cache", otherCache, "--socket", path.join(directory, "second.sock")],
        ["mkdisk", "--force", "--size", "64m", volumeUri],
        ["fsck", "--repair", volumeUri],
        ["gc", "--volume", volumeUri, "--cache", otherCache],
      ];
      for (const args of attempts) {
        const refused = await run([...lsvdCommand(), ...args, ...backend.cliArgs], backend.cliEnv);
        expect(refused.exitCode, args.join(" ")).toBe(args[0] === "fsck" ? 8 : 1);
        expect(refused.stderr, args.join(" ")).toContain(holder);
      }
      const shown = JSON.parse((await lsvd(backend, ["lock", "show", "--json", volumeUri, ...backend.cliArgs])).stdout);
      // The NBD address, then the admin socket (the one the harness gives every server).
      const addresses = [server!.uri, `admin:unix:${adminSocketOf(server!.socketPath)}`];
      expect(shown).toMatchObject({ status: "held", holder: { pid: server!.child.pid, command: "serve", running: "alive", addresses } });
      expect(shown.superblockEpoch).toBe(shown.epoch);
      await expectContents();
    }, 120_000);

    test("clean restart (SIGTERM): everything is in the backend, and reads back", async () => {
      expect(await server!.stop()).toBe(0);
      server = null;
      const seqs = await objectSeqs(store, prefix);
      expect(seqs.length).toBeGreaterThan(10);
      expect(logGaps(seqs, decodeSuperblock(await store.get(prefix)))).toEqual([]);
      server = await serve();
      // Nothing to replay: the clean shutdown emptied the journal.
      expect(server.log).toMatch(/journal case @B, 0 record\(s\) replayed/);
      await expectContents();
    }, 120_000);

    // Large batches that are never sealed by idleness: until shutdown nothing reaches the backend, so after a crash
    // the writes exist only in the journal, and only replay can bring them back.
    const serveUnsealed = () =>
      Server.start(backend, volumeUri, cachePath, socketPath, ["--batch-size", "8m", "--batch-idle-ms", "600000"]);

    /** Restarts with serveUnsealed, writes less than one batch, SIGKILLs; the backend must not have changed. */
    async function writeAndCrash(): Promise<void> {
      expect(await server!.stop()).toBe(0);
      server = await serveUnsealed();
      const objectsBefore = (await objectSeqs(store, prefix)).length;
      await writeSome(30); // at most 30 x 256 KiB: less than one 8 MiB batch
      await server.crash();
      server = null;
      expect((await objectSeqs(store, prefix)).length).toBe(objectsBefore);
    }

    function replayedRecords(log: string): number {
      const replayed = /journal case @B, (\d+) record\(s\) replayed/.exec(log);
      expect(replayed).not.toBeNull();
      return Number(replayed![1]);
    }

    test("crash (SIGKILL) and restart: the lease is taken over at once, the journal replays acknowledged writes", async () => {
      await writeAndCrash();
      server = await serveUnsealed();
      expect(server.log).toContain("(case @D)");
      expect(replayedRecords(server.log)).toBeGreaterThan(0);
      await expectContents();
      // And after a clean restart (with other settings): the replayed writes were put to the backend.
      expect(await server.stop()).toBe(0);
      server = await serve();
      expect(replayedRecords(server.log)).toBe(0);
      await expectContents();
    }, 120_000);

    // Journal records are at most one batch long at the time they are written; after a restart with a smaller
    // --batch-size, replay puts such a record alone into a batch (a batch takes any one record; this once failed
    // with "batch overflow").
    test(
      "crash with 8 MiB batches, restart with 64 KiB batches: replay still works",
      async () => {
        await writeAndCrash();
        server = await serve();
        expect(replayedRecords(server.log)).toBeGreaterThan(0);
        await expectContents();
      },
      120_000,
    );

    /** The name of the lowest-seq DATA object in the backend (type field at offset 24 of the common header). */
    async function oldestDataObject(): Promise<string> {
      for (const seq of await objectSeqs(store, prefix)) {
        const name = `${prefix}.${seq.toString(16).padStart(8, "0")}`;
        const head = await store.getRange(name, 0, 28);
        if (new DataView(head.buffer, head.byteOffset).getUint32(24, true) === 2) return name;
      }
      throw new Error(`no DATA object left under ${prefix}`);
    }

    test("lock break --force on a running server: it is fenced and exits 1; the next serve takes over once its lease ran out", async () => {
      if (server) expect(await server.stop()).toBe(0);
      server = await Server.start(backend, volumeUri, cachePath, socketPath, ["--batch-size", "64k", "--lease-seconds", "3"]);
      await writeSome(20);
      const broken = await lsvd(backend, ["lock", "break", "--force", volumeUri, ...backend.cliArgs]);
      expect(broken.stdout).toContain("Writes it acknowledged but had not yet put to the backend are not part of the volume");
      const code = await server.wait();
      expect(code).toBe(1);
      expect(server.log).toContain("this server no longer owns volume");
      server = null;
      // The fenced server's cache still holds what it acknowledged: served again with it, the volume has it all.
      for (let attempt = 0; server === null; attempt++) {
        try {
          server = await serve();
        } catch (error) {
          if (!String(error).includes("is owned by") || attempt > 100) throw error;
          await Bun.sleep(200);
        }
      }
      await expectContents();
    }, 120_000);

    test("lsvd parse reads objects by URI", async () => {
      // GC may have deleted the earliest objects by now: parse the oldest DATA object that is left.
      const dataName = await oldestDataObject();
      const data = await lsvd(backend, ["parse", `${backend.uri(dataName)}`, ...backend.cliArgs]);
      expect(data.stdout).toContain(`name:      ${backend.uri(dataName)}`);
      expect(data.stdout).toContain("type:      DATA");
      expect(data.stdout).toMatch(/data_crc32c:\s+[0-9a-f]{8} \(OK\)/);
      const superblock = await lsvd(backend, ["parse", "--json", volumeUri, ...backend.cliArgs]);
      const parsed = JSON.parse(superblock.stdout) as { type: string; volSectors: number; checkpoints: number[] };
      expect(parsed.type).toBe("SUPER");
      expect(parsed.volSectors).toBe(VOLUME_BYTES / 512);
      expect(parsed.checkpoints.length).toBeGreaterThan(0);
      // A missing object is reported, not printed as garbage.
      const missing = await lsvd(backend, ["parse", `${volumeUri}.7fffffff`, ...backend.cliArgs]).catch((error: Error) => error);
      expect(missing).toBeInstanceOf(Error);
    }, 60_000);
  });
}
