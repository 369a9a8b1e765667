// Fuzzing the NBD server through real sockets, on both transports (Bun's sockets and NBD on io_uring): valid,
// mutated and truncated client streams (the stream fuzzer's generators, _nbd_streams.ts) are written to a unix socket
// in random chunks, with random pauses, while replies are read or left unread, and the client hangs up, ends, or
// stops half way. Whatever arrives, the server must stay up: every connection ends (the server closes it, or the
// client's hang-up is seen) within a bound, a well-behaved client is served correctly afterwards, and on io_uring no
// op is left on the ring. nbd_fuzz_test.ts checks the session's bounds step by step; this file checks what only real
// sockets do: partial reads and writes of the kernel, receives posted and cancelled, sends that find the peer gone.
// LSVD_SEED=<n> changes the seed, LSVD_FUZZ_SCALE=<k> multiplies the case count.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNbdServer } from "../../src/nbd/server.ts";
import { NBD_CMD_READ, NBD_CMD_WRITE } from "../../src/nbd/wire.ts";
import { MemoryBlockDevice } from "../nbd/memory_block_device.ts";
import { NBD_IO_KINDS, nbdIoRing } from "../nbd/nbd_io.ts";
import { RawClient } from "../nbd/raw_client.ts";
import { Prng, seedFromEnv } from "../sim/prng.ts";
import { DEVICE_BYTES, EXPORT } from "./_nbd_harness.ts";
import { damageStream, validStream } from "./_nbd_streams.ts";

const SCALE = Number(process.env.LSVD_FUZZ_SCALE ?? 1);
const CASES = 200 * SCALE;
const seed = seedFromEnv(4242);
/** A connection the client left must be gone this long after (the server sees the hang-up or closes it itself). */
const CONNECTIONS_GONE_MS = 10_000;
const STREAM_BYTES_MAX = 4 * 1024 * 1024;
const nbdIo = nbdIoRing();
const directory = mkdtempSync(join(tmpdir(), "lsvd-nbd-socket-fuzz-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

/** A valid stream damaged 0-3 times: a field, a cut, or bytes flipped and spliced; and what was done. */
function damagedStream(prng: Prng): { bytes: Uint8Array; damage: string[] } {
  const stream = validStream(prng, false, prng.chance(0.5) ? "tiny" : "normal");
  // Long streams are cut (a cut is damage too): what matters here is how bytes arrive, not how many.
  const cut = stream.bytes.length > STREAM_BYTES_MAX ? [`cut to ${STREAM_BYTES_MAX}`] : [];
  const damaged = damageStream(stream, stream.bytes.slice(0, STREAM_BYTES_MAX), prng, prng.int(4));
  return { bytes: damaged.bytes, damage: [...cut, ...damaged.damage] };
}

/** Writes `bytes` in random chunks (some pauses between them), then ends, hangs up, or just stops writing. */
async function play(socketPath: string, bytes: Uint8Array, prng: Prng): Promise<void> {
  const readsReplies = prng.chance(0.8);
  const socket = await Bun.connect({ unix: socketPath, socket: { data: () => {}, drain: () => {}, error: () => {} } });
  if (!readsReplies) socket.pause();
  // Tiny chunks for short streams (headers split every way), up to 128 KiB for the rest.
  const chunkMax = bytes.length <= 64 * 1024 && prng.chance(0.5) ? 64 : 128 * 1024;
  let at = 0;
  while (at < bytes.length) {
    const length = Math.min(bytes.length - at, 1 + prng.int(chunkMax));
    const written = socket.write(bytes.subarray(at, at + length));
    if (written < 0) return; // the server closed it (a protocol error): nothing more to say
    at += written;
    if (written < length) await Bun.sleep(1); // the socket is full: let the server read
    else if (prng.chance(0.02)) await Bun.sleep(prng.int(3));
  }
  const ending = prng.int(3);
  if (ending === 0) socket.end();
  else if (ending === 1) socket.terminate();
  else setTimeout(() => socket.end(), 20 + prng.int(100));
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await Bun.sleep(10);
  }
  return true;
}

for (const io of NBD_IO_KINDS) {
  describe(`NBD over real sockets (${io})`, () => {
    test("damaged client streams in random chunks: the server stays up, every connection ends, a good client is served", async () => {
      const socketPath = join(directory, `${io}.sock`);
      const device = new MemoryBlockDevice(DEVICE_BYTES);
      const server = await startNbdServer({ device, exportName: EXPORT.name, socketPath, handshakeTimeoutMs: 2000, ...nbdIo.options(io) });
      try {
        for (let index = 0; index < CASES; index++) {
          const prng = new Prng(seed + index);
          const { bytes, damage } = damagedStream(prng);
          await play(socketPath, bytes, prng).catch((error: Error) => {
            throw new Error(`case ${index} (seed ${seed + index}; ${damage.join("; ") || "undamaged"}): ${error.message}`);
          });
          // A few clients at once now and then; otherwise one at a time.
          if (index % 8 !== 7) await Bun.sleep(prng.int(5));
        }
        expect(await waitFor(() => server.connectionCount() === 0, CONNECTIONS_GONE_MS)).toBe(true);
        // The damage reached the server: some streams were refused as protocol errors, some were served.
        expect(server.stats().protocolErrors).toBeGreaterThan(0);
        expect(server.stats().writes).toBeGreaterThan(0);

        const pattern = new Uint8Array(65536).map((_, index) => (index * 7 + seed) & 0xff);
        const client = await RawClient.connect({ unix: socketPath });
        await client.negotiate({ exportName: EXPORT.name });
        await client.request(NBD_CMD_WRITE, 4096, pattern.length, { payload: pattern });
        expect((await client.readSimpleReply(0)).error).toBe(0);
        await client.request(NBD_CMD_READ, 4096, pattern.length);
        expect((await client.readSimpleReply(pattern.length)).data).toEqual(pattern);
        client.end();
        expect(await client.waitClosed()).toBe(true);
      } finally {
        await server.close();
      }
      expect(server.connectionCount()).toBe(0);
      nbdIo.expectIdle();
    }, 120_000);
  });
}
