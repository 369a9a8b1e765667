// lsvd serve: open a volume with its cache and serve it over NBD until SIGINT/SIGTERM, then shut down cleanly:
// stop accepting, finish in-flight requests, put everything journaled to the backend, checkpoint, exit 0.

import { writeOut } from "../output.ts";
import { BATCH_BYTES_MAX, BATCH_BYTES_MIN, GC_THRESHOLD_DEFAULT, NBD_PORT_DEFAULT, PAGE_BYTES, SECTOR_BYTES } from "../../constants.ts";
import { IOError, InvalidArgumentError, LsvdError } from "../../errors.ts";
import { startNbdServer } from "../../nbd/server.ts";
import { openVolumeForCommand } from "../open_volume.ts";
import { makeLogger } from "../../util/log.ts";
import { formatSize, parseSize } from "../../util/size.ts";
import {
  BACKEND_HELP,
  BACKEND_OPTIONS,
  backendOptionsFrom,
  gcThresholdOption,
  parseCommandArgs,
  requireVolumeAndCache,
  stringOption,
} from "../args.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd serve --volume VOLUME --cache CACHE [--socket PATH] [--listen HOST:PORT] [--name EXPORT] [--read-only]";
const HELP = `Usage: ${USAGE}

Serves VOLUME over NBD, journaling writes to CACHE. With neither --socket nor --listen, listens on TCP
127.0.0.1:${NBD_PORT_DEFAULT}. Binding to a non-loopback address must be asked for explicitly with --listen.
SIGINT/SIGTERM: stop accepting, finish in-flight requests, flush everything to the backend, exit 0.

Options:
  --volume VOLUME        the volume (see below)
  --cache CACHE          its cache file or device (made by 'lsvd mkcache')
  --socket PATH          listen on a unix socket
  --listen HOST:PORT     listen on TCP (e.g. 127.0.0.1:10809, [::1]:10809)
  --name EXPORT          export name (default: "", any name is accepted when empty)
  --read-only            refuse writes from clients
  --read-cache           keep blocks read from the backend in the cache's read-cache region (for remote
                         backends; a local file backend is served faster by the page cache)
  --batch-size SIZE      backend object data size (default 8m, ${formatSize(BATCH_BYTES_MIN)}..${formatSize(BATCH_BYTES_MAX)})
  --batch-idle-ms MS     put a partial batch after this long without writes (default 2000)
  --gc-threshold F       garbage collection copies the live data of objects whose live share is below F
                         (default ${GC_THRESHOLD_DEFAULT}; 0: only delete objects with no live data left)
  --no-gc                no garbage collection: objects are never deleted
  --quiet                log nothing but errors
${BACKEND_HELP}
`;

export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new InvalidArgumentError(`Invalid --listen '${text}': expected HOST:PORT`);
  return { host: (match[1] ?? match[2])!, port };
}

