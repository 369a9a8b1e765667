// The crash harness (folder-private): runs the REAL server (`bun src/cli/main.ts serve`, or $LSVD_BIN) on a unix
// socket, drives a known write history through it over NBD, SIGKILLs it at random points, damages the cache or the
// backend as a case asks, restarts it, reads the whole volume back and checks it against the history.
// Used by test/crash/crash_test.ts (a few seeds) and bench/crash_matrix.ts (many).
//
// The history model. Every op (WRITE, TRIM, WRITE_ZEROES) gets an id in the order it is sent on the one connection;
// the server dispatches requests in stream order, so its journal order is this order. Ops in flight never overlap
// (the generator waits), so "the newest version of a block" is well defined. Every 4 KiB block a WRITE carries is
// stamped with the op id, its block number and a CRC32C, so a read tells exactly which op a block came from (all
// zero: a trim, a zeroing, or never written).
//
// The checks. A round starts from a known state (`base`, what each block read as after the last restart) and runs
// ops n+1..N. After a crash the volume must read as the state after ops n+1..k for some k (a prefix), with
// k >= a lower bound the case promises: every acknowledged op (cache intact), or none (cache wiped). The checker
// intersects, block by block, the set of k that explain what the block holds.

import { closeSync, existsSync, mkdirSync, fdatasyncSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { PAGE_BYTES } from "../../src/constants.ts";
import { IOError } from "../../src/errors.ts";
import type { CacheDevice } from "../../src/cache/cache_device.ts";
import { JournalWalker } from "../../src/cache/journal_replay.ts";
import { decodeCacheSuperblock } from "../../src/format/cache_superblock.ts";
import { crc32c } from "../../src/format/crc32c.ts";
import { decodeSuperblock } from "../../src/format/superblock_object.ts";
import { JOURNAL_HEADER_BYTES, JournalRecordType } from "../../src/format/journal_record.ts";
import { parseObjectName } from "../../src/format/object_name.ts";
import { MemoryPool } from "../sim/memory_cache_device.ts";
import { Prng } from "../sim/prng.ts";
import { NbdClient, NbdClosedError } from "./_nbd_client.ts";

export const REPO_ROOT = path.resolve(import.meta.dir, "../..");
export const BLOCK_BYTES = 4096;
/** Tries to find a range no in-flight op touches before waiting for one to finish. */
const RANGE_PICK_TRIES = 8;
/** A server that is not serving this long after start is hung (recovery of a full journal takes well under this). */
const SERVER_START_TIMEOUT_MS = 60_000;
const SERVER_STOP_TIMEOUT_MS = 30_000;
/** Any one full-volume verification read gives up after this long. */
const VERIFY_TIMEOUT_MS = 60_000;
/** Verification reads in flight and their size. */
const VERIFY_READ_BYTES = 256 * 1024;
const VERIFY_READS_INFLIGHT = 8;

const STAMP_MAGIC = 0x4b4d5453; // "STMK"

// ---- Running lsvd --------------------------------------------------------------------------------------------

/** argv prefix that runs the CLI: $LSVD_BIN (e.g. dist/lsvd) or this Bun on the sources. */
export function lsvdArgv(): string[] {
  const bin = process.env.LSVD_BIN;
  return bin ? [path.resolve(REPO_ROOT, bin)] : [process.execPath, path.join(REPO_ROOT, "src/cli/main.ts")];
}

export function runLsvd(args: string[]): { code: number; stdout: string; stderr: string } {
  const result = Bun.spawnSync([...lsvdArgv(), ...args], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", env: process.env });
  return { code: result.exitCode ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

function runOk(args: string[]): string {
  const result = runLsvd(args);
  if (result.code !== 0) throw new Error(`lsvd ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

export interface ServerOptions {
  batchSize: string;
  batchIdleMs: number;
  /** More `lsvd serve` options (e.g. --read-cache). */
  extraArgs?: string[];
  /** Serve through the daemon form, `--export NAME=VOLUME,cache=CACHE`, instead of `--volume --cache`. */
  daemonExport?: string;
}

/** Servers this process started and that have not exited: killAllServers() ends them (by pid) on an interrupt. */
const liveServers = new Set<ServerProcess>();

export async function killAllServers(): Promise<void> {
  for (const server of [...liveServers]) await server.kill();
}

/** One lsvd serve process; its log goes to a file so it survives the kill. */
export class ServerProcess {
  private readonly proc: ReturnType<typeof Bun.spawn>;
  readonly logPath: string;
  private exited = false;
  private readonly spawnedAtMs = Date.now();
  /** Milliseconds from spawn to "serving on" (after waitServing). */
  startMs = 0;

  constructor(
    readonly env: CrashEnv,
    options: ServerOptions,
    index: number,
  ) {
    this.logPath = path.join(env.dir, `serve.${index}.log`);
    if (existsSync(env.socketPath)) unlinkSync(env.socketPath);
    const log = Bun.file(this.logPath);
    this.proc = Bun.spawn(
      [
        ...lsvdArgv(),
        "serve",
        ...(options.daemonExport === undefined
          ? ["--volume", env.volumePath, "--cache", env.cachePath]
          : ["--export", `${options.daemonExport}=${env.volumePath},cache=${env.cachePath}`]),
        "--socket",
        env.socketPath,
        "--batch-size",
        options.batchSize,
        "--batch-idle-ms",
        String(options.batchIdleMs),
        "--log-level",
        "debug", // the journal case recovery chose is a debug line
        "--admin-socket", // in the test's directory: the default (/run/lsvd) outlives a server killed with SIGKILL
        path.join(env.dir, "admin.sock"),
        ...(options.extraArgs ?? []),
      ],
      { cwd: REPO_ROOT, stdout: log, stderr: log, env: process.env },
    );
    liveServers.add(this);
    void this.proc.exited.then(() => {
      this.exited = true;
      liveServers.delete(this);
    });
  }

  get pid(): number {
    return this.proc.pid;
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  get serving(): boolean {
    return this.log().includes("serving on");
  }

  /** Waits until the server says it is serving; throws (with its log) if it exits or hangs. */
  async waitServing(): Promise<void> {
    const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
    while (!this.serving) {
      if (this.exited) throw new Error(`lsvd serve exited with ${this.proc.exitCode} before serving:\n${this.log()}`);
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`lsvd serve not serving after ${SERVER_START_TIMEOUT_MS} ms:\n${this.log()}`);
      }
      await Bun.sleep(10);
    }
    this.startMs = Date.now() - this.spawnedAtMs;
  }

  async kill(): Promise<void> {
    if (!this.exited) this.proc.kill("SIGKILL");
    await this.proc.exited;
  }

  /** Clean stop (SIGTERM); returns the exit code. */
  async stop(): Promise<number> {
    if (!this.exited) this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), SERVER_STOP_TIMEOUT_MS);
    const code = await this.proc.exited;
    clearTimeout(timer);
    return code;
  }

  /** The journal case recovery chose, from the log ("journal case @B"). */
  journalCase(): string | null {
    return /journal case (@[A-F])/.exec(this.log())?.[1] ?? null;
  }
}

/** A temp dir with a volume, its cache, and the processes started on it. */
export class CrashEnv {
  readonly dir: string;
  readonly backendDir: string;
  readonly volumePath: string;
  readonly cachePath: string;
  readonly socketPath: string;
  private servers: ServerProcess[] = [];

  constructor(
    readonly volumeBytes: number,
    readonly cacheSize: string,
  ) {
    this.dir = mkdtempSync(path.join(tmpdir(), "lsvd-crash-"));
    this.backendDir = path.join(this.dir, "b");
    this.volumePath = path.join(this.backendDir, "vol");
    this.cachePath = path.join(this.dir, "cache");
    this.socketPath = path.join(this.dir, "sock");
    mkdirSync(this.backendDir);
    runOk(["mkdisk", "--size", String(volumeBytes), this.volumePath]);
    this.formatCache();
  }

  formatCache(): void {
    runOk(["mkcache", "--force", "--volume", this.volumePath, "--size", this.cacheSize, this.cachePath]);
  }

  start(options: ServerOptions): ServerProcess {
    const server = new ServerProcess(this, options, this.servers.length);
    this.servers.push(server);
    return server;
  }

  /** Object seqs in the backend directory, ascending. */
  objectSeqs(): number[] {
    const seqs: number[] = [];
    for (const name of readdirSync(this.backendDir)) {
      const seq = parseObjectName("vol", name);
      if (seq !== null) seqs.push(seq);
    }
    return seqs.sort((a, b) => a - b);
  }

  /**
   * The objects a crash can leave missing: those above the newest checkpoint the superblock lists, and listed
   * checkpoints themselves (recovery falls back to an older one). A DATA object below the newest listed checkpoint
   * cannot be missing after a crash: the superblock lists a checkpoint only once it and every object before it are
   * durable, so losing one is the backend losing data, which no recovery can mend (the checkpoint's map points into it).
   */
  losableObjectSeqs(): number[] {
    const listed = decodeSuperblock(new Uint8Array(readFileSync(this.volumePath))).checkpoints;
    const newestListed = Math.max(0, ...listed);
    return this.objectSeqs().filter((seq) => seq > newestListed || listed.includes(seq));
  }

  deleteObject(seq: number): void {
    rmSync(path.join(this.backendDir, `vol.${seq.toString(16).padStart(8, "0")}`), { force: true });
  }

  fsck(extra: string[] = []): { code: number; report: { problems: Array<{ kind: string; message: string }>; cache: unknown } | null; stderr: string } {
    const result = runLsvd(["fsck", "--json", "--cache", this.cachePath, ...extra, this.volumePath]);
    let report = null;
    try {
      report = JSON.parse(result.stdout);
    } catch {
      report = null;
    }
    return { code: result.code, report, stderr: result.stderr };
  }

  /** Kills every process this env started (by pid, each one we spawned) and removes the temp dir. */
  async cleanup(keep = false): Promise<void> {
    for (const server of this.servers) await server.kill();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- Block stamps --------------------------------------------------------------------------------------------

/** Fills a 4 KiB block: magic, op id, block number, CRC32C, then bytes derived from (op, block). */
export function stampBlock(into: Uint8Array, opId: number, block: number): void {
  const view = new DataView(into.buffer, into.byteOffset, BLOCK_BYTES);
  let x = (Math.imul(opId, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca6b)) >>> 0 || 1;
  for (let offset = 16; offset < BLOCK_BYTES; offset += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view.setUint32(offset, x >>> 0, true);
  }
  view.setUint32(0, STAMP_MAGIC, true);
  view.setUint32(4, opId, true);
  view.setUint32(8, block, true);
  view.setUint32(12, 0, true);
  view.setUint32(12, crc32c(into.subarray(0, BLOCK_BYTES)), true);
}

/** What a read block holds: 0 for all zeroes, an op id for a valid stamp of this block, else a description. */
export function decodeBlock(bytes: Uint8Array, block: number): number | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, BLOCK_BYTES);
  let zero = true;
  for (let offset = 0; offset < BLOCK_BYTES; offset += 4) {
    if (view.getUint32(offset, true) !== 0) {
      zero = false;
      break;
    }
  }
  if (zero) return 0;
  if (view.getUint32(0, true) !== STAMP_MAGIC) return "garbage (no stamp)";
  const stored = view.getUint32(12, true);
  const copy = bytes.slice(0, BLOCK_BYTES);
  new DataView(copy.buffer).setUint32(12, 0, true);
  if (crc32c(copy) !== stored) return `garbage (stamp of op ${view.getUint32(4, true)} with a bad CRC: torn or mixed)`;
  const stampedBlock = view.getUint32(8, true);
  if (stampedBlock !== block) return `misplaced (op ${view.getUint32(4, true)}'s data for block ${stampedBlock})`;
  return view.getUint32(4, true);
}

// ---- The history and its checker -----------------------------------------------------------------------------

export type OpKind = "write" | "trim" | "zero";

export interface Op {
  id: number;
  kind: OpKind;
  block: number;
  count: number;
  acked: boolean;
  /**
   * The write path splits a WRITE larger than one piece (min(batch size, 4 MiB)) into pieces that go into journal
   * records in order; each piece is atomic, the op as a whole is not (an unacknowledged large write may be partly
   * applied, as on any disk). Units number pieces in journal order: this op is units firstUnit..firstUnit+pieces-1.
   */
  firstUnit: number;
  pieces: number;
}

/** What checkPrefix needs of a round: its starting state, its ops, and the units they span. */
export interface RoundHistory {
  readonly blocks: number;
  readonly base: Int32Array;
  readonly ops: readonly Op[];
  readonly firstUnit: number;
  readonly lastUnit: number;
  unitOf(op: Op, block: number): number;
}

/** The unit that wrote `block`: a write is journaled in pieces of `pieceBlocks` blocks, one unit each. */
function unitOfBlock(op: Op, block: number, pieceBlocks: number): number {
  return op.kind === "write" ? op.firstUnit + Math.floor((block - op.block) / pieceBlocks) : op.firstUnit;
}

/**
 * A finished round, capped at the newest unit the state read back at its end could have had applied: losing backend
 * objects that were put after the round ended (say, the re-put of records it replayed) takes the volume back into it.
 */
export class PastRound implements RoundHistory {
  constructor(
    readonly blocks: number,
    readonly pieceBlocks: number,
    readonly base: Int32Array,
    readonly ops: readonly Op[],
    readonly firstUnit: number,
    readonly lastUnit: number,
  ) {}

  unitOf(op: Op, block: number): number {
    return unitOfBlock(op, block, this.pieceBlocks);
  }
}

/** Ops of one round (since the last verified state) and the state they started from. */
export class History implements RoundHistory {
  /** Block -> op id it read as at the start of the round (0: zero). */
  base: Int32Array;
  /** Earlier rounds, oldest first. */
  readonly past: PastRound[] = [];
  ops: Op[] = [];
  /** Every unit <= flushedBound was acknowledged before a FLUSH that completed. */
  flushedBound = 0;
  private nextId = 1;
  private nextUnit = 1;
  /** Ops of this round have ids firstId..lastId and units firstUnit..lastUnit. */
  firstId = 1;
  firstUnit = 1;
  private readonly byId = new Map<number, Op>();

  constructor(
    readonly blocks: number,
    /** Blocks per write piece: min(batch size, JOURNAL_RECORD_DATA_BYTES_MAX) / 4 KiB. */
    readonly pieceBlocks: number,
  ) {
    this.base = new Int32Array(blocks);
  }

  add(kind: OpKind, block: number, count: number): Op {
    const pieces = kind === "write" ? Math.ceil(count / this.pieceBlocks) : 1;
    const op: Op = { id: this.nextId++, kind, block, count, acked: false, firstUnit: this.nextUnit, pieces };
    this.nextUnit += pieces;
    this.ops.push(op);
    this.byId.set(op.id, op);
    return op;
  }

  get lastId(): number {
    return this.nextId - 1;
  }

  get lastUnit(): number {
    return this.nextUnit - 1;
  }

  /** The unit of op `id` that carries `block`. */
  unitOf(op: Op, block: number): number {
    return unitOfBlock(op, block, this.pieceBlocks);
  }

  /** Unit bound for "op `id` and everything before it" (firstUnit-1 when id is before this round). */
  throughOp(id: number): number {
    const op = this.byId.get(id);
    return op && id >= this.firstId ? op.firstUnit + op.pieces - 1 : this.firstUnit - 1;
  }

  /** Unit bound for "the piece of op `id` that carries `block`, and everything before it". */
  throughPiece(id: number, block: number): number {
    const op = this.byId.get(id);
    return op && id >= this.firstId ? this.unitOf(op, block) : this.firstUnit - 1;
  }

  /** Units through the newest op such that it and every op before it in this round were acknowledged. */
  ackedPrefix(): number {
    let bound = this.firstUnit - 1;
    for (const op of this.ops) {
      if (!op.acked) break;
      bound = op.firstUnit + op.pieces - 1;
    }
    return bound;
  }

  /** Units through the newest acknowledged op (acknowledged: so were all its pieces, and all before them). */
  maxAcked(): number {
    let bound = this.firstUnit - 1;
    for (const op of this.ops) if (op.acked) bound = op.firstUnit + op.pieces - 1;
    return bound;
  }

  /** Starts a new round from what the volume holds now; `appliedThrough`: the newest unit it may hold (check's kMax). */
  nextRound(observed: Int32Array, appliedThrough: number = this.lastUnit): void {
    this.past.push(new PastRound(this.blocks, this.pieceBlocks, this.base, this.ops, this.firstUnit, appliedThrough));
    this.base = observed.slice();
    this.ops = [];
    this.byId.clear();
    this.firstId = this.nextId;
    this.firstUnit = this.nextUnit;
    this.flushedBound = 0;
  }
}

export interface PrefixResult {
  ok: boolean;
  /** The range of k (the last unit applied) consistent with every block; empty when !ok. */
  kMin: number;
  kMax: number;
  message: string;
}

/**
 * Checks that `observed` (per block: op id, 0, or a problem string) is the state after the round's units up to some
 * k >= lowerBound (a unit). k = firstUnit-1 means none of the round's ops. With `wholeOps`, k must also end on an op
 * boundary (every op wholly present or wholly absent: what the backend alone must hold once the cache is lost), or be
 * the round's last unit (for a past round: where the state read back at its end stood).
 */
export function checkPrefix(history: RoundHistory, observed: Array<number | string>, lowerBound: number, wholeOps = false): PrefixResult {
  const first = history.firstUnit - 1;
  const last = history.lastUnit;
  if (lowerBound > last) return { ok: false, kMin: 0, kMax: -1, message: `lower bound ${lowerBound} beyond the last unit ${last}` };
  // Per block, the round's ops that touch it, in id (= unit) order.
  const perBlock = new Map<number, Op[]>();
  for (const op of history.ops) {
    for (let block = op.block; block < op.block + op.count; block++) {
      let list = perBlock.get(block);
      if (!list) perBlock.set(block, (list = []));
      list.push(op);
    }
  }
  // Candidate k values as disjoint sorted intervals [lo, hi].
  let candidates: Array<[number, number]> = [[Math.max(first, lowerBound), last]];
  for (let block = 0; block < history.blocks; block++) {
    const value = observed[block]!;
    const ops = perBlock.get(block) ?? [];
    const describe = () =>
      `block ${block} reads ${typeof value === "number" ? (value === 0 ? "zero" : `op ${value}`) : value}; base ${history.base[block] === 0 ? "zero" : `op ${history.base[block]}`}; round ops on it (id:unit, w/t/z, + acked): ${ops.map((op) => `${op.id}:${history.unitOf(op, block)}${op.kind === "write" ? "w" : op.kind === "trim" ? "t" : "z"}${op.acked ? "+" : ""}`).join(" ") || "none"}; lower bound unit ${lowerBound}`;
    if (typeof value === "string") return { ok: false, kMin: 0, kMax: -1, message: describe() };
    // Intervals of k for which this block holds `value`.
    const allowed: Array<[number, number]> = [];
    const firstUnit = ops.length > 0 ? history.unitOf(ops[0]!, block) : last + 1;
    if (history.base[block] === value) allowed.push([first, firstUnit - 1]);
    ops.forEach((op, index) => {
      const holds = op.kind === "write" ? op.id === value : value === 0;
      const until = index + 1 < ops.length ? history.unitOf(ops[index + 1]!, block) - 1 : last;
      if (holds) allowed.push([history.unitOf(op, block), until]);
    });
    const next: Array<[number, number]> = [];
    for (const [lo, hi] of candidates) {
      for (const [alo, ahi] of allowed) {
        const l = Math.max(lo, alo);
        const h = Math.min(hi, ahi);
        if (l <= h) next.push([l, h]);
      }
    }
    next.sort((a, b) => a[0] - b[0]);
    if (next.length === 0) {
      const range = candidates.map(([lo, hi]) => `${lo}..${hi}`).join(", ");
      return { ok: false, kMin: 0, kMax: -1, message: `not a prefix of the history with k >= unit ${lowerBound}: earlier blocks allow k in {${range}}, but ${describe()}` };
    }
    candidates = next;
  }
  if (wholeOps) return keepWholeOps(history, candidates);
  return { ok: true, kMin: candidates[0]![0], kMax: candidates[candidates.length - 1]![1], message: "" };
}

/** The k of `candidates` (sorted intervals) that end on an op boundary; a failure naming the op cut otherwise. */
function keepWholeOps(history: RoundHistory, candidates: Array<[number, number]>): PrefixResult {
  const ends = [history.firstUnit - 1, ...history.ops.map((op) => op.firstUnit + op.pieces - 1), history.lastUnit];
  const kept = ends.filter((k) => candidates.some(([lo, hi]) => lo <= k && k <= hi)).sort((a, b) => a - b);
  if (kept.length > 0) return { ok: true, kMin: kept[0]!, kMax: kept[kept.length - 1]!, message: "" };
  const [lo, hi] = candidates[0]!;
  const cut = history.ops.find((op) => op.firstUnit <= lo && hi < op.firstUnit + op.pieces - 1);
  const what = cut ? `op ${cut.id} (${cut.kind}, ${cut.count} blocks, units ${cut.firstUnit}..${cut.firstUnit + cut.pieces - 1}${cut.acked ? ", acknowledged" : ""})` : "an op";
  const range = candidates.map(([a, b]) => `${a}..${b}`).join(", ");
  return { ok: false, kMin: 0, kMax: -1, message: `torn op: the state is the history up to a unit in {${range}}, inside ${what}; not a prefix of whole ops` };
}

// ---- Workload ------------------------------------------------------------------------------------------------

export interface WorkloadOptions {
  /** Requests in flight at most (fewer: more, smaller journal records). */
  inflightMax: number;
  /** Largest op in blocks (occasionally). */
  opBlocksMax: number;
  /** Share of ops between 33 blocks and opBlocksMax (the rest: 70:25 of 1-4 and 5-32 blocks). */
  largeOpFraction: number;
  trimFraction: number;
  zeroFraction: number;
  flushFraction: number;
  fuaFraction: number;
}

export const WORKLOAD_DEFAULT: WorkloadOptions = {
  inflightMax: 32,
  opBlocksMax: 128,
  largeOpFraction: 0.05,
  trimFraction: 0.08,
  zeroFraction: 0.08,
  flushFraction: 0.03,
  fuaFraction: 0.05,
};

export interface WorkloadResult {
  sent: number;
  acked: number;
  flushes: number;
  /** An error that is not the connection dying (a failed write is a bug). */
  error: Error | null;
}

/**
 * Sends ops until the connection dies or `untilMs` (a Date.now() deadline) passes, keeping WORKLOAD_INFLIGHT_MAX in
 * flight (at most options.inflightMax), never two overlapping. Returns when everything sent has settled.
 */
export async function runWorkload(client: NbdClient, history: History, prng: Prng, untilMs: number, options = WORKLOAD_DEFAULT): Promise<WorkloadResult> {
  const busy = new Uint8Array(history.blocks);
  const inFlight = new Set<Promise<void>>();
  const result: WorkloadResult = { sent: 0, acked: 0, flushes: 0, error: null };
  const settle = (promise: Promise<void>) => {
    inFlight.add(promise);
    void promise.finally(() => inFlight.delete(promise));
  };
  const onError = (error: unknown) => {
    if (error instanceof NbdClosedError) return;
    result.error ??= error instanceof Error ? error : new Error(String(error));
  };
  const pickCount = () => {
    if (options.opBlocksMax <= 4) return 1 + prng.int(options.opBlocksMax);
    // One roll of 100, as before largeOpFraction existed: the default's seeds replay the same ops.
    const roll = prng.int(100);
    const largeFrom = 100 - Math.round(100 * options.largeOpFraction);
    if (roll >= largeFrom) return Math.min(options.opBlocksMax, 33 + prng.int(Math.max(1, options.opBlocksMax - 32)));
    return roll < (largeFrom * 70) / 95 ? 1 + prng.int(4) : 5 + prng.int(28);
  };
  while (!client.closed && Date.now() < untilMs && result.error === null) {
    while (inFlight.size >= options.inflightMax) await Promise.race(inFlight);
    if (client.closed) break;
    if (prng.chance(options.flushFraction)) {
      const bound = history.ackedPrefix();
      result.flushes += 1;
      settle(
        client.flush().then(() => {
          history.flushedBound = Math.max(history.flushedBound, bound);
        }, onError),
      );
      continue;
    }
    const count = Math.min(pickCount(), history.blocks);
    let block = -1;
    for (let attempt = 0; attempt < RANGE_PICK_TRIES && block < 0; attempt++) {
      const candidate = prng.int(history.blocks - count + 1);
      let free = true;
      for (let b = candidate; b < candidate + count && free; b++) free = busy[b] === 0;
      if (free) block = candidate;
    }
    if (block < 0) {
      if (inFlight.size > 0) await Promise.race(inFlight);
      continue;
    }
    const roll = prng.chance(options.trimFraction) ? "trim" : prng.chance(options.zeroFraction / (1 - options.trimFraction)) ? "zero" : "write";
    const op = history.add(roll, block, count);
    const fua = prng.chance(options.fuaFraction);
    busy.fill(1, block, block + count);
    let request: Promise<void>;
    if (roll === "write") {
      const data = new Uint8Array(count * BLOCK_BYTES);
      for (let index = 0; index < count; index++) stampBlock(data.subarray(index * BLOCK_BYTES, (index + 1) * BLOCK_BYTES), op.id, block + index);
      request = client.write(block * BLOCK_BYTES, data, fua);
    } else if (roll === "trim") {
      request = client.trim(block * BLOCK_BYTES, count * BLOCK_BYTES, fua);
    } else {
      request = client.writeZeroes(block * BLOCK_BYTES, count * BLOCK_BYTES, fua);
    }
    result.sent += 1;
    settle(
      request.then(
        () => {
          op.acked = true;
          result.acked += 1;
        },
        onError,
      ).finally(() => busy.fill(0, block, block + count)),
    );
    // Let replies be processed between sends.
    if (result.sent % 4 === 0) await Bun.sleep(0);
  }
  await Promise.allSettled([...inFlight]);
  return result;
}

/** Reads every block through NBD and decodes it. */
export async function readVolume(client: NbdClient, blocks: number): Promise<Array<number | string>> {
  const observed: Array<number | string> = new Array(blocks);
  const blocksPerRead = VERIFY_READ_BYTES / BLOCK_BYTES;
  let next = 0;
  const deadline = Date.now() + VERIFY_TIMEOUT_MS;
  const worker = async () => {
    while (next < blocks) {
      if (Date.now() > deadline) throw new Error("verification read timed out");
      const start = next;
      const count = Math.min(blocksPerRead, blocks - start);
      next += count;
      const data = await client.read(start * BLOCK_BYTES, count * BLOCK_BYTES);
      for (let index = 0; index < count; index++) {
        observed[start + index] = decodeBlock(data.subarray(index * BLOCK_BYTES, (index + 1) * BLOCK_BYTES), start + index);
      }
    }
  };
  const timeout = new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new Error(`verification read did not finish in ${VERIFY_TIMEOUT_MS} ms`)), VERIFY_TIMEOUT_MS);
    (timer as unknown as { unref?: () => void }).unref?.();
  });
  await Promise.race([Promise.all(Array.from({ length: VERIFY_READS_INFLIGHT }, worker)), timeout]);
  return observed;
}

// ---- The cache file, read and damaged in place -----------------------------------------------------------------

/** A CacheDevice over a plain file descriptor (no O_DIRECT): the harness walks and damages a cache at rest. */
export class FileCacheDevice implements CacheDevice {
  private fd: number;
  readonly sizeBytes: number;

  constructor(readonly path: string) {
    this.fd = openSync(path, "r+");
    this.sizeBytes = Math.floor(Bun.file(path).size / PAGE_BYTES) * PAGE_BYTES;
  }

  async read(offset: number, buffer: Uint8Array): Promise<void> {
    const read = readSync(this.fd, buffer, 0, buffer.byteLength, offset);
    if (read !== buffer.byteLength) throw new IOError(`short read at ${offset}`);
  }

  readCached(offset: number, buffer: Uint8Array): Promise<void> {
    return this.read(offset, buffer);
  }

  async write(offset: number, buffers: Uint8Array[]): Promise<void> {
    let position = offset;
    for (const buffer of buffers) {
      writeSync(this.fd, buffer, 0, buffer.byteLength, position);
      position += buffer.byteLength;
    }
  }

  async fdatasync(): Promise<void> {
    fdatasyncSync(this.fd);
  }

  async close(): Promise<void> {
    closeSync(this.fd);
  }
}

export interface JournalRecordInfo {
  seq: number;
  type: number;
  /** Absolute device offset of its header page. */
  offsetBytes: number;
  dataPages: number;
  /** Largest op id stamped in its data and a block it stamped (0, 0: none, e.g. only trims). */
  maxOpId: number;
  maxOpBlock: number;
}

/** Walks the journal of a cache file at rest from its tail; returns the records and the stop reason. */
export async function walkJournal(cachePath: string): Promise<{ records: JournalRecordInfo[]; stop: string }> {
  const device = new FileCacheDevice(cachePath);
  const pool = new MemoryPool();
  try {
    const page = new Uint8Array(PAGE_BYTES);
    await device.read(0, page);
    const superblock = decodeCacheSuperblock(page);
    const walker = new JournalWalker(device, pool, superblock);
    const records: JournalRecordInfo[] = [];
    for (;;) {
      const record = await walker.next();
      if (!record) break;
      let maxOpId = 0;
      let maxOpBlock = 0;
      if (record.header.type === JournalRecordType.Data) {
        for (let offset = 0; offset + BLOCK_BYTES <= record.data.byteLength; offset += BLOCK_BYTES) {
          const view = new DataView(record.data.buffer, record.data.byteOffset + offset, BLOCK_BYTES);
          if (view.getUint32(0, true) === STAMP_MAGIC && view.getUint32(4, true) >= maxOpId) {
            maxOpId = view.getUint32(4, true);
            maxOpBlock = view.getUint32(8, true);
          }
        }
      }
      records.push({
        seq: record.header.seq,
        type: record.header.type,
        offsetBytes: superblock.journalStartBytes + (record.position % superblock.journalBytes),
        dataPages: record.header.dataPages,
        maxOpId,
        maxOpBlock,
      });
    }
    return { records, stop: `${walker.stopReason}: ${walker.stopDetail}` };
  } finally {
    await device.close();
  }
}

export type TearMode = "data" | "header" | "bitflip" | "zero-header" | "cut";

/** Damages one journal record in the cache file, as a torn or corrupted write would. Returns what it did. */
export function damageRecord(cachePath: string, record: JournalRecordInfo, mode: TearMode, prng: Prng): string {
  const fd = openSync(cachePath, "r+");
  try {
    const recordBytes = JOURNAL_HEADER_BYTES + record.dataPages * PAGE_BYTES;
    const write = (offset: number, bytes: Uint8Array) => writeSync(fd, bytes, 0, bytes.byteLength, record.offsetBytes + offset);
    const random = (length: number) => {
      const bytes = new Uint8Array(length);
      prng.fill(bytes);
      return bytes;
    };
    const dataMode = mode === "data" && record.dataPages === 0 ? "header" : mode;
    switch (dataMode) {
      case "data": {
        const start = JOURNAL_HEADER_BYTES + prng.int(record.dataPages * PAGE_BYTES - 512);
        const length = 512 * (1 + prng.int(8));
        write(start, random(Math.min(length, recordBytes - start)));
        return `record ${record.seq}: random bytes over its data at +${start}`;
      }
      case "header": {
        const start = 512 * prng.int(8);
        write(start, random(512 * (1 + prng.int(8 - start / 512))));
        return `record ${record.seq}: random sectors over its header from +${start}`;
      }
      case "bitflip": {
        const at = prng.int(recordBytes);
        const byte = new Uint8Array(1);
        readSync(fd, byte, 0, 1, record.offsetBytes + at);
        byte[0]! ^= 1 << prng.int(8);
        write(at, byte);
        return `record ${record.seq}: one bit flipped at +${at}`;
      }
      case "zero-header":
        write(0, new Uint8Array(JOURNAL_HEADER_BYTES));
        return `record ${record.seq}: header page zeroed`;
      case "cut": {
        // A torn multi-sector write: a prefix of sectors made it, the rest holds what was there (zeroes here).
        const keptSectors = 1 + prng.int(recordBytes / 512 - 1);
        write(keptSectors * 512, new Uint8Array(recordBytes - keptSectors * 512));
        return `record ${record.seq}: cut after ${keptSectors} of ${recordBytes / 512} sectors`;
      }
    }
  } finally {
    fdatasyncSync(fd);
    closeSync(fd);
  }
}
