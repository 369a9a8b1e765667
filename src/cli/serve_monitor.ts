// Watching `lsvd serve` while it runs: its admin socket (src/admin/; `lsvd status` asks it) and its Prometheus
// endpoint (--metrics, src/metrics/), over the figures of serve_metrics.ts. Spec: docs/operations.md.
//
// A server of several exports (--export, --config) has one monitor: status lists every export (or the one a request
// names with args.volume), metrics label each export's series, and the admin ops reach the export serving the volume
// a request names.
//
// Lifecycle, driven by serve.ts at the steps of its start-up order:
//   open()        step 1, with the listeners: bind the admin socket (a live one refuses the start, a stale one is
//                 replaced) and the metrics port; their addresses go into the lease (`admin:unix:PATH`,
//                 `metrics:URL`), so other processes find them; state "recovering";
//   serving()     step 3: the NBD server and the volumes are there; state "serving";
//   draining()    step 4: state "draining"; what the shutdown waits for is reported in status;
//   close()       at exit: both listeners closed, the socket file removed while it is still ours.

import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { AdminOps, listenAdmin, type AdminServer } from "../admin/server.ts";
import { IOError, InvalidArgumentError, NotFoundError, assert } from "../errors.ts";
import { isLoopback, parseHostPort, serveMetrics, type MetricsEndpoint } from "../metrics/http.ts";
import type { NbdServer } from "../nbd/server.ts";
import type { LogFn } from "../util/log.ts";
import { stringOption, type OptionSpec, type Parsed } from "./args.ts";
import type { OpenedVolume } from "./open_volume.ts";
import type { BackendMeters } from "./ownership.ts";
import { prepareParentDirectory } from "./paths.ts";
import { ServeMetrics } from "./serve_metrics.ts";
import { registerSnapshotOps } from "./serve_snapshot_ops.ts";
import type { Volume } from "../volume/volume.ts";

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
  return socketPathFor(text);
}

/**
 * The default admin socket of a server of several exports: named after its config file (absolute path), or after its
 * export names joined by '+', so that it is stable across restarts and two such servers do not share one.
 */
export function defaultDaemonAdminSocketPath(source: { configFile: string } | { names: readonly string[] }): string {
  return socketPathFor("configFile" in source ? `config${resolvePath(source.configFile)}` : `exports-${source.names.join("+")}`);
}

