// A real VM on an lsvd export: Debian's cloud kernel boots under qemu-system-x86_64 (TCG) with its root filesystem
// on `lsvd serve` (qemu's nbd:unix: driver, virtio-blk). The first boot's init writes files, prints their md5sums,
// syncs and powers off; the server is then killed with SIGKILL (it holds those writes only in its journal: the
// batch idle timer is far away) and restarted; the second boot checks the files inside the guest, the host reads
// them back with debugfs and compares the sums the first boot printed, and `e2fsck -fn` of the volume is clean.
// Needs Debian's qemu-system-x86, linux-image-cloud-amd64 and busybox-static (`scripts/install-deps.sh test`).
// Speed (TCG): the initramfs is ours, ~2 MiB (busybox, the kernel's virtio modules, a 10-line init that mounts
// /dev/vda and switch_roots), not Debian's 16 MiB one with udev: a boot takes about half as long. One vCPU, 128 MiB,
// -no-reboot, `poweroff -f` right after sync. Every qemu and server started here is killed at cleanup. It runs on
// both NBD transports (--nbd-io socket and uring).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LsvdServer, TOOL_ENV, cleanupAll, createVolume, ensureBuilt, runOk } from "./_harness.ts";

const VOLUME_SIZE = "64m";
/** One boot under TCG takes 8-30 s depending on the machine's load; a hung guest fails the test after this. */
const BOOT_TIMEOUT_MS = 240_000;
const TEST_TIMEOUT_MS = 2 * BOOT_TIMEOUT_MS + 120_000;
/** The first server must not put the guest's writes on its own before the SIGKILL: they stay in the journal. */
const BATCH_IDLE_MS = "3600000";
const BUSYBOX = "/bin/busybox";
const SMALL_FILES = 50;

const CONSOLE_MARK = "LSVD-VM:";
/** virtio-blk over PCI, in load order (each after what it depends on); ext4 is built into Debian's cloud kernel. */
const VIRTIO_MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"];

/** /init of our initramfs: load the virtio modules, mount /dev/vda, hand over to its /sbin/init with /dev. */
const INITRAMFS_INIT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs dev /dev
for m in ${VIRTIO_MODULES.join(" ")}; do $B insmod /lib/$m.ko || echo "${CONSOLE_MARK} insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 1000 ]; do $B usleep 20000; i=$((i+1)); done
$B mount -t ext4 /dev/vda /newroot || { echo "${CONSOLE_MARK} cannot mount /dev/vda"; $B poweroff -f; }
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /sbin/init
`;

/**
 * /sbin/init of the guest. Phase "write": a 4 MiB random blob and SMALL_FILES small files under /data, their
 * md5sums in /sums and on the console, sync, poweroff. Phase "check": `md5sum -c /sums`, result on the console.
 */
const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
phase=none
for word in $(busybox cat /proc/cmdline); do case "$word" in lsvd_phase=*) phase=\${word#lsvd_phase=} ;; esac; done
echo "${CONSOLE_MARK} phase $phase"
if [ "$phase" = write ]; then
  busybox dd if=/dev/urandom of=/data/blob bs=64k count=64 2>/dev/null
  i=0; while [ $i -lt ${SMALL_FILES} ]; do echo "file $i of boot 1" > /data/f$i; i=$((i+1)); done
  (cd /data && busybox md5sum blob f* > /sums)
  busybox sync
  busybox sed "s/^/${CONSOLE_MARK} sum /" /sums
  echo "${CONSOLE_MARK} wrote $(busybox wc -l < /sums) files"
elif [ "$phase" = check ]; then
  if (cd /data && busybox md5sum -c /sums > /dev/null 2>&1); then echo "${CONSOLE_MARK} intact $(busybox wc -l < /sums) files"
  else echo "${CONSOLE_MARK} damaged"; (cd /data && busybox md5sum -c /sums 2>&1 | busybox grep -v ': OK$') ; fi
fi
busybox poweroff -f
`;

const qemus = new Set<import("bun").Subprocess>();
process.on("exit", () => {
  for (const qemu of qemus) qemu.kill("SIGKILL");
});

