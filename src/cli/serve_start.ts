// What every form of `lsvd serve` does at start-up and shutdown (commands/serve.ts for one volume or a snapshot,
// serve_daemon.ts for several exports): the options shared by all, binding the listeners (step 1 of the start-up
// order in commands/serve.ts), the last backend complaint that shutdown reports quote, what a closing or stopped volume reports, and the signal
// handling.

import { release } from "node:os";
import { dirname, resolve as resolvePath } from "node:path";
import { closeFile, openFile, O_CLOEXEC, tryLockExclusive } from "../../ffi/libc.ts";
import { keepFreedMemory, PURGE_DELAY_VARIABLE } from "../../ffi/mimalloc_options.ts";
import { Uring } from "../../ffi/uring.ts";
import {
  BATCH_BYTES_MAX,
  BATCH_BYTES_MIN,
  NBD_PORT_DEFAULT,
  NBD_URING_SOCKET_SLOTS,
  PAGE_BYTES,
  SECTOR_BYTES,
  URING_POLL_IDLE_TURNS,
  URING_QUEUE_DEPTH,
} from "../constants.ts";
import { IOError, InvalidArgumentError } from "../errors.ts";
import { listenNbd, type NbdServer } from "../nbd/server.ts";
import { isIpLiteral } from "../ops/socket_address.ts";
import type { InheritedListener } from "../ops/systemd.ts";
import type { LogFn } from "../util/log.ts";
import { formatSize, parseSize } from "../util/size.ts";
import type { WriteStats } from "../volume/write/stats.ts";
import { gcThresholdOption, stringOption, type OptionSpec, type Parsed } from "./args.ts";
import type { OpenedVolume } from "./open_volume.ts";
import { tlsFrom } from "./tls_options.ts";

/** While a clean shutdown waits, it says what for this often. */
export const SHUTDOWN_REPORT_INTERVAL_MS = 5000;
/** Another lsvd binding in the same directory holds its lock for milliseconds; give up after this long. */
const SOCKET_DIRECTORY_LOCK_WAIT_MS_MAX = 10_000;

export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError(`Invalid --listen '${text}': expected HOST:PORT`);
  return { host: (match[1] ?? match[2])!, port };
}

export function positiveIntegerOption(parsed: Parsed, name: string): number | undefined {
  const text = parsed.values[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!(Number.isSafeInteger(value) && value > 0)) throw new InvalidArgumentError(`Invalid --${name} '${String(text)}': expected a positive integer`);
  return value;
}

function batchSizeOption(parsed: Parsed): number | undefined {
  if (parsed.values["batch-size"] === undefined) return undefined;
  const batchBytes = parseSize(String(parsed.values["batch-size"]), "batch size");
  if (batchBytes < BATCH_BYTES_MIN || batchBytes > BATCH_BYTES_MAX || batchBytes % PAGE_BYTES !== 0) {
    throw new InvalidArgumentError(`Invalid --batch-size: expected a multiple of 4 KiB in ${formatSize(BATCH_BYTES_MIN)}..${formatSize(BATCH_BYTES_MAX)}`);
  }
  return batchBytes;
}

/**
 * Runs `bind` holding an exclusive flock on the socket's directory, so that two servers starting at once cannot
 * both find one stale socket, and the second remove the first's fresh one. The lock is held for milliseconds.
 */
export async function withSocketDirectoryLock<T>(socketPath: string, bind: () => Promise<T>): Promise<T> {
  const directory = dirname(socketPath);
  const fd = openFile(directory, O_CLOEXEC, 0); // O_RDONLY is 0
  try {
    const deadline = Date.now() + SOCKET_DIRECTORY_LOCK_WAIT_MS_MAX;
    while (!tryLockExclusive(fd, directory)) {
      if (Date.now() > deadline) throw new IOError(`Cannot listen on ${socketPath}: another process holds the lock on ${directory}`);
      await Bun.sleep(10);
    }
    return await bind();
  } finally {
    closeFile(fd, directory);
  }
}

