// Test helper (folder-private) for volume-level tests on real backends (RADOS and S3 on the test Ceph cluster of
// test/ceph/up.sh): the two backends as URIs, CLI flags and stores; the lsvd CLI as a child process; real NBD clients
// (nbdsh, nbdcopy); a byte-exact model of the volume; and a writer that drives a Volume while a test watches it.
// The cluster helpers themselves are test/backend/_ceph.ts (shared, so both folders start clusters one way).

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { ObjectStore } from "../../src/backend/object_store.ts";
import { RadosStore } from "../../src/backend/rados_store.ts";
import { S3Store } from "../../src/backend/s3_store.ts";
import { leaseName, parseObjectName } from "../../src/format/object_name.ts";
import type { Volume } from "../../src/volume/volume.ts";
import type { CephEnv } from "../backend/_ceph.ts";
import { Prng } from "../sim/prng.ts";

const REPO = path.resolve(import.meta.dir, "../..");
const BUN = process.execPath;
/** Every child process is bounded; a hung client or server fails the test instead of hanging it. */
export const CHILD_TIMEOUT_MS = 60_000;

export type BackendKind = "rados" | "s3";

/** One backend of the test cluster, as the CLI and the tests reach it. */
export interface Backend {
  kind: BackendKind;
  uri(prefix: string): string;
  /** Flags for every CLI command that opens the volume (RADOS: --ceph-conf/--ceph-keyring). */
  cliArgs: string[];
  /** Environment for the CLI (S3: AWS_* from the env file: the CLI's documented defaults). */
  cliEnv: Record<string, string>;
  /** A store on the same pool or bucket (the caller closes it). */
  openStore(options?: { opTimeoutMs?: number }): Promise<ObjectStore>;
}

export function backendOf(kind: BackendKind, env: CephEnv): Backend {
  if (kind === "rados") {
    const pool = env.LSVD_CEPH_POOL!;
    return {
      kind,
      uri: (prefix) => `rados://${pool}/${prefix}`,
      cliArgs: ["--ceph-conf", env.CEPH_CONF!, "--ceph-keyring", env.CEPH_KEYRING!],
      cliEnv: {},
      openStore: (options = {}) =>
        RadosStore.open({ pool, confPath: env.CEPH_CONF, keyringPath: env.CEPH_KEYRING, opTimeoutMs: options.opTimeoutMs }),
    };
  }
  const bucket = env.LSVD_S3_BUCKET!;
  return {
    kind,
    uri: (prefix) => `s3://${bucket}/${prefix}`,
    cliArgs: [],
    cliEnv: {
      AWS_ENDPOINT_URL: env.AWS_ENDPOINT_URL!,
      AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID!,
      AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY!,
      AWS_REGION: env.AWS_REGION!,
    },
    openStore: async () =>
      new S3Store({
        bucket,
        endpoint: env.AWS_ENDPOINT_URL,
        region: env.AWS_REGION,
        accessKeyId: env.AWS_ACCESS_KEY_ID,
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      }),
  };
}

