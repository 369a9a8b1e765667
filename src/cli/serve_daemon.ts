// `lsvd serve --export NAME=VOLUME,cache=CACHE ...` or `--config FILE`: one process serving several volumes, each as
// its own NBD export (docs/architecture.md, "One daemon, many exports"). Each export has its own volume, cache file,
// lease, recovery, GC and checkpoints; they share the listeners, the admin socket, the metrics endpoint, the event
// loop, and the resources made once per process (SharedResources).
//
// Start-up order (that of commands/serve.ts, over every export):
//   1. bind every listener, the admin socket and the metrics port;
//   2. take every export's lease, one after the other; the first refusal fails the start at once, naming the holder,
//      after giving back the leases already taken (nothing was written under them);
//   3. open every volume (recovery), side by side; one that fails fails the start, the others are closed cleanly;
//   4. serve every export; on SIGINT/SIGTERM drain connections, then close every volume (each checkpoints), saying
//      every few seconds which exports are still closing and what each waits for.
//
// Isolation: exports share no queue, lock or device. A volume's backend failing, its journal filling up or its lease
// being lost makes that export's requests wait or fail; the others' requests go on (all waits are asynchronous). An
// export that lost its lease answers errors until the server stops; the server stops by itself only when every
// export is lost.

import { InvalidArgumentError, LsvdError } from "../errors.ts";
import type { NbdServer } from "../nbd/server.ts";
import { logEnabled, makeLogger, type LogFn } from "../util/log.ts";
import { formatSize } from "../util/size.ts";
import { backendOptionsFrom, stringOption, type OptionSpec, type Parsed } from "./args.ts";
import { NO_SHARED_RESOURCES, ownVolume, type OpenedVolume, type OwnedVolume, type SharedResources } from "./open_volume.ts";
import { leaseDurationFrom } from "./ownership.ts";
import { Progress } from "./progress.ts";
import { checkExports, parseExportSpec, readExportConfig, type ExportSpec } from "./serve_exports.ts";
import { ADMIN_SOCKET_DIRECTORY, defaultDaemonAdminSocketPath, ServeMonitor } from "./serve_monitor.ts";
import { ServeService } from "./serve_service.ts";
import { sharedDiskNote } from "./backend_placement.ts";
import { LastError, SHUTDOWN_REPORT_INTERVAL_MS, absoluteSocket, bindListeners, keepAllocatorMemory, logServing, untilSignal, volumeClosingLine, volumeSettings, volumeStopSummary, withSocketDirectoryLock } from "./serve_start.ts";

export const DAEMON_OPTIONS: OptionSpec = {
  export: { type: "string", multiple: true },
  config: { type: "string" },
};

export const DAEMON_HELP = `Several volumes in one process (docs/operations.md, "Serving several volumes"):
  --export SPEC          serve a volume as its own export; repeat for more. SPEC is
                         NAME=VOLUME,cache=CACHE[,read-only][,read-cache=on|off][,gc=on|off]: the export NAME
                         (letters, digits, '.', '_', '-'), the volume, and its own cache file. Clients pick the
                         export by NAME (NBD_OPT_LIST lists them). --read-only, --read-cache, --no-gc and the
                         batch and lease options apply to every export unless its SPEC says otherwise
  --config FILE          the exports from FILE: one SPEC per line, '#' comments and blank lines skipped
  One admin socket serves every export: without --admin-socket, ${ADMIN_SOCKET_DIRECTORY}/config-<FILE>.asok or
  ${ADMIN_SOCKET_DIRECTORY}/exports-<NAME-NAME...>.asok; 'lsvd status VOLUME' finds it through VOLUME's lease.`;

/** The exports --export/--config ask for, checked; null for the single-volume form. */
export function exportSpecsFrom(parsed: Parsed): ExportSpec[] | null {
  const given = parsed.values.export as unknown as string[] | undefined;
  const config = stringOption(parsed, "config");
  if (given === undefined && config === undefined) return null;
  if (given !== undefined && config !== undefined) throw new InvalidArgumentError("--export and --config cannot be combined: put every export in the config file");
  for (const option of ["cache", "volume", "name"]) {
    if (parsed.values[option] !== undefined && !(option === "name" && parsed.values.name === "")) {
      throw new InvalidArgumentError(`--${option} is for serving one volume; with --export/--config each export says its own`);
    }
  }
  if (parsed.positionals.length > 0) throw new InvalidArgumentError(`unexpected argument '${parsed.positionals[0]}': with --export/--config the exports name the volumes`);
  const specs = config !== undefined ? readExportConfig(config) : given!.map((text) => withOption("--export", () => parseExportSpec(text)));
  checkExports(specs);
  return specs;
}