/** The newest cloud kernel in /boot with its modules, or an error naming the package to install. */
function cloudKernel(): { kernel: string; version: string } {
  const versions = readdirSync("/boot")
    .filter((name) => /^vmlinuz-.*-cloud-amd64$/.test(name))
    .map((name) => name.slice("vmlinuz-".length))
    .filter((version) => existsSync(`/lib/modules/${version}`))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) throw new Error("no /boot/vmlinuz-*-cloud-amd64 with its modules: install linux-image-cloud-amd64 (scripts/install-deps.sh test)");
  return { kernel: `/boot/vmlinuz-${version}`, version };
}

/**
 * A cpio archive in the "newc" format the kernel unpacks as initramfs (kernel docs, "initramfs buffer format"):
 * per entry a 110-byte header ("070701" and 13 fields of 8 hex digits), the NUL-terminated name, the data, each
 * padded to 4 bytes; "TRAILER!!!" ends it. Directories and regular files only.
 */
function newcArchive(entries: Array<{ name: string; mode: number; data?: Uint8Array }>): Uint8Array {
  const parts: Uint8Array[] = [];
  const pad = (length: number) => parts.push(new Uint8Array((4 - (length % 4)) % 4));
  const add = (name: string, mode: number, data: Uint8Array, ino: number) => {
    const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = new TextEncoder().encode(`070701${fields.map((field) => field.toString(16).padStart(8, "0")).join("")}${name}\0`);
    parts.push(header);
    pad(header.length);
    parts.push(data);
    pad(data.length);
  };
  entries.forEach((entry, i) => add(entry.name, entry.mode, entry.data ?? new Uint8Array(0), i + 1));
  add("TRAILER!!!", 0, new Uint8Array(0), 0);
  return Buffer.concat(parts);
}

/** Our initramfs: busybox, the virtio modules of kernel `version`, INITRAMFS_INIT. */
async function buildInitramfs(version: string, path: string): Promise<void> {
  const directory = 0o040755;
  const file = 0o100755;
  const entries: Array<{ name: string; mode: number; data?: Uint8Array }> = ["bin", "lib", "dev", "proc", "newroot"].map((name) => ({ name, mode: directory }));
  entries.push({ name: "bin/busybox", mode: file, data: readFileSync(BUSYBOX) });
  entries.push({ name: "init", mode: file, data: new TextEncoder().encode(INITRAMFS_INIT) });
  for (const module of VIRTIO_MODULES) {
    const found = (await runOk(["modinfo", "-k", version, "-n", module])).stdout.trim();
    if (!found.endsWith(".ko")) throw new Error(`module ${module} of ${version} is ${found}: busybox insmod needs an uncompressed .ko`);
    entries.push({ name: `lib/${module}.ko`, mode: file, data: readFileSync(found) });
  }
  writeFileSync(path, newcArchive(entries));
}

