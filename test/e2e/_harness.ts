// End-to-end test harness: the real `lsvd` binary (dist/lsvd, rebuilt when older than src/) run as a child process,
// driven by real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io, fio, nbdsh) over a unix socket or TCP 127.0.0.1.
// Every wait is bounded, every temp dir unique, every server started here is killed (SIGKILL) at cleanup if still up.
// Style: docs/architecture.md ("Testing"); the nbdkit tests/*.sh drive real clients the same way.

import { createCipheriv, createHash } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(import.meta.dir, "../..");
export const LSVD_BINARY = join(REPO_ROOT, "dist/lsvd");
const BUN_BINARY = join(REPO_ROOT, "node_modules/.bin/bun");

/** Any single client or CLI run; a hung tool fails its test instead of the whole suite. */
export const TOOL_TIMEOUT_MS = 60_000;
/** From spawn to the "serving on" log line (recovery of a small volume takes well under a second). */
export const SERVER_START_TIMEOUT_MS = 20_000;
/** From SIGTERM to exit: drain, put the last batch, checkpoint. */
export const SERVER_STOP_TIMEOUT_MS = 30_000;
/** A server's stderr kept for assertions and failure reports; older text is dropped past this. */
const SERVER_LOG_BYTES_MAX = 4 * 1024 * 1024;
/** TCP ports are picked at random here (serve has no ephemeral port) and retried when taken. */
const TCP_PORT_MIN = 20_000;
const TCP_PORT_MAX = 60_000;
const TCP_PORT_ATTEMPTS_MAX = 8;

export type Transport = "unix" | "tcp";
export const TRANSPORTS: Transport[] = ["unix", "tcp"];

/** PATH with the system tools first: another python3 earlier on PATH breaks nbdsh (docs/platform.md, "NBD clients"). */
export const TOOL_ENV: Record<string, string> = {
  ...(process.env as Record<string, string>),
  PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}`,
};

// ---- Build ------------------------------------------------------------------------------------------------------

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs);
  }
  return newest;
}

let built: Promise<string> | null = null;

/**
 * Builds dist/lsvd once per test process when it is missing or older than src/. bun build writes a temp file and
 * renames it over dist/lsvd, so a server still running the old binary is not disturbed.
 */
export function ensureBuilt(): Promise<string> {
  built ??= (async () => {
    const stale = !existsSync(LSVD_BINARY) || statSync(LSVD_BINARY).mtimeMs < newestMtimeMs(join(REPO_ROOT, "src"));
    if (stale) {
      const result = await run([BUN_BINARY, "build", "--compile", "--minify-syntax", "src/cli/main.ts", "--outfile", "dist/lsvd"], {
        cwd: REPO_ROOT,
        timeoutMs: 120_000,
      });
      if (result.exitCode !== 0) throw new Error(`build of dist/lsvd failed (exit ${result.exitCode}):\n${result.stderr}`);
    }
    return LSVD_BINARY;
  })();
  return built;
}

// ---- Processes ----------------------------------------------------------------------------------------------

function signalName(signal: unknown): string | null {
  return signal === null || signal === undefined ? null : String(signal);
}

export interface RunResult {
  exitCode: number | null;
  signalCode: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed with SIGKILL after timeoutMs). Never throws on a non-zero exit. */
export async function run(cmd: string[], options: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  const child = Bun.spawn({
    cmd,
    cwd: options.cwd,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...TOOL_ENV, ...options.env },
    timeout: options.timeoutMs ?? TOOL_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  const exitCode = await child.exited;
  return { exitCode, signalCode: signalName(child.signalCode), stdout, stderr };
}

/** Runs and throws (with all output) unless the exit code is 0. */
export async function runOk(cmd: string[], options: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  const result = await run(cmd, options);
  if (result.exitCode !== 0) {
    throw new Error(`${cmd.join(" ")}: exit ${result.exitCode} (${result.signalCode ?? "no signal"})\n${result.stdout}\n${result.stderr}`);
  }
  return result;
}

/** `lsvd ARGS...` with the built binary. */
export async function lsvd(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run([await ensureBuilt(), ...args], options);
}

// ---- Temp dirs and cleanup -------------------------------------------------------------------------------------

const tempDirs = new Set<string>();
const servers = new Set<LsvdServer>();

export function makeTempDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lsvd-e2e-${tag}-`));
  tempDirs.add(dir);
  return dir;
}

