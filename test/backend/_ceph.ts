// Test helper (folder-private): starts, drives and stops a test Ceph cluster through test/ceph/up.sh and down.sh,
// and reads the environment file up.sh writes. Tests that need Ceph call cephUp() in beforeAll and FAIL if it
// cannot start: a missing cluster must not turn into silently skipped coverage.

import * as fs from "node:fs";
import * as path from "node:path";

const SCRIPTS = path.resolve(import.meta.dir, "../ceph");
/** up.sh may install packages (apt-get) on a fresh machine; an already running cluster answers in ~0.1 s. */
const UP_TIMEOUT_S = 600;
const COMMAND_TIMEOUT_S = 120;

export type CephEnv = Record<string, string>;

/** A second cluster for fault tests (its daemons get killed), apart from the shared default one. */
export const FAULT_CLUSTER: CephEnv = {
  LSVD_CEPH_DIR: `/tmp/lsvd-ceph-fault-${process.getuid?.() ?? 0}`,
  // Objects must survive an OSD crash and restart, so this one keeps them on disk (sparse file), not in RAM.
  LSVD_CEPH_OBJECTSTORE: "bluestore",
  LSVD_CEPH_MON_PORT: "3330",
  LSVD_CEPH_MON_V1_PORT: "6830",
  LSVD_CEPH_RGW_PORT: "7530",
};

function run(script: string, args: string[], env: CephEnv, timeoutS: number): { stdout: string; stderr: string } {
  const result = Bun.spawnSync(["timeout", String(timeoutS), path.join(SCRIPTS, script), ...args], {
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const stdout = result.stdout.toString();
  const stderr = result.stderr.toString();
  if (result.exitCode !== 0) {
    throw new Error(`test/ceph/${script} ${args.join(" ")} failed (exit ${result.exitCode}):\n${stderr}${stdout}`);
  }
  return { stdout, stderr };
}

/** Parses `export NAME=value` lines. */
export function readEnvFile(file: string): CephEnv {
  const env: CephEnv = {};
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const match = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (match) env[match[1]!] = match[2]!.replace(/^'(.*)'$/, "$1");
  }
  return env;
}

/** Starts (or reuses) the cluster; returns its environment (CEPH_CONF, AWS_*, LSVD_CEPH_POOL, LSVD_S3_BUCKET...). */
export function cephUp(cluster: CephEnv = {}): CephEnv {
  const { stdout } = run("up.sh", ["up"], cluster, UP_TIMEOUT_S);
  const envFile = stdout.trim().split("\n").at(-1)!;
  return readEnvFile(envFile);
}

/** kill-osd, start-osd, restart-osd, kill-rgw, start-rgw, restart-rgw. Async: the event loop (and with it the
 * I/O a fault test is watching) keeps running while the daemon stops or starts. */
export async function cephCommand(command: string, cluster: CephEnv = {}): Promise<void> {
  const child = Bun.spawn(["timeout", String(COMMAND_TIMEOUT_S), path.join(SCRIPTS, "up.sh"), command], {
    env: { ...process.env, ...cluster },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [exitCode, stdout, stderr] = await Promise.all([
    child.exited,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  if (exitCode !== 0) throw new Error(`test/ceph/up.sh ${command} failed (exit ${exitCode}):\n${stderr}${stdout}`);
}

export function cephDown(cluster: CephEnv): void {
  run("down.sh", [], cluster, COMMAND_TIMEOUT_S);
}
