// lsvd export: a volume's image into a raw, sparse file, read through the volume's map straight from the backend.
// Writes nothing to the backend (no lease, no recovery writes): volume/image_export.ts.

import { existsSync, statSync } from "node:fs";
import { open as openFile, rm } from "node:fs/promises";
import { openBackend } from "../../backend/backend_uri.ts";
import { RetryingStore } from "../../backend/retrying_store.ts";
import { InvalidArgumentError } from "../../errors.ts";
import { processRuns, thisProcess } from "../../util/process_identity.ts";
import { describeHolder } from "../../volume/lease.ts";
import { inspectLease } from "../../volume/lease_admin.ts";
import { exportImage } from "../../volume/image_export.ts";
import { makeLogger } from "../../util/log.ts";
import { formatSize } from "../../util/size.ts";
import { writeOut } from "../output.ts";
import { prepareParentDirectory } from "../paths.ts";
import { Progress } from "../progress.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd export [--progress] [--force] [--json] VOLUME FILE";
const OPTIONS: OptionSpec = {
  progress: { type: "boolean" },
  force: { type: "boolean" },
  json: { type: "boolean" },
  ...VOLUME_OPTIONS,
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
};
const HELP = `Usage: ${USAGE}

Writes VOLUME's image to FILE, a new raw image file as large as the volume (missing directories are created).
Reads the volume through its map straight from the backend: no cache, and nothing is written to the backend.
Unwritten, trimmed and all-zero 4 KiB blocks stay holes in FILE (it is sparse). A failed export deletes FILE.

A volume someone owns (being served, or held by another command: 'lsvd lock show') is refused: its newest writes
may be only in that holder's cache, and garbage collection may delete objects while they are read.

Options:
  --progress   show progress (on a terminal, one line redrawn; otherwise a line per step and per 10%)
  --force      replace FILE if it exists; export a volume someone owns (what its backend holds now)
  --json       print the result as JSON
${VOLUME_HELP}
${BACKEND_HELP}
${LOG_HELP}
`;

/** Refuses an owned volume unless forced: export reads the backend only. */
async function checkNotOwned(store: RetryingStore, prefix: string, uri: string, force: boolean): Promise<void> {
  const nowMs = Date.now();
  const inspection = await inspectLease(store, prefix, { nowMs, identity: thisProcess(), processRuns });
  if (inspection.status !== "held" || inspection.liveness === "dead" || force) return;
  throw new InvalidArgumentError(
    `Volume ${uri} is owned by ${describeHolder(inspection.lease!, nowMs)}: its newest writes may be only in that holder's cache. Stop it first, or give --force to export what the backend holds now`,
  );
}

export const exportCommand: Command = {
  name: "export",
  summary: "write a volume's image to a raw, sparse file",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { VOLUME: volume, FILE: file } = namedArguments(parsed, ["VOLUME", "FILE"], USAGE);
    const force = parsed.values.force === true;
    if (existsSync(file!)) {
      if (!force) throw new InvalidArgumentError(`${file} exists (give --force to replace it)`);
      if (!statSync(file!).isFile()) throw new InvalidArgumentError(`${file} is not a regular file: export writes sparse image files only`);
    }
    const log = makeLogger("lsvd", parsed.values.json === true);
    const progress = new Progress("export", parsed.values.progress === true);
    const opened = await openBackend(volume!, backendOptionsFrom(parsed));
    const store = new RetryingStore(opened.store, { log: (line: string) => log(`warning: backend: ${line}`) });
    const started = Date.now();
    let handle: Awaited<ReturnType<typeof openFile>> | null = null;
    try {
      await checkNotOwned(store, opened.prefix, opened.uri, force);
      const result = await exportImage({
        store,
        prefix: opened.prefix,
        async begin(sizeBytes, mappedBytes) {
          prepareParentDirectory(file!, "image");
          handle = await openFile(file!, "w");
          await handle.truncate(sizeBytes);
          progress.step(`volume ${opened.uri}: ${formatSize(sizeBytes)}, ${formatSize(mappedBytes)} mapped`);
        },
        target: { write: async (offset, data) => void (await handle!.write(data, 0, data.byteLength, offset)) },
        progress: (done, total) => progress.bytes(done, total, "read"),
      });
      await handle!.sync();
      const seconds = (Date.now() - started) / 1000;
      if (parsed.values.json === true) {
        const { notes: _notes, ...figures } = result;
        writeOut(`${JSON.stringify({ volume: opened.uri, file, ...figures, seconds })}\n`);
      } else {
        writeOut(
          `exported volume ${opened.uri} (${formatSize(result.sizeBytes)}) to ${file}: ${formatSize(result.mappedBytes)} mapped, ` +
            `${formatSize(result.writtenBytes)} written (the rest are holes), ${seconds.toFixed(1)} s\n`,
        );
      }
      return 0;
    } catch (error) {
      // A partial image must not pass for a whole one.
      if (handle !== null) await rm(file!, { force: true });
      throw error;
    } finally {
      progress.clear();
      await (handle as Awaited<ReturnType<typeof openFile>> | null)?.close();
      await store.close();
    }
  },
};
