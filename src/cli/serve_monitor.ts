// Watching `lsvd serve` while it runs: its admin socket (src/admin/; `lsvd status` asks it) and its Prometheus
// endpoint (--metrics, src/metrics/), over the figures of serve_metrics.ts. Spec: docs/operations.md.
//
// Lifecycle, driven by serve.ts at the steps of its start-up order:
//   open()        step 1, with the listeners: bind the admin socket (a live one refuses the start, a stale one is
//                 replaced) and the metrics port; their addresses go into the lease (`admin:unix:PATH`,
//                 `metrics:URL`), so other processes find them; state "recovering";
//   serving()     step 3: the NBD server and the volume are there; state "serving";
//   draining()    step 4: state "draining"; what the shutdown waits for is reported in status;
//   close()       at exit: both listeners closed, the socket file removed while it is still ours.

import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { AdminOps, listenAdmin, type AdminServer } from "../admin/server.ts";
import { IOError, InvalidArgumentError } from "../errors.ts";
import { isLoopback, parseHostPort, serveMetrics, type MetricsEndpoint } from "../metrics/http.ts";
import type { NbdServer } from "../nbd/server.ts";
import type { LogFn } from "../util/log.ts";
import { stringOption, type OptionSpec, type Parsed } from "./args.ts";
import type { OpenedVolume } from "./open_volume.ts";
import type { BackendMeters } from "./ownership.ts";
import { prepareParentDirectory } from "./paths.ts";
import { ServeMetrics } from "./serve_metrics.ts";
import { registerSnapshotOps } from "./serve_snapshot_ops.ts";

/** Where admin sockets go unless --admin-socket says otherwise (as Ceph's /run/ceph/*.asok). */
export const ADMIN_SOCKET_DIRECTORY = "/run/lsvd";
/** Escaped volume names longer than this are shortened and made unique with a hash (unix socket paths: 107 bytes). */
const SOCKET_NAME_CHARS_MAX = 80;

export const MONITOR_OPTIONS: OptionSpec = {
  "admin-socket": { type: "string" },
  "no-admin-socket": { type: "boolean" },
  metrics: { type: "string" },
  "metrics-public": { type: "boolean" },
};

export const MONITOR_HELP = `Watching it (docs/operations.md):
  --admin-socket PATH    answer 'lsvd status' and other admin requests on this unix socket (default:
                         ${ADMIN_SOCKET_DIRECTORY}/ + the volume with every run of other characters than letters, digits, '.',
                         '_' and '-' made one '-' + '.asok'; when that directory cannot be made, none, with a warning).
                         A PATH given here where a server answers refuses the start (exit 1); at the default path,
                         serve goes on without one (the lease then refuses a second server of the volume); a stale
                         socket is replaced. The lease records it as admin:unix:PATH: 'lsvd status VOLUME' finds it
  --no-admin-socket      no admin socket
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics (off by default; port 0 picks one,
                         recorded in the lease as metrics:URL). HOST must be a loopback address unless
                         --metrics-public
  --metrics-public       allow a non-loopback --metrics HOST`;

/** The default admin socket of a volume: one per volume (one server per volume), stable across restarts. */
export function defaultAdminSocketPath(volumeUri: string): string {
  let text = volumeUri.startsWith("file://") ? volumeUri.slice("file://".length) : volumeUri;
  if (!/^[a-z][a-z0-9+.-]*:\/\//.test(text)) text = resolvePath(text);
  let name = text.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[-.]+|-+$/g, "");
  if (name.length > SOCKET_NAME_CHARS_MAX) {
    const digest = createHash("sha256").update(text).digest("hex").slice(0, 16);
    name = `${name.slice(0, SOCKET_NAME_CHARS_MAX - 17)}-${digest}`;
  }
  return `${ADMIN_SOCKET_DIRECTORY}/${name || "volume"}.asok`;
}

/** Runs a bind holding serve's lock on the socket's directory (two servers cannot both replace one stale socket). */
export type SocketLock = <T>(socketPath: string, bind: () => Promise<T>) => Promise<T>;

export type ServeState = "recovering" | "serving" | "draining";