function withOption<T>(option: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new InvalidArgumentError(`${option}: ${error.message}`);
    throw error;
  }
}

/** `log` with every line saying which export it is about (after its level prefix), and `export` in its fields. */
function exportLog(log: LogFn, name: string): LogFn {
  return (line, fields) => {
    const level = /^(error|warning|debug): /.exec(line)?.[0] ?? "";
    log(`${level}export ${name}: ${line.slice(level.length)}`, { ...fields, export: name });
  };
}

/** An error of one export's start, saying which export (same kind, so the exit code stays). */
function aboutExport(error: unknown, name: string): unknown {
  if (error instanceof LsvdError) error.message = `export ${name}: ${error.message}`;
  return error;
}

/** One export while it is served. */
interface Served {
  spec: ExportSpec;
  opened: OpenedVolume;
  lastError: LastError;
  lost: string | null;
}

/** Step 2: every lease, in order; a refusal gives back those taken and fails the start. */
async function takeLeases(parsed: Parsed, specs: readonly ExportSpec[], server: NbdServer, monitor: ServeMonitor, logs: LogFn[]): Promise<OwnedVolume[]> {
  const owned: OwnedVolume[] = [];
  for (const [index, spec] of specs.entries()) {
    const addresses = [...server.addressesFor(spec.name).map(absoluteSocket), ...monitor.addresses];
    const holder = { command: "serve", addresses, leaseDurationMs: leaseDurationFrom(parsed) };
    try {
      owned.push(await ownVolume(spec.volumeUri, backendOptionsFrom(parsed), logs[index]!, holder, monitor.metersFor(index)));
    } catch (error) {
      for (const taken of owned) await taken.release();
      throw aboutExport(error, spec.name);
    }
  }
  return owned;
}

/** Step 3: every volume's recovery, side by side; one failure closes the others (cleanly) and fails the start. */
async function openVolumes(parsed: Parsed, specs: readonly ExportSpec[], owned: OwnedVolume[], logs: { info: LogFn[]; lastErrors: LastError[] }, shared: SharedResources, info: LogFn): Promise<OpenedVolume[]> {
  const progress = new Progress("recovery", logEnabled("info"), process.stderr, info);
  const settled = await Promise.allSettled(specs.map((spec, index) => {
    const base = volumeSettings(parsed, spec.volumeUri);
    const settings = { ...base, readOnly: base.readOnly || spec.readOnly, readCache: spec.readCache ?? base.readCache, gc: spec.gc ?? base.gc };
    return owned[index]!.open(spec.cachePath, {
      ...settings,
      log: logs.lastErrors[index]!.wrap(logs.info[index]!, false),
      progress: (what, done, total) => progress.count(done, total, `${spec.name}: ${what}`),
    }, spec.readCache === false ? { ...shared, readCache: null } : shared); // read-cache=off: not even the shared device
  }));
  progress.clear();
  const failed = settled.findIndex((outcome) => outcome.status === "rejected");
  if (failed < 0) return settled.map((outcome) => (outcome as PromiseFulfilledResult<OpenedVolume>).value);
  for (const outcome of settled) {
    if (outcome.status === "fulfilled") await outcome.value.close().catch((error) => info(`error: closing after a failed start: ${String(error)}`));
  }
  throw aboutExport((settled[failed] as PromiseRejectedResult).reason, specs[failed]!.name);
}


/**
 * Step 4: stop accepting and drain every connection; each export's volume closes as soon as its own connections are
 * gone (so one export stuck on its backend does not hold the others' checkpoints). False when one did not close
 * cleanly.
 */
async function shutDownAll(server: NbdServer, exports: Served[], log: LogFn): Promise<boolean> {
  const draining = new Set<Served>(exports);
  const closing = new Set<Served>();
  const timer = setInterval(() => {
    for (const served of draining) {
      const stats = server.exportStats(served.spec.name);
      log(`export ${served.spec.name}: waiting for ${stats.connections} connection(s) to finish ${stats.requestsInFlight} request(s) in flight and take their replies`);
    }
    for (const served of closing) log(`export ${served.spec.name}: ${volumeClosingLine(served.opened, served.lastError)}`);
  }, SHUTDOWN_REPORT_INTERVAL_MS);
  try {
    const drained = server.close();
    const outcomes = await Promise.all(exports.map(async (served) => {
      await server.exportIdle(served.spec.name);
      draining.delete(served);
      closing.add(served);
      return served.opened.close().then(() => true, (error) => {
        if (served.lost !== null) log(`export ${served.spec.name}: closed without a checkpoint: it lost its volume (${served.lost})`);
        else log(`error: export ${served.spec.name}: close failed: ${String(error)} (acknowledged writes remain in its journal and are replayed on its next start)`);
        return false;
      }).finally(() => closing.delete(served));
    }));
    await drained;
    return outcomes.every(Boolean);
  } finally {
    clearInterval(timer);
  }
}


