// lsvd fsck: check a volume (and optionally its cache) the way recovery reads them; optionally repair what recovery
// would repair. The checks and repairs live in volume/fsck.ts; this file parses arguments and prints the report.
// Exit codes as fsck(8): 0 clean, 1 problems found and all repaired, 4 problems left, 8 could not check.

import { writeOut } from "../output.ts";
import { LsvdError } from "../../errors.ts";
import type { Lease } from "../../volume/lease.ts";
import { takeOwnership, type VolumeOwner } from "../../volume/ownership.ts";
import { LEASE_HELP, LEASE_OPTIONS, leaseDurationFrom, openOwnedBackend, type OwnedBackend } from "../ownership.ts";
import { openUringDevice, type UringDevice } from "../../../ffi/uring_device.ts";
import type { ObjectStore } from "../../backend/object_store.ts";
import { fsckVolume, FSCK_EXIT_OPERATIONAL, type FsckReport } from "../../volume/fsck.ts";
import { formatSize } from "../../util/size.ts";
import { logEnabled } from "../../util/log.ts";
import { Progress } from "../progress.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, stringOption, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { LOG_HELP, LOG_OPTIONS, writeCommandError } from "../log_options.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd fsck [--cache CACHE] [--repair] [--json] VOLUME";
const OPTIONS: OptionSpec = { cache: { type: "string" }, repair: { type: "boolean" }, json: { type: "boolean" }, ...VOLUME_OPTIONS, ...LEASE_OPTIONS, ...BACKEND_OPTIONS, ...LOG_OPTIONS };
const HELP = `Usage: ${USAGE}

Checks VOLUME as recovery reads it: the superblock and every checkpoint it lists, every object's header and data
CRC, gaps in the sequence of objects and objects beyond the end of the log, and that the map recovery builds from the
newest checkpoint equals a replay of every data object from seq 1. With --cache, also the cache's superblock and its
journal: how many records a walk from the tail finds, why it stops, which recovery case applies and how many records
the next open replays.

What a run killed at any moment leaves behind is noted, not reported as a problem: objects beyond a missing object
at the end of the log (puts complete out of order), and checkpoints the superblock no longer names, older than the
ones it names. The next open (serve, gc) deletes the first, garbage collection the second, --repair both.

Options:
  --cache CACHE   also check this cache file or device (made by 'lsvd mkcache')
  --repair        drop unusable checkpoints from the superblock, start the log above the objects at and beyond its
                  end, which are then deleted (what the next open would do), and delete the left-over checkpoints.
                  Takes the volume's lease first: refused while the volume is served or otherwise owned (see
                  'lsvd lock show'). Deleting left-overs alone leaves the exit status 0.
  --json          print the report as JSON
${VOLUME_HELP}
${LEASE_HELP}
${BACKEND_HELP}
${LOG_HELP}

Exit status: 0 clean, 1 problems found and all repaired, 4 problems left, 8 could not check (operational error, or
--repair refused because another process owns the volume).
`;

