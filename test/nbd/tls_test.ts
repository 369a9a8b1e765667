// NBD over TLS (NBD_OPT_STARTTLS) with real clients: libnbd's nbdinfo, nbdsh and nbdcopy, and qemu-img with
// tls-creds-x509, over TCP and a unix socket; --tls require refusing plain clients (over the wire and with nbdinfo);
// --tls on serving both; client certificates verified when asked; a client that sends garbage or nothing instead of
// a TLS handshake is dropped; back-pressure over TLS (a client that does not read its replies); TLS below 1.2
// refused; the credential checks; and a canary showing that Bun's TLS has no PSK (docs/architecture.md, "TLS").
// Certificates are made by openssl in the test (tls_pki.ts).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../../src/errors.ts";
import { startNbdServer, type NbdServer, type NbdServerOptions } from "../../src/nbd/server.ts";
import { certificateValidityWarning, loadX509Credentials, tlsServerOptions } from "../../src/nbd/tls_credentials.ts";
import {
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_OPT_STARTTLS,
  NBD_REP_ACK,
  NBD_REP_ERR_TLS_REQD,
  encodeInfoRequest,
} from "../../src/nbd/wire.ts";
import { MemoryBlockDevice } from "./memory_block_device.ts";
import { RawClient } from "./raw_client.ts";
import { makeTestPki, type TestPki } from "./tls_pki.ts";
import { nbdIoRing } from "./nbd_io.ts";

const SIZE_BYTES = 16 * 1024 * 1024;
const CLIENT_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 90_000;

interface RunResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

async function run(cmd: string[]): Promise<RunResult> {
  const child = Bun.spawn({
    cmd,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}` },
    timeout: CLIENT_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  return { exitCode: await child.exited, stdout, stderr };
}

function expectSuccess(result: RunResult): void {
  if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}\n${result.stdout}\n${result.stderr}`);
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

let directory: string;
let pki: TestPki;
const servers: NbdServer[] = [];
const nbdIo = nbdIoRing();
const logs = new Map<NbdServer, string[]>();

async function serve(options: Omit<NbdServerOptions, "device">, device = new MemoryBlockDevice(SIZE_BYTES)): Promise<NbdServer> {
  const lines: string[] = [];
  const server = await startNbdServer({ device, log: (line) => lines.push(line), ...options });
  servers.push(server);
  logs.set(server, lines);
  return server;
}

function tlsFor(mode: "on" | "require", verifyPeer = false): NbdServerOptions["tls"] {
  return { mode, options: tlsServerOptions(loadX509Credentials(pki.server, verifyPeer)) };
}

function portOf(server: NbdServer): number {
  const address = server.addresses.find((uri) => uri.startsWith("nbd://"))!;
  return Number(/:(\d+)/.exec(address.slice("nbd://".length))![1]);
}

/** The TLS URI libnbd connects to: the certificate names localhost, so the host is spelt that way. */
function nbds(server: NbdServer, certificates: string): string {
  return `nbds://localhost:${portOf(server)}/?tls-certificates=${certificates}`;
}

let requireServer: NbdServer;
let socketPath: string;
let onServer: NbdServer;
let verifyServer: NbdServer;
let impatientServer: NbdServer;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), "lsvd-nbd-tls-"));
  pki = await makeTestPki(join(directory, "pki"));
  socketPath = join(directory, "nbd.sock");
  requireServer = await serve({ listen: { host: "127.0.0.1", port: 0 }, socketPath, tls: tlsFor("require") });
  onServer = await serve({ listen: { host: "127.0.0.1", port: 0 }, tls: tlsFor("on") });
  verifyServer = await serve({ listen: { host: "127.0.0.1", port: 0 }, tls: tlsFor("require", true) });
  impatientServer = await serve({ listen: { host: "127.0.0.1", port: 0 }, tls: tlsFor("require"), handshakeTimeoutMs: 500 });
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  await Promise.all(servers.map((server) => server.close()));
  rmSync(directory, { recursive: true, force: true });
});