/** A prefix no other test (or earlier run) uses: volumes share the pool and the bucket. */
export function uniquePrefix(tag: string): string {
  return `vb${tag}${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
}

export function makeTempDir(tag: string): string {
  // The cache is opened with O_DIRECT, which tmpfs refuses: os.tmpdir() here is a disk directory.
  return fs.mkdtempSync(path.join(os.tmpdir(), `lsvd-vb-${tag}-`));
}

/** The lsvd command line: $LSVD_BIN (e.g. dist/lsvd) if set, else the CLI from source (always current). */
export function lsvdCommand(): string[] {
  const bin = process.env.LSVD_BIN;
  return bin ? [bin] : [BUN, path.join(REPO, "src/cli/main.ts")];
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a child to completion without blocking the event loop; bounded by CHILD_TIMEOUT_MS. */
export async function run(argv: string[], env: Record<string, string> = {}, stdin?: string): Promise<RunResult> {
  const child = Bun.spawn(["timeout", String(CHILD_TIMEOUT_MS / 1000), ...argv], {
    env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ""}`, ...env },
    stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [exitCode, stdout, stderr] = await Promise.all([
    child.exited,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  return { exitCode, stdout, stderr };
}

export async function runOk(argv: string[], env: Record<string, string> = {}, stdin?: string): Promise<RunResult> {
  const result = await run(argv, env, stdin);
  if (result.exitCode !== 0) throw new Error(`${argv.join(" ")} failed (exit ${result.exitCode}):\n${result.stderr}${result.stdout}`);
  return result;
}

export function lsvd(backend: Backend, args: string[]): Promise<RunResult> {
  return runOk([...lsvdCommand(), ...args], backend.cliEnv);
}

/** `lsvd serve` on a unix socket, as a child process. */
/**
 * An admin socket beside the NBD socket unless the test chose one: serve's default (/run/lsvd) would outlive a
 * server killed with SIGKILL and is shared by the whole machine.
 */
export function adminSocketArgs(socketPath: string, extra: string[]): string[] {
  if (extra.some((arg) => arg === "--admin-socket" || arg === "--no-admin-socket")) return [];
  return ["--admin-socket", adminSocketOf(socketPath)];
}

/** The admin socket Server.start gives a server listening on NBD socket `socketPath`. */
export function adminSocketOf(socketPath: string): string {
  return `${socketPath}.admin`;
}

export class Server {
  private stderrChunks: string[] = [];
  private readonly drained: Promise<void>;

  private constructor(
    readonly child: ReturnType<typeof Bun.spawn>,
    readonly socketPath: string,
  ) {
    this.drained = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr as ReadableStream<Uint8Array>) this.stderrChunks.push(decoder.decode(chunk));
    })();
  }

  get uri(): string {
    return `nbd+unix:///?socket=${this.socketPath}`;
  }

  get log(): string {
    return this.stderrChunks.join("");
  }

  static async start(backend: Backend, volumeUri: string, cachePath: string, socketPath: string, extra: string[] = []): Promise<Server> {
    fs.rmSync(socketPath, { force: true });
    const child = Bun.spawn(
      [...lsvdCommand(), "serve", "--volume", volumeUri, "--cache", cachePath, "--socket", socketPath, "--log-level", "debug", ...adminSocketArgs(socketPath, extra), ...backend.cliArgs, ...extra],
      { env: { ...process.env, ...backend.cliEnv }, stdin: "ignore", stdout: "ignore", stderr: "pipe" },
    );
    const server = new Server(child, socketPath);
    const deadline = Date.now() + CHILD_TIMEOUT_MS;
    while (!server.log.includes("serving on")) {
      if (child.exitCode !== null || Date.now() > deadline) {
        if (child.exitCode === null) child.kill("SIGKILL");
        await child.exited;
        await server.drained;
        throw new Error(`lsvd serve did not start (exit ${child.exitCode}):\n${server.log}`);
      }
      await Bun.sleep(20);
    }
    return server;
  }

  /** SIGTERM: clean shutdown (everything put, checkpoint); resolves with the exit code. */
  async stop(): Promise<number> {
    this.child.kill("SIGTERM");
    return this.wait();
  }

  /** SIGKILL: a crash; acknowledged writes survive only in the journal. */
  async crash(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.wait();
  }

  /** Waits (bounded) for the server to exit by itself; resolves with the exit code. */
  async wait(): Promise<number> {
    const timer = setTimeout(() => this.child.kill("SIGKILL"), CHILD_TIMEOUT_MS);
    const code = await this.child.exited;
    clearTimeout(timer);
    await this.drained;
    return code;
  }
}

/** The expected contents of a volume, byte for byte, and seeded random writes to apply to it. */
export class VolumeModel {
  readonly bytes: Uint8Array;
  private readonly prng: Prng;

  constructor(
    readonly sizeBytes: number,
    seed: number,
  ) {
    this.bytes = new Uint8Array(sizeBytes);
    this.prng = new Prng(seed);
  }

  /** `count` writes of 4..256 KiB at random 4 KiB-aligned offsets (they overlap), applied to the model. */
  randomWrites(count: number): Array<{ offset: number; length: number }> {
    const writes: Array<{ offset: number; length: number }> = [];
    for (let i = 0; i < count; i++) {
      const length = (1 + this.prng.int(64)) * 4096;
      const offset = this.prng.int((this.sizeBytes - length) / 4096 + 1) * 4096;
      this.fill(offset, length);
      writes.push({ offset, length });
    }
    return writes;
  }

  /** Fills [offset, offset+length) with fresh pseudo-random bytes and returns them. */
  fill(offset: number, length: number): Uint8Array {
    const data = this.bytes.subarray(offset, offset + length);
    this.prng.fill(data);
    return data;
  }
}

/**
 * Writes the model's bytes for each range through a real NBD client (nbdsh, libnbd), reading them from a file the
 * model was saved to, then FLUSHes.
 */
