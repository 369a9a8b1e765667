// lsvd serve: open a volume with its cache and serve it over NBD until SIGINT/SIGTERM, then shut down cleanly:
// stop accepting, finish in-flight requests, put everything journaled to the backend, checkpoint, exit 0.
//
// Start-up order (docs/architecture.md, "Connections"):
//   1. bind every listener: a unix socket where a server answers is refused, a stale one replaced, a port in use
//      fails; clients that connect from here on wait for their greeting;
//   2. take the volume's lease (refused at once, naming the holder, if another process owns it: the lease records the
//      addresses bound in step 1), then open the volume: recovery, which may delete objects beyond a gap, so it runs
//      only once we know we can serve;
//   3. serve: greet the waiting clients;
//   4. on SIGINT/SIGTERM: drain connections, close the volume, saying every few seconds what is still awaited.

import {
  BATCH_BYTES_DEFAULT,
  BATCH_BYTES_MAX,
  BATCH_IDLE_MS_DEFAULT,
  BATCH_BYTES_MIN,
  GC_THRESHOLD_DEFAULT,
  NBD_CLOSE_DRAIN_MS_MAX,
  NBD_CONNECTIONS_MAX,
  NBD_ERROR_LOG_LINES_PER_SECOND,
  NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT,
  NBD_NEGOTIATING_MAX,
  NBD_PORT_DEFAULT,
} from "../../constants.ts";
import { InvalidArgumentError } from "../../errors.ts";
import type { NbdServer } from "../../nbd/server.ts";
import type { SharedReadCache } from "../../cache/shared_read_cache.ts";
import { openVolumeForCommand, type OpenedVolume } from "../open_volume.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom } from "../ownership.ts";
import { logEnabled, makeLogger, type LogFn } from "../../util/log.ts";
import { Progress } from "../progress.ts";
import { formatSize } from "../../util/size.ts";
import {
  BACKEND_HELP,
  BACKEND_OPTIONS,
  backendOptionsFrom,
  namedArguments,
  requireVolumeAndCache,
  stringOption,
  type OptionSpec,
  type Parsed,
} from "../args.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import type { Command } from "./command.ts";
import { openBackend } from "../../backend/backend_uri.ts";
import { SnapshotDevice } from "../../volume/snapshot_device.ts";
import { SERVICE_HELP, ServeService } from "../serve_service.ts";
import { MONITOR_HELP, MONITOR_OPTIONS, ServeMonitor } from "../serve_monitor.ts";
import { TLS_HELP, TLS_OPTIONS } from "../tls_options.ts";
import {
  LastError,
  SHUTDOWN_REPORT_INTERVAL_MS,
  absoluteSocket,
  bindListeners,
  untilSignal,
  volumeClosingLine,
  volumeSettings,
  volumeStopSummary,
  withSocketDirectoryLock,
  NBD_IO_HELP,
  NBD_IO_OPTIONS,
  keepAllocatorMemory,
  logServing,
  nbdRingFrom,
} from "../serve_start.ts";

import { DAEMON_HELP, DAEMON_OPTIONS, exportSpecsFrom, serveExports } from "../serve_daemon.ts";
import { READ_CACHE_DEVICE_HELP, readCacheDeviceOption } from "../read_cache_device.ts";
import type { VolumeOptions } from "../../volume/volume.ts";
import type { Uring } from "../../../ffi/uring.ts";
import { sharedDiskNote } from "../backend_placement.ts";

export { readCacheDeviceOption };

export { parseListen, readCacheOption } from "../serve_start.ts";

