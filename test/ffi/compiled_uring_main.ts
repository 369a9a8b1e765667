// Entry point for compiled_binary_test.ts: exercises the io_uring layer from inside a `bun build --compile` binary
// (koffi's addon embedded, liburing loaded at run time). Prints "ok" when a vectored write reads back intact.

import { openUringDevice } from "../../ffi/uring_device.ts";

const path = process.argv[2];
if (path === undefined) throw new Error("usage: compiled_uring_main PATH");
const device = await openUringDevice(path, { createSizeBytes: 1024 * 1024, queueDepth: 8 });
const buffer = device.pool.acquire(8192);
for (let index = 0; index < buffer.length; index++) buffer[index] = (index * 7) & 0xff;
await device.write(4096, [buffer.subarray(0, 4096), buffer.subarray(4096)]);
await device.fdatasync();
const back = device.pool.acquire(8192);
await device.read(4096, back);
const intact = back.every((byte, index) => byte === ((index * 7) & 0xff));
await device.close();
console.log(intact ? "ok" : "mismatch");
