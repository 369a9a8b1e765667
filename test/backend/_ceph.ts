// Test helper (folder-private): starts, drives and stops test Ceph clusters through test/ceph/up.sh and down.sh,
// and reads the environment file up.sh writes. Tests that need Ceph call cephUp() in beforeAll and FAIL if it
// cannot start: a missing cluster must not turn into silently skipped coverage.
//
// A test run depends on nothing else on the machine and leaves nothing behind:
// - every cluster lives under a directory of this run (RUN_ROOT: $LSVD_TEST_CEPH_ROOT from scripts/test.sh, else one
//   per process), so a cluster someone else started is never reused, and up.sh picks free ports for it;
// - cephUp registers each cluster in RUN_ROOT/clusters before starting it, and the first cephUp starts
//   test/ceph/reap.sh in the background, which waits for this process to end (passed, failed, or killed: bun test
//   runs no exit handlers) and then stops every registered cluster and deletes RUN_ROOT. A test file may stop its
//   cluster earlier (cephDown in afterAll); down.sh is idempotent.

import * as fs from "node:fs";
import * as path from "node:path";

const SCRIPTS = path.resolve(import.meta.dir, "../ceph");
/** up.sh may install packages (apt-get) on a fresh machine; a cluster already up in its directory answers in ~0.1 s. */
const UP_TIMEOUT_S = 600;
const COMMAND_TIMEOUT_S = 120;

export type CephEnv = Record<string, string>;

const RUN_ROOT = process.env.LSVD_TEST_CEPH_ROOT || `/tmp/lsvd-ceph-test-${process.getuid?.() ?? 0}-${process.pid}`;

/** The cluster the RADOS and S3 suites share within this run: memstore (fast), started by the first cephUp(). */
export const DEFAULT_CLUSTER: CephEnv = {
  LSVD_CEPH_DIR: path.join(RUN_ROOT, "default"),
  LSVD_CEPH_OBJECTSTORE: "memstore",
};

/** A second cluster for fault tests (its daemons get killed), apart from the shared one. */
export const FAULT_CLUSTER: CephEnv = {
  LSVD_CEPH_DIR: path.join(RUN_ROOT, "fault"),
  // Objects must survive an OSD crash and restart, so this one keeps them on disk (sparse file), not in RAM.
  LSVD_CEPH_OBJECTSTORE: "bluestore",
};

/** Settings a caller's shell may hold (a sourced env.sh) that must not leak into our clusters' scripts. */
const INHERITED_CLUSTER_SETTINGS = [
  "LSVD_CEPH_DIR",
  "LSVD_CEPH_OBJECTSTORE",
  "LSVD_CEPH_MON_PORT",
  "LSVD_CEPH_MON_V1_PORT",
  "LSVD_CEPH_RGW_PORT",
  "CEPH_CONF",
  "CEPH_KEYRING",
  "CEPH_ARGS",
];

function scriptEnv(cluster: CephEnv): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of INHERITED_CLUSTER_SETTINGS) delete env[name];
  return { ...env, ...cluster };
}

function run(script: string, args: string[], cluster: CephEnv, timeoutS: number): { stdout: string; stderr: string } {
  const result = Bun.spawnSync(["timeout", String(timeoutS), path.join(SCRIPTS, script), ...args], {
    env: scriptEnv(cluster),
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

let reaperStarted = false;

/** Records `dir` in RUN_ROOT/clusters (once) and makes sure the reaper runs (see the header). */
function register(dir: string): void {
  fs.mkdirSync(RUN_ROOT, { recursive: true });
  const registry = path.join(RUN_ROOT, "clusters");
  const known = fs.existsSync(registry) ? fs.readFileSync(registry, "utf8").split("\n") : [];
  if (!known.includes(dir)) fs.appendFileSync(registry, `${dir}\n`);
  if (reaperStarted) return;
  reaperStarted = true;
  const reaper = Bun.spawn([path.join(SCRIPTS, "reap.sh"), String(process.pid), RUN_ROOT], {
    env: scriptEnv({}),
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  reaper.unref();
}

/**
 * Starts the cluster (or reuses it, if this run already started it); returns its environment (CEPH_CONF, AWS_*,
 * LSVD_CEPH_POOL, LSVD_S3_BUCKET...). It is stopped when this process ends, or earlier by cephDown().
 */
export function cephUp(cluster: CephEnv = DEFAULT_CLUSTER): CephEnv {
  const dir = cluster.LSVD_CEPH_DIR;
  if (dir === undefined || dir === "") throw new Error("cephUp: the cluster needs its own LSVD_CEPH_DIR");
  // Registered before starting: a start that fails halfway may leave daemons behind.
  register(dir);
  const { stdout } = run("up.sh", ["up"], cluster, UP_TIMEOUT_S);
  const envFile = stdout.trim().split("\n").at(-1)!;
  return readEnvFile(envFile);
}

/** kill-osd, start-osd, restart-osd, kill-rgw, start-rgw, restart-rgw. Async: the event loop (and with it the
 * I/O a fault test is watching) keeps running while the daemon stops or starts. */
export async function cephCommand(command: string, cluster: CephEnv = DEFAULT_CLUSTER): Promise<void> {
  const child = Bun.spawn(["timeout", String(COMMAND_TIMEOUT_S), path.join(SCRIPTS, "up.sh"), command], {
    env: scriptEnv(cluster),
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

/** Stops the cluster and deletes its directory now (else the reaper does, when this process ends). */
export function cephDown(cluster: CephEnv): void {
  run("down.sh", [], cluster, COMMAND_TIMEOUT_S);
}
