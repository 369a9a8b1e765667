// `lsvd fsck` through the real CLI: a clean volume, a gap in the log, repair, a corrupted checkpoint, the --json shape,
// and --cache (journal case and records pending replay, which must match what Volume.open then replays).
// Volumes are written by the real volume code on the file backend (test/sim world), the cache file is the simulated
// cache device's bytes.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { FileStore } from "../../src/backend/file_store.ts";
import { decodeSuperblock } from "../../src/format/superblock_object.ts";
import { leaseName, objectName, parseObjectName } from "../../src/format/object_name.ts";
import { decodeLease, encodeLease, LeaseState } from "../../src/format/lease_object.ts";
import { thisProcess } from "../../src/util/process_identity.ts";

/** A pid above the kernel's pid_max (4194304 at most): never a running process. */
const DEAD_PID = 4_194_305;
import { openUringDevice } from "../../ffi/uring_device.ts";
import { Volume } from "../../src/volume/volume.ts";
import { immediateClock, makeWorld, openVolume } from "../sim/volume_world.ts";
import { runLsvd } from "../crash/_harness.ts";

let dir: string;
let pristine: string;
let cacheFile: string;
let checkpointSeq = 0;
let lastSeq = 0;

/** A fresh copy of the volume's backend directory; returns the VOLUME argument. */
function copyVolume(name: string): string {
  const target = path.join(dir, name);
  cpSync(pristine, target, { recursive: true });
  return path.join(target, "vol");
}

function objectPath(volume: string, seq: number): string {
  return path.join(path.dirname(volume), objectName("vol", seq));
}