describe("libnbd and qemu clients over TLS", () => {
  test("nbdinfo over TCP (nbds://) reports TLS", async () => {
    const result = await run(["nbdinfo", "--json", nbds(requireServer, pki.client)]);
    expectSuccess(result);
    const info = JSON.parse(result.stdout);
    expect(info.TLS).toBe(true);
    expect(info.exports[0]["export-size"]).toBe(SIZE_BYTES);
  }, TEST_TIMEOUT_MS);

  test("nbdinfo over a unix socket (nbds+unix://) reports TLS", async () => {
    const result = await run(["nbdinfo", "--json", `nbds+unix:///?socket=${socketPath}&tls-certificates=${pki.client}`]);
    expectSuccess(result);
    expect(JSON.parse(result.stdout).TLS).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("nbdsh with tls-certificates: writes, reads back, TLS negotiated", async () => {
    const script = [
      "import nbd, sys",
      "h = nbd.NBD()",
      "h.set_tls(nbd.TLS_REQUIRE)",
      `h.set_tls_certificates(${JSON.stringify(pki.client)})`,
      `h.connect_tcp("localhost", "${portOf(requireServer)}")`,
      "assert h.get_tls_negotiated()",
      "data = bytes(range(256)) * 64",
      "h.pwrite(data, 1048576)",
      "h.flush()",
      "assert h.pread(len(data), 1048576) == data",
      "h.shutdown()",
      "print('ok')",
    ].join("\n");
    const result = await run(["nbdsh", "-c", script]);
    expectSuccess(result);
    expect(result.stdout.trim()).toBe("ok");
  }, TEST_TIMEOUT_MS);

  test("nbdcopy round trip over TLS: the bytes read back are the bytes written", async () => {
    const input = join(directory, "nbdcopy-in.bin");
    const output = join(directory, "nbdcopy-out.bin");
    const data = randomBytes(SIZE_BYTES);
    writeFileSync(input, data);
    expectSuccess(await run(["nbdcopy", input, nbds(requireServer, pki.client)]));
    expectSuccess(await run(["nbdcopy", nbds(requireServer, pki.client), output]));
    expect(sha256(readFileSync(output))).toBe(sha256(data));
  }, TEST_TIMEOUT_MS);

  test("qemu-img with tls-creds-x509 writes and reads over TLS", async () => {
    const input = join(directory, "qemu-in.bin");
    const output = join(directory, "qemu-out.bin");
    const data = randomBytes(4 * 1024 * 1024);
    writeFileSync(input, data);
    const object = ["--object", `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.client}`];
    const target = `driver=nbd,host=localhost,port=${portOf(requireServer)},tls-creds=tls0`;
    expectSuccess(await run(["qemu-img", "convert", "-n", "-f", "raw", input, ...object, "--target-image-opts", target]));
    expectSuccess(await run(["qemu-img", "convert", ...object, "--image-opts", target, "-O", "raw", output]));
    expect(sha256(readFileSync(output).subarray(0, data.length))).toBe(sha256(data));
  }, TEST_TIMEOUT_MS);

  test("qemu-img over the unix socket (qemu needs tls-hostname there: a socket has no host name to check)", async () => {
    const object = ["--object", `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.client}`];
    const image = `driver=nbd,server.type=unix,server.path=${socketPath},tls-creds=tls0,tls-hostname=localhost`;
    const result = await run(["qemu-img", "info", "--output=json", ...object, "--image-opts", image]);
    expectSuccess(result);
    expect(JSON.parse(result.stdout)["virtual-size"]).toBe(SIZE_BYTES);
  }, TEST_TIMEOUT_MS);
});

describe("--tls require", () => {
  test("nbdinfo without TLS fails, and the server says why", async () => {
    const result = await run(["nbdinfo", `nbd://localhost:${portOf(requireServer)}/`]);
    expect(result.exitCode).not.toBe(0);
    // libnbd's wording for NBD_REP_ERR_TLS_REQD in reply to NBD_OPT_GO.
    expect(result.stderr).toContain("server replied with error to opt_go request");
    await Bun.sleep(0); // let the close event run
    for (let attempt = 0; attempt < 200 && !logs.get(requireServer)!.some((line) => line.includes("did not start TLS")); attempt++) await Bun.sleep(10);
    expect(logs.get(requireServer)!.some((line) => /client did not start TLS, which this server requires: \d+ option\(s\) refused/.test(line))).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("over the unix socket too: nbdinfo without TLS fails", async () => {
    const result = await run(["nbdinfo", `nbd+unix:///?socket=${socketPath}`]);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("server replied with error to opt_go request");
  }, TEST_TIMEOUT_MS);

  test("options before STARTTLS get ERR_TLS_REQD; NBD_OPT_EXPORT_NAME hangs up (over the wire)", async () => {
    const client = await RawClient.connect({ hostname: "127.0.0.1", port: portOf(requireServer) });
    try {
      await client.greet();
      await client.sendOption(NBD_OPT_LIST);
      expect((await client.readOptionReply()).replyType).toBe(NBD_REP_ERR_TLS_REQD);
      await client.sendOption(NBD_OPT_GO, encodeInfoRequest({ exportName: "", infoTypes: [] }));
      expect((await client.readOptionReply()).replyType).toBe(NBD_REP_ERR_TLS_REQD);
      await client.sendOption(NBD_OPT_EXPORT_NAME, new Uint8Array(0));
      expect(await client.waitClosed()).toBe(true);
      expect(client.pendingBytes).toBe(0);
    } finally {
      client.terminate();
    }
  }, TEST_TIMEOUT_MS);

  test("a client that hangs up after ERR_TLS_REQD is logged too", async () => {
    const lines = logs.get(requireServer)!;
    const before = lines.length;
    const client = await RawClient.connect({ hostname: "127.0.0.1", port: portOf(requireServer) });
    await client.greet();
    await client.sendOption(NBD_OPT_LIST);
    expect((await client.readOptionReply()).replyType).toBe(NBD_REP_ERR_TLS_REQD);
    client.end();
    for (let attempt = 0; attempt < 500 && requireServer.connectionCount() > 0; attempt++) await Bun.sleep(10);
    expect(lines.slice(before).some((line) => /client did not start TLS, which this server requires: 1 option\(s\) refused/.test(line))).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a client certificate is required with --tls-verify-peer: from the CA accepted, none, another CA's or a revoked one refused", async () => {
    const failuresBefore = verifyServer.stats().tlsHandshakeFailures;
    const handshakesBefore = verifyServer.stats().tlsHandshakes;
    expectSuccess(await run(["nbdinfo", nbds(verifyServer, pki.client)]));
    expect((await run(["nbdinfo", nbds(verifyServer, pki.anonymous)])).exitCode).not.toBe(0);
    expect((await run(["nbdinfo", nbds(verifyServer, pki.stranger)])).exitCode).not.toBe(0);
    expect((await run(["nbdinfo", nbds(verifyServer, pki.revoked)])).exitCode).not.toBe(0);
    expect(verifyServer.stats().tlsHandshakeFailures).toBe(failuresBefore + 3);
    expect(verifyServer.stats().tlsHandshakes).toBe(handshakesBefore + 1);
    expect(logs.get(verifyServer)!.some((line) => /TLS handshake failed: certificate revoked/.test(line))).toBe(true);
    // Without --tls-verify-peer, a client without a certificate of its own is served.
    expectSuccess(await run(["nbdinfo", nbds(requireServer, pki.anonymous)]));
  }, TEST_TIMEOUT_MS);
});

describe("--tls on", () => {
  test("plain clients and TLS clients are both served", async () => {
    const plain = await run(["nbdinfo", "--json", `nbd://localhost:${portOf(onServer)}/`]);
    expectSuccess(plain);
    expect(JSON.parse(plain.stdout).TLS).toBe(false);
    const secure = await run(["nbdinfo", "--json", nbds(onServer, pki.client)]);
    expectSuccess(secure);
    expect(JSON.parse(secure.stdout).TLS).toBe(true);
  }, TEST_TIMEOUT_MS);
});

describe("clients that do not complete the TLS handshake", () => {
  async function startTls(server: NbdServer): Promise<RawClient> {
    const client = await RawClient.connect({ hostname: "127.0.0.1", port: portOf(server) });
    await client.greet();
    await client.sendOption(NBD_OPT_STARTTLS);
    expect((await client.readOptionReply()).replyType).toBe(NBD_REP_ACK);
    return client;
  }

  test("garbage instead of a TLS handshake: the connection is closed, the failure counted", async () => {
    const failuresBefore = requireServer.stats().tlsHandshakeFailures;
    const client = await startTls(requireServer);
    try {
      const garbage = randomBytes(1024);
      garbage[0] = 0x55; // not a TLS record type
      await client.send(garbage);
      expect(await client.waitClosed(CLIENT_TIMEOUT_MS)).toBe(true);
    } finally {
      client.terminate();
    }
    expect(requireServer.stats().tlsHandshakeFailures).toBe(failuresBefore + 1);
    expect(logs.get(requireServer)!.some((line) => /closing connection: TLS handshake failed: /.test(line))).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("credentials the TLS library refuses (not checked first, as the CLI does): that client is dropped, the server goes on", async () => {
    const broken = await serve({
      listen: { host: "127.0.0.1", port: 0 },
      tls: { mode: "require", options: { cert: "not a certificate", key: "not a key", requestCert: false, rejectUnauthorized: false } },
    });
    expect((await run(["nbdinfo", nbds(broken, pki.client)])).exitCode).not.toBe(0);
    expect(broken.stats().tlsHandshakeFailures).toBe(1);
    expect(logs.get(broken)!.some((line) => /TLS handshake failed: cannot start TLS: /.test(line))).toBe(true);
    expectSuccess(await run(["nbdinfo", nbds(requireServer, pki.client)]));
  }, TEST_TIMEOUT_MS);

  test("silence after STARTTLS: the handshake timeout closes the connection", async () => {
    const timeoutsBefore = impatientServer.stats().handshakeTimeouts;
    const client = await startTls(impatientServer);
    try {
      expect(await client.waitClosed(CLIENT_TIMEOUT_MS)).toBe(true);
    } finally {
      client.terminate();
    }
    expect(impatientServer.stats().handshakeTimeouts).toBe(timeoutsBefore + 1);
    expect(impatientServer.connectionCount()).toBe(0);
  }, TEST_TIMEOUT_MS);
});

describe("back-pressure over TLS", () => {
  // A Python client (ssl module) that sends 8 READs of 32 MiB over TLS, says "sent", reads nothing until told to on
  // stdin, then reads and checks every reply.
  const CLIENT = `
import socket, ssl, struct, sys
port, cafile, count, size = int(sys.argv[1]), sys.argv[2], 8, 32 << 20
def read(sock, n):
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0: raise EOFError
        got += k
    return bytes(buffer)
s = socket.create_connection(("127.0.0.1", port))
read(s, 18)
s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 5, 0))
header = read(s, 20)
read(s, struct.unpack(">I", header[16:20])[0])
t = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="localhost")
t.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 6) + struct.pack(">IH", 0, 0))
while True:
    magic, option, reply, length = struct.unpack(">QIII", read(t, 20))
    read(t, length)
    if reply == 1: break
    assert reply < 2 ** 31, "GO refused"
t.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, i * size, size) for i in range(count)))
print("sent", flush=True)
sys.stdin.readline()
for i in range(count):
    magic, error, cookie = struct.unpack(">IIQ", read(t, 16))
    assert magic == 0x67446698 and error == 0 and cookie == i, (magic, error, cookie)
    data = read(t, size)
    assert data[4095] == i + 1 and data[4096] == 0
print("ok", flush=True)
`;

  test("a TLS client that does not read its replies: the server stops reading at the output limit", async () => {
    const count = 8;
    const size = 32 * 1024 * 1024;
    const device = new MemoryBlockDevice(count * size);
    for (let index = 0; index < count; index++) await device.write(index * size, new Uint8Array(4096).fill(index + 1), false);
    const server = await serve({ listen: { host: "127.0.0.1", port: 0 }, tls: tlsFor("on") }, device);
    const child = Bun.spawn({
      cmd: ["python3", "-c", CLIENT, String(portOf(server)), join(pki.client, "ca-cert.pem")],
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      timeout: CLIENT_TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    const reader = child.stdout.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first.trim()).toBe("sent");
    for (let attempt = 0; attempt < 500 && server.stats().reads < 2; attempt++) await Bun.sleep(10);
    await Bun.sleep(50);
    // Two 32 MiB replies fill the 64 MiB output budget; the TLS layer and socket buffers take a little at most.
    expect(server.stats().reads).toBeGreaterThanOrEqual(2);
    expect(server.stats().reads).toBeLessThan(4);
    child.stdin.write("go\n");
    child.stdin.end();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    const stderr = await new Response(child.stderr).text();
    expect({ exit: await child.exited, stdout: rest.trim(), stderr }).toEqual({ exit: 0, stdout: "ok", stderr: "" });
    expect(server.stats().reads).toBe(count);
  }, TEST_TIMEOUT_MS);
});

describe("TLS versions and the runtime", () => {
  test("TLS 1.1 is refused, TLS 1.2 and 1.3 are accepted (spec: TLS 1.2 at least)", async () => {
    const script = `
import socket, ssl, struct, sys, warnings
warnings.simplefilter("ignore")
def attempt(version):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    def read(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c: raise EOFError
            b += c
        return b
    read(18)
    s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 5, 0))
    header = read(20)
    read(struct.unpack(">I", header[16:20])[0])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    try:
        t = ctx.wrap_socket(s)
        result = t.version()
        t.close()
        return result
    except ssl.SSLError:
        s.close()
        return "refused"
print(attempt(ssl.TLSVersion.TLSv1_1), attempt(ssl.TLSVersion.TLSv1_2), attempt(ssl.TLSVersion.TLSv1_3))
`;
    const result = await run(["python3", "-c", script, String(portOf(onServer))]);
    expectSuccess(result);
    expect(result.stdout.trim()).toBe("refused TLSv1.2 TLSv1.3");
  }, TEST_TIMEOUT_MS);

  test("canary: Bun's node:tls ignores pskCallback (if this fails, the runtime gained TLS-PSK: offer --tls-psk)", async () => {
    const tls = await import("node:tls");
    let called = 0;
    const pskServer = tls.createServer({
      ciphers: "PSK-AES128-CBC-SHA",
      maxVersion: "TLSv1.2",
      pskCallback: () => {
        called++;
        return Buffer.alloc(16, 1);
      },
    } as import("node:tls").TlsOptions);
    await new Promise<void>((resolve) => pskServer.listen(0, "127.0.0.1", resolve));
    const port = (pskServer.address() as import("node:net").AddressInfo).port;
    const result = await run([
      "openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-tls1_2", "-cipher", "PSK-AES128-CBC-SHA",
      "-psk", "01".repeat(16), "-psk_identity", "alice",
    ]);
    await new Promise<void>((resolve) => pskServer.close(() => resolve()));
    expect(called).toBe(0);
    expect(result.stdout).toContain("Cipher is (NONE)");
  }, TEST_TIMEOUT_MS);
});

describe("credentials", () => {
  function credentialsDir(name: string, files: Record<string, string>): string {
    const dir = join(directory, name);
    mkdirSync(dir, { recursive: true });
    for (const [to, from] of Object.entries(files)) copyFileSync(from, join(dir, to));
    return dir;
  }

  test("a missing file, a key that is not the certificate's, or garbage is refused, naming the file", () => {
    const missingKey = credentialsDir("missing-key", { "server-cert.pem": join(pki.server, "server-cert.pem") });
    expect(() => loadX509Credentials(missingKey, false)).toThrow(/server-key\.pem.*ENOENT/);
    const mismatch = credentialsDir("mismatch", { "server-cert.pem": join(pki.server, "server-cert.pem"), "server-key.pem": join(pki.client, "client-key.pem") });
    expect(() => loadX509Credentials(mismatch, false)).toThrow(InvalidArgumentError);
    expect(() => loadX509Credentials(mismatch, false)).toThrow(/KEY_VALUES_MISMATCH/);
    const garbage = credentialsDir("garbage", { "server-cert.pem": join(pki.server, "server-key.pem"), "server-key.pem": join(pki.server, "server-key.pem") });
    expect(() => loadX509Credentials(garbage, false)).toThrow(/server-cert\.pem: not a PEM certificate/);
  });

  test("a certificate that is expired or not yet valid is a warning; a valid one none", () => {
    const credentials = loadX509Credentials(pki.server, false);
    expect(certificateValidityWarning(credentials, Date.now())).toBeNull();
    const later = credentials.validTo.getTime() + 1000;
    expect(certificateValidityWarning(credentials, later)).toMatch(/server-cert\.pem expired on .*: clients will refuse it/);
    const earlier = credentials.validFrom.getTime() - 1000;
    expect(certificateValidityWarning(credentials, earlier)).toMatch(/server-cert\.pem is not valid before .*: clients will refuse it/);
  });

  test("--tls-verify-peer needs ca-cert.pem; without it ca-cert.pem is not read", () => {
    const noCa = credentialsDir("no-ca", { "server-cert.pem": join(pki.server, "server-cert.pem"), "server-key.pem": join(pki.server, "server-key.pem") });
    expect(() => loadX509Credentials(noCa, true)).toThrow(/ca-cert\.pem.*--tls-verify-peer.*ENOENT/);
    const credentials = loadX509Credentials(noCa, false);
    expect(credentials.ca).toBeNull();
    expect(tlsServerOptions(credentials).requestCert).toBe(false);
    expect(credentials.subject).toBe("CN=localhost");
  });
});

describe("TLS and NBD on io_uring", () => {
  test("a server on io_uring is refused TLS with a clear error, before it binds anything", async () => {
    const uringSocket = join(directory, "uring.sock");
    const starting = startNbdServer({ device: new MemoryBlockDevice(SIZE_BYTES), socketPath: uringSocket, tls: tlsFor("on"), ...nbdIo.options("uring") });
    await expect(starting).rejects.toThrow(InvalidArgumentError);
    await expect(starting).rejects.toThrow("NBD on io_uring offers no TLS: serve TLS on Bun's sockets");
    expect(existsSync(uringSocket)).toBe(false);
    nbdIo.expectIdle();
  });
});
