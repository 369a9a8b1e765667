// serve's monitor (src/cli/serve_monitor.ts) before a volume is there: the admin socket answers from the start,
// saying "recovering" with the volume's figures unknown (null), then "draining" with what the shutdown waits for;
// the options it refuses; the default socket path of a volume.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adminRequest } from "../../src/admin/client.ts";
import { defaultAdminSocketPath, defaultDaemonAdminSocketPath, ServeMonitor, type SocketLock } from "../../src/cli/serve_monitor.ts";

const dir = mkdtempSync(join(tmpdir(), "lsvd-monitor-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const noLock: SocketLock = (_path, bind) => bind();
const quiet = () => {};

describe("serve monitor", () => {
  test("status while recovering, then draining with what the shutdown waits for; the socket goes at close", async () => {
    const path = join(dir, "sub", "admin.asok");
    const monitor = await ServeMonitor.open({ values: { "admin-socket": path }, positionals: [] }, "/backend/vol", "/cache", quiet, noLock);
    expect(monitor.addresses).toEqual([`admin:unix:${path}`]);
    const recovering = await adminRequest(path, "status");
    expect(recovering).toMatchObject({
      ok: true,
      result: { state: "recovering", waitingFor: null, recoverySeconds: null, volume: { uri: "/backend/vol", cache: "/cache", sizeBytes: null, uuid: null }, clients: null, journal: null, adminSocket: path, metricsUrl: null },
    });
    monitor.draining();
    monitor.waitLog(quiet)("waiting for 2 object(s) (16 MiB) to reach the backend");
    const draining = await adminRequest(path, "status");
    expect(draining).toMatchObject({ ok: true, result: { state: "draining", waitingFor: "waiting for 2 object(s) (16 MiB) to reach the backend" } });
    const metrics = await adminRequest(path, "metrics");
    expect(metrics.ok && String(metrics.result)).toContain('lsvd_serve_state{state="draining"} 1');
    monitor.close();
    expect(existsSync(path)).toBe(false);
  });

  test("several exports: status lists them, or the one args.volume names; admin ops that name none or a stranger are refused", async () => {
    const path = join(dir, "exports.asok");
    const exports = [{ name: "web", volumeUri: "/b/web", cachePath: "/c/web" }, { name: "db", volumeUri: "/b/db", cachePath: "/c/db" }];
    const monitor = await ServeMonitor.openExports({ values: { "admin-socket": path }, positionals: [] }, exports, "/unused", quiet, noLock);
    const all = await adminRequest(path, "status");
    expect(all.ok && (all.result as { exports: Array<{ name: string; volume: { uri: string } }> }).exports.map((e) => [e.name, e.volume.uri])).toEqual([["web", "/b/web"], ["db", "/b/db"]]);
    expect(all.ok && (all.result as { volume?: unknown }).volume).toBeUndefined();
    const db = await adminRequest(path, "status", { volume: "/b/db" });
    expect(db).toMatchObject({ ok: true, result: { state: "recovering", volume: { uri: "/b/db", cache: "/c/db" }, lost: null } });
    const stranger = await adminRequest(path, "status", { volume: "/b/other" });
    expect(!stranger.ok && stranger.error.message).toContain("volume /b/other is not served by this process (it serves /b/web, /b/db)");
    const unnamed = await adminRequest(path, "snapshot-create", { name: "s1" });
    expect(!unnamed.ok && unnamed.error.message).toContain("this process serves 2 volumes: say which in args.volume");
    const recovering = await adminRequest(path, "snapshot-create", { name: "s1", volume: "/b/web" });
    expect(!recovering.ok && recovering.error.message).toContain("volume /b/web is still recovering");
    monitor.close();
  });

  test("the default admin socket of several exports: after the config file, or the names", () => {
    expect(defaultDaemonAdminSocketPath({ configFile: "/etc/lsvd/host.exports" })).toBe("/run/lsvd/config-etc-lsvd-host.exports.asok");
    expect(defaultDaemonAdminSocketPath({ names: ["web", "db"] })).toBe("/run/lsvd/exports-web-db.asok");
  });

  test("refused: --admin-socket with --no-admin-socket, a malformed or non-loopback --metrics", async () => {
    const open = (values: Record<string, string | boolean>) => ServeMonitor.open({ values, positionals: [] }, "/backend/vol", "/cache", quiet, noLock);
    await expect(open({ "admin-socket": join(dir, "x.asok"), "no-admin-socket": true })).rejects.toThrow("--admin-socket and --no-admin-socket cannot be combined");
    await expect(open({ "no-admin-socket": true, metrics: "localhost" })).rejects.toThrow("Invalid --metrics 'localhost': expected HOST:PORT");
    await expect(open({ "no-admin-socket": true, metrics: "[::]:0" })).rejects.toThrow(":: is not a loopback address; add --metrics-public");
    const loopback = await open({ "no-admin-socket": true, metrics: "127.0.0.1:0" });
    expect(loopback.addresses).toEqual([expect.stringMatching(/^metrics:http:\/\/127\.0\.0\.1:\d+\/metrics$/)]);
    loopback.close();
  });

  test("the default socket of a volume: one per volume, stable, short enough for a unix socket path", () => {
    expect(defaultAdminSocketPath("/var/lib/lsvd/vol1")).toBe("/run/lsvd/var-lib-lsvd-vol1.asok");
    expect(defaultAdminSocketPath("file:///var/lib/lsvd/vol1")).toBe("/run/lsvd/var-lib-lsvd-vol1.asok");
    expect(defaultAdminSocketPath("s3://bucket/a b/c")).toBe("/run/lsvd/s3-bucket-a-b-c.asok");
    expect(defaultAdminSocketPath("vol")).toBe(defaultAdminSocketPath(join(process.cwd(), "vol")));
    const long = `rados://pool/${"v".repeat(300)}`;
    expect(defaultAdminSocketPath(long).length).toBeLessThanOrEqual(100);
    expect(defaultAdminSocketPath(long)).not.toBe(defaultAdminSocketPath(`${long}w`));
    expect(defaultAdminSocketPath(long)).toBe(defaultAdminSocketPath(long));
  });
});
