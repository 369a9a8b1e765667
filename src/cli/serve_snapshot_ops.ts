// The admin ops through which `lsvd snapshot create|delete` and `lsvd clone` reach the process serving a volume (docs/operations.md,
// "Admin socket"; docs/architecture.md, "Snapshots"): the serving process owns the volume, so it makes the snapshot
// itself, at a write boundary, and answers once the superblock listing it is durable.

import type { AdminOps } from "../admin/server.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { Volume } from "../volume/volume.ts";

export const SNAPSHOT_CREATE_OP = "snapshot-create";
export const SNAPSHOT_DELETE_OP = "snapshot-delete";
export const CLONE_REGISTER_OP = "clone-register";

/** args.clone of clone-register: the clone's prefix and UUID, and the snapshot it is made of. */
function cloneArguments(args: Record<string, unknown>): { snapshot: { seq: number; name: string }; clone: { prefix: string; volUuid: string } } {
  const { snapshotSeq, snapshotName, clonePrefix, cloneUuid } = args;
  if (typeof snapshotSeq !== "number" || !Number.isSafeInteger(snapshotSeq) || typeof snapshotName !== "string" || typeof clonePrefix !== "string" || typeof cloneUuid !== "string") {
    throw new InvalidArgumentError("args: snapshotSeq (an integer), snapshotName, clonePrefix and cloneUuid (strings)");
  }
  return { snapshot: { seq: snapshotSeq, name: snapshotName }, clone: { prefix: clonePrefix, volUuid: cloneUuid } };
}

function nameArgument(args: Record<string, unknown>): string {
  const name = args.name;
  if (typeof name !== "string") throw new InvalidArgumentError("args.name: the snapshot's name, a string");
  return name;
}

/**
 * `volumeFor` finds the served volume a request means (args.volume names it; a process serving one volume may be
 * asked without it), or throws saying why there is none.
 */
export function registerSnapshotOps(ops: AdminOps, volumeFor: (args: Record<string, unknown>) => Volume): void {
  ops.register(SNAPSHOT_CREATE_OP, "makes snapshot args.name of the served volume (args.volume); answers {seq} once it is durable", async (args) => {
    return { seq: await volumeFor(args).createSnapshot(nameArgument(args)) };
  });
  ops.register(SNAPSHOT_DELETE_OP, "deletes snapshot args.name of the served volume (args.volume; refused while clones of it exist)", async (args) => {
    await volumeFor(args).deleteSnapshot(nameArgument(args));
    return {};
  });
  ops.register(CLONE_REGISTER_OP, "records a clone of a snapshot in the served volume's superblock (what 'lsvd clone' of a served base asks)", async (args) => {
    const { snapshot, clone } = cloneArguments(args);
    await volumeFor(args).registerClone(snapshot, clone);
    return {};
  });
}
