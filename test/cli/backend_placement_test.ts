// The note `lsvd serve` logs for a directory backend on its cache's disk (src/cli/backend_placement.ts): device
// numbers split as glibc splits them, partitions taken to their disk through a sysfs tree (a fake one here, so the
// answers do not depend on this machine's disks), and the note only for a file backend on the cache's disk.

import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deviceNumbers, diskOf, sharedDiskNote } from "../../src/cli/backend_placement.ts";

const work = mkdtempSync(join(tmpdir(), "lsvd-placement-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A sysfs /sys/dev/block with `links` (major:minor -> device path under devices/); partitions get a `partition` file. */
function fakeSysfs(name: string, links: Array<{ dev: string; path: string; partition?: boolean }>): string {
  const root = join(work, name);
  const block = join(root, "dev", "block");
  mkdirSync(block, { recursive: true });
  for (const link of links) {
    const target = join(root, "devices", link.path);
    mkdirSync(target, { recursive: true });
    if (link.partition === true) writeFileSync(join(target, "partition"), "1\n");
    symlinkSync(join("..", "..", "devices", link.path), join(block, link.dev));
  }
  return block;
}

test("device numbers split as glibc's gnu_dev_major and gnu_dev_minor do", () => {
  expect(deviceNumbers(0xfe00)).toEqual({ major: 254, minor: 0 });
  expect(deviceNumbers(0x110301)).toEqual({ major: 259, minor: 257 }); // a minor above 255: its bits above the low 8 sit at dev bits 20 and up
  expect(deviceNumbers(0x0803)).toEqual({ major: 8, minor: 3 });
  expect(deviceNumbers(2 ** 32 * 0x12345 + 0xabcdef01)).toEqual({ major: 0x12def, minor: 0x345abc01 });
  expect(deviceNumbers(0)).toEqual({ major: 0, minor: 0 });
});

test("a partition is taken to its disk, a whole disk is itself, and a device sysfs does not know is no disk", () => {
  const block = fakeSysfs("disks", [
    { dev: "259:0", path: "pci/nvme/block/nvme0n1" },
    { dev: "259:1", path: "pci/nvme/block/nvme0n1/nvme0n1p1", partition: true },
    { dev: "259:2", path: "pci/nvme/block/nvme0n1/nvme0n1p2", partition: true },
    { dev: "8:0", path: "pci/sata/block/sda" },
  ]);
  expect(diskOf(259, 0, block)).toBe("nvme0n1");
  expect(diskOf(259, 1, block)).toBe("nvme0n1");
  expect(diskOf(259, 2, block)).toBe("nvme0n1");
  expect(diskOf(8, 0, block)).toBe("sda");
  expect(diskOf(0, 42, block)).toBeNull(); // tmpfs, overlay: anonymous devices
});

test("the note is logged for a writable directory backend on the cache's disk, and for nothing else", () => {
  const here = join(work, "volume");
  mkdirSync(here);
  const cache = join(here, "cache");
  writeFileSync(cache, "");
  const { major, minor } = deviceNumbers(statSync(here).dev);
  const onDisk = fakeSysfs("here-is-a-partition", [{ dev: `${major}:${minor}`, path: "pci/virtio/block/vdz/vdz1", partition: true }]);
  const volume = join(here, "vol");

  const note = sharedDiskNote(volume, cache, false, onDisk);
  expect(note).toBe(
    `note: the backend directory ${here} and the cache ${cache} are on one disk (vdz): every object put ends with ` +
      `flushes of that disk, and journal writes wait behind them (tail latency of small writes; docs/operations.md, ` +
      `"Where the backend directory goes")`,
  );
  expect(sharedDiskNote(`file://${volume}`, cache, false, onDisk)).toBe(note);
  // Another disk, or none: no note.
  expect(sharedDiskNote(volume, cache, false, fakeSysfs("nothing-known", []))).toBeNull();
  expect(sharedDiskNote(volume, cache, false, fakeSysfs("another-disk", [{ dev: `${major}:${minor + 1}`, path: "pci/virtio/block/vdy" }]))).toBeNull();
  // A read-only volume puts nothing: no note.
  expect(sharedDiskNote(volume, cache, true, onDisk)).toBeNull();
  // Other backends never: their puts flush no local disk.
  expect(sharedDiskNote("rados://pool/vol", cache, false, onDisk)).toBeNull();
  expect(sharedDiskNote("s3://bucket/vol", cache, false, onDisk)).toBeNull();
  // What cannot be looked at is no reason to fail a start: no note.
  expect(sharedDiskNote(join(work, "missing", "vol"), cache, false, onDisk)).toBeNull();
  expect(sharedDiskNote(volume, join(work, "missing-cache"), false, onDisk)).toBeNull();
});