function printReport(report: FsckReport, volume: string): void {
  const out: string[] = [];
  const o = report.objects;
  out.push(`volume ${volume}: UUID ${report.volUuid ?? "?"}${report.volumeBytes !== null ? `, ${formatSize(report.volumeBytes)}` : ""}`);
  out.push(`superblock: ${report.volUuid ? "OK" : "INVALID"}, lists checkpoints [${report.superblockCheckpoints.join(", ")}]`);
  out.push(
    `objects: ${o.count} (${o.data} DATA, ${o.checkpoints} CKPT, ${o.invalid} invalid), ${formatSize(o.bytes)}${o.firstSeq !== null ? `, seq ${o.firstSeq}..${o.lastSeq}` : ""}`,
  );
  for (const checkpoint of report.checkpoints) {
    out.push(
      `checkpoint ${checkpoint.seq}${checkpoint.listed ? " (listed)" : ""}: ${checkpoint.usable ? "OK" : `UNUSABLE: ${checkpoint.error}`}, ${checkpoint.mapEntries} map entries`,
    );
  }
  if (report.logEndSeq !== null) {
    const from = report.recoveryCheckpointSeq > 0 ? `checkpoint ${report.recoveryCheckpointSeq}` : "seq 1 (no checkpoint)";
    const beyond = report.beyondLogEndCount > 0 ? `; ${report.beyondLogEndCount} object(s) at or beyond the end` : "; nothing beyond";
    out.push(`log: recovery starts at ${from}, the log ends before seq ${report.logEndSeq}${beyond}`);
  }
  out.push(`map: ${report.map.extents ?? "?"} extents; ${report.map.note}`);
  const cache = report.cache;
  if (cache) {
    if (!cache.superblockValid) {
      out.push(`cache ${cache.path}: superblock INVALID`);
    } else {
      out.push(`cache ${cache.path}: UUID ${cache.cacheUuid}, ${cache.volumeMatches ? "same volume" : "ANOTHER VOLUME"}, generation ${cache.generation}`);
      if (cache.volumeMatches) {
        out.push(
          `journal: ${cache.journalRecords} record(s) from tail seq ${cache.tailSeq} (${cache.journalDataRecords} data, ${cache.journalPadRecords} pad); walk stopped: ${cache.stopReason}${cache.stopDetail ? ` (${cache.stopDetail})` : ""}`,
        );
        out.push(`journal case ${cache.journalCase}: ${cache.pendingReplay} record(s) pending replay`);
      }
    }
  }
  for (const note of report.notes) out.push(`note: ${note}`);
  for (const repair of report.repairs) out.push(`repaired: ${repair}`);
  for (const cleanup of report.cleanups) out.push(`cleaned: ${cleanup}`);
  if (report.problems.length === 0) out.push("no problems found");
  for (const found of report.problems) out.push(`PROBLEM${found.repaired ? " (repaired)" : ""}: ${found.message}`);
  const summary = { 0: "clean", 1: "problems found and repaired", 4: "problems left" }[report.exitCode];
  out.push(`fsck: ${summary} (exit ${report.exitCode})`);
  writeOut(`${out.join("\n")}\n`);
}

export const fsckCommand: Command = {
  name: "fsck",
  summary: "check a volume (and its cache) for consistency; --repair",
  options: OPTIONS,
  help: HELP,
  usageExitCode: FSCK_EXIT_OPERATIONAL,
  async run(parsed) {
    let volume: string;
    try {
      volume = namedArguments(parsed, ["VOLUME"], USAGE).VOLUME!;
    } catch (error) {
      if (!(error instanceof LsvdError)) throw error;
      writeCommandError(`lsvd fsck: ${error.message}`);
      return FSCK_EXIT_OPERATIONAL;
    }
    const json = parsed.values.json === true;
    const cachePath = stringOption(parsed, "cache");
    const repair = parsed.values.repair === true;
    let backend: OwnedBackend | null = null;
    let lease: Lease | null = null;
    let device: UringDevice | null = null;
    try {
      const durationMs = leaseDurationFrom(parsed);
      backend = await openOwnedBackend(volume, backendOptionsFrom(parsed), () => undefined, durationMs);
      // Checking reads only; repairing changes the volume, so it takes the lease (a served volume is refused).
      let owner: VolumeOwner | undefined;
      let store: ObjectStore = backend.leaseStore;
      if (repair) {
        store = backend.ownerStore(() => lease!);
        const taken = await takeOwnership({ store: backend.leaseStore, prefix: backend.prefix, command: "fsck --repair", durationMs }, store);
        lease = taken.lease;
        owner = taken.owner;
      }
      if (cachePath !== undefined) device = await openUringDevice(cachePath);
      const progress = new Progress("lsvd fsck", !json && logEnabled("info"));
      const report = await fsckVolume({
        progress,
        store,
        prefix: backend.prefix,
        cache: device ? { device, pool: device.pool } : undefined,
        repair,
        owner,
      });
      progress.clear();
      await lease?.release();
      lease = null;
      if (json) writeOut(`${JSON.stringify({ volume: backend.uri, ...report }, null, 2)}\n`);
      else printReport(report, backend.uri);
      return report.exitCode;
    } catch (error) {
      // The store or device failed, or there is no volume: nothing was checked.
      const message = error instanceof LsvdError ? error.message : `internal error: ${(error as Error)?.stack ?? String(error)}`;
      if (json) writeOut(`${JSON.stringify({ volume, error: message, exitCode: FSCK_EXIT_OPERATIONAL }, null, 2)}\n`);
      writeCommandError(`lsvd fsck: ${message}`);
      return FSCK_EXIT_OPERATIONAL;
    } finally {
      lease?.abandon(); // a repair that failed part way: the lease expires rather than being given back clean
      if (device) await device.close();
      if (backend) await backend.close();
    }
  },
};