const USAGE = "lsvd serve --cache CACHE [--socket PATH] [--listen HOST:PORT] [--name EXPORT] [--read-only] [--tls on|require --tls-certificates DIR] [--pid-file PATH] VOLUME | lsvd serve --read-only [--socket PATH] [--listen HOST:PORT] VOLUME@SNAP | lsvd serve (--export NAME=VOLUME,cache=CACHE[,...] ... | --config FILE) [--socket PATH] [--listen HOST:PORT]";
const HELP = `Usage: ${USAGE}

Serves VOLUME over NBD, journaling writes to CACHE. With neither --socket nor --listen (nor sockets passed by
systemd, see below), listens on TCP 127.0.0.1:${NBD_PORT_DEFAULT}. Binding to a non-loopback address must be asked for explicitly with --listen.
Every listener is bound before the volume is opened (recovery can delete objects, so it runs only when the
server can serve): a --socket PATH where a server answers is refused (exit 1) and left alone, a stale one (its
server died) is replaced; a port in use fails at once (exit 1). Clients that connect during recovery are greeted
when it ends.
SIGINT/SIGTERM: stop accepting, finish in-flight requests, flush everything to the backend, exit 0; while that
waits (e.g. for an unreachable backend), a line every ${SHUTDOWN_REPORT_INTERVAL_MS / 1000} s says what for. A second signal exits at once
(the journal keeps every acknowledged write).

Connections: at most ${NBD_CONNECTIONS_MAX}, of which at most ${NBD_NEGOTIATING_MAX} still negotiating; more are refused. A
client must finish negotiating within --handshake-timeout-ms of its greeting or is disconnected. Failed
requests are logged with command, offset, length and cause (${NBD_ERROR_LOG_LINES_PER_SECOND} lines a second at most, the rest
counted in a summary), also with --quiet.

Options:
  --volume VOLUME        the volume, instead of the VOLUME argument (see below)
  --cache CACHE          its cache file or device (made by 'lsvd mkcache')
  --socket PATH          listen on a unix socket
  --listen HOST:PORT     listen on TCP (e.g. 127.0.0.1:10809, [::1]:10809)
  --name EXPORT          export name (default ""); clients may ask for it or for the default export "",
                         any other name is refused
  --read-only            refuse writes from clients
  --read-cache           keep blocks read from the backend, and blocks written once they are in the
                         backend, in the cache's read-cache region, kept across restarts
  --no-read-cache        no read cache (the default for the file backend; rados:// and s3:// volumes
                         use one unless told: docs/architecture.md, "The read path")
${READ_CACHE_DEVICE_HELP}
  --batch-size SIZE      backend object data size (default ${BATCH_BYTES_DEFAULT / 1024 / 1024}m, ${formatSize(BATCH_BYTES_MIN)}..${formatSize(BATCH_BYTES_MAX)})
  --batch-idle-ms MS     put a partial batch after this long without writes (default ${BATCH_IDLE_MS_DEFAULT})
  --gc-threshold F       garbage collection copies the live data of objects whose live share is below F
                         (default ${GC_THRESHOLD_DEFAULT}; 0: only delete objects with no live data left). A lower F
                         copies less and lets the backend hold more: writes wait for space only while it
                         holds over 1.8x the live data (0.9/F x for F below 0.5; never for F = 0)
  --no-gc                no garbage collection: objects are never deleted
  --handshake-timeout-ms MS
                         a client must finish negotiating this long after its greeting, or it is
                         disconnected (default ${NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT})
  --quiet                the same as --log-level warn: only failed requests, backend retries, warnings
                         and errors
${NBD_IO_HELP}
${TLS_HELP}
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}
${SERVICE_HELP}
${MONITOR_HELP}
${DAEMON_HELP}

Snapshots: VOLUME@SNAP with --read-only serves snapshot SNAP of VOLUME (see 'lsvd snapshot'), read from the backend:
no --cache is needed and no lease is taken, so it may run while another process serves VOLUME itself.

Ownership: serve takes the volume's lease first, also with --read-only (recovery writes to the backend); a volume
another process owns is refused at once (exit 1), naming the holder (see 'lsvd lock show'). A server that loses the
lease (it could not renew it in time, or another process took the volume over) answers every request with an error,
says so in its log and exits 1. With --export/--config, only that export answers errors and the others go on; the
server exits 1 when stopped (or at once when every export lost its volume).
`;