export class ServeMonitor {
  private state: ServeState = "recovering";
  private stateSinceMs = Date.now();
  private readonly startedMs = Date.now();
  private recoverySeconds = 0;
  private server: NbdServer | null = null;
  private opened: OpenedVolume | null = null;
  private waitingFor: string | null = null;
  private admin: AdminServer | null = null;
  private endpoint: MetricsEndpoint | null = null;
  readonly ops = new AdminOps();
  readonly metrics: ServeMetrics;

  private constructor(
    private readonly volumeUri: string,
    private readonly cachePath: string,
  ) {
    this.metrics = new ServeMetrics({
      nbd: () => this.server?.stats() ?? null,
      volume: () => this.opened?.volume ?? null,
      retries: () => ({ retries: this.opened?.store.retries ?? 0, timeouts: this.opened?.store.timeouts ?? 0 }),
      state: () => this.state,
      recoverySeconds: () => this.recoverySeconds,
      adminConnections: () => this.admin?.connectionCount() ?? 0,
    });
    this.ops.register("status", "the server's state, volume, clients and figures (what 'lsvd status' prints)", () => this.status());
    this.ops.register("metrics", "the Prometheus text exposition, as --metrics serves it", () => this.metrics.registry.render());
  }

  /** Step 1: checks the options, binds the admin socket and the metrics port. Nothing is left bound if it throws. */
  static async open(parsed: Parsed, volumeUri: string, cachePath: string, log: LogFn, lock: SocketLock): Promise<ServeMonitor> {
    const monitor = new ServeMonitor(volumeUri, cachePath);
    const metricsText = stringOption(parsed, "metrics");
    const listen = metricsText === undefined ? null : parseHostPort(metricsText, "--metrics");
    if (listen !== null && !isLoopback(listen.host) && parsed.values["metrics-public"] !== true) {
      throw new InvalidArgumentError(`--metrics ${metricsText}: ${listen.host} is not a loopback address; add --metrics-public to serve metrics to other hosts`);
    }
    const explicit = stringOption(parsed, "admin-socket");
    if (explicit !== undefined && parsed.values["no-admin-socket"] === true) throw new InvalidArgumentError("--admin-socket and --no-admin-socket cannot be combined");
    const path = parsed.values["no-admin-socket"] === true ? null : resolvePath(explicit ?? defaultAdminSocketPath(volumeUri));
    if (path !== null) {
      if (explicit !== undefined) prepareParentDirectory(path, "the admin socket");
      else if (!ensureDirectory(ADMIN_SOCKET_DIRECTORY, log)) return monitor.bindMetrics(listen, log);
      try {
        monitor.admin = await lock(path, () => listenAdmin(path, monitor.ops, log));
        log(`admin socket ${path} ('lsvd status --admin-socket ${path}')`);
      } catch (error) {
        // The default path is the volume's: a server answering there serves this volume, and the lease refuses this
        // start next, naming it. An explicit path in use is this start's own problem.
        if (explicit !== undefined || !(error instanceof IOError)) throw error;
        log(`warning: no admin socket: ${error.message}`);
      }
    }
    try {
      return monitor.bindMetrics(listen, log);
    } catch (error) {
      monitor.close();
      throw error;
    }
  }

  private bindMetrics(listen: { host: string; port: number } | null, log: LogFn): ServeMonitor {
    if (listen === null) return this;
    this.endpoint = serveMetrics(listen, this.metrics.registry);
    log(`metrics at ${this.endpoint.url}`);
    return this;
  }

  /** What the lease records besides the NBD addresses. */
  get addresses(): string[] {
    return [...(this.admin === null ? [] : [this.admin.address]), ...(this.endpoint === null ? [] : [`metrics:${this.endpoint.url}`])];
  }

  get meters(): BackendMeters {
    return { volume: this.metrics.storeMeter("volume"), lease: this.metrics.storeMeter("lease") };
  }

  get nbdObserver() {
    return this.metrics.nbdObserver;
  }

  private enter(state: ServeState): void {
    this.state = state;
    this.stateSinceMs = Date.now();
  }

  serving(server: NbdServer, opened: OpenedVolume): void {
    this.server = server;
    this.opened = opened;
    registerSnapshotOps(this.ops, opened.volume);
    this.recoverySeconds = (Date.now() - this.startedMs) / 1000;
    this.enter("serving");
  }