/** Kills every server still running (SIGKILL) and removes every temp dir. Call from afterAll. */
export async function cleanupAll(): Promise<void> {
  for (const server of servers) await server.kill();
  servers.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// A test process that dies before afterAll must not leave servers behind.
process.on("exit", () => {
  for (const server of servers) server.process.kill("SIGKILL");
});

// ---- Volumes --------------------------------------------------------------------------------------------------

export interface VolumePaths {
  dir: string;
  /** Backend directory holding the objects. */
  backendDir: string;
  /** Volume URI given to lsvd (absolute path /dir/PREFIX). */
  volume: string;
  cache: string;
}

/** mkdisk + mkcache in a fresh temp dir. */
export async function createVolume(tag: string, options: { size?: string; cacheSize?: string } = {}): Promise<VolumePaths> {
  const dir = makeTempDir(tag);
  const backendDir = join(dir, "backend");
  // The file store wants its directory to exist (mkdisk does not create it).
  await runOk(["mkdir", backendDir]);
  const volume = join(backendDir, "vol");
  const cache = join(dir, "cache");
  const mkdisk = await lsvd(["mkdisk", "--size", options.size ?? "1g", volume]);
  if (mkdisk.exitCode !== 0) throw new Error(`mkdisk failed: ${mkdisk.stderr}`);
  const mkcache = await lsvd(["mkcache", "--volume", volume, "--size", options.cacheSize ?? "256m", cache]);
  if (mkcache.exitCode !== 0) throw new Error(`mkcache failed: ${mkcache.stderr}`);
  return { dir, backendDir, volume, cache };
}

// ---- Servers --------------------------------------------------------------------------------------------------

export interface ServeOptions {
  /** `--volume` (VOLUME or VOLUME@SNAP); or, with `exports`, none. */
  volume?: string;
  /** `--cache`; none for a snapshot, which has no cache device. */
  cache?: string;
  /** The daemon form instead of volume and cache: one `--export` each, NAME=VOLUME,cache=CACHE[,...]. */
  exports?: string[];
  transport: Transport;
  /** Where the unix socket goes (a fresh name inside it). */
  dir: string;
  extraArgs?: string[];
  /** Working directory of the server process (default: the test's). */
  cwd?: string;
  /** Serve's own default admin socket (/run/lsvd/...) instead of one inside `dir` (adminSocketArgs). */
  defaultAdminSocket?: boolean;
}

export interface StopResult {
  exitCode: number | null;
  signalCode: string | null;
  log: string;
}

/**
 * --log-level debug unless the test chose a level (or --quiet): tests read recovery's journal case, a debug line
 * (the default lines say what happened in plain words).
 */
export function debugLogArgs(extraArgs: string[]): string[] {
  return extraArgs.some((arg) => arg === "--quiet" || arg.startsWith("--log-level")) ? [] : ["--log-level", "debug"];
}

/**
 * An admin socket inside the test's directory unless the test chose one: the default (/run/lsvd) would outlive a
 * server killed with SIGKILL and is shared by the whole machine.
 */
export function adminSocketArgs(dir: string, extraArgs: string[]): string[] {
  if (extraArgs.some((arg) => arg === "--admin-socket" || arg === "--no-admin-socket")) return [];
  return ["--admin-socket", join(dir, `admin.${process.pid}.${Math.random().toString(36).slice(2, 8)}`)];
}

/** What serve serves: --volume (and --cache), or the daemon form's --export specs. */
function servedArgs(options: ServeOptions): string[] {
  if (options.exports !== undefined) {
    if (options.volume !== undefined || options.cache !== undefined) throw new Error("ServeOptions: exports, or volume and cache, not both");
    return options.exports.flatMap((spec) => ["--export", spec]);
  }
  if (options.volume === undefined) throw new Error("ServeOptions: no volume and no exports");
  return ["--volume", options.volume, ...(options.cache === undefined ? [] : ["--cache", options.cache])];
}

/** One `lsvd serve` child process. */
export class LsvdServer {
  private logText = "";
  private readonly drained: Promise<void>;

  private constructor(
    readonly process: import("bun").Subprocess<"ignore", "pipe", "pipe">,
    readonly uri: string,
  ) {
    servers.add(this);
    this.drained = Promise.all([this.drain(process.stdout), this.drain(process.stderr)]).then(() => {});
  }

  /** Starts `lsvd serve` and waits for its "serving on" line; on TCP retries other ports when one is taken. */
  static async start(options: ServeOptions): Promise<LsvdServer> {
    const binary = await ensureBuilt();
    const attempts = options.transport === "unix" ? 1 : TCP_PORT_ATTEMPTS_MAX;
    let lastLog = "";
    for (let attempt = 0; attempt < attempts; attempt++) {
      let listenArgs: string[];
      let uri: string;
      if (options.transport === "unix") {
        const socket = join(options.dir, `sock.${process.pid}.${Math.random().toString(36).slice(2, 8)}`);
        listenArgs = ["--socket", socket];
        uri = `nbd+unix:///?socket=${socket}`;
      } else {
        const port = TCP_PORT_MIN + Math.floor(Math.random() * (TCP_PORT_MAX - TCP_PORT_MIN));
        listenArgs = ["--listen", `127.0.0.1:${port}`];
        uri = `nbd://127.0.0.1:${port}`;
      }
      const child = Bun.spawn({
        cmd: [binary, "serve", ...servedArgs(options), ...listenArgs, ...debugLogArgs(options.extraArgs ?? []), ...(options.defaultAdminSocket === true ? [] : adminSocketArgs(options.dir, options.extraArgs ?? [])), ...(options.extraArgs ?? [])],
        cwd: options.cwd,
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: TOOL_ENV,
      });
      const server = new LsvdServer(child, uri);
      const outcome = await server.waitFor(/serving on /, SERVER_START_TIMEOUT_MS);
      if (outcome === "found") return server;
      await server.kill();
      lastLog = server.log;
      // A taken port shows as a listen failure; anything else is a real failure.
      if (!(options.transport === "tcp" && /listen/i.test(lastLog))) break;
    }
    throw new Error(`lsvd serve did not start:\n${lastLog}`);
  }

  get log(): string {
    return this.logText;
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.logText += decoder.decode(chunk, { stream: true });
      if (this.logText.length > SERVER_LOG_BYTES_MAX) this.logText = this.logText.slice(-SERVER_LOG_BYTES_MAX / 2);
    }
  }

  /** Waits until the log matches, the process exits, or the time is up. */
  async waitFor(pattern: RegExp, timeoutMs: number): Promise<"found" | "exited" | "timeout"> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (pattern.test(this.logText)) return "found";
      if (!this.running) {
        await this.drained;
        return pattern.test(this.logText) ? "found" : "exited";
      }
      await Bun.sleep(20);
    }
    return "timeout";
  }

  /** Sends a signal and waits (bounded) for the exit; SIGKILL if it does not come. */
  async stop(signal: "SIGTERM" | "SIGINT" | "SIGKILL" = "SIGTERM", timeoutMs = SERVER_STOP_TIMEOUT_MS): Promise<StopResult> {
    if (this.running) this.process.kill(signal);
    const exited = await Promise.race([this.process.exited.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
    if (!exited) {
      this.process.kill("SIGKILL");
      await this.process.exited;
    }
    await this.drained;
    servers.delete(this);
    if (!exited) throw new Error(`lsvd serve did not exit within ${timeoutMs} ms of ${signal}:\n${this.logText}`);
    return { exitCode: this.process.exitCode, signalCode: signalName(this.process.signalCode), log: this.logText };
  }

  /** SIGKILL: a crash. Nothing is flushed beyond what the journal already holds. */
  async kill(): Promise<StopResult> {
    if (this.running) this.process.kill("SIGKILL");
    await this.process.exited;
    await this.drained;
    servers.delete(this);
    return { exitCode: this.process.exitCode, signalCode: signalName(this.process.signalCode), log: this.logText };
  }
}

/** The summary line a clean stop prints, e.g. "stopped after 3.1 s: 1024 writes (256 MiB), ...". */
export const STOP_SUMMARY_PATTERN = /lsvd: stopped after [\d.]+ s: (\d+) writes \([^)]*\), (\d+) trims\/zeroes, (\d+) journal records, (\d+) objects put/;