/**
 * Step 2: ownership of the volume is taken here, between binding and recovery (the lease says where it is served);
 * then recovery, showing its progress.
 */
async function openServedVolume(
  parsed: Parsed,
  target: { volumeUri: string; cachePath: string; settings: ReturnType<typeof volumeSettings> & { sharedReadCache?: VolumeOptions["sharedReadCache"] } },
  server: NbdServer,
  monitor: ServeMonitor,
  info: LogFn,
  lastError: LastError,
  ring: Uring | null,
): Promise<OpenedVolume> {
  const addresses = [...server.addresses.map(absoluteSocket), ...monitor.addresses];
  const holder = { command: "serve", addresses, leaseDurationMs: leaseDurationFrom(parsed) };
  const progress = new Progress("recovery", logEnabled("info"), process.stderr, info);
  try {
    return await openVolumeForCommand(target.volumeUri, target.cachePath, backendOptionsFrom(parsed), lastError.wrap(info, true), holder, {
      ...target.settings,
      log: lastError.wrap(info, false),
      progress: (what, done, total) => progress.count(done, total, what),
    }, monitor.meters, { readCache: null, ring });
  } finally {
    progress.clear();
  }
}

/** What a waiting shutdown waits for: connections first, then the volume's objects. */
function shutdownWaitLine(phase: "connections" | "volume", server: NbdServer, opened: OpenedVolume, lastError: LastError): string {
  if (phase === "connections") {
    const stats = server.stats();
    return `waiting for ${stats.connections} connection(s) to finish ${stats.requestsInFlight} request(s) in flight and take their replies (at most ${NBD_CLOSE_DRAIN_MS_MAX / 1000} s)`;
  }
  return volumeClosingLine(opened, lastError);
}

/** Step 4: drain the server, close the volume, and say periodically what is still awaited. */
async function shutDown(server: NbdServer, opened: OpenedVolume, lastError: LastError, log: LogFn): Promise<void> {
  let phase: "connections" | "volume" = "connections";
  const timer = setInterval(() => log(shutdownWaitLine(phase, server, opened, lastError)), SHUTDOWN_REPORT_INTERVAL_MS);
  try {
    await server.close();
    phase = "volume";
    await opened.close();
  } finally {
    clearInterval(timer);
  }
}

/** VOLUME@SNAP: the volume and the snapshot's name; null for a plain VOLUME. */
function snapshotOf(target: string): { volumeUri: string; name: string } | null {
  const at = target.lastIndexOf("@");
  if (at < 0 || target.slice(at + 1).includes("/")) return null;
  return { volumeUri: target.slice(0, at), name: target.slice(at + 1) };
}

/**
 * `serve --volume VOLUME@SNAP --read-only`: the snapshot's map over the backend (SnapshotDevice), no cache, no lease;
 * it may run while the head is served elsewhere. Stops on SIGINT/SIGTERM.
 */
async function serveSnapshot(parsed: Parsed, target: { volumeUri: string; name: string }, ring: Uring | null): Promise<number> {
  if (parsed.values["read-only"] !== true) throw new InvalidArgumentError(`a snapshot is served read-only: add --read-only. Usage: ${USAGE}`);
  const log = makeLogger("lsvd", false, "warn");
  const info = makeLogger("lsvd");
  const backend = await openBackend(target.volumeUri, backendOptionsFrom(parsed));
  let device: SnapshotDevice;
  try {
    device = await SnapshotDevice.open(backend.store, backend.prefix, target.name);
  } catch (error) {
    await backend.store.close();
    throw error;
  }
  const service = ServeService.begin({ pidFile: stringOption(parsed, "pid-file"), socket: stringOption(parsed, "socket"), listen: stringOption(parsed, "listen") }, log);
  const server = await bindListeners(parsed, info, log, service.inherited, ring);
  const uri = `${backend.uri}@${target.name}`;
  info(`snapshot ${uri} (seq ${device.snapshot.seq}, ${device.extentCount} extents, ${formatSize(device.sizeBytes)}), read-only, no cache`);
  server.serve({ device, exportName: stringOption(parsed, "name") ?? "", description: `lsvd snapshot ${uri}` });
  // Signal handlers before the "serving on" lines: whoever waits for those may signal at once (untilSignal).
  const stopped = untilSignal(log, info, async (why) => {
    service.stopping(why);
    await server.close();
  }, () => {});
  service.serving(uri, server.addresses);
  keepAllocatorMemory(info);
  logServing(info, parsed, ring, server.addresses);
  try {
    await stopped;
  } finally {
    service.exiting();
    await backend.store.close();
  }
  return 0;
}

