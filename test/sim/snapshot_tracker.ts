// Snapshots in the volume simulation (volume_sim.ts with `snapshots: true`): creates and deletes interleaved with
// the random I/O, garbage collection and crashes; every snapshot the superblock lists is read back through
// SnapshotDevice and compared with the model as it was when the snapshot was made. A create or delete cut short by a
// crash may have landed or not (its superblock rewrite is the commit point): the tracker accepts either, and from then
// on holds the world to the one it finds.

import { decodeSuperblock } from "../../src/format/superblock_object.ts";
import { SnapshotDevice } from "../../src/volume/snapshot_device.ts";
import type { Volume } from "../../src/volume/volume.ts";
import { VolumeModel, type World } from "./volume_world.ts";

const SNAPSHOTS_LIVE_MAX = 4;

interface Tracked {
  model: VolumeModel;
  /** The create or delete was cut short: it may or may not have landed. */
  unsure: "create" | "delete" | null;
}

export class SnapshotTracker {
  private readonly snapshots = new Map<string, Tracked>();
  private made = 0;
  checks = 0;
  created = 0;
  deleted = 0;

  constructor(private readonly world: World) {}

  /**
   * One snapshot step: a create (the model now, sectors in flight uncertain) or a delete. `run` runs a promise in the
   * world (it throws WorldStopped on a crash, after which the caller recovers and calls settle()).
   */
  async step(volume: Volume, model: VolumeModel, inFlight: Iterable<number>, run: <T>(promise: Promise<T>) => Promise<T>, note: (line: string) => void): Promise<void> {
    const { prng } = this.world;
    const names = [...this.snapshots.keys()];
    if (names.length > 0 && (names.length >= SNAPSHOTS_LIVE_MAX || prng.chance(0.35))) {
      const name = names[prng.int(names.length)]!;
      this.snapshots.get(name)!.unsure = "delete";
      await run(volume.deleteSnapshot(name));
      this.snapshots.delete(name);
      this.deleted += 1;
      note(`snapshot ${name} deleted`);
      return;
    }
    const name = `s${this.made++}`;
    const copy = new VolumeModel(model.volumeBytes);
    copy.bytes.set(model.bytes);
    for (const sector of model.uncertain) copy.uncertain.add(sector);
    for (const sector of inFlight) copy.uncertain.add(sector);
    this.snapshots.set(name, { model: copy, unsure: "create" });
    const seq = await run(volume.createSnapshot(name));
    this.snapshots.get(name)!.unsure = null;
    this.created += 1;
    note(`snapshot ${name} = seq ${seq}`);
  }

  /** After a crash: an unsure create or delete is settled by what the superblock lists. */
  async settle(): Promise<void> {
    const listed = new Set(decodeSuperblock(await this.world.store.get(this.world.prefix)).snapshots.map((snap) => snap.name));
    for (const [name, tracked] of this.snapshots) {
      if (tracked.unsure === null) {
        if (!listed.has(name)) throw new Error(`snapshot ${name} was made, but the superblock no longer lists it`);
        continue;
      }
      if (listed.has(name)) tracked.unsure = null;
      else this.snapshots.delete(name);
    }
    for (const name of listed) if (!this.snapshots.has(name)) throw new Error(`the superblock lists snapshot ${name}, which was deleted or never made`);
  }

  /** Every snapshot reads as its model. */
  async checkAll(run: <T>(promise: Promise<T>) => Promise<T>): Promise<void> {
    for (const [name, tracked] of this.snapshots) {
      const device = await run(SnapshotDevice.open(this.world.store, this.world.prefix, name));
      for (let offset = 0; offset < this.world.volumeBytes; offset += 1024 * 1024) {
        const problem = tracked.model.diff(offset, await run(device.read(offset, 1024 * 1024)));
        if (problem) throw new Error(`snapshot ${name}: ${problem}`);
      }
      this.checks += 1;
    }
  }
}
