// Manual perf check: serve a memory BlockDevice over NBD until SIGINT/SIGTERM.
//   bun test/nbd/serve_memory.ts [--socket PATH] [--port N] [--size-mib N]
// then e.g.: fio --ioengine=nbd --uri='nbd+unix:///?socket=PATH' --rw=randwrite --bs=4k --iodepth=32 \
//   --runtime=5 --time_based --size=256m --name=x
import { parseArgs } from "node:util";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";

const { values } = parseArgs({
  options: {
    socket: { type: "string" },
    port: { type: "string" },
    "size-mib": { type: "string", default: "256" },
  },
});
const device = new MemoryBlockDevice(Number(values["size-mib"]) * 1024 * 1024);
const server = await startNbdServer({
  device,
  socketPath: values.socket ?? (values.port === undefined ? "/tmp/lsvd-nbd-memory.sock" : undefined),
  listen: values.port === undefined ? undefined : { host: "127.0.0.1", port: Number(values.port) },
  log: (line) => console.error(line),
});
console.log(server.addresses.join("\n"));
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    void server.close().then(() => {
      console.error(JSON.stringify(server.stats()));
      process.exit(0);
    });
  });
}
