// serve's metrics (src/cli/serve_metrics.ts) without a server: the backend meter's counting and what it makes of
// failures (reachable, or failing since when), the NBD observer, and docs/operations.md listing every metric.

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConflictError, IOError, NotFoundError } from "../../src/errors.ts";
import { ServeMetrics } from "../../src/cli/serve_metrics.ts";
import { NBD_CMD_READ, NBD_CMD_WRITE } from "../../src/nbd/wire.ts";

function metrics(): ServeMetrics {
  return new ServeMetrics({ nbd: () => null, volume: () => null, retries: () => ({ retries: 2, timeouts: 1 }), state: () => "recovering", recoverySeconds: () => 0, adminConnections: () => 0 });
}

function samples(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    map.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return map;
}

describe("serve metrics", () => {
  test("the backend meter counts attempts, bytes and failures; not-found and conflicts are answers, not failures", () => {
    const serve = metrics();
    const meter = serve.storeMeter("volume");
    meter.done("putIfAbsent", 0.01, null, 0, 4096);
    meter.done("getRange", 0.002, null, 512, 0);
    meter.done("get", 0.001, new NotFoundError("absent"), 0, 0);
    meter.done("putIfVersion", 0.003, new ConflictError("someone else"), 0, 0);
    serve.storeMeter("lease").done("putIfVersion", 0.004, null, 0, 100);
    const now = samples(serve.registry.render());
    expect({
      puts: now.get('lsvd_backend_requests_total{store="volume",op="put_if_absent"}'),
      gets: now.get('lsvd_backend_requests_total{store="volume",op="get"}'),
      getErrors: now.get('lsvd_backend_request_errors_total{store="volume",op="get"}'),
      conflicts: now.get('lsvd_backend_request_errors_total{store="volume",op="put_if_version"}'),
      written: now.get('lsvd_backend_written_bytes_total{store="volume"}'),
      read: now.get('lsvd_backend_read_bytes_total{store="volume"}'),
      leaseWritten: now.get('lsvd_backend_written_bytes_total{store="lease"}'),
      putLatencies: now.get('lsvd_backend_request_duration_seconds_count{store="volume",op="put_if_absent"}'),
      retries: now.get("lsvd_backend_retries_total"),
      up: now.get("lsvd_backend_up"),
    }).toEqual({ puts: 1, gets: 1, getErrors: 0, conflicts: 0, written: 4096, read: 512, leaseWritten: 100, putLatencies: 1, retries: 2, up: 1 });
    expect(serve.reachability.failingSinceMs).toBeNull();
  });

  test("an I/O failure marks the backend failing from then until a request succeeds; the lease store's do not", () => {
    const serve = metrics();
    const meter = serve.storeMeter("volume");
    serve.storeMeter("lease").done("putIfVersion", 0.1, new IOError("lease store down", true), 0, 0);
    expect(serve.reachability.failingSinceMs).toBeNull();
    const before = Date.now();
    meter.done("putIfAbsent", 1, new IOError("connection refused", true), 0, 0);
    const since = serve.reachability.failingSinceMs!;
    expect(since).toBeGreaterThanOrEqual(before);
    meter.done("putIfAbsent", 1, new IOError("still refused", true), 0, 0);
    expect({ since: serve.reachability.failingSinceMs, lastError: serve.reachability.lastError }).toEqual({ since, lastError: "still refused" });
    let now = samples(serve.registry.render());
    expect([now.get("lsvd_backend_up"), now.get('lsvd_backend_request_errors_total{store="volume",op="put_if_absent"}')]).toEqual([0, 2]);
    meter.done("get", 0.01, new NotFoundError("absent"), 0, 0); // an answer: the backend is back
    now = samples(serve.registry.render());
    expect(now.get("lsvd_backend_up")).toBe(1);
    expect(serve.reachability.failingSinceMs).toBeNull();
  });

  test("the NBD observer: latency only for dispatched requests, errors for refused ones too", () => {
    const serve = metrics();
    serve.nbdObserver.requestDone(NBD_CMD_WRITE, 0.001, false);
    serve.nbdObserver.requestDone(NBD_CMD_READ, -1, true); // refused before dispatch
    serve.nbdObserver.requestDone(99, -1, true); // an unknown command
    const now = samples(serve.registry.render());
    expect({
      writes: now.get('lsvd_nbd_request_duration_seconds_count{command="write"}'),
      reads: now.get('lsvd_nbd_request_duration_seconds_count{command="read"}'),
      readErrors: now.get('lsvd_nbd_request_errors_total{command="read"}'),
      otherErrors: now.get('lsvd_nbd_request_errors_total{command="other"}'),
    }).toEqual({ writes: 1, reads: 0, readErrors: 1, otherErrors: 1 });
  });

  test("docs/operations.md lists every metric serve exports, with its type", () => {
    const doc = readFileSync(join(import.meta.dir, "../../docs/operations.md"), "utf8");
    const families = [...metrics().registry.render().matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match) => [match[1]!, match[2]!]);
    expect(families.length).toBeGreaterThan(40);
    for (const [name, type] of families) expect({ name, listed: doc.includes(`| \`${name}\` | ${type} |`) }).toEqual({ name, listed: true });
  });
});