// ---- Data -----------------------------------------------------------------------------------------------------

/**
 * Writes `sizeBytes` of deterministic pseudo-random bytes (AES-128-CTR keystream of the seed) to `path`:
 * fast enough for hundreds of MiB, and the same seed gives the same file.
 */
export function writeRandomFile(path: string, sizeBytes: number, seed: number): void {
  const key = createHash("sha256").update(`lsvd-e2e-${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  const chunkBytes = 4 * 1024 * 1024;
  const zeroes = Buffer.alloc(chunkBytes);
  const fd = openSync(path, "w");
  try {
    for (let done = 0; done < sizeBytes; done += chunkBytes) {
      const bytes = cipher.update(zeroes.subarray(0, Math.min(chunkBytes, sizeBytes - done)));
      writeSync(fd, bytes);
    }
  } finally {
    closeSync(fd);
  }
}

/** sha256 of a file's first `lengthBytes` (all of it when omitted), streamed. */
export async function sha256File(path: string, lengthBytes?: number): Promise<string> {
  const hash = createHash("sha256");
  const file = lengthBytes === undefined ? Bun.file(path) : Bun.file(path).slice(0, lengthBytes);
  for await (const chunk of file.stream()) hash.update(chunk);
  return hash.digest("hex");
}

/** True when bytes [start, end) of a file are all zero. */
export async function isZeroRange(path: string, start: number, end: number): Promise<boolean> {
  let zeroes = Buffer.alloc(0);
  for await (const chunk of Bun.file(path).slice(start, end).stream()) {
    if (zeroes.length < chunk.length) zeroes = Buffer.alloc(chunk.length);
    if (Buffer.compare(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length), zeroes.subarray(0, chunk.length)) !== 0) return false;
  }
  return true;
}

export function fileSize(path: string): number {
  return statSync(path).size;
}

// ---- Listeners ------------------------------------------------------------------------------------------------

/** O_NONBLOCK in /proc/PID/fdinfo's octal flags. */
const O_NONBLOCK = 0o4000;

/** Inodes of the sockets listening on `port` (TCP, IPv4) or on the unix socket `path` (not its accepted connections). */
export function listeningInodes(where: { port: number } | { path: string }): Set<string> {
  const inodes = new Set<string>();
  if ("path" in where) {
    for (const line of readFileSync("/proc/net/unix", "utf8").split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      // Flags 00010000 (__SO_ACCEPTCON): the listener. An accepted connection shows the same path until it closes.
      if (fields[7] === where.path && (Number.parseInt(fields[3]!, 16) & 0x10000) !== 0) inodes.add(fields[6]!);
    }
    return inodes;
  }
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
    if (fields[3] === "0A" && Number.parseInt(fields[1]!.split(":")[1]!, 16) === where.port) inodes.add(fields[9]!);
  }
  return inodes;
}

/** Whether each of the process's descriptors for the listening socket of `uri` is blocking (ours) or not (Bun's). */
export function listenerBlocking(pid: number, uri: string): boolean[] {
  const unix = /[?&]socket=([^&]+)/.exec(uri);
  const inodes = listeningInodes(unix !== null ? { path: unix[1]! } : { port: Number(/:(\d+)/.exec(uri.slice("nbd://".length))![1]) });
  const blocking: boolean[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode === undefined || !inodes.has(inode)) continue;
    const flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"))![1]!, 8);
    blocking.push((flags & O_NONBLOCK) === 0);
  }
  return blocking;
}
