// What `lsvd serve` exports at --metrics (docs/operations.md, "Metrics", lists every name). Recorded series (NBD
// request latency and errors, backend request latency, errors and bytes) are bumped on the completion paths through
// the NbdRequestObserver and StoreMeter made here; the rest is read at scrape time from the counters the parts
// already keep (the NBD server's, the write path's, the collector's, the read cache's), one snapshot per scrape.
// A server of several exports (lsvd serve --export) labels every per-volume and per-export series with `export`;
// a single-volume server's series carry no such label.

import type { StoreMeter } from "../backend/metered_store.ts";
import { STORE_OPS, type StoreOp } from "../backend/wrapping_store.ts";
import { LsvdError, assert } from "../errors.ts";
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
import type { NbdExportStats, NbdServerStats } from "../nbd/server.ts";
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

/** One export's parts; null until its recovery is done. */
export interface ExportMetricsSources {
  /** The export's name: the `export` label (absent for a single-volume server). */
  name: string;
  nbd(): NbdExportStats | null;
  volume(): Volume | null;
  /** Retries and timed-out attempts of the volume's store. */
  retries(): { retries: number; timeouts: number };
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
  /** A server of several exports: each one's parts (then nbd() is the server's totals, volume() and retries() unused). */
  exports?: readonly ExportMetricsSources[];
}

export const SERVE_STATES = ["recovering", "serving", "draining"] as const;

/** One export as the metrics see it: its label and its parts. */
interface MeteredExport {
  labels: Readonly<Record<string, string>>;
  nbd(): NbdExportStats | NbdServerStats | null;
  volume(): Volume | null;
  retries(): { retries: number; timeouts: number };
  reachability: Reachability;
  /** Per scrape: the volume's stats and backend usage, read once. */
  snapshot: { stats: ReturnType<Volume["stats"]>; usage: ReturnType<Volume["backendUsage"]>; backlog: { objects: number; bytes: number } } | null;
  nbdSnapshot: NbdExportStats | NbdServerStats | null;
}

export class ServeMetrics {
  readonly registry = new MetricsRegistry();
  private readonly exports: MeteredExport[];
  private readonly nbdErrors: Counter;
  private readonly nbdSeconds: Histogram;
  private readonly backendRequests: Counter;
  private readonly backendErrors: Counter;
  private readonly backendSeconds: Histogram;
  private readonly backendReadBytes: Counter;
  private readonly backendWrittenBytes: Counter;
  private serverSnapshot: NbdServerStats | null = null;
  /** The first export's observer (the single-volume server's). */
  readonly nbdObserver: NbdRequestObserver;

  constructor(private readonly sources: MetricsSources) {
    const exported = (labels: Record<string, string>, parts: Pick<MeteredExport, "nbd" | "volume" | "retries">): MeteredExport => ({ labels, ...parts, reachability: new Reachability(), snapshot: null, nbdSnapshot: null });
    this.exports = sources.exports === undefined
      ? [exported({}, { nbd: () => sources.nbd(), volume: () => sources.volume(), retries: () => sources.retries() })]
      : sources.exports.map((parts) => exported({ export: parts.name }, parts));
    const registry = this.registry;
    const perExport = <T extends object>(sets: readonly T[]) => this.exports.flatMap(({ labels }) => sets.map((set) => ({ ...labels, ...set })));
    const commands = perExport([...NBD_COMMANDS.map(({ command }) => ({ command })), { command: "other" }]);
    this.nbdErrors = registry.counter("lsvd_nbd_request_errors_total", "NBD requests answered with an error, by command.", commands);
    this.nbdSeconds = registry.histogram("lsvd_nbd_request_duration_seconds", "Time from dispatching an NBD request to its reply, by command.", LATENCY_BUCKETS_SECONDS, commands);
    const storeOps = perExport(STORES.flatMap((store) => STORE_OPS.map((op) => ({ store, op: OP_LABEL[op] }))));
    this.backendRequests = registry.counter("lsvd_backend_requests_total", "Backend requests (each attempt, retries included), by store and operation.", storeOps);
    this.backendErrors = registry.counter("lsvd_backend_request_errors_total", "Backend requests that failed (I/O errors and timeouts; not-found and conflicts are answers), by store and operation.", storeOps);
    this.backendSeconds = registry.histogram("lsvd_backend_request_duration_seconds", "Backend request latency, by store and operation.", LATENCY_BUCKETS_SECONDS, storeOps);
    const stores = perExport(STORES.map((store) => ({ store })));
    this.backendReadBytes = registry.counter("lsvd_backend_read_bytes_total", "Bytes read from the backend, by store.", stores);
    this.backendWrittenBytes = registry.counter("lsvd_backend_written_bytes_total", "Bytes written to the backend, by store.", stores);
    this.nbdObserver = this.nbdObserverFor(0);
    registry.beforeRender(() => this.takeSnapshot());
    this.declareServe();
    this.declareNbd();
    this.declareVolume();
    this.declareBackend();
  }

