// What `lsvd serve` exports at --metrics (docs/operations.md, "Metrics", lists every name). Recorded series (NBD
// request latency and errors, backend request latency, errors and bytes) are bumped on the completion paths through
// the NbdRequestObserver and StoreMeter made here; the rest is read at scrape time from the counters the parts
// already keep (the NBD server's, the write path's, the collector's, the read cache's), one snapshot per scrape.

import type { StoreMeter } from "../backend/metered_store.ts";
import { STORE_OPS, type StoreOp } from "../backend/wrapping_store.ts";
import { LsvdError } from "../errors.ts";
import { LATENCY_BUCKETS_SECONDS, MetricsRegistry, type Counter, type Histogram } from "../metrics/registry.ts";
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
} from "../nbd/wire.ts";
import type { NbdRequestObserver } from "../nbd/session.ts";
import type { NbdServerStats } from "../nbd/server.ts";
import type { Volume } from "../volume/volume.ts";
import { SECTOR_BYTES } from "../constants.ts";

/** NBD commands by label, with the NbdStats counter of each. */
const NBD_COMMANDS = [
  { command: "read", type: NBD_CMD_READ, stat: "reads" },
  { command: "write", type: NBD_CMD_WRITE, stat: "writes" },
  { command: "flush", type: NBD_CMD_FLUSH, stat: "flushes" },
  { command: "trim", type: NBD_CMD_TRIM, stat: "trims" },
  { command: "write_zeroes", type: NBD_CMD_WRITE_ZEROES, stat: "writeZeroes" },
  { command: "cache", type: NBD_CMD_CACHE, stat: "caches" },
  { command: "block_status", type: NBD_CMD_BLOCK_STATUS, stat: "blockStatuses" },
] as const;
/** Series index per NBD command number; unknown commands (refused) count as "other", the last series. */
const NBD_OTHER = NBD_COMMANDS.length;
const NBD_SERIES_BY_TYPE = new Int8Array(256).fill(NBD_OTHER);
NBD_COMMANDS.forEach(({ type }, index) => (NBD_SERIES_BY_TYPE[type] = index));

/** Backend op label values, snake case as Prometheus labels go. */
const OP_LABEL: Record<StoreOp, string> = {
  put: "put",
  get: "get",
  getRange: "get_range",
  delete: "delete",
  list: "list",
  stat: "stat",
  getVersioned: "get_versioned",
  putIfAbsent: "put_if_absent",
  putIfVersion: "put_if_version",
};
const STORES = ["volume", "lease"] as const;
export type StoreRole = (typeof STORES)[number];

/** Success, or a failure that is the store's answer (not found, a conflict): the store is there. */
function isAnswer(error: unknown): boolean {
  return error === null || (error instanceof LsvdError && (error.kind === "NotFound" || error.kind === "Conflict"));
}

/** Whether the volume's store answers: since when it fails (I/O errors, timeouts, corruption), and the last failure. */
export class Reachability {
  failingSinceMs: number | null = null;
  lastError: string | null = null;
  lastErrorAtMs = 0;

  note(error: unknown): void {
    if (isAnswer(error)) {
      this.failingSinceMs = null;
      return;
    }
    this.failingSinceMs ??= Date.now();
    this.lastError = (error as Error)?.message ?? String(error);
    this.lastErrorAtMs = Date.now();
  }
}

/** The parts the scrape reads; null until recovery is done. */
export interface MetricsSources {
  nbd(): NbdServerStats | null;
  volume(): Volume | null;
  /** Retries and timed-out attempts of the volume's store. */
  retries(): { retries: number; timeouts: number };
  state(): string;
  recoverySeconds(): number;
  adminConnections(): number;
}

export const SERVE_STATES = ["recovering", "serving", "draining"] as const;

export class ServeMetrics {
  readonly registry = new MetricsRegistry();
  readonly reachability = new Reachability();
  private readonly nbdErrors: Counter;
  private readonly nbdSeconds: Histogram;
  private readonly backendRequests: Counter;
  private readonly backendErrors: Counter;
  private readonly backendSeconds: Histogram;
  private readonly backendReadBytes: Counter;
  private readonly backendWrittenBytes: Counter;
  /** Per scrape: the volume's stats and backend usage, read once. */
  private snapshot: { stats: ReturnType<Volume["stats"]>; usage: ReturnType<Volume["backendUsage"]>; backlog: { objects: number; bytes: number } } | null = null;
  private nbdSnapshot: NbdServerStats | null = null;

  readonly nbdObserver: NbdRequestObserver = {
    requestDone: (command, seconds, failed) => {
      const series = NBD_SERIES_BY_TYPE[command & 0xff]!;
      if (failed) this.nbdErrors.inc(1, series);
      if (seconds >= 0) this.nbdSeconds.observe(seconds, series);
    },
  };