/** An NBD URI with its unix socket path made absolute: the lease tells other processes (other directories) where. */
export function absoluteSocket(uri: string): string {
  const match = /^nbd\+unix:\/\/\/\?socket=(.*)$/.exec(uri);
  return match === null ? uri : `nbd+unix:///?socket=${resolvePath(match[1]!)}`;
}

/** The kernel NBD on io_uring needs: provided-buffer rings (5.19) and multishot receives (6.0). */
const NBD_URING_KERNEL_MIN = [6, 0] as const;

export const NBD_IO_OPTIONS: OptionSpec = { "nbd-io": { type: "string", default: "auto" } };

export const NBD_IO_HELP = `  --nbd-io MODE          how NBD bytes move (default auto). uring: the server's own sockets, whose accepts,
                         receives and sends are io_uring ops on the ring the journal uses: one submit and
                         one wake for network and disk together (docs/architecture.md, "NBD on io_uring");
                         no TLS, --listen takes IP addresses. socket: Bun's sockets. auto: uring on Linux
                         ${NBD_URING_KERNEL_MIN.join(".")} or later without --tls and with IP addresses, else socket (it says why)`;

/**
 * Why `--nbd-io auto` serves on Bun's sockets (null: it can use the ring): TLS asked for, a --listen host name, or a
 * kernel older than NBD_URING_KERNEL_MIN.
 */
export function nbdRingUnfit(parsed: Parsed, kernelRelease: string = release()): string | null {
  if ((parsed.values.tls ?? "off") !== "off") return "--tls is on, and only Bun's sockets offer TLS";
  const listenText = stringOption(parsed, "listen");
  if (listenText !== undefined && !isIpLiteral(parseListen(listenText).host)) return `--listen names a host (${listenText}), not an IP address`;
  const [major, minor] = kernelRelease.split(".").map((part) => Number.parseInt(part, 10));
  const [majorMin, minorMin] = NBD_URING_KERNEL_MIN;
  if (!(major! > majorMin || (major === majorMin && minor! >= minorMin))) return `kernel ${kernelRelease} is older than ${majorMin}.${minorMin}`;
  return null;
}

/**
 * --nbd-io: null for Bun's sockets; for the ring, the one the NBD sockets and the served volumes' cache devices share:
 * URING_QUEUE_DEPTH file slots per volume, NBD_URING_SOCKET_SLOTS socket slots. The caller closes it after the server
 * and the volumes are closed. `auto` falls back to sockets where the ring cannot serve; logServing says which served.
 */
export function nbdRingFrom(parsed: Parsed, volumes: number, info: LogFn): Uring | null {
  const mode = nbdIoMode(parsed);
  if (mode === "socket") return null;
  if (mode === "uring" && (parsed.values.tls ?? "off") !== "off") throw new InvalidArgumentError("--nbd-io uring offers no TLS: leave --tls off, or serve TLS with --nbd-io socket");
  if (mode === "auto" && nbdRingUnfit(parsed) !== null) return null;
  try {
    return openNbdRing(volumes);
  } catch (error) {
    if (mode === "uring" || !(error instanceof IOError)) throw error;
    info(`NBD on Bun's sockets (--nbd-io auto): ${error.message}`);
    return null;
  }
}

/** The ring NBD on io_uring and `volumes` cache devices share (also the bench's null device's, with 0 volumes). */
export function openNbdRing(volumes: number): Uring {
  return Uring.open(Math.min(4096, URING_QUEUE_DEPTH * Math.max(1, volumes)), URING_POLL_IDLE_TURNS, NBD_URING_SOCKET_SLOTS);
}

function nbdIoMode(parsed: Parsed): "auto" | "socket" | "uring" {
  const mode = stringOption(parsed, "nbd-io") ?? "auto";
  if (mode !== "auto" && mode !== "socket" && mode !== "uring") throw new InvalidArgumentError(`Invalid --nbd-io '${mode}': expected auto, socket or uring`);
  return mode;
}

/**
 * The "serving on" lines, after one saying how NBD bytes move when --nbd-io chose (on the ring, or on Bun's sockets
 * and why), once the server serves: a start that is refused prints its error alone.
 */