const OPTIONS: OptionSpec = {
  volume: { type: "string" },
  cache: { type: "string" },
  socket: { type: "string" },
  listen: { type: "string" },
  name: { type: "string", default: "" },
  "read-only": { type: "boolean" },
  "read-cache": { type: "boolean" },
  "no-read-cache": { type: "boolean" },
  "read-cache-device": { type: "string" },
  "batch-size": { type: "string", default: `${BATCH_BYTES_DEFAULT / 1024 / 1024}m` },
  "batch-idle-ms": { type: "string", default: String(BATCH_IDLE_MS_DEFAULT) },
  "gc-threshold": { type: "string", default: String(GC_THRESHOLD_DEFAULT) },
  "no-gc": { type: "boolean" },
  "handshake-timeout-ms": { type: "string", default: String(NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT) },
  quiet: { type: "boolean" },
  "pid-file": { type: "string" },
  ...TLS_OPTIONS,
  ...NBD_IO_OPTIONS,
  ...LEASE_OPTIONS,
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
  ...MONITOR_OPTIONS,
  ...DAEMON_OPTIONS,
};

export const serveCommand: Command = {
  name: "serve",
  summary: "serve a volume over NBD (TCP or unix socket)",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const exportSpecs = exportSpecsFrom(parsed);
    if (exportSpecs === null) return await serveVolume(parsed);
    // One shared read-cache device for every export (read-cache=off excepted), closed after the last export.
    const readCache = await readCacheDeviceOption(parsed, makeLogger("lsvd"));
    let ring: Uring | null = null;
    try {
      ring = nbdRingFrom(parsed, exportSpecs.length, makeLogger("lsvd"));
      return await serveExports(parsed, exportSpecs, { readCache: readCache ?? null, ring });
    } finally {
      await readCache?.close().catch(() => undefined); // a failure only loses warmth
      await ring?.close(); // after the server and every volume: none has an op on it left
    }
  },
};

/** The single-volume form: VOLUME with --cache, or a snapshot VOLUME@SNAP; on the --nbd-io ring if one is asked for. */
async function serveVolume(parsed: Parsed): Promise<number> {
  const snapshotTarget = snapshotOf(namedArguments(parsed, ["VOLUME"], USAGE).VOLUME!);
  const ring = nbdRingFrom(parsed, 1, makeLogger("lsvd"));
  try {
    if (snapshotTarget !== null) return await serveSnapshot(parsed, snapshotTarget, ring);
    return await serveHead(parsed, ring);
  } finally {
    await ring?.close(); // after the server and the volume: neither has an op on it left
  }
}