  draining(): void {
    this.enter("draining");
  }

  /** `log` that also keeps the line as what a draining server waits for (status shows it). */
  waitLog(log: LogFn): LogFn {
    return (line, fields) => {
      this.waitingFor = line;
      log(line, fields);
    };
  }

  close(): void {
    this.admin?.close();
    this.admin = null;
    this.endpoint?.close();
    this.endpoint = null;
  }

  /** The `status` op's result (docs/operations.md, "lsvd status"). */
  status(): Record<string, unknown> {
    const nowMs = Date.now();
    const volume = this.opened?.volume ?? null;
    const reach = this.metrics.reachability;
    const stats = volume?.stats() ?? null;
    const usage = volume?.backendUsage() ?? null;
    const backlog = volume?.backendBacklog() ?? null;
    const nbd = this.server?.stats() ?? null;
    return {
      state: this.state,
      stateSince: new Date(this.stateSinceMs).toISOString(),
      waitingFor: this.state === "draining" ? this.waitingFor : null,
      pid: process.pid,
      startedAt: new Date(this.startedMs).toISOString(),
      uptimeSeconds: (nowMs - this.startedMs) / 1000,
      recoverySeconds: this.state === "recovering" ? null : this.recoverySeconds,
      volume: {
        uri: this.opened?.uri ?? this.volumeUri,
        cache: this.cachePath,
        sizeBytes: volume?.sizeBytes ?? null,
        uuid: volume?.volUuid ?? null,
        readOnly: volume?.readOnly ?? null,
      },
      nbdAddresses: this.server?.addresses ?? [],
      adminSocket: this.admin?.path ?? null,
      metricsUrl: this.endpoint?.url ?? null,
      backend: {
        reachable: reach.failingSinceMs === null,
        failingSince: reach.failingSinceMs === null ? null : new Date(reach.failingSinceMs).toISOString(),
        lastError: reach.lastError,
        lastErrorAt: reach.lastError === null ? null : new Date(reach.lastErrorAtMs).toISOString(),
        retries: this.opened?.store.retries ?? 0,
        objects: usage?.objects ?? null,
        bytes: usage?.bytes ?? null,
        liveBytes: usage?.liveBytes ?? null,
        liveShare: usage === null ? null : usage.dataBytes === 0 ? 1 : usage.liveBytes / usage.dataBytes,
        durableSeq: stats?.durableSeq ?? null,
        backlogObjects: backlog?.objects ?? null,
        backlogBytes: backlog?.bytes ?? null,
      },
      journal: stats === null ? null : { usedBytes: stats.journalUsedBytes, sizeBytes: stats.journalBytes, writesInFlight: stats.journalWritesInFlight, records: stats.records },
      clients: nbd === null ? null : { connections: nbd.connections, negotiating: nbd.negotiating, requestsInFlight: nbd.requestsInFlight, accepted: nbd.connectionsAccepted, refused: nbd.connectionsRefused },
      requests: nbd === null ? null : {
        reads: nbd.reads, writes: nbd.writes, flushes: nbd.flushes, trims: nbd.trims, writeZeroes: nbd.writeZeroes, blockStatuses: nbd.blockStatuses,
        caches: nbd.caches, bytesRead: nbd.bytesRead, bytesWritten: nbd.bytesWritten, errors: nbd.errorReplies,
      },
      volumeWrites: stats === null ? null : { writes: stats.writes, writeBytes: stats.writeBytes, trims: stats.trims, objects: stats.objects, checkpoints: stats.checkpoints, extents: stats.extents },
      readCache: stats === null ? null : { hits: stats.readCache.hits, misses: stats.readCache.misses, blocks: stats.readCache.blocks },
      gc: stats?.gc ?? null,
    };
  }
}

/** Makes the default admin socket directory; false (with a warning) when it cannot be made (not root). */
function ensureDirectory(directory: string, log: LogFn): boolean {
  try {
    mkdirSync(directory, { recursive: true, mode: 0o755 });
    return true;
  } catch (error) {
    log(`warning: no admin socket: cannot create ${directory} (${(error as NodeJS.ErrnoException).code ?? String(error)}); pass --admin-socket PATH for one`);
    return false;
  }
}