export function logServing(info: LogFn, parsed: Parsed, ring: Uring | null, addresses: readonly string[], suffix = ""): void {
  const mode = nbdIoMode(parsed);
  const unfit = mode === "auto" && ring === null ? nbdRingUnfit(parsed) : null;
  if (ring !== null) info(`NBD on io_uring (--nbd-io ${mode})`);
  else if (unfit !== null) info(`NBD on Bun's sockets (--nbd-io auto): ${unfit}`);
  for (const address of addresses) info(`serving on ${address}${suffix}`);
}

/**
 * Once the server is about to serve (a start that is refused prints its error alone): the allocator keeps freed
 * memory for reuse instead of returning it to the kernel after a delay (ffi/mimalloc_options.ts; docs/platform.md,
 * "The allocator's purge"), and one line says how that was settled.
 */
export function keepAllocatorMemory(info: LogFn): void {
  const outcome = keepFreedMemory();
  if (outcome.state === "off") {
    info(`allocator: freed memory kept for reuse (mimalloc's purge delay ${outcome.previousMs} ms -> never; ${PURGE_DELAY_VARIABLE} in the environment overrides)`);
  } else if (outcome.state === "environment") {
    info(`allocator: ${PURGE_DELAY_VARIABLE}=${outcome.value} from the environment`);
  } else {
    info(`warning: allocator: freed memory is given back to the kernel (${outcome.reason}), which costs CPU per write; ${PURGE_DELAY_VARIABLE}=-1 in the environment keeps it`);
  }
}

/** Step 1: bind every listener, before anything irreversible happens (on `ring` for --nbd-io uring). */
export async function bindListeners(parsed: Parsed, info: LogFn, log: LogFn, inherited: InheritedListener[], ring: Uring | null = null): Promise<NbdServer> {
  const tls = tlsFrom(parsed, info);
  const common = { log: info, errorLog: log, handshakeTimeoutMs: positiveIntegerOption(parsed, "handshake-timeout-ms"), tls, ring: ring ?? undefined };
  if (inherited.length > 0) return listenNbd({ inherited, ...common });
  const socketPath = stringOption(parsed, "socket");
  const listenText = stringOption(parsed, "listen");
  const listen = listenText ? parseListen(listenText) : socketPath ? undefined : { host: "127.0.0.1", port: NBD_PORT_DEFAULT };
  const bind = () => listenNbd({ socketPath, listen, ...common });
  return socketPath === undefined ? bind() : withSocketDirectoryLock(socketPath, bind);
}

/**
 * The last complaint about the backend or the volume: the store's retry reports and the volume's `error:` lines (a
 * put the store gave up on is retried by the volume, which says so). Shutdown reports quote it.
 */
export class LastError {
  line: string | null = null;
  atMs = 0;

  wrap(log: LogFn, everyLine: boolean): LogFn {
    return (line, fields) => {
      // The store's warnings (retries) count, but not its "reachable again" line, which ends an outage.
      if ((everyLine && line.startsWith("warning:") && !line.includes(": reachable again after ")) || line.startsWith("error:")) {
        this.line = line;
        this.atMs = Date.now();
      }
      log(line, fields);
    };
  }

  describe(): string {
    if (this.line === null) return "";
    return `; last error ${((Date.now() - this.atMs) / 1000).toFixed(0)} s ago: ${this.line.replace(/^(error|warning): /, "")}`;
  }
}

/**
 * --read-cache / --no-read-cache; by default on for rados:// and s3:// and off for the file backend. Measured
 * (bench/RESULTS.md, "Read cache keyed by object"): on RADOS a warm cache serves 4 KiB random reads about 2x as fast
 * as the backend does, also right after a restart, for a cold-read cost of 0.8-0.95x; on the file backend the host's
 * page cache serves reads faster than the cache (docs/architecture.md, "The read path").
 */
