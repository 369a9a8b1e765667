// The metrics endpoint: Prometheus text format (0.0.4) at GET /metrics over HTTP (Bun.serve); every other path is a
// 404 naming /metrics. Off unless `lsvd serve --metrics HOST:PORT`; a non-loopback HOST needs --metrics-public, as
// the figures name volumes and paths. Spec: docs/operations.md, "Metrics".

import { IOError, InvalidArgumentError } from "../errors.ts";
import type { MetricsRegistry } from "./registry.ts";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export interface MetricsEndpoint {
  /** http://HOST:PORT/metrics, with the port resolved when 0 was asked. */
  readonly url: string;
  close(): void;
}

/** HOST:PORT or [V6]:PORT. */
export function parseHostPort(text: string, option: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError(`Invalid ${option} '${text}': expected HOST:PORT (e.g. 127.0.0.1:9109)`);
  return { host: (match[1] ?? match[2])!, port };
}

/** 127.0.0.0/8, ::1 and localhost: reachable from this host only. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export function serveMetrics(listen: { host: string; port: number }, registry: MetricsRegistry): MetricsEndpoint {
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: listen.host,
      port: listen.port,
      fetch(request) {
        const path = new URL(request.url).pathname;
        if (path !== "/metrics") return new Response("lsvd: metrics are at /metrics\n", { status: 404, headers: { "content-type": "text/plain" } });
        if (request.method !== "GET" && request.method !== "HEAD") return new Response("GET /metrics\n", { status: 405, headers: { allow: "GET, HEAD" } });
        return new Response(registry.render(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
      },
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException)?.code;
    throw new IOError(`Cannot listen on --metrics ${listen.host}:${listen.port}: ${code === "EADDRINUSE" ? "EADDRINUSE (address in use)" : (code ?? (error as Error)?.message)}`);
  }
  const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
  return {
    url: `http://${host}:${server.port}/metrics`,
    close: () => void server.stop(true),
  };
}
