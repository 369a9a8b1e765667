// lsvd info: what a volume holds (volume/volume_info.ts). Read-only, no lease.

import { formatSize } from "../../util/size.ts";
import { volumeReport } from "../../volume/volume_info.ts";
import { BACKEND_HELP, BACKEND_OPTIONS, backendOptionsFrom, namedArguments, VOLUME_HELP, VOLUME_OPTIONS, type OptionSpec } from "../args.ts";
import { openOwnedBackend } from "../ownership.ts";
import { writeOut } from "../output.ts";
import type { Command } from "./command.ts";

const USAGE = "lsvd info [--json] VOLUME";
const OPTIONS: OptionSpec = { json: { type: "boolean" }, ...VOLUME_OPTIONS, ...BACKEND_OPTIONS };
const HELP = `Usage: ${USAGE}

Prints what VOLUME holds: its size and UUID; the objects and bytes in the backend; the live share (bytes the
volume's current content points at, over the DATA bytes in the backend); the checkpoints the superblock names; its
snapshots (name, seq, when made, and the bytes only that snapshot holds, which deleting it frees); its base when it
is a clone; and the clones made from its snapshots. Reads only (no lease): a volume being served may change while
it looks.

Options:
  --json   print the result as JSON
${VOLUME_HELP}
${BACKEND_HELP}
Exit status: 0 printed, 1 no volume there or it cannot be read.
`;

export const infoCommand: Command = {
  name: "info",
  summary: "print a volume's size, space, checkpoints, snapshots and clones",
  options: OPTIONS,
  help: HELP,
  async run(parsed) {
    const { VOLUME: volume } = namedArguments(parsed, ["VOLUME"], USAGE);
    const backend = await openOwnedBackend(volume!, backendOptionsFrom(parsed), () => undefined, 30_000);
    try {
      const report = await volumeReport(backend.leaseStore, backend.prefix);
      if (parsed.values.json === true) {
        const snapshots = report.snapshots.map((snap) => ({ ...snap, created: snap.createdMs === null ? null : new Date(snap.createdMs).toISOString() }));
        writeOut(`${JSON.stringify({ volume: backend.uri, ...report, snapshots })}\n`);
        return 0;
      }
      const lines = [
        `volume ${backend.uri}: ${formatSize(report.sizeBytes)}, UUID ${report.volUuid}`,
        `backend: ${report.objects} objects, ${formatSize(report.backendBytes)}; live ${formatSize(report.liveBytes)} (${(report.liveShare * 100).toFixed(1)}% of the data bytes)`,
        `checkpoints: ${report.checkpoints.join(", ") || "none"}`,
        report.base === null ? "base: none (not a clone)" : `base: ${report.base.name} (UUID ${report.base.uuid}) at seq ${report.base.lastSeq}`,
        `snapshots:${report.snapshots.length === 0 ? " none" : ""}`,
        ...report.snapshots.map(
          (snap) =>
            `  ${snap.name}\tseq ${snap.seq}\t${snap.createdMs === null ? "(time not recorded)" : new Date(snap.createdMs).toISOString()}\tonly it holds ${formatSize(snap.bytesOnlyItHolds)}${snap.clones.length > 0 ? `\tclones: ${snap.clones.join(", ")}` : ""}`,
        ),
      ];
      writeOut(`${lines.join("\n")}\n`);
      return 0;
    } finally {
      await backend.close();
    }
  },
};
