// lsvd gc: garbage-collect a volume that is not being served, until there is nothing left to do. `lsvd serve` does
// the same in the background; this is for volumes that are offline, or to reclaim space now.

import { writeOut } from "../output.ts";
import { GC_THRESHOLD_DEFAULT, SECTOR_BYTES } from "../../constants.ts";
import { openVolumeForCommand } from "../open_volume.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom } from "../ownership.ts";
import { logEnabled, makeLogger } from "../../util/log.ts";
import { Progress } from "../progress.ts";
import { formatSize } from "../../util/size.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, gcThresholdOption, requireVolumeAndCache, type OptionSpec } from "../args.ts";
import { LOG_HELP, LOG_OPTIONS } from "../log_options.ts";
import type { Command } from "./command.ts";
import { parseObjectName } from "../../format/object_name.ts";

const USAGE = "lsvd gc --cache CACHE [--gc-threshold F] [--json] VOLUME";
const OPTIONS: OptionSpec = {
  volume: { type: "string" },
  cache: { type: "string" },
  "gc-threshold": { type: "string", default: String(GC_THRESHOLD_DEFAULT) },
  json: { type: "boolean" },
  ...LEASE_OPTIONS,
  ...BACKEND_OPTIONS,
  ...LOG_OPTIONS,
};
const HELP = `Usage: ${USAGE}

Garbage-collects VOLUME, which must not be being served: opens it with its cache (replaying the journal as serve
would), then runs rounds until one changes nothing. A round copies the live data of the least-live objects whose
live share is below F into new objects, and deletes objects that hold no live data once checkpoints no longer need
them (it writes those checkpoints itself), and checkpoints that killed runs left behind. Closes the volume cleanly.

Options:
  --volume VOLUME     the volume, instead of the VOLUME argument
  --cache CACHE       its cache file or device
  --gc-threshold F    clean objects whose live share is below F (default ${GC_THRESHOLD_DEFAULT}; 0: only delete dead objects)
  --json              print the result as JSON
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}
gc takes the volume's lease (see 'lsvd lock show'): a volume being served, or otherwise owned, is refused at once.
Exit status: 0 done, 1 the volume could not be opened (owned by another process) or collected.
`;

export const gcCommand: Command = {
  name: "gc",
  summary: "garbage-collect a volume that is not being served",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { volumeUri, cachePath } = requireVolumeAndCache(parsed, USAGE);
    const gcThreshold = gcThresholdOption(parsed)!;
    const json = parsed.values.json === true;
    const log = makeLogger("lsvd", false);
    const started = Date.now();
    const holder = { command: "gc", leaseDurationMs: leaseDurationFrom(parsed) };
    const progress = new Progress("lsvd gc", !json && logEnabled("info"));
    const { volume, store, prefix, close } = await openVolumeForCommand(volumeUri, cachePath, backendOptionsFrom(parsed), log, holder, {
      gcThreshold,
      // Rounds are driven below, and retired objects get their checkpoints at once.
      gcIntervalMs: 2 ** 31 - 1,
      gcForceCheckpointMs: 0,
      log: json ? () => {} : log,
      progress: (what, done, total) => progress.count(done, total, `recovery: ${what}`),
    });
    progress.clear();
    const countObjects = async () => (await store.list(`${prefix}.`)).filter((name) => parseObjectName(prefix, name) !== null).length;
    const objectsBefore = await countObjects();
    progress.step(`${objectsBefore} object(s) in the backend; collecting`, { objects: objectsBefore });
    let rounds: number;
    let objectsAfter: number;
    try {
      rounds = await volume.collectGarbageUntilQuiet((round) => {
        const gc = volume.stats().gc!;
        const fields = { round, cleaned: gc.objectsCleaned, deleted: gc.objectsDeleted, waiting: gc.retiredWaiting };
        progress.status(`round ${round}: ${gc.objectsCleaned} object(s) cleaned, ${gc.objectsDeleted} deleted, ${gc.retiredWaiting} waiting for a checkpoint`, fields);
      });
      progress.clear();
      await volume.close(); // idempotent: close() below then closes the device and the store
      objectsAfter = await countObjects();
    } finally {
      await close();
    }
    const stats = volume.stats();
    const gc = stats.gc!;
    const result = {
      rounds,
      objectsCleaned: gc.objectsCleaned,
      copiedBytes: stats.gcCopiedSectors * SECTOR_BYTES,
      supersededBytes: stats.gcSupersededSectors * SECTOR_BYTES,
      objectsDeleted: gc.objectsDeleted,
      leftoverCheckpointsDeleted: gc.leftoverCheckpointsDeleted,
      checkpointsWritten: stats.checkpoints,
      backendObjectsBefore: objectsBefore,
      backendObjectsAfter: objectsAfter,
      errors: gc.errors,
      seconds: (Date.now() - started) / 1000,
    };
    if (json) writeOut(`${JSON.stringify(result)}\n`);
    else {
      writeOut(
        `gc: ${rounds} round(s) in ${result.seconds.toFixed(1)} s: cleaned ${result.objectsCleaned} object(s) (copied ${formatSize(result.copiedBytes)}), ` +
          `deleted ${result.objectsDeleted}${result.leftoverCheckpointsDeleted > 0 ? ` and ${result.leftoverCheckpointsDeleted} left-over checkpoint(s)` : ""}; backend objects ${objectsBefore} -> ${objectsAfter}${gc.errors > 0 ? `; ${gc.errors} round error(s), see the log` : ""}\n`,
      );
    }
    return gc.errors > 0 ? 1 : 0;
  },
};