  /** Whether the (first) export's store answers. */
  get reachability(): Reachability {
    return this.exports[0]!.reachability;
  }

  reachabilityOf(exportIndex: number): Reachability {
    return this.exports[exportIndex]!.reachability;
  }

  /** Told when each request of export `exportIndex` ends. */
  nbdObserverFor(exportIndex: number): NbdRequestObserver {
    assert(exportIndex >= 0 && exportIndex < this.exports.length, "an export of this server");
    const base = exportIndex * (NBD_COMMANDS.length + 1);
    return {
      requestDone: (command, seconds, failed) => {
        const series = base + NBD_SERIES_BY_TYPE[command & 0xff]!;
        if (failed) this.nbdErrors.inc(1, series);
        if (seconds >= 0) this.nbdSeconds.observe(seconds, series);
      },
    };
  }

  /** The meter of one store of export `exportIndex`: every attempt's op, latency, failure and bytes. */
  storeMeter(role: StoreRole, exportIndex = 0): StoreMeter {
    assert(exportIndex >= 0 && exportIndex < this.exports.length, "an export of this server");
    const storeIndex = exportIndex * STORES.length + STORES.indexOf(role);
    const opIndex = new Map(STORE_OPS.map((op, index) => [op, storeIndex * STORE_OPS.length + index]));
    const reachability = this.exports[exportIndex]!.reachability;
    return {
      done: (op, seconds, error, bytesRead, bytesWritten) => {
        const series = opIndex.get(op)!;
        this.backendRequests.inc(1, series);
        this.backendSeconds.observe(seconds, series);
        if (!isAnswer(error)) this.backendErrors.inc(1, series);
        if (bytesRead > 0) this.backendReadBytes.inc(bytesRead, storeIndex);
        if (bytesWritten > 0) this.backendWrittenBytes.inc(bytesWritten, storeIndex);
        if (role === "volume") reachability.note(error);
      },
    };
  }

  private takeSnapshot(): void {
    for (const exported of this.exports) {
      const volume = exported.volume();
      exported.snapshot = volume === null ? null : { stats: volume.stats(), usage: volume.backendUsage(), backlog: volume.backendBacklog() };
      exported.nbdSnapshot = exported.nbd();
    }
    this.serverSnapshot = this.sources.nbd();
  }