/** A root filesystem image (ext4, made without mounting by `mke2fs -d`) holding busybox and INIT_SCRIPT. */
async function buildRootImage(dir: string, imagePath: string): Promise<void> {
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} missing: install busybox-static (scripts/install-deps.sh test)`);
  const root = join(dir, "rootfs");
  for (const sub of ["bin", "sbin", "proc", "dev", "run", "data"]) mkdirSync(join(root, sub), { recursive: true });
  copyFileSync(BUSYBOX, join(root, "bin/busybox"));
  symlinkSync("busybox", join(root, "bin/sh"));
  writeFileSync(join(root, "sbin/init"), INIT_SCRIPT);
  chmodSync(join(root, "sbin/init"), 0o755);
  await runOk(["mke2fs", "-q", "-F", "-t", "ext4", "-d", root, imagePath, VOLUME_SIZE]);
}

/** Boots the guest once with its root on `socketPath`; returns the console lines init printed (CONSOLE_MARK). */
async function bootOnce(socketPath: string, initramfs: string, phase: "write" | "check"): Promise<string[]> {
  // -nodefaults -serial stdio: the console is our stdout and nothing else is emulated; -no-reboot: a guest
  // panic (panic=-1) or poweroff ends qemu.
  const qemu = Bun.spawn({
    cmd: [
      "qemu-system-x86_64", "-m", "128", "-smp", "1", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
      "-kernel", cloudKernel().kernel, "-initrd", initramfs,
      "-append", `console=ttyS0 panic=-1 quiet lsvd_phase=${phase}`,
      "-drive", `file=nbd:unix:${socketPath},format=raw,if=virtio`,
    ],
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: TOOL_ENV,
    timeout: BOOT_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  qemus.add(qemu);
  try {
    const [stdout, stderr] = await Promise.all([new Response(qemu.stdout).text(), new Response(qemu.stderr).text()]);
    const exitCode = await qemu.exited;
    const lines = stdout.split(/\r?\n/).filter((line) => line.startsWith(CONSOLE_MARK)).map((line) => line.slice(CONSOLE_MARK.length + 1));
    if (exitCode !== 0 || !lines.includes(`phase ${phase}`)) {
      throw new Error(`qemu (${phase} boot) exit ${exitCode} ${qemu.signalCode ?? ""}; console:\n${stdout.slice(-8000)}\n${stderr}`);
    }
    return lines;
  } finally {
    qemu.kill("SIGKILL");
    qemus.delete(qemu);
  }
}

/** "sum HASH  NAME" console lines of the write boot, as NAME -> HASH. */
function sumsFrom(lines: string[]): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of lines) {
    const match = /^sum ([0-9a-f]{32})  (\S+)$/.exec(line);
    if (match) sums.set(match[2]!, match[1]!);
  }
  return sums;
}

// Building dist/lsvd may take a minute on a loaded machine.
beforeAll(async () => {
  await ensureBuilt();
}, 180_000);

afterAll(async () => {
  for (const qemu of qemus) qemu.kill("SIGKILL");
  await cleanupAll();
});

// Both ways the server moves NBD bytes: Bun's sockets, and its own sockets on io_uring (--nbd-io uring).
for (const io of ["socket", "uring"] as const) test(
  `a VM boots from an lsvd export (--nbd-io ${io}), writes, survives kill -9 of the server, boots again and finds its files`,
  async () => {
    const startedMs = Date.now();
    const paths = await createVolume(`vm-${io}`, { size: VOLUME_SIZE, cacheSize: "128m" });
    const nbdIo = ["--nbd-io", io];
    const image = join(paths.dir, "root.raw");
    await buildRootImage(paths.dir, image);
    const initramfs = join(paths.dir, "initramfs.cpio");
    await buildInitramfs(cloudKernel().version, initramfs);

    const first = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: ["--batch-idle-ms", BATCH_IDLE_MS, ...nbdIo] });
    const socketPath = first.uri.replace("nbd+unix:///?socket=", "");
    await runOk(["nbdcopy", image, first.uri]);
    const written = await bootOnce(socketPath, initramfs, "write");
    const firstBootMs = Date.now();
    expect(written).toContain(`wrote ${SMALL_FILES + 1} files`);
    const sums = sumsFrom(written);
    expect(sums.size).toBe(SMALL_FILES + 1);
    expect((await first.kill()).signalCode).toBe("SIGKILL");

    const second = await LsvdServer.start({ ...paths, transport: "unix", dir: paths.dir, extraArgs: nbdIo });
    const secondSocket = second.uri.replace("nbd+unix:///?socket=", "");
    const checked = await bootOnce(secondSocket, initramfs, "check");
    const secondBootMs = Date.now();
    expect(checked).toContain(`intact ${SMALL_FILES + 1} files`);

    // From the host: the volume's filesystem is consistent and holds what the first boot wrote.
    const copy = join(paths.dir, "after.raw");
    await runOk(["nbdcopy", second.uri, copy]);
    expect((await second.stop()).exitCode).toBe(0);
    const fsck = await runOk(["e2fsck", "-fn", copy]);
    expect(fsck.exitCode).toBe(0);
    for (const name of ["blob", "f0", `f${SMALL_FILES - 1}`]) {
      const dumped = join(paths.dir, `dumped.${name}`);
      await runOk(["debugfs", "-R", `dump /data/${name} ${dumped}`, copy]);
      const hash = new Bun.CryptoHasher("md5").update(await Bun.file(dumped).arrayBuffer()).digest("hex");
      expect(`${name} ${hash}`).toBe(`${name} ${sums.get(name)}`);
    }
    console.log(
      `vm_boot_test (${io}): first boot done at ${((firstBootMs - startedMs) / 1000).toFixed(1)} s, second at ${((secondBootMs - startedMs) / 1000).toFixed(1)} s, all checked at ${((Date.now() - startedMs) / 1000).toFixed(1)} s`,
    );
  },
  TEST_TIMEOUT_MS,
);