/** Serves every export until SIGINT/SIGTERM (or until every export lost its lease). The exit code. */
export async function serveExports(parsed: Parsed, specs: ExportSpec[], shared: SharedResources = NO_SHARED_RESOURCES): Promise<number> {
  const log = makeLogger("lsvd", false, "warn");
  const info = makeLogger("lsvd");
  const names = specs.map((spec) => spec.name);
  const service = ServeService.begin({ pidFile: stringOption(parsed, "pid-file"), socket: stringOption(parsed, "socket"), listen: stringOption(parsed, "listen") }, log);
  const server = await bindListeners(parsed, info, log, service.inherited, shared.ring);
  const config = stringOption(parsed, "config");
  const defaultSocket = defaultDaemonAdminSocketPath(config !== undefined ? { configFile: config } : { names });
  const monitor = await ServeMonitor.openExports(parsed, specs, defaultSocket, info, withSocketDirectoryLock).catch(async (error) => {
    await server.close();
    throw error;
  });
  service.recovering(`${specs.length} volumes (${names.join(", ")})`);
  const lastErrors = specs.map(() => new LastError());
  const infos = specs.map((spec) => exportLog(info, spec.name));
  let opened: OpenedVolume[];
  try {
    const owned = await takeLeases(parsed, specs, server, monitor, specs.map((_, index) => lastErrors[index]!.wrap(infos[index]!, true)));
    opened = await openVolumes(parsed, specs, owned, { info: infos, lastErrors }, shared, info);
  } catch (error) {
    monitor.close();
    await server.close();
    throw error;
  }
  const exports: Served[] = specs.map((spec, index) => ({ spec, opened: opened[index]!, lastError: lastErrors[index]!, lost: null }));
  for (const { spec, opened: { volume, uri } } of exports) {
    info(`export ${spec.name}: volume ${uri} (${formatSize(volume.sizeBytes)}, UUID ${volume.volUuid}${volume.readOnly ? ", read-only" : ""}) with cache ${spec.cachePath}`);
    const placement = sharedDiskNote(spec.volumeUri, spec.cachePath, volume.readOnly);
    if (placement !== null) info(`export ${spec.name}: ${placement}`);
  }
  server.serveExports(exports.map(({ spec, opened: { volume, uri } }, index) => ({
    device: volume, exportName: spec.name, description: `lsvd volume ${uri}`, requestObserver: monitor.nbdObserverFor(index),
  })));
  monitor.serving(server, opened);
  const started = Date.now();
  const onLost = (stop: (why: string) => void) => exports.forEach((served, index) =>
    served.opened.lease.onFenced((reason) => {
      served.lost = reason;
      monitor.lost(index, reason);
      log(`error: export ${served.spec.name}: this server no longer owns volume ${served.opened.uri}: ${reason}. The export answers every request with an error; the other exports go on (acknowledged writes not yet in the backend reach the volume only if it is served again with cache ${served.spec.cachePath} before anyone else writes it)`);
      if (exports.every((other) => other.lost !== null)) stop("every export lost its volume");
    }));
  let clean = false;
  // Signal handlers before the "serving on" lines: whoever waits for those may signal at once (untilSignal).
  const stopped = untilSignal(log, info, async (why) => {
    service.stopping(why);
    monitor.draining();
    clean = await shutDownAll(server, exports, monitor.waitLog(service.statusLog(log)));
  }, onLost);
  service.serving(names.join(", "), server.addresses);
  keepAllocatorMemory(info);
  logServing(info, parsed, shared.ring, server.addresses, ` (exports ${names.join(", ")})`);
  try {
    await stopped;
  } catch (error) {
    log(`error: shutdown failed: ${String(error)} (acknowledged writes remain in the journals and are replayed on the next start)`);
    return 1;
  } finally {
    service.exiting();
    monitor.close();
  }
  const seconds = (Date.now() - started) / 1000;
  for (const served of exports) if (served.lost === null) info(`export ${served.spec.name}: ${volumeStopSummary(served.opened.volume.stats(), seconds)}`);
  const lost = exports.filter((served) => served.lost !== null);
  if (lost.length > 0) log(`exiting: ${lost.length} export(s) lost their volume: ${lost.map((served) => served.spec.name).join(", ")}`);
  return clean && lost.length === 0 ? 0 : 1;
}
