// `lsvd serve --tls`: the binary with its TLS options. --tls require with --tls-certificates serves nbdcopy over
// nbds:// (a round trip survives a clean restart) and refuses a plain nbdinfo; refused configurations exit 1 before
// anything is bound, with a line that says what to do.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { makeTestPki, type TestPki } from "../nbd/tls_pki.ts";
import { LsvdServer, cleanupAll, createVolume, ensureBuilt, lsvd, makeTempDir, run, sha256File, writeRandomFile, type VolumePaths } from "./_harness.ts";

const TEST_TIMEOUT_MS = 120_000;
const DATA_BYTES = 8 * 1024 * 1024;

let pki: TestPki;
let paths: VolumePaths;

beforeAll(async () => {
  await ensureBuilt();
  pki = await makeTestPki(join(makeTempDir("tls-pki"), "pki"));
  paths = await createVolume("tls-serve", { size: "64m" });
}, TEST_TIMEOUT_MS);
afterAll(cleanupAll);

/** The server's TCP URI as libnbd's TLS URI: nbds://localhost:PORT (the certificate names localhost). */
function nbds(server: LsvdServer, certificates: string): string {
  const port = /:(\d+)$/.exec(server.uri)![1];
  return `nbds://localhost:${port}/?tls-certificates=${certificates}`;
}

describe("lsvd serve --tls require", () => {
  test("nbdcopy over TLS round-trips; a plain client is refused; the data survives a restart", async () => {
    const tlsArgs = ["--tls", "require", "--tls-certificates", pki.server];
    const input = join(paths.dir, "in.bin");
    const output = join(paths.dir, "out.bin");
    writeRandomFile(input, DATA_BYTES, 16);
    let server = await LsvdServer.start({ ...paths, transport: "tcp", extraArgs: tlsArgs });
    expect(server.log).toMatch(/TLS required: certificate CN=localhost from /);
    // The default --nbd-io auto serves TLS on Bun's sockets, and says so.
    expect(server.log).toContain("NBD on Bun's sockets (--nbd-io auto): --tls is on, and only Bun's sockets offer TLS");
    expect((await run(["nbdcopy", input, nbds(server, pki.client)])).exitCode).toBe(0);
    const plain = await run(["nbdinfo", server.uri.replace("127.0.0.1", "localhost")]);
    expect(plain.exitCode).not.toBe(0);
    const first = await server.stop();
    expect(first.exitCode).toBe(0);
    expect(first.log).toMatch(/client did not start TLS, which this server requires/);
    server = await LsvdServer.start({ ...paths, transport: "tcp", extraArgs: tlsArgs });
    expect((await run(["nbdcopy", nbds(server, pki.client), output])).exitCode).toBe(0);
    expect((await server.stop()).exitCode).toBe(0);
    expect(await sha256File(output, DATA_BYTES)).toBe(await sha256File(input));
  }, TEST_TIMEOUT_MS);
});

describe("refused TLS configurations", () => {
  const cases: Array<{ name: string; args: () => string[]; message: RegExp }> = [
    { name: "--tls require without certificates", args: () => ["--tls", "require"], message: /--tls require needs --tls-certificates DIR/ },
    { name: "an unknown mode", args: () => ["--tls", "yes"], message: /Invalid --tls 'yes': expected off, on, require/ },
    { name: "certificates with --tls off", args: () => ["--tls-certificates", pki.server], message: /need --tls on or --tls require/ },
    { name: "a directory without the server's key", args: () => ["--tls", "on", "--tls-certificates", pki.client], message: /server-cert\.pem .*ENOENT/ },
    { name: "a directory that does not exist", args: () => ["--tls", "on", "--tls-certificates", join(pki.server, "missing")], message: /Cannot read .*missing\/server-cert\.pem .*ENOENT/ },
    { name: "--tls-psk", args: () => ["--tls", "on", "--tls-psk", join(pki.server, "keys.psk")], message: /--tls-psk is not available: .*no pre-shared key ciphers; use --tls-certificates DIR/ },
  ];
  for (const { name, args, message } of cases) {
    test(`${name}: exit 1 before binding, saying why`, async () => {
      const socket = join(paths.dir, "refused.sock");
      const result = await lsvd(["serve", "--volume", paths.volume, "--cache", paths.cache, "--socket", socket, ...args()]);
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toMatch(message);
      expect(await Bun.file(socket).exists()).toBe(false);
    }, TEST_TIMEOUT_MS);
  }
});
