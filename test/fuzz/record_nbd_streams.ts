// Records what real NBD clients send, as seed streams for the NBD stream fuzzer (test/fuzz/nbd_streams/*.bin).
//   bun test/fuzz/record_nbd_streams.ts        (needs qemu-io, qemu-img and nbdinfo; writes the .bin files)
// A memory export (the fuzz harness's device size and name) is served by the real server on a unix socket; a proxy
// in front of it passes bytes both ways and keeps each connection's client-to-server bytes. Each client run becomes
// one file: its negotiation, its requests with their payloads, and its DISC. Not a test: run it again when a client
// changes what it sends, and commit the files.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryBlockDevice } from "../nbd/memory_block_device.ts";
import { DEVICE_BYTES, EXPORT } from "./_nbd_harness.ts";

const OUT = join(import.meta.dir, "nbd_streams");
const TOOLS_PATH = `/usr/bin:${process.env.PATH ?? ""}`;

const dir = mkdtempSync(join(tmpdir(), "lsvd-record-"));
const serverSocket = join(dir, "server.sock");
const proxySocket = join(dir, "proxy.sock");
const server = await startNbdServer({ device: new MemoryBlockDevice(DEVICE_BYTES), exportName: EXPORT.name, socketPath: serverSocket, log: () => {} });

let recording: Uint8Array[] = [];
type Side = { peer: import("bun").Socket<Side> | null; pending: Uint8Array[] };
const proxy = Bun.listen<Side>({
  unix: proxySocket,
  socket: {
    async open(client) {
      client.data = { peer: null, pending: [] };
      const upstream = await Bun.connect<Side>({
        unix: serverSocket,
        data: { peer: client, pending: [] },
        socket: {
          data: (_socket, chunk) => {
            client.write(chunk);
          },
          close: () => {
            client.end();
          },
        },
      });
      client.data.peer = upstream;
      for (const chunk of client.data.pending) upstream.write(chunk);
    },
    data(client, chunk) {
      recording.push(new Uint8Array(chunk));
      if (client.data.peer) client.data.peer.write(chunk);
      else client.data.pending.push(new Uint8Array(chunk));
    },
    close: (client) => {
      client.data?.peer?.end();
    },
  },
});

const uri = `nbd+unix:///${EXPORT.name}?socket=${proxySocket}`;
const runs: Array<[string, string[]]> = [
  ["qemu_io_write_read", ["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", "-c", "write -P 0x11 1m 4k", "-c", "read -P 0x5a 0 64k", "-c", "flush", uri]],
  ["qemu_io_zero_discard", ["qemu-io", "-f", "raw", "-c", "write -z 64k 128k", "-c", "discard 512k 64k", "-c", "aio_write -P 1 0 4k", "-c", "aio_write -P 2 4k 4k", "-c", "aio_flush", uri]],
  ["qemu_img_map", ["qemu-img", "map", "--output=json", "-f", "raw", uri]],
  ["nbdinfo_map", ["nbdinfo", "--map", uri]],
  ["nbdinfo_list", ["nbdinfo", "--list", `nbd+unix:///?socket=${proxySocket}`]],
];
mkdirSync(OUT, { recursive: true });
try {
  for (const [name, command] of runs) {
    recording = [];
    // Asynchronous: the server and the proxy run on this process's event loop.
    const run = Bun.spawn(command, { env: { ...process.env, PATH: TOOLS_PATH }, stdout: "pipe", stderr: "pipe", timeout: 20_000 });
    const exitCode = await run.exited;
    if (exitCode !== 0) throw new Error(`${command[0]} failed (${exitCode}): ${await new Response(run.stderr).text()}`);
    await Bun.sleep(200); // the proxy's last chunks (DISC) arrive after the client exits
    const bytes = new Uint8Array(Buffer.concat(recording));
    writeFileSync(join(OUT, `${name}.bin`), bytes);
    console.log(`${name}: ${bytes.length} bytes`);
  }
} finally {
  proxy.stop(true);
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