function socketPathFor(text: string): string {
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

/** One export as the monitor knows it: what it serves, and once recovered, the open volume. */
export interface MonitoredExport {
  /** The NBD export name ("" or --name for a single-volume server). */
  name: string;
  volumeUri: string;
  cachePath: string;
}

interface ExportState extends MonitoredExport {
  opened: OpenedVolume | null;
  /** Why this export no longer serves (its lease was lost), or null. */
  lost: string | null;
}

export class ServeMonitor {
  private state: ServeState = "recovering";
  private stateSinceMs = Date.now();
  private readonly startedMs = Date.now();
  private recoverySeconds = 0;
  private server: NbdServer | null = null;
  private waitingFor: string | null = null;
  private admin: AdminServer | null = null;
  private endpoint: MetricsEndpoint | null = null;
  private readonly exports: ExportState[];
  readonly ops = new AdminOps();
  readonly metrics: ServeMetrics;

  /** `several`: a server of --export/--config exports (labelled metrics, exports in status) even if there is one. */
  private constructor(exports: readonly MonitoredExport[], private readonly several: boolean) {
    this.exports = exports.map((spec) => ({ ...spec, opened: null, lost: null }));
    const one = this.exports[0]!;
    this.metrics = new ServeMetrics({
      nbd: () => this.server?.stats() ?? null,
      volume: () => one.opened?.volume ?? null,
      retries: () => retriesOf(one.opened),
      state: () => this.state,
      recoverySeconds: () => this.recoverySeconds,
      adminConnections: () => this.admin?.connectionCount() ?? 0,
      exports: several ? this.exports.map((exported) => ({
        name: exported.name,
        nbd: () => this.server?.exportStats(exported.name) ?? null,
        volume: () => exported.opened?.volume ?? null,
        retries: () => retriesOf(exported.opened),
      })) : undefined,
    });
    this.ops.register("status", "the server's state, volumes, clients and figures (what 'lsvd status' prints); args.volume picks one export", (args) => this.status(args));
    this.ops.register("metrics", "the Prometheus text exposition, as --metrics serves it", () => this.metrics.registry.render());
    registerSnapshotOps(this.ops, (args) => this.volumeFor(args));
  }

  /** Step 1 of a single-volume server: checks the options, binds the admin socket and the metrics port. */
  static open(parsed: Parsed, volumeUri: string, cachePath: string, log: LogFn, lock: SocketLock): Promise<ServeMonitor> {
    const name = stringOption(parsed, "name") ?? "";
    return ServeMonitor.openFor(parsed, new ServeMonitor([{ name, volumeUri, cachePath }], false), defaultAdminSocketPath(volumeUri), log, lock);
  }

  /** Step 1 of a server of several exports; `defaultSocket` unless --admin-socket/--no-admin-socket. */
  static openExports(parsed: Parsed, exports: readonly MonitoredExport[], defaultSocket: string, log: LogFn, lock: SocketLock): Promise<ServeMonitor> {
    return ServeMonitor.openFor(parsed, new ServeMonitor(exports, true), defaultSocket, log, lock);
  }

  /** Checks the options, binds the admin socket and the metrics port. Nothing is left bound if it throws. */
  private static async openFor(parsed: Parsed, monitor: ServeMonitor, defaultSocket: string, log: LogFn, lock: SocketLock): Promise<ServeMonitor> {
    const metricsText = stringOption(parsed, "metrics");
    const listen = metricsText === undefined ? null : parseHostPort(metricsText, "--metrics");
    if (listen !== null && !isLoopback(listen.host) && parsed.values["metrics-public"] !== true) {
      throw new InvalidArgumentError(`--metrics ${metricsText}: ${listen.host} is not a loopback address; add --metrics-public to serve metrics to other hosts`);
    }
    const explicit = stringOption(parsed, "admin-socket");
    if (explicit !== undefined && parsed.values["no-admin-socket"] === true) throw new InvalidArgumentError("--admin-socket and --no-admin-socket cannot be combined");
    const path = parsed.values["no-admin-socket"] === true ? null : resolvePath(explicit ?? defaultSocket);
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

  /** The meters of export `exportIndex`'s stores (the first: a single-volume server's). */
  metersFor(exportIndex: number): BackendMeters {
    return { volume: this.metrics.storeMeter("volume", exportIndex), lease: this.metrics.storeMeter("lease", exportIndex) };
  }

  get meters(): BackendMeters {
    return this.metersFor(0);
  }

  get nbdObserver() {
    return this.metrics.nbdObserver;
  }

  nbdObserverFor(exportIndex: number) {
    return this.metrics.nbdObserverFor(exportIndex);
  }

  private enter(state: ServeState): void {
    this.state = state;
    this.stateSinceMs = Date.now();
  }

  /** Step 3: every export's volume is open (in the order the monitor was given the exports). */
  serving(server: NbdServer, opened: OpenedVolume | readonly OpenedVolume[]): void {
    const volumes = Array.isArray(opened) ? opened : [opened as OpenedVolume];
    assert(volumes.length === this.exports.length, "one open volume per export");
    this.server = server;
    volumes.forEach((volume, index) => (this.exports[index]!.opened = volume));
    this.recoverySeconds = (Date.now() - this.startedMs) / 1000;
    this.enter("serving");
  }

  /** Export `exportIndex` lost its lease: it answers errors until the server stops; status says why. */
  lost(exportIndex: number, reason: string): void {
    this.exports[exportIndex]!.lost = reason;
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

  /**
   * The export an admin request means: the one serving args.volume (the backend URI as the lease's reader parsed it),
   * or the only one. A server of several exports refuses a request that names none, or a volume it does not serve.
   */
  private exportFor(args: Record<string, unknown>): ExportState {
    const volume = args.volume;
    if (volume !== undefined && typeof volume !== "string") throw new InvalidArgumentError("args.volume: the volume's URI, a string");
    if (volume !== undefined) {
      const found = this.exports.find((exported) => exported.opened?.uri === volume || exported.volumeUri === volume);
      if (found === undefined) throw new NotFoundError(`volume ${volume} is not served by this process (it serves ${this.exports.map((e) => e.opened?.uri ?? e.volumeUri).join(", ")})`);
      return found;
    }
    if (this.exports.length === 1) return this.exports[0]!;
    throw new InvalidArgumentError(`this process serves ${this.exports.length} volumes: say which in args.volume`);
  }

  private volumeFor(args: Record<string, unknown>): Volume {
    const exported = this.exportFor(args);
    if (exported.opened === null) throw new InvalidArgumentError(`volume ${exported.volumeUri} is still recovering`);
    if (exported.lost !== null) throw new InvalidArgumentError(`volume ${exported.volumeUri} is no longer served here: ${exported.lost}`);
    return exported.opened.volume;
  }

  /**
   * The `status` op's result (docs/operations.md, "lsvd status"): the server's fields and `exports` (one entry per
   * export); the fields of one export as well at the top when the request names it (args.volume) or there is only
   * one, as a single-volume server has always answered.
   */
  status(args: Record<string, unknown> = {}): Record<string, unknown> {
    const nowMs = Date.now();
    const picked = args.volume !== undefined || this.exports.length === 1 ? this.exportFor(args) : null;
    return {
      state: this.state,
      stateSince: new Date(this.stateSinceMs).toISOString(),
      waitingFor: this.state === "draining" ? this.waitingFor : null,
      pid: process.pid,
      startedAt: new Date(this.startedMs).toISOString(),
      uptimeSeconds: (nowMs - this.startedMs) / 1000,
      recoverySeconds: this.state === "recovering" ? null : this.recoverySeconds,
      adminSocket: this.admin?.path ?? null,
      metricsUrl: this.endpoint?.url ?? null,
      ...(picked === null ? {} : this.exportStatus(picked)),
      exports: this.exports.map((exported) => ({ name: exported.name, ...this.exportStatus(exported) })),
    };
  }

  private exportStatus(exported: ExportState): Record<string, unknown> {
    const index = this.exports.indexOf(exported);
    const volume = exported.opened?.volume ?? null;
    const reach = this.metrics.reachabilityOf(index);
    const stats = volume?.stats() ?? null;
    const usage = volume?.backendUsage() ?? null;
    const backlog = volume?.backendBacklog() ?? null;
    const nbd = this.server === null ? null : this.several ? this.server.exportStats(exported.name) : this.server.stats();
    const server = this.server?.stats() ?? null;
    return {
      lost: exported.lost,
      volume: {
        uri: exported.opened?.uri ?? exported.volumeUri,
        cache: exported.cachePath,
        sizeBytes: volume?.sizeBytes ?? null,
        uuid: volume?.volUuid ?? null,
        readOnly: volume?.readOnly ?? null,
      },
      nbdAddresses: this.server?.addressesFor(exported.name) ?? [],
      backend: {
        reachable: reach.failingSinceMs === null,
        failingSince: reach.failingSinceMs === null ? null : new Date(reach.failingSinceMs).toISOString(),
        lastError: reach.lastError,
        lastErrorAt: reach.lastError === null ? null : new Date(reach.lastErrorAtMs).toISOString(),
        retries: exported.opened?.store.retries ?? 0,
        objects: usage?.objects ?? null,
        bytes: usage?.bytes ?? null,
        liveBytes: usage?.liveBytes ?? null,
        liveShare: usage === null ? null : usage.dataBytes === 0 ? 1 : usage.liveBytes / usage.dataBytes,
        durableSeq: stats?.durableSeq ?? null,
        backlogObjects: backlog?.objects ?? null,
        backlogBytes: backlog?.bytes ?? null,
      },
      journal: stats === null ? null : { usedBytes: stats.journalUsedBytes, sizeBytes: stats.journalBytes, writesInFlight: stats.journalWritesInFlight, records: stats.records },
      clients: nbd === null || server === null ? null : { connections: nbd.connections, negotiating: server.negotiating, requestsInFlight: nbd.requestsInFlight, accepted: server.connectionsAccepted, refused: server.connectionsRefused },
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

function retriesOf(opened: OpenedVolume | null): { retries: number; timeouts: number } {
  return { retries: opened?.store.retries ?? 0, timeouts: opened?.store.timeouts ?? 0 };
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