  constructor(private readonly sources: MetricsSources) {
    const registry = this.registry;
    const commands = [...NBD_COMMANDS.map(({ command }) => ({ command })), { command: "other" }];
    this.nbdErrors = registry.counter("lsvd_nbd_request_errors_total", "NBD requests answered with an error, by command.", commands);
    this.nbdSeconds = registry.histogram("lsvd_nbd_request_duration_seconds", "Time from dispatching an NBD request to its reply, by command.", LATENCY_BUCKETS_SECONDS, commands);
    const storeOps = STORES.flatMap((store) => STORE_OPS.map((op) => ({ store, op: OP_LABEL[op] })));
    this.backendRequests = registry.counter("lsvd_backend_requests_total", "Backend requests (each attempt, retries included), by store and operation.", storeOps);
    this.backendErrors = registry.counter("lsvd_backend_request_errors_total", "Backend requests that failed (I/O errors and timeouts; not-found and conflicts are answers), by store and operation.", storeOps);
    this.backendSeconds = registry.histogram("lsvd_backend_request_duration_seconds", "Backend request latency, by store and operation.", LATENCY_BUCKETS_SECONDS, storeOps);
    const stores = STORES.map((store) => ({ store }));
    this.backendReadBytes = registry.counter("lsvd_backend_read_bytes_total", "Bytes read from the backend, by store.", stores);
    this.backendWrittenBytes = registry.counter("lsvd_backend_written_bytes_total", "Bytes written to the backend, by store.", stores);
    registry.beforeRender(() => this.takeSnapshot());
    this.declareServe();
    this.declareNbd();
    this.declareVolume();
    this.declareBackend();
  }

  /** The meter of one store: every attempt's op, latency, failure and bytes. */
  storeMeter(role: StoreRole): StoreMeter {
    const storeIndex = STORES.indexOf(role);
    const opIndex = new Map(STORE_OPS.map((op, index) => [op, storeIndex * STORE_OPS.length + index]));
    return {
      done: (op, seconds, error, bytesRead, bytesWritten) => {
        const series = opIndex.get(op)!;
        this.backendRequests.inc(1, series);
        this.backendSeconds.observe(seconds, series);
        if (!isAnswer(error)) this.backendErrors.inc(1, series);
        if (bytesRead > 0) this.backendReadBytes.inc(bytesRead, storeIndex);
        if (bytesWritten > 0) this.backendWrittenBytes.inc(bytesWritten, storeIndex);
        if (role === "volume") this.reachability.note(error);
      },
    };
  }

  private takeSnapshot(): void {
    const volume = this.sources.volume();
    this.snapshot = volume === null ? null : { stats: volume.stats(), usage: volume.backendUsage(), backlog: volume.backendBacklog() };
    this.nbdSnapshot = this.sources.nbd();
  }

  private declareServe(): void {
    const registry = this.registry;
    registry.collectedGauge("lsvd_serve_state", "1 for the state the server is in (recovering, serving, draining), 0 for the others.",
      SERVE_STATES.map((state) => ({ labels: { state }, read: () => (this.sources.state() === state ? 1 : 0) })));
    const startSeconds = Date.now() / 1000 - process.uptime();
    registry.collectedGauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.", () => startSeconds);
    registry.collectedGauge("lsvd_recovery_duration_seconds", "How long this start's recovery took (lease, backend and journal), in seconds; 0 while it runs.", () => this.sources.recoverySeconds());
    registry.collectedGauge("lsvd_admin_connections", "Open admin socket connections.", () => this.sources.adminConnections());
  }