export const serveCommand: Command = {
  name: "serve",
  summary: "serve a volume over NBD (TCP or unix socket)",
  async run(argv) {
    const parsed = parseCommandArgs(argv, {
      volume: { type: "string" },
      cache: { type: "string" },
      socket: { type: "string" },
      listen: { type: "string" },
      name: { type: "string" },
      "read-only": { type: "boolean" },
      "read-cache": { type: "boolean" },
      "batch-size": { type: "string" },
      "batch-idle-ms": { type: "string" },
      "gc-threshold": { type: "string" },
      "no-gc": { type: "boolean" },
      quiet: { type: "boolean" },
      ...BACKEND_OPTIONS,
    });
    if (parsed.help) {
      writeOut(HELP);
      return 0;
    }
    const { volumeUri, cachePath } = requireVolumeAndCache(parsed, USAGE);
    const socketPath = stringOption(parsed, "socket");
    const listenText = stringOption(parsed, "listen");
    const listen = listenText ? parseListen(listenText) : socketPath ? undefined : { host: "127.0.0.1", port: NBD_PORT_DEFAULT };
    const batchBytes = parsed.values["batch-size"] === undefined ? undefined : parseSize(String(parsed.values["batch-size"]), "batch size");
    if (batchBytes !== undefined && (batchBytes < BATCH_BYTES_MIN || batchBytes > BATCH_BYTES_MAX || batchBytes % PAGE_BYTES !== 0)) {
      throw new InvalidArgumentError(`Invalid --batch-size: expected a multiple of 4 KiB in ${formatSize(BATCH_BYTES_MIN)}..${formatSize(BATCH_BYTES_MAX)}`);
    }
    const batchIdleMs = parsed.values["batch-idle-ms"] === undefined ? undefined : Number(parsed.values["batch-idle-ms"]);
    if (batchIdleMs !== undefined && !(Number.isInteger(batchIdleMs) && batchIdleMs > 0)) throw new InvalidArgumentError("Invalid --batch-idle-ms");
    const gcThreshold = gcThresholdOption(parsed);
    const log = makeLogger("lsvd", false);
    const info = parsed.values.quiet === true ? () => {} : log;

    const { volume, uri, close } = await openVolumeForCommand(volumeUri, cachePath, backendOptionsFrom(parsed), log, {
      readOnly: parsed.values["read-only"] === true,
      readCache: parsed.values["read-cache"] === true,
      batchBytes,
      batchIdleMs,
      gc: parsed.values["no-gc"] !== true,
      gcThreshold,
      log: info,
    });
    info(`volume ${uri} (${formatSize(volume.sizeBytes)}, UUID ${volume.volUuid}) with cache ${cachePath}`);
    let server: Awaited<ReturnType<typeof startNbdServer>>;
    try {
      server = await startNbdServer({
        device: volume,
        exportName: stringOption(parsed, "name") ?? "",
        description: `lsvd volume ${uri}`,
        socketPath,
        listen,
        log: info,
      });
    } catch (error) {
      // Bun.listen throws a plain Error (e.g. the port is taken): close what is open and say where, in one line.
      await close();
      if (error instanceof LsvdError) throw error;
      const where = [socketPath, listen && `${listen.host}:${listen.port}`].filter(Boolean).join(" and ");
      const code = (error as NodeJS.ErrnoException)?.code;
      throw new IOError(`Cannot listen on ${where}: ${code ?? (error as Error)?.message ?? String(error)}`);
    }
    for (const address of server.addresses) info(`serving on ${address}`);
    const started = Date.now();

    // The first SIGINT/SIGTERM starts a clean shutdown; a second one exits at once (the journal still holds every
    // acknowledged write, so the next start replays it).
    const stopped = Promise.withResolvers<void>();
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        log(`${signal} again: exiting without a clean shutdown (the journal keeps every acknowledged write)`);
        process.exit(130);
      }
      stopping = true;
      info(`${signal}: shutting down (draining requests, flushing to the backend)`);
      (async () => {
        await server.close();
        await close();
      })().then(stopped.resolve, stopped.reject);
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
    try {
      await stopped.promise;
    } catch (error) {
      log(`error: shutdown failed: ${String(error)} (acknowledged writes remain in the journal and are replayed on the next start)`);
      return 1;
    }
    const stats = volume.stats();
    info(
      `stopped after ${((Date.now() - started) / 1000).toFixed(1)} s: ${stats.writes} writes (${formatSize(stats.writeBytes)}), ${stats.trims} trims/zeroes, ${stats.records} journal records, ${stats.objects} objects put (${formatSize(stats.putBytes)}), ${stats.checkpoints} checkpoints, ${stats.backendReads} backend reads, ${stats.extents} extents${stats.gc ? `; gc cleaned ${stats.gc.objectsCleaned} objects (${formatSize(stats.gcCopiedSectors * SECTOR_BYTES)} copied) and deleted ${stats.gc.objectsDeleted}` : ""}`,
    );
    return 0;
  },
};
