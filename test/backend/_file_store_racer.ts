// Test helper (folder-private), run as its own process by file_store_test.ts: races other processes on one
// FileStore directory, so the test sees what flock(2) and link(2) guarantee between processes, not only inside one.
//
// Usage: bun _file_store_racer.ts ROOT BARRIER ID MODE COUNT
//   Waits for the file BARRIER.go (the parent creates it once every racer wrote BARRIER.ready.ID), then:
//   create   tries putIfAbsent("slot.<i>", "<ID> <i>") for every i in 0..COUNT-1, from i = ID*53 mod COUNT on and
//            wrapping around, and reports the slots it won
//   counter  adds 1 to the decimal number in "counter" COUNT times with getVersioned + putIfVersion (retrying on
//            ConflictError) and reports the values it wrote and the conflicts it met
// Prints one JSON line on stdout.
import * as fs from "node:fs";
import { FileStore } from "../../src/backend/file_store.ts";
import { ConflictError } from "../../src/errors.ts";

const [root, barrier, id, mode, countText] = process.argv.slice(2);
if (root === undefined || barrier === undefined || id === undefined || countText === undefined) {
  console.error("usage: _file_store_racer.ts ROOT BARRIER ID create|counter COUNT");
  process.exit(2);
}
const count = Number(countText);
const BARRIER_WAIT_MS_MAX = 30_000;

const store = await FileStore.open(root);
fs.writeFileSync(`${barrier}.ready.${id}`, "");
const deadline = Date.now() + BARRIER_WAIT_MS_MAX;
while (!fs.existsSync(`${barrier}.go`)) {
  if (Date.now() > deadline) throw new Error(`racer ${id}: no ${barrier}.go within ${BARRIER_WAIT_MS_MAX} ms`);
  await Bun.sleep(1);
}

const encoder = new TextEncoder();
if (mode === "create") {
  const won: number[] = [];
  // Each racer starts at its own place (53 slots apart) and wraps around, so they race where their runs overlap and
  // one racer the scheduler ran long before the others (a loaded machine) cannot take every name alone.
  const start = (Number(id) * 53) % count;
  for (let step = 0; step < count; step++) {
    const i = (start + step) % count;
    try {
      await store.putIfAbsent(`slot.${i}`, encoder.encode(`${id} ${i}`));
      won.push(i);
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  console.log(JSON.stringify({ won }));
} else if (mode === "counter") {
  const wrote: number[] = [];
  let conflicts = 0;
  while (wrote.length < count) {
    const read = await store.getVersioned("counter");
    if (read === null) throw new Error("no counter object");
    const next = Number(new TextDecoder().decode(read.data)) + 1;
    try {
      await store.putIfVersion("counter", encoder.encode(String(next)), read.version);
      wrote.push(next);
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      conflicts += 1;
    }
  }
  console.log(JSON.stringify({ wrote, conflicts }));
} else {
  throw new Error(`unknown mode ${mode}`);
}
await store.close();