  private declareNbd(): void {
    const registry = this.registry;
    const nbd = () => this.nbdSnapshot;
    registry.collectedCounter("lsvd_nbd_requests_total", "NBD requests dispatched, by command.",
      NBD_COMMANDS.map(({ command, stat }) => ({ labels: { command }, read: () => nbd()?.[stat] ?? 0 })));
    registry.collectedCounter("lsvd_nbd_request_bytes_total", "Data bytes of NBD reads answered and writes received.", [
      { labels: { command: "read" }, read: () => nbd()?.bytesRead ?? 0 },
      { labels: { command: "write" }, read: () => nbd()?.bytesWritten ?? 0 },
    ]);
    registry.collectedGauge("lsvd_nbd_connections", "Open NBD connections.", () => nbd()?.connections ?? 0);
    registry.collectedGauge("lsvd_nbd_connections_negotiating", "NBD connections still negotiating.", () => nbd()?.negotiating ?? 0);
    registry.collectedGauge("lsvd_nbd_requests_in_flight", "NBD requests received and not yet answered.", () => nbd()?.requestsInFlight ?? 0);
    registry.collectedCounter("lsvd_nbd_connections_accepted_total", "NBD connections accepted.", [{ read: () => nbd()?.connectionsAccepted ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_connections_refused_total", "NBD connections refused (too many open or negotiating, or closing).", [{ read: () => nbd()?.connectionsRefused ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_protocol_errors_total", "NBD connections closed for breaking the protocol.", [{ read: () => nbd()?.protocolErrors ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_handshake_timeouts_total", "NBD connections closed for not negotiating in time.", [{ read: () => nbd()?.handshakeTimeouts ?? 0 }]);
  }

  private declareVolume(): void {
    const registry = this.registry;
    const stats = () => this.snapshot?.stats ?? null;
    const gauge = (name: string, help: string, read: () => number | undefined) => registry.collectedGauge(name, help, () => read() ?? 0);
    const counter = (name: string, help: string, read: () => number | undefined) => registry.collectedCounter(name, help, [{ read: () => read() ?? 0 }]);
    gauge("lsvd_volume_size_bytes", "Size of the served volume in bytes.", () => this.sources.volume()?.sizeBytes);
    gauge("lsvd_journal_size_bytes", "Size of the cache's write journal in bytes.", () => stats()?.journalBytes);
    gauge("lsvd_journal_used_bytes", "Journal bytes holding records not yet in the backend.", () => stats()?.journalUsedBytes);
    gauge("lsvd_journal_writes_in_flight", "Journal record writes submitted to the cache device and not completed.", () => stats()?.journalWritesInFlight);
    counter("lsvd_journal_records_total", "Journal records written.", () => stats()?.records);
    counter("lsvd_volume_writes_total", "Writes accepted by the volume's write path.", () => stats()?.writes);
    counter("lsvd_volume_trims_total", "Trims and zeroings the volume accepted.", () => stats()?.trims);
    counter("lsvd_write_batches_total", "Batches sealed into backend objects.", () => stats()?.objects);
    counter("lsvd_checkpoints_total", "Checkpoints written.", () => stats()?.checkpoints);
    counter("lsvd_cache_syncs_total", "fdatasync calls on the cache device (FLUSH and FUA).", () => stats()?.syncs);
    counter("lsvd_read_cache_hits_total", "Reads served from the SSD read cache (4 KiB blocks).", () => stats()?.readCache.hits);
    counter("lsvd_read_cache_misses_total", "Reads the SSD read cache could not serve (4 KiB blocks).", () => stats()?.readCache.misses);
    gauge("lsvd_read_cache_blocks", "4 KiB blocks held in the SSD read cache.", () => stats()?.readCache.blocks);
    gauge("lsvd_map_extents", "Extents in the volume's in-memory map.", () => stats()?.extents);
    const gc = () => stats()?.gc ?? null;
    counter("lsvd_gc_rounds_total", "Garbage collection rounds run.", () => gc()?.rounds);
    counter("lsvd_gc_objects_cleaned_total", "Objects whose live data garbage collection copied out.", () => gc()?.objectsCleaned);
    counter("lsvd_gc_objects_deleted_total", "Objects garbage collection deleted.", () => gc()?.objectsDeleted);
    counter("lsvd_gc_copied_bytes_total", "Live bytes garbage collection copied into new objects.", () => (stats() === null ? 0 : stats()!.gcCopiedSectors * SECTOR_BYTES));
    counter("lsvd_gc_reclaimed_bytes_total", "Dead bytes in objects garbage collection cleaned.", () => gc()?.reclaimedBytes);
    counter("lsvd_gc_errors_total", "Garbage collection steps that failed (retried in a later round).", () => gc()?.errors);
  }

  private declareBackend(): void {
    const registry = this.registry;
    const usage = () => this.snapshot?.usage ?? null;
    registry.collectedGauge("lsvd_backend_objects", "Objects of the volume in the backend (data and checkpoints), as this server knows them.", () => usage()?.objects ?? 0);
    registry.collectedGauge("lsvd_backend_stored_bytes", "Bytes of those objects.", () => usage()?.bytes ?? 0);
    registry.collectedGauge("lsvd_backend_live_bytes", "Bytes of their data the volume's map still points at.", () => usage()?.liveBytes ?? 0);
    registry.collectedGauge("lsvd_backend_live_ratio", "Live share of the objects' data (1: no garbage).", () => {
      const now = usage();
      return now === null || now.dataBytes === 0 ? 1 : now.liveBytes / now.dataBytes;
    });
    registry.collectedGauge("lsvd_backend_backlog_objects", "Objects not yet durable in the backend (sealed, being put, or the open batch).", () => this.snapshot?.backlog.objects ?? 0);
    registry.collectedGauge("lsvd_backend_backlog_bytes", "Bytes of those objects.", () => this.snapshot?.backlog.bytes ?? 0);
    registry.collectedGauge("lsvd_backend_durable_sequence", "Every object up to this sequence number is durable in the backend.", () => this.snapshot?.stats.durableSeq ?? 0);
    registry.collectedCounter("lsvd_backend_retries_total", "Backend requests retried after a transient failure (volume store).", [{ read: () => this.sources.retries().retries }]);
    registry.collectedCounter("lsvd_backend_timeouts_total", "Backend attempts that did not answer in time (volume store).", [{ read: () => this.sources.retries().timeouts }]);
    registry.collectedGauge("lsvd_backend_up", "1 while the backend answers, 0 from its first failure until a request succeeds again.", () => (this.reachability.failingSinceMs === null ? 1 : 0));
  }
}