function fsckJson(args: string[]): { code: number; report: any; stderr: string } {
  const result = runLsvd(["fsck", "--json", ...args]);
  return { code: result.code, report: JSON.parse(result.stdout), stderr: result.stderr };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "lsvd-fsck-"));
  pristine = path.join(dir, "pristine");
  mkdirSync(pristine);
  const store = await FileStore.open(pristine);
  const world = await makeWorld(7, { volumeBytes: 2 * 1024 * 1024, cacheBytes: 8 * 1024 * 1024, journalBytes: 4 * 1024 * 1024, store });
  // Objects with a checkpoint after every 5, writes and trims; the crash leaves objects after the newest checkpoint.
  const volume = await openVolume(world, { clock: immediateClock, checkpointIntervalObjects: 5, batchIdleMs: 600_000 });
  for (let index = 0; index < 90; index++) {
    const offset = 16384 * world.prng.int(128);
    if (index % 9 === 8) {
      await volume.trim(offset, 16384, false);
    } else {
      const data = new Uint8Array(16384);
      world.prng.fill(data);
      await volume.write(offset, data, false);
    }
  }
  await volume.flush();
  // Let puts finish, then crash: the journal still holds the records of the open batch.
  for (let tries = 0; tries < 200 && volume.stats().journalUsedBytes > 200_000; tries++) await Bun.sleep(5);
  volume.abandon();
  world.fence?.fence();
  world.lease?.abandon();
  // The crashed run held the lease: make it a process of this host that is gone (as after kill -9 here), so that
  // fsck --repair takes it over at once instead of waiting for it to expire.
  const leasePath = path.join(pristine, leaseName("vol"));
  const held = decodeLease(readFileSync(leasePath));
  expect(held.state).toBe(LeaseState.Held);
  const here = thisProcess();
  writeFileSync(leasePath, encodeLease({ ...held, host: here.host, bootId: here.bootId, pid: DEAD_PID, processStartTicks: 1 }));
  cacheFile = path.join(dir, "cache.pristine");
  writeFileSync(cacheFile, world.device.data);
  const superblock = decodeSuperblock(readFileSync(path.join(pristine, "vol")));
  checkpointSeq = superblock.checkpoints[superblock.checkpoints.length - 1] ?? 0;
  const seqs = (await store.list("vol.")).map((name) => parseObjectName("vol", name)).filter((seq): seq is number => seq !== null);
  lastSeq = Math.max(...seqs);
  expect(checkpointSeq).toBeGreaterThan(0);
  expect(lastSeq).toBeGreaterThan(checkpointSeq + 2);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("lsvd fsck", () => {
  test("a clean volume: exit 0, human output", () => {
    const volume = copyVolume("clean");
    const result = runLsvd(["fsck", volume]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("no problems found");
    expect(result.stdout).toContain("equals a replay of every DATA object from seq 1");
    expect(result.stdout).toContain(`recovery starts at checkpoint ${checkpointSeq}`);
  });

  test("--json shape", () => {
    const { code, report } = fsckJson([copyVolume("json")]);
    expect(code).toBe(0);
    expect(report.exitCode).toBe(0);
    expect(typeof report.volUuid).toBe("string");
    expect(report.objects.count).toBe(report.objects.data + report.objects.checkpoints + report.objects.invalid);
    expect(report.objects.lastSeq).toBe(lastSeq);
    expect(report.recoveryCheckpointSeq).toBe(checkpointSeq);
    expect(report.logEndSeq).toBe(lastSeq + 1);
    expect(report.map).toMatchObject({ comparedWithReplay: true, equal: true });
    expect(report.map.extents).toBeGreaterThan(0);
    expect(report.checkpoints.find((checkpoint: any) => checkpoint.seq === checkpointSeq)).toMatchObject({ listed: true, usable: true });
    expect(report.problems).toEqual([]);
    expect(report.remaining).toEqual([]);
    expect(report.repairs).toEqual([]);
    expect(report.cache).toBeNull();
  });

  test("an object missing in the middle: a crash's left-over (note, exit 0), the journal still holds it; --repair truncates (exit 0)", async () => {
    const volume = copyVolume("gap");
    const missing = checkpointSeq + 1;
    unlinkSync(objectPath(volume, missing));
    // The backend alone looks like a run killed while later puts had completed before this one.
    const found = fsckJson([volume]);
    expect(found.code).toBe(0);
    expect(found.report.problems).toEqual([]);
    expect(found.report.logEndSeq).toBe(missing);
    expect(found.report.beyondLogEndCount).toBe(lastSeq - missing);
    expect(found.report.notes.join("\n")).toContain(`the log ends at seq ${missing}`);
    expect(existsSync(objectPath(volume, lastSeq))).toBe(true); // fsck without --repair changes nothing
    // The cache check tells the two apart: here the journal still holds the missing object's records (@B, replayed
    // by the next open), so nothing is lost; a journal that had released them would be case @C, a problem.
    const cache = path.join(dir, "cache.gap");
    cpSync(cacheFile, cache);
    const withCache = fsckJson(["--cache", cache, volume]);
    expect(withCache.code).toBe(0);
    expect(withCache.report.cache.journalCase).toBe("@B");
    expect(withCache.report.cache.pendingReplay).toBeGreaterThan(0);

    const repaired = runLsvd(["fsck", "--repair", volume]);
    expect(repaired.code).toBe(0); // left-overs deleted: a clean-up, not a repair
    expect(repaired.stdout).toContain(`cleaned: log truncated at seq ${missing}`);
    expect(repaired.stdout).not.toContain("repaired:");
    expect(repaired.stdout).toContain("fsck: clean (exit 0)");
    for (let seq = missing + 1; seq <= lastSeq; seq++) expect(existsSync(objectPath(volume, seq))).toBe(false);
    expect(runLsvd(["fsck", "--repair", volume]).stdout).not.toContain("cleaned:");
  });

  test("an invalid object at the log end is a problem (exit 4); --repair truncates at it (exit 1), then clean", () => {
    const volume = copyVolume("invalid-end");
    const damaged = checkpointSeq + 1;
    const file = objectPath(volume, damaged);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 0x01; // data CRC
    writeFileSync(file, bytes);
    const found = fsckJson([volume]);
    expect(found.code).toBe(4);
    expect(found.report.problems).toHaveLength(1);
    expect(found.report.problems[0]).toMatchObject({ kind: "gap", seq: damaged, repaired: false });
    const repaired = fsckJson(["--repair", volume]);
    expect(repaired.code).toBe(1);
    expect(repaired.report.problems[0]).toMatchObject({ kind: "gap", repaired: true });
    expect(repaired.report.repairs.join(" ")).toContain(`log truncated at seq ${damaged}`);
    expect(runLsvd(["fsck", volume]).code).toBe(0);
  });

  test("a corrupted checkpoint: reported (exit 4); --repair drops it, truncates at it (exit 1), then clean", async () => {
    const volume = copyVolume("ckpt");
    const file = objectPath(volume, checkpointSeq);
    const bytes = readFileSync(file);
    bytes[200]! ^= 0x40;
    writeFileSync(file, bytes);
    const found = fsckJson([volume]);
    expect(found.code).toBe(4);
    const kinds = found.report.problems.map((problem: any) => problem.kind);
    expect(kinds).toContain("checkpoint");
    expect(found.report.problems.find((problem: any) => problem.kind === "checkpoint").message).toContain("CRC");
    // Recovery falls back to the previous checkpoint and the log ends at the damaged one.
    expect(found.report.recoveryCheckpointSeq).toBeLessThan(checkpointSeq);
    expect(found.report.logEndSeq).toBe(checkpointSeq);

    const repaired = fsckJson(["--repair", volume]);
    expect(repaired.code).toBe(1);
    expect(repaired.report.remaining).toEqual([]);
    expect(repaired.report.problems.every((problem: any) => problem.repaired)).toBe(true);
    const superblock = decodeSuperblock(readFileSync(volume));
    expect(superblock.checkpoints).not.toContain(checkpointSeq);
    expect(existsSync(file)).toBe(false);
    expect(runLsvd(["fsck", volume]).code).toBe(0);
  });

  test("--cache: journal case, records pending replay, and Volume.open replays exactly those", async () => {
    const volume = copyVolume("with-cache");
    const cache = path.join(dir, "cache.copy");
    cpSync(cacheFile, cache);
    const { code, report } = fsckJson(["--cache", cache, volume]);
    expect(code).toBe(0);
    expect(report.cache).toMatchObject({ superblockValid: true, volumeMatches: true, journalCase: "@B" });
    expect(report.cache.pendingReplay).toBeGreaterThan(0);
    expect(report.cache.journalRecords).toBeGreaterThanOrEqual(report.cache.pendingReplay);
    expect(report.cache.stopReason).toBe("no valid header");
    const human = runLsvd(["fsck", "--cache", cache, volume]);
    expect(human.stdout).toContain(`journal case @B: ${report.cache.pendingReplay} record(s) pending replay`);

    const store = await FileStore.open(path.dirname(volume));
    const device = await openUringDevice(cache);
    try {
      const opened = await Volume.open({ store, prefix: "vol", cache: device, pool: device.pool });
      expect(opened.recovery.journalRecordsReplayed).toBe(report.cache.pendingReplay);
      await opened.close();
    } finally {
      await device.close();
      await store.close();
    }
    const after = fsckJson(["--cache", cache, volume]);
    expect(after.code).toBe(0);
    expect(after.report.cache.pendingReplay).toBe(0);
  });

  test("--cache of another volume: a problem (exit 4)", () => {
    const volume = copyVolume("other");
    const other = path.join(dir, "other-b");
    mkdirSync(other);
    expect(runLsvd(["mkdisk", "--size", "4m", path.join(other, "vol")]).code).toBe(0);
    const cache = path.join(dir, "other-cache");
    expect(runLsvd(["mkcache", "--volume", path.join(other, "vol"), "--size", "40m", cache]).code).toBe(0);
    const { code, report } = fsckJson(["--cache", cache, volume]);
    expect(code).toBe(4);
    expect(report.cache).toMatchObject({ superblockValid: true, volumeMatches: false, journalCase: "@A" });
    expect(report.problems[0].kind).toBe("cache");
  });

  test("operational errors exit 8; --help exits 0", () => {
    const missing = runLsvd(["fsck", path.join(dir, "nowhere", "vol")]);
    expect(missing.code).toBe(8);
    expect(missing.stderr).toContain("lsvd fsck: ");
    expect(runLsvd(["fsck"]).code).toBe(8);
    expect(runLsvd(["fsck", "--bogus", "x"]).code).toBe(8);
    const help = runLsvd(["fsck", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Exit status: 0 clean, 1 problems found and all repaired, 4 problems left, 8");
  });
});