/** VOLUME with --cache. */
async function serveHead(parsed: Parsed, ring: Uring | null): Promise<number> {
  const { volumeUri, cachePath } = requireVolumeAndCache(parsed, USAGE);
  const settings = volumeSettings(parsed, volumeUri);
  // Two channels: what went wrong or needs an eye (warn: failed requests, backend retries), and what serve does
  // (info). A line's own prefix ("error: ", "debug: ") overrides its channel (util/log.ts).
  const log = makeLogger("lsvd", false, "warn");
  const info = makeLogger("lsvd");
  const lastError = new LastError();

  const service = ServeService.begin(
    { pidFile: stringOption(parsed, "pid-file"), socket: stringOption(parsed, "socket"), listen: stringOption(parsed, "listen") },
    log,
  );
  const server = await bindListeners(parsed, info, log, service.inherited, ring);
  const monitor = await ServeMonitor.open(parsed, volumeUri, cachePath, info, withSocketDirectoryLock).catch(async (error) => {
    await server.close();
    throw error;
  });
  service.recovering(volumeUri);
  const { opened, sharedReadCache } = await openWithReadCacheDevice(parsed, { volumeUri, cachePath, settings }, server, monitor, info, lastError, ring);
  const { volume, uri } = opened;
  info(`volume ${uri} (${formatSize(volume.sizeBytes)}, UUID ${volume.volUuid}) with cache ${cachePath}`);
  const placement = sharedDiskNote(volumeUri, cachePath, volume.readOnly);
  if (placement !== null) info(placement);
  server.serve({ device: volume, exportName: stringOption(parsed, "name") ?? "", description: `lsvd volume ${uri}`, requestObserver: monitor.nbdObserver });
  monitor.serving(server, opened);
  const started = Date.now();
  // Losing the volume is final: every request fails from then on (the volume checks the lease), so the server goes.
  let lostReason: string | null = null;
  const onLost = (stop: (why: string) => void) =>
    opened.lease.onFenced((reason) => {
      lostReason = reason;
      log(`error: this server no longer owns volume ${uri}: ${reason}. It answers every request with an error, puts nothing more, and exits (acknowledged writes not yet in the backend reach the volume only if it is served again with cache ${cachePath} before anyone else writes it)`);
      stop("lost ownership");
    });
  const shutDownNow = (why: string) => {
    service.stopping(why);
    monitor.draining();
    return shutDown(server, opened, lastError, monitor.waitLog(service.statusLog(log)));
  };
  // Signal handlers first (untilSignal), then the pid file and READY=1, then the "serving on" lines, so that whoever
  // waits for those finds all of it done and may signal at once.
  const stopped = untilSignal(log, info, shutDownNow, onLost);
  service.serving(uri, server.addresses);
  keepAllocatorMemory(info);
  logServing(info, parsed, ring, server.addresses);
  try {
    await stopped;
  } catch (error) {
    if (lostReason !== null) {
      log(`exiting: volume ${uri} was lost (${lostReason})`);
      return 1;
    }
    log(`error: shutdown failed: ${String(error)} (acknowledged writes remain in the journal and are replayed on the next start)`);
    return 1;
  } finally {
    service.exiting();
    monitor.close();
    await sharedReadCache?.close().catch(() => undefined); // after the volume: a failure only loses warmth
  }
  if (lostReason !== null) return 1;
  info(volumeStopSummary(volume.stats(), (Date.now() - started) / 1000));
  return 0;
}

/** Opens the shared read-cache device (when --read-cache-device names one), then the served volume with it; on a
 * failure closes what start-up opened so far (device, monitor, listeners) before rethrowing. */
async function openWithReadCacheDevice(
  parsed: Parsed,
  target: { volumeUri: string; cachePath: string; settings: ReturnType<typeof volumeSettings> },
  server: NbdServer,
  monitor: ServeMonitor,
  info: LogFn,
  lastError: LastError,
  ring: Uring | null,
): Promise<{ opened: OpenedVolume; sharedReadCache: SharedReadCache | undefined }> {
  let sharedReadCache: SharedReadCache | undefined = undefined;
  try {
    sharedReadCache = await readCacheDeviceOption(parsed, info);
    const opened = await openServedVolume(parsed, { ...target, settings: { ...target.settings, sharedReadCache } }, server, monitor, info, lastError, ring);
    return { opened, sharedReadCache };
  } catch (error) {
    await sharedReadCache?.close();
    monitor.close();
    await server.close();
    throw error;
  }
}