export function readCacheOption(parsed: Parsed, volumeUri: string): boolean {
  const on = parsed.values["read-cache"] === true;
  const off = parsed.values["no-read-cache"] === true;
  if (on && off) throw new InvalidArgumentError("--read-cache and --no-read-cache contradict each other: give one");
  if (on || off) return on;
  return /^(rados|s3):\/\//i.test(volumeUri);
}

/** The volume's settings from the arguments, checked before anything is bound. */
export function volumeSettings(parsed: Parsed, volumeUri: string) {
  return {
    readOnly: parsed.values["read-only"] === true,
    readCache: readCacheOption(parsed, volumeUri),
    batchBytes: batchSizeOption(parsed),
    batchIdleMs: positiveIntegerOption(parsed, "batch-idle-ms"),
    gc: parsed.values["no-gc"] !== true,
    gcThreshold: gcThresholdOption(parsed),
  };
}


/**
 * Resolves on the first SIGINT/SIGTERM (after the clean shutdown); a second one exits at once. `stopOn` may start the
 * shutdown too (the lease was lost). Call it before announcing "serving on": until the handlers are installed a
 * SIGTERM kills the process outright, and whoever waits for that line may signal at once (a test did, once).
 */
export function untilSignal(log: LogFn, info: LogFn, shutDownNow: (why: string) => Promise<void>, stopOn: (stop: (why: string) => void) => void): Promise<void> {
  const stopped = Promise.withResolvers<void>();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log(`${signal} again: exiting without a clean shutdown (the journal keeps every acknowledged write)`);
      process.exit(130);
    }
    stopping = true;
    info(`${signal}: shutting down (draining requests, flushing to the backend)`);
    shutDownNow(signal).then(stopped.resolve, stopped.reject);
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  stopOn((why) => {
    if (!stopping) stop(why);
  });
  return stopped.promise;
}


/** What a closing volume still waits for: its objects to reach the backend, or the last steps of its close. */
export function volumeClosingLine(opened: OpenedVolume, lastError: LastError): string {
  const { objects, bytes } = opened.volume.backendBacklog();
  const durableSeq = opened.volume.stats().durableSeq;
  if (objects === 0) return `waiting for the volume to finish closing (superblock update, journal tail)${lastError.describe()}`;
  return `waiting for ${objects} object(s) (${formatSize(bytes)}) to reach the backend (durable up to seq ${durableSeq})${lastError.describe()}`;
}

/** The line a cleanly stopped volume ends with: what it did while served. */
export function volumeStopSummary(stats: ReturnType<OpenedVolume["volume"]["stats"]>, seconds: number): string {
  const gc = stats.gc ? `; gc cleaned ${stats.gc.objectsCleaned} objects (${formatSize(stats.gcCopiedSectors * SECTOR_BYTES)} copied) and deleted ${stats.gc.objectsDeleted}` : "";
  return `stopped after ${seconds.toFixed(1)} s: ${stats.writes} writes (${formatSize(stats.writeBytes)}), ${stats.trims} trims/zeroes, ${stats.records} journal records, ${stats.objects} objects put (${formatSize(stats.putBytes)}, ${stats.objectsReadBack} read back from the journal first), ${stats.checkpoints} checkpoints, ${stats.backendReads} backend reads, ${stats.extents} extents${gc}${writeWaitsPhrase(stats)}`;
}

/** Where the write path held writes back while served, how often and how long in all ("" if it never did). */
function writeWaitsPhrase(stats: WriteStats): string {
  const waits: Array<[string, number, number]> = [
    ["client writes waited for backend space", stats.spaceWaits, stats.spaceWaitMs],
    ["records waited for a journal write slot", stats.journalSlotWaits, stats.journalSlotWaitMs],
    ["records waited for journal space", stats.journalSpaceWaits, stats.journalSpaceWaitMs],
    ["batches waited for objects ahead of the backend", stats.aheadWaits, stats.aheadWaitMs],
  ];
  return waits
    .filter(([, count]) => count > 0)
    .map(([what, count, ms]) => `; ${count} ${what} (${(ms / 1000).toFixed(2)} s in all)`)
    .join("");
}