export async function nbdWriteRanges(uri: string, imagePath: string, writes: Array<{ offset: number; length: number }>): Promise<void> {
  const script = `
import json
writes = json.loads(${JSON.stringify(JSON.stringify(writes.map((w) => [w.offset, w.length])))})
with open(${JSON.stringify(imagePath)}, "rb") as f:
    for offset, length in writes:
        f.seek(offset)
        h.pwrite(f.read(length), offset)
h.flush()
h.shutdown()
print("ok")
`;
  const result = await runOk(["nbdsh", "-u", uri, "-c", "-"], {}, script);
  if (!result.stdout.includes("ok")) throw new Error(`nbdsh wrote nothing:\n${result.stderr}${result.stdout}`);
}

/** Reads the whole export with nbdcopy into a file and returns its bytes. */
export async function nbdReadAll(uri: string, outPath: string): Promise<Uint8Array> {
  fs.rmSync(outPath, { force: true });
  await runOk(["nbdcopy", uri, outPath]);
  return new Uint8Array(fs.readFileSync(outPath));
}

/** First differing offset of two images, or -1 (a readable failure instead of a 64 MiB diff). */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): number {
  if (actual.byteLength !== expected.byteLength) return Math.min(actual.byteLength, expected.byteLength);
  if (Buffer.compare(actual, expected) === 0) return -1;
  for (let i = 0; i < actual.byteLength; i++) if (actual[i] !== expected[i]) return i;
  return -1;
}

/** Reads the whole volume through the Volume API in 4 MiB pieces. */
export async function readVolume(volume: Volume): Promise<Uint8Array> {
  const out = new Uint8Array(volume.sizeBytes);
  const step = 4 * 1024 * 1024;
  for (let offset = 0; offset < volume.sizeBytes; offset += step) {
    out.set(await volume.read(offset, Math.min(step, volume.sizeBytes - offset)), offset);
  }
  return out;
}

/** The sequence numbers of a volume's objects in the store, ascending. */
export async function objectSeqs(store: ObjectStore, prefix: string): Promise<number[]> {
  const seqs: number[] = [];
  for (const name of await store.list(`${prefix}.`)) {
    const seq = parseObjectName(prefix, name);
    if (seq !== null) seqs.push(seq);
  }
  return seqs.sort((a, b) => a - b);
}

/** Deletes a volume's superblock, objects and lease (tests share the pool and bucket). */
export async function deleteVolume(store: ObjectStore, prefix: string): Promise<void> {
  for (const name of await store.list(prefix)) {
    if (name === prefix || name === leaseName(prefix) || parseObjectName(prefix, name) !== null) await store.delete(name);
  }
}

/** Waits (bounded) for a condition while the event loop runs. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/**
 * Writers driving a Volume: `workers` loops, each writing `writeBytes` pieces of the model to its own stripe of the
 * volume (worker w owns pieces p with p % workers == w), so the writes of different workers never overlap and the
 * model is exact whatever the interleaving. Counts acknowledged bytes; a failed write is recorded, not retried.
 */
export class VolumeWriter {
  ackedBytes = 0;
  ackedWrites = 0;
  readonly errors: unknown[] = [];
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    volume: Volume,
    model: VolumeModel,
    options: { workers: number; writeBytes: number; totalBytes: number; seed: number },
  ) {
    const pieces = model.sizeBytes / options.writeBytes;
    const prng = new Prng(options.seed);
    const perWorker = Math.ceil(options.totalBytes / options.writeBytes / options.workers);
    this.done = Promise.all(
      Array.from({ length: options.workers }, async (_, worker) => {
        for (let i = 0; i < perWorker && !this.stopped; i++) {
          const piece = prng.int(Math.floor(pieces / options.workers)) * options.workers + worker;
          const offset = piece * options.writeBytes;
          // A copy: the model moves on while the write is in flight.
          const data = model.fill(offset, options.writeBytes).slice();
          try {
            await volume.write(offset, data, false);
          } catch (error) {
            this.errors.push(error);
            return;
          }
          this.ackedBytes += data.byteLength;
          this.ackedWrites += 1;
        }
      }),
    ).then(() => undefined);
  }

  stop(): void {
    this.stopped = true;
  }
}

/** Waits until acknowledged bytes stop growing for `quietMs` (the writers are stalled); bounded. */
export async function waitForStall(writer: VolumeWriter, quietMs: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  let since = Date.now();
  for (;;) {
    if (writer.ackedBytes !== last) {
      last = writer.ackedBytes;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return;
    }
    if (Date.now() > deadline) throw new Error(`writers did not stall within ${timeoutMs} ms (acknowledged ${writer.ackedBytes} bytes)`);
    await Bun.sleep(50);
  }
}