  /** One series per export of a gauge or counter read from the export (its labels, plus `labels`). */
  private each(read: (exported: MeteredExport) => number | undefined, labels: Record<string, string> = {}) {
    return this.exports.map((exported) => ({ labels: { ...exported.labels, ...labels }, read: () => read(exported) ?? 0 }));
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
    const server = () => this.serverSnapshot;
    registry.collectedCounter("lsvd_nbd_requests_total", "NBD requests dispatched, by command.",
      NBD_COMMANDS.flatMap(({ command, stat }) => this.each((e) => e.nbdSnapshot?.[stat], { command })));
    registry.collectedCounter("lsvd_nbd_request_bytes_total", "Data bytes of NBD reads answered and writes received.", [
      ...this.each((e) => e.nbdSnapshot?.bytesRead, { command: "read" }),
      ...this.each((e) => e.nbdSnapshot?.bytesWritten, { command: "write" }),
    ]);
    registry.collectedCounter("lsvd_nbd_socket_reads_total", "Socket reads handed to NBD sessions (requests per read: how well clients batch).", this.each((e) => e.nbdSnapshot?.receives));
    registry.collectedCounter("lsvd_nbd_write_payload_copies_total", "NBD WRITE payloads copied into a payload buffer before the volume got them (split across socket reads, or not kept in their receive buffer).", this.each((e) => e.nbdSnapshot?.payloadCopies));
    registry.collectedCounter("lsvd_nbd_reply_writes_total", "Socket writes of NBD replies (replies per write: how well the server batches).", this.each((e) => e.nbdSnapshot?.replyWrites));
    registry.collectedGauge("lsvd_nbd_connections", "Open NBD connections.", this.each((e) => e.nbdSnapshot?.connections));
    registry.collectedGauge("lsvd_nbd_connections_negotiating", "NBD connections still negotiating.", () => server()?.negotiating ?? 0);
    registry.collectedGauge("lsvd_nbd_requests_in_flight", "NBD requests received and not yet answered.", this.each((e) => e.nbdSnapshot?.requestsInFlight));
    registry.collectedCounter("lsvd_nbd_connections_accepted_total", "NBD connections accepted.", [{ read: () => server()?.connectionsAccepted ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_connections_refused_total", "NBD connections refused (too many open or negotiating, or closing).", [{ read: () => server()?.connectionsRefused ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_protocol_errors_total", "NBD connections closed for breaking the protocol.", [{ read: () => server()?.protocolErrors ?? 0 }]);
    registry.collectedCounter("lsvd_nbd_handshake_timeouts_total", "NBD connections closed for not negotiating in time.", [{ read: () => server()?.handshakeTimeouts ?? 0 }]);
  }

  private declareVolume(): void {
    const registry = this.registry;
    const gauge = (name: string, help: string, read: (stats: ReturnType<Volume["stats"]>) => number | undefined) =>
      registry.collectedGauge(name, help, this.each((e) => (e.snapshot === null ? 0 : read(e.snapshot.stats))));
    const counter = (name: string, help: string, read: (stats: ReturnType<Volume["stats"]>) => number | undefined) =>
      registry.collectedCounter(name, help, this.each((e) => (e.snapshot === null ? 0 : read(e.snapshot.stats))));
    registry.collectedGauge("lsvd_volume_size_bytes", "Size of the served volume in bytes.", this.each((e) => e.volume()?.sizeBytes));
    gauge("lsvd_journal_size_bytes", "Size of the cache's write journal in bytes.", (stats) => stats.journalBytes);
    gauge("lsvd_journal_used_bytes", "Journal bytes holding records not yet in the backend.", (stats) => stats.journalUsedBytes);
    gauge("lsvd_journal_writes_in_flight", "Journal record writes submitted to the cache device and not completed.", (stats) => stats.journalWritesInFlight);
    counter("lsvd_journal_records_total", "Journal records written.", (stats) => stats.records);
    counter("lsvd_volume_writes_total", "Writes accepted by the volume's write path.", (stats) => stats.writes);
    counter("lsvd_volume_trims_total", "Trims and zeroings the volume accepted.", (stats) => stats.trims);
    counter("lsvd_write_batches_total", "Batches sealed into backend objects.", (stats) => stats.objects);
    counter("lsvd_checkpoints_total", "Checkpoints written.", (stats) => stats.checkpoints);
    counter("lsvd_cache_syncs_total", "fdatasync calls on the cache device (FLUSH and FUA).", (stats) => stats.syncs);
    counter("lsvd_read_cache_hits_total", "Reads served from the SSD read cache (4 KiB blocks).", (stats) => stats.readCache.hits);
    counter("lsvd_read_cache_misses_total", "Reads the SSD read cache could not serve (4 KiB blocks).", (stats) => stats.readCache.misses);
    gauge("lsvd_read_cache_blocks", "4 KiB blocks held in the SSD read cache.", (stats) => stats.readCache.blocks);
    gauge("lsvd_map_extents", "Extents in the volume's in-memory map.", (stats) => stats.extents);
    counter("lsvd_gc_rounds_total", "Garbage collection rounds run.", (stats) => stats.gc?.rounds);
    counter("lsvd_gc_objects_cleaned_total", "Objects whose live data garbage collection copied out.", (stats) => stats.gc?.objectsCleaned);
    counter("lsvd_gc_objects_deleted_total", "Objects garbage collection deleted.", (stats) => stats.gc?.objectsDeleted);
    counter("lsvd_gc_copied_bytes_total", "Live bytes garbage collection copied into new objects.", (stats) => stats.gcCopiedSectors * SECTOR_BYTES);
    counter("lsvd_gc_reclaimed_bytes_total", "Dead bytes in objects garbage collection cleaned.", (stats) => stats.gc?.reclaimedBytes);
    counter("lsvd_space_waits_total", "Client writes that waited for garbage collection because the backend was over its space high-water mark.", (stats) => stats.spaceWaits);
    counter("lsvd_space_waits_timed_out_total", "Of those, writes that went at their bound rather than on the collector's progress.", (stats) => stats.spaceWaitsTimedOut);
    counter("lsvd_space_wait_seconds_total", "Time client writes spent waiting for space, summed.", (stats) => stats.spaceWaitMs / 1000);
    counter("lsvd_gc_errors_total", "Garbage collection steps that failed (retried in a later round).", (stats) => stats.gc?.errors);
    counter("lsvd_journal_slot_waits_total", "Journal records held back because the most record writes were in flight.", (stats) => stats.journalSlotWaits);
    counter("lsvd_journal_slot_wait_seconds_total", "Time those records waited, summed.", (stats) => stats.journalSlotWaitMs / 1000);
    counter("lsvd_journal_space_waits_total", "Journal records held back for journal space (records not yet in the backend, or a tail not yet persisted).", (stats) => stats.journalSpaceWaits);
    counter("lsvd_journal_space_wait_seconds_total", "Time those records waited, summed.", (stats) => stats.journalSpaceWaitMs / 1000);
    counter("lsvd_backend_ahead_waits_total", "Times new writes waited to open a batch because the most objects were not yet durable in the backend, or (under sustained load) for a batch buffer.", (stats) => stats.aheadWaits);
    counter("lsvd_backend_ahead_wait_seconds_total", "Time those waits took, summed.", (stats) => stats.aheadWaitMs / 1000);
    counter("lsvd_objects_read_back_total", "Objects whose data was read back from the journal before their put (journal-only batches, which absorb bursts).", (stats) => stats.objectsReadBack);
  }

  private declareBackend(): void {
    const registry = this.registry;
    registry.collectedGauge("lsvd_backend_objects", "Objects of the volume in the backend (data and checkpoints), as this server knows them.", this.each((e) => e.snapshot?.usage.objects));
    registry.collectedGauge("lsvd_backend_stored_bytes", "Bytes of those objects.", this.each((e) => e.snapshot?.usage.bytes));
    registry.collectedGauge("lsvd_backend_live_bytes", "Bytes of their data the volume's map still points at.", this.each((e) => e.snapshot?.usage.liveBytes));
    registry.collectedGauge("lsvd_backend_live_ratio", "Live share of the objects' data (1: no garbage).", this.each((e) => {
      const usage = e.snapshot?.usage ?? null;
      return usage === null || usage.dataBytes === 0 ? 1 : usage.liveBytes / usage.dataBytes;
    }));
    registry.collectedGauge("lsvd_backend_backlog_objects", "Objects not yet durable in the backend (sealed, being put, or the open batch).", this.each((e) => e.snapshot?.backlog.objects));
    registry.collectedGauge("lsvd_backend_backlog_bytes", "Bytes of those objects.", this.each((e) => e.snapshot?.backlog.bytes));
    registry.collectedGauge("lsvd_backend_durable_sequence", "Every object up to this sequence number is durable in the backend.", this.each((e) => e.snapshot?.stats.durableSeq));
    registry.collectedCounter("lsvd_backend_retries_total", "Backend requests retried after a transient failure (volume store).", this.each((e) => e.retries().retries));
    registry.collectedCounter("lsvd_backend_timeouts_total", "Backend attempts that did not answer in time (volume store).", this.each((e) => e.retries().timeouts));
    registry.collectedGauge("lsvd_backend_up", "1 while the backend answers, 0 from its first failure until a request succeeds again.", this.each((e) => (e.reachability.failingSinceMs === null ? 1 : 0)));
  }
}
