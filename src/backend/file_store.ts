// An ObjectStore in one local directory: one file per object. The interface is in object_store.ts; URIs `/dir/obj`
// and `file:///dir/obj` open one (backend_uri.ts).
//
// Atomic, durable put: write a temporary file in the same directory, fsync it, rename it over the name, fsync the
// directory. rename(2) within a directory replaces the name atomically, so a reader (or a restart after a crash)
// sees the old object or the new one, never a mix; the two fsyncs make the data and then the name durable before
// put resolves. Directory fsyncs are coalesced (util/coalesced_sync.ts) on one descriptor the store keeps open:
// each caller waits for a sync that started after its rename, link or unlink, and callers whose name changes finish
// while one runs share the next. Each is a device flush, which journal writes on a shared disk queue behind.
// Temporary files start with '.', which object names may not (_object_name.ts), so a temporary file a crash left
// behind never shows up in a listing and never collides with an object.
//
// Conditional operations (atomic against every process on the host; the directory must be local: flock(2) over NFS
// is not this guarantee):
// - Version = object size and XXH3-64 of its bytes ("<size>:<16 hex digits>"), computed from the bytes read or
//   written. A digest rather than inode+mtime+size: a rename frees the replaced inode, the next temporary file may get
//   the same inode number, and ext4 timestamps advance once per clock tick, so two different objects written within a
//   tick could share inode, mtime and size. XXH3 rather than SHA-256: SHA-256 costs ~5 ms of event-loop time per
//   8 MiB object here against ~0.3 ms (measured, bun 1.4). Two different contents of one size share a version with
//   probability 2^-64; equal bytes are one version (as with S3 ETags), which is safe for compare-and-swap because the
//   bytes are the whole state. Log objects (data, checkpoints) are created with putIfAbsent(..., versionNeeded
//   false) and not hashed at all: under load one XXH3 of an 8 MiB object held the loop for 2-3 ms.
// - putIfAbsent: write and fsync a temporary file as put does (O_DIRECT included), link(2) it to the name (EEXIST
//   means someone has the name: ConflictError), unlink the temporary name, fsync the directory. link never replaces.
// - putIfVersion: write and fsync the temporary file, then under the store lock read the current object, compare its
//   version, rename, release; fsync the directory.
// - The store lock is flock(2) on `.lsvd-store.lock` in the directory, taken around every step that changes a name
//   (put's rename, delete's unlink, putIfVersion's compare-and-rename), so no plain put or delete can land between a
//   compare and its rename. flock locks belong to an open file description: two stores in one process exclude each
//   other as two processes do. Inside one store a FIFO semaphore queues callers, so only other processes are polled
//   for (LOCK_NB with backoff, bounded by FILE_STORE_LOCK_WAIT_MS_MAX: the event loop never blocks in flock).

import { constants, fstat, fsync, open as openFd, read as readFd } from "node:fs";
import { promisify } from "node:util";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { closeFile, O_CLOEXEC, O_CREAT, O_RDWR, openFile, tryLockExclusive } from "../../ffi/libc.ts";
import { FILE_STORE_DIRECT_WRITE_BYTES_MAX, FILE_STORE_DIRECT_READ_BYTES_MAX, FILE_STORE_LOCK_WAIT_MS_MAX, FILE_STORE_READ_HANDLES_MAX } from "../constants.ts";
import { assert, ConflictError, InvalidArgumentError, IOError, LsvdError, NotFoundError } from "../errors.ts";
import { CoalescedSync } from "../util/coalesced_sync.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";
import { ReadHandleCache } from "./read_handle_cache.ts";
import { Semaphore } from "./semaphore.ts";

const openAsync = promisify(openFd);
const fstatAsync = promisify(fstat);
const fsyncAsync = promisify(fsync);
/** pread(2) on a descriptor: resolves to the bytes read (0 at the end of the file). */
function readAsync(fd: number, buffer: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    readFd(fd, buffer, at, length, position, (error, bytesRead) => (error ? reject(error) : resolve(bytesRead)));
  });
}

/** Marks temporary files: `.tmp.<name>.<pid>.<counter>`. */
const TEMP_PREFIX = ".tmp.";
/** The store lock (see the header). Never deleted: two processes must always lock the same inode. */
const LOCK_FILE_NAME = ".lsvd-store.lock";
/** Backoff between LOCK_NB attempts while another process holds the store lock. */
const LOCK_POLL_MS_MIN = 1;
const LOCK_POLL_MS_MAX = 20;

/** The version of exactly these bytes (see the header). */
export function fileObjectVersion(data: Uint8Array): ObjectVersion {
  return `${data.length}:${Bun.hash.xxHash3(data).toString(16).padStart(16, "0")}`;
}

// errno codes a retry can cure on a local file system (resource exhaustion, interruption). Everything else
// (ENOENT of the directory, EACCES, EROFS, EIO, ENOSPC...) needs a human.
const TRANSIENT_CODES = new Set(["EAGAIN", "EINTR", "EMFILE", "ENFILE", "ENOMEM", "EBUSY"]);

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function errnoOf(error: unknown): number | undefined {
  const errno = (error as { errno?: unknown } | null)?.errno;
  return typeof errno === "number" ? Math.abs(errno) : undefined;
}

/** O_DIRECT transfers: whole 4 KiB pages (a multiple of every logical block size we meet) at aligned addresses. */
const DIRECT_IO_ALIGN_BYTES = 4096;
/** O_WRONLY|O_CREAT|O_EXCL|O_DIRECT: like "wx" (two writers never share a temporary file), without the page cache. */
const DIRECT_CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT;

/**
 * Writes all of `data` from offset 0, at most `writeBytesMax` per write(2), and fsyncs. With O_DIRECT an unaligned
 * short write makes the next one EINVAL.
 */
async function writeAllAndSync(handle: fs.FileHandle, data: Uint8Array, writeBytesMax = data.length): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, Math.min(writeBytesMax, data.length - done), done);
    assert(bytesWritten > 0, "write(2) made no progress");
    done += bytesWritten;
  }
  await handle.sync();
}

/** A Buffer node:fs returned, as the plain Uint8Array view the store's callers get. */
function bytesOf(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Writes a new temporary file through the page cache and fsyncs it. */
async function writeBuffered(temp: string, data: Uint8Array): Promise<void> {
  // "wx": O_CREAT|O_EXCL, so two writers can never share a temporary file.
  const handle = await fs.open(temp, "wx", 0o644);
  try {
    await writeAllAndSync(handle, data);
  } finally {
    await handle.close();
  }
}

/** A descriptor of the store's directory, for fsyncs of its names. */
function openDirectory(root: string): Promise<number> {
  return openAsync(root, constants.O_RDONLY | constants.O_DIRECTORY | O_CLOEXEC);
}

/** One fsync of a directory through a descriptor of its own (a store that closed while a name change finished). */
async function syncDirectoryAt(root: string): Promise<void> {
  const fd = await openDirectory(root);
  try {
    await fsyncAsync(fd);
  } finally {
    closeFile(fd, root);
  }
}

export class FileStore implements ObjectStore {
  readonly description: string;
  private tempCounter = 0;
  private closed = false;
  /** Cleared when the directory's file system refuses O_DIRECT (tmpfs before 6.6, some network file systems). */
  private directIo = true;
  /** Ranged reads reuse open handles; put and delete drop the name's handle before they resolve. */
  private readonly readHandles = new ReadHandleCache(FILE_STORE_READ_HANDLES_MAX, (name) => openAsync(this.pathOf(name), "r"));
  /** Callers of this store queue here for the store lock; other processes are met at the flock. */
  private readonly lockQueue = new Semaphore(1);
  /** The directory's descriptor, opened at the first sync and kept until close. */
  private directory: Promise<number> | null = null;
  /** fsyncs of the directory, coalesced (see the header). */
  private readonly directorySync = new CoalescedSync(() => this.syncDirectoryOnce());

  /** Use FileStore.open to check (or create) the directory first. */
  constructor(
    readonly root: string,
    private readonly lockWaitMsMax = FILE_STORE_LOCK_WAIT_MS_MAX,
  ) {
    assert(path.isAbsolute(root), `FileStore root must be absolute: ${root}`);
    this.description = `file://${root}`;
  }

  /**
   * Opens the store at directory `root`, which must exist unless `create` (then it is made, parents too).
   * `lockWaitMsMax`: how long a name-changing step waits for the store lock (default FILE_STORE_LOCK_WAIT_MS_MAX).
   */
  static async open(root: string, options: { create?: boolean; lockWaitMsMax?: number } = {}): Promise<FileStore> {
    if (!path.isAbsolute(root)) throw new InvalidArgumentError(`Cannot open file store ${root}: path is not absolute`);
    if (options.create === true) {
      try {
        await fs.mkdir(root, { recursive: true });
      } catch (error) {
        throw new IOError(`Cannot create directory ${root}: ${(error as Error).message}`, false, { cause: error });
      }
    }
    let stats;
    try {
      stats = await fs.stat(root);
    } catch (error) {
      if (errorCode(error) === "ENOENT") throw new NotFoundError(`Cannot open file store ${root}: no such directory`);
      throw new IOError(`Cannot open file store ${root}: ${(error as Error).message}`, false, { cause: error });
    }
    if (!stats.isDirectory()) throw new InvalidArgumentError(`Cannot open file store ${root}: not a directory`);
    return new FileStore(root, options.lockWaitMsMax);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    const temp = await this.writeTemp(name, data);
    let renamed = false;
    try {
      await this.withStoreLock(() => fs.rename(temp, this.pathOf(name)));
      renamed = true;
      this.readHandles.drop(name);
      await this.syncDirectory();
    } catch (error) {
      if (!renamed) await fs.rm(temp, { force: true }).catch(() => undefined);
      if (error instanceof LsvdError) throw error;
      throw this.ioError("write", name, error);
    }
  }

  /** A new temporary file holding `data`, fsynced (O_DIRECT when the kernel takes the buffer). Returns its path. */
  private async writeTemp(name: string, data: Uint8Array): Promise<string> {
    this.tempCounter += 1;
    const temp = path.join(this.root, `${TEMP_PREFIX}${name}.${process.pid}.${this.tempCounter}`);
    try {
      if (!(await this.writeDirect(temp, data))) await writeBuffered(temp, data);
    } catch (error) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      throw this.ioError("write", name, error);
    }
    return temp;
  }

  /**
   * Writes a new temporary file with O_DIRECT, bypassing the page cache: a put is written once and read back
   * rarely (reads of hot data are the SSD read cache's job), and copying every object into the page cache was half
   * the server's CPU on sequential writes (bench/RESULTS.md). O_DIRECT needs the buffer address and length aligned
   * to the device's logical block. The volume's objects are whole pages at page offsets of their batch buffers,
   * and Bun allocates buffers that large page-aligned (measured, not promised); anything the kernel refuses (EINVAL)
   * is written through the page cache instead, so alignment decides speed, never correctness. Returns false when
   * it wrote nothing.
   *
   * The object goes out in writes of FILE_STORE_DIRECT_WRITE_BYTES_MAX, one at a time: one 8 MiB O_DIRECT write
   * queues all of its bios on the device at once, and when the store shares the disk with the cache (the demo, the
   * benchmarks) every journal write behind them waits the whole 8 MiB out, which showed as 4-6 ms p99 write latency.
   */
  private async writeDirect(temp: string, data: Uint8Array): Promise<boolean> {
    if (!this.directIo || data.length === 0 || data.length % DIRECT_IO_ALIGN_BYTES !== 0) return false;
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(temp, DIRECT_CREATE_FLAGS, 0o644);
    } catch (error) {
      if (errorCode(error) !== "EINVAL") throw error;
      this.directIo = false; // the file system does not do O_DIRECT; open(2) created nothing
      return false;
    }
    let refused = false;
    try {
      await writeAllAndSync(handle, data, FILE_STORE_DIRECT_WRITE_BYTES_MAX);
    } catch (error) {
      if (errorCode(error) !== "EINVAL") throw error;
      refused = true; // this buffer is not aligned: the caller writes the file again through the page cache
    } finally {
      await handle.close();
    }
    if (refused) await fs.rm(temp, { force: true });
    return !refused;
  }

  /** `into` is used for objects read with O_DIRECT (see readDirect), when it holds them rounded to whole pages. */
  async get(name: string, into?: Uint8Array): Promise<Uint8Array> {
    this.checkOpen();
    checkObjectName(name);
    const file = this.pathOf(name);
    try {
      const handle = await fs.open(file, "r");
      try {
        const { size } = await handle.stat();
        if (size < FILE_STORE_DIRECT_WRITE_BYTES_MAX || !this.directIo) return bytesOf(await handle.readFile());
      } finally {
        await handle.close();
      }
      return (await this.readDirect(file, into)) ?? bytesOf(await fs.readFile(file));
    } catch (error) {
      throw this.ioError("read", name, error);
    }
  }

  /**
   * The whole of `file` read with O_DIRECT in FILE_STORE_DIRECT_READ_BYTES_MAX pieces, one after another, or null
   * when the kernel refuses O_DIRECT (the file system, or a buffer Bun did not allocate page-aligned: alignment
   * decides speed, never correctness, as in writeDirect). get() reads objects of at least one write piece this way:
   * garbage collection reads whole 8 MiB victims while clients write, a buffered read of one let readahead queue
   * 8 MiB of reads on the device, and with the store on the cache's disk every journal write waited behind them
   * (p99 of 4 KiB writes at steady state 5.3 ms, against 4.2 read in pieces; bench/RESULTS.md). The buffer is
   * rounded up to whole pages (O_DIRECT reads whole blocks; the last piece stops at the end of the file): `into`
   * when it is that large, else a new one.
   */
  private async readDirect(file: string, into: Uint8Array | undefined): Promise<Uint8Array | null> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, constants.O_RDONLY | constants.O_DIRECT);
    } catch (error) {
      if (errorCode(error) !== "EINVAL") throw error;
      this.directIo = false;
      return null;
    }
    try {
      const { size } = await handle.stat();
      const rounded = Math.ceil(size / DIRECT_IO_ALIGN_BYTES) * DIRECT_IO_ALIGN_BYTES;
      const buffer = into !== undefined && into.byteLength >= rounded ? into : new Uint8Array(rounded);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await handle.read(buffer, done, Math.min(FILE_STORE_DIRECT_READ_BYTES_MAX, buffer.length - done), done);
        if (bytesRead === 0) throw new IOError(`${file}: ${size} bytes by fstat, but the file ends at ${done}`);
        done += bytesRead;
      }
      return buffer.subarray(0, size);
    } catch (error) {
      if (errorCode(error) === "EINVAL") return null;
      throw error;
    } finally {
      await handle.close();
    }
  }

  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    this.checkOpen();
    checkObjectName(name);
    checkRange(name, offset, length);
    const result = new Uint8Array(length);
    try {
      await this.readHandles.withHandle(name, async (fd) => {
        let done = 0;
        while (done < length) {
          const bytesRead = await readAsync(fd, result, done, length - done, offset + done);
          if (bytesRead === 0) {
            const { size } = await fstatAsync(fd);
            throw shortObjectError(name, offset, length, size);
          }
          done += bytesRead;
        }
        if (length === 0) {
          // An empty read still promises the range lies inside the object.
          const { size } = await fstatAsync(fd);
          if (offset > size) throw shortObjectError(name, offset, length, size);
        }
      });
      return result;
    } catch (error) {
      if (error instanceof LsvdError) throw error;
      // A handle that failed a read is not trusted for the next one.
      this.readHandles.drop(name);
      throw this.ioError("read", name, error);
    }
  }

  async delete(name: string): Promise<void> {
    this.checkOpen();
    checkObjectName(name);
    try {
      await this.withStoreLock(() => fs.unlink(this.pathOf(name)));
    } catch (error) {
      if (errorCode(error) === "ENOENT") return this.readHandles.drop(name);
      if (error instanceof LsvdError) throw error;
      throw this.ioError("delete", name, error);
    }
    this.readHandles.drop(name);
    // A delete that a crash undoes would bring back an object the caller believes gone (e.g. after GC).
    try {
      await this.syncDirectory();
    } catch (error) {
      throw this.ioError("delete", name, error);
    }
  }

  async list(prefix: string): Promise<string[]> {
    this.checkOpen();
    checkListPrefix(prefix);
    let entries;
    try {
      entries = await fs.readdir(this.root, { withFileTypes: true });
    } catch (error) {
      throw new IOError(`Cannot list ${this.description}: ${reason(error)}`, isTransient(error), {
        cause: error,
        errno: errnoOf(error),
      });
    }
    const names: string[] = [];
    for (const entry of entries) {
      // Temporary files (and anything else hidden) are not objects.
      if (entry.name.startsWith(".") || !entry.name.startsWith(prefix) || !entry.isFile()) continue;
      names.push(entry.name);
    }
    return sortNames(names);
  }

  async getVersioned(name: string): Promise<VersionedObject | null> {
    let data: Uint8Array;
    try {
      // One open file description: the bytes of one inode, whatever renames happen meanwhile.
      data = await this.get(name);
    } catch (error) {
      if (error instanceof NotFoundError) return null;
      throw error;
    }
    return { data, version: fileObjectVersion(data) };
  }

  async putIfAbsent(name: string, data: Uint8Array, versionNeeded = true): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    const temp = await this.writeTemp(name, data);
    try {
      // link(2) creates the name only if it does not exist: atomic against every other process, no lock needed.
      await fs.link(temp, this.pathOf(name));
    } catch (error) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      if (errorCode(error) === "EEXIST") {
        throw new ConflictError(`Cannot create object ${name}: it exists in ${this.description}`);
      }
      throw this.ioError("write", name, error);
    }
    try {
      await fs.unlink(temp);
      this.readHandles.drop(name);
      await this.syncDirectory();
    } catch (error) {
      throw this.ioError("write", name, error);
    }
    // Hashing an 8 MiB object holds the event loop for ~2.4 ms (bench/RESULTS.md, "NBD on io_uring"): only if asked.
    return versionNeeded ? fileObjectVersion(data) : "";
  }

  async putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    this.checkOpen();
    checkObjectName(name);
    const temp = await this.writeTemp(name, data);
    let renamed = false;
    try {
      await this.withStoreLock(async () => {
        const current = await this.getVersioned(name);
        if (current?.version !== expected) {
          throw new ConflictError(
            `Cannot replace object ${name}: its version is ${current?.version ?? "absent"}, not ${expected}, in ${this.description}`,
          );
        }
        await fs.rename(temp, this.pathOf(name));
        renamed = true;
      });
      this.readHandles.drop(name);
      await this.syncDirectory();
    } catch (error) {
      if (!renamed) await fs.rm(temp, { force: true }).catch(() => undefined);
      if (error instanceof LsvdError) throw error;
      throw this.ioError("write", name, error);
    }
    return fileObjectVersion(data);
  }

  async stat(name: string): Promise<ObjectStat | null> {
    this.checkOpen();
    checkObjectName(name);
    try {
      const stats = await fs.stat(this.pathOf(name));
      if (!stats.isFile()) throw new IOError(`Cannot stat object ${name} in ${this.description}: not a regular file`);
      return { size: stats.size };
    } catch (error) {
      if (errorCode(error) === "ENOENT") return null;
      if (error instanceof IOError) throw error;
      throw this.ioError("stat", name, error);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.readHandles.close();
    await this.directorySync.idle();
    await this.closeDirectory();
  }


  /** Object files held open for reads (idle or in use). */
  get readHandlesOpen(): number {
    return this.readHandles.openCount;
  }

  private pathOf(name: string): string {
    return path.join(this.root, name);
  }

  /**
   * Runs `step` holding the store lock (see the header): first this store's own queue, then flock on the lock file,
   * polled with backoff while another process holds it. Throws a transient IOError after FILE_STORE_LOCK_WAIT_MS_MAX.
   */
  private async withStoreLock<T>(step: () => Promise<T>): Promise<T> {
    await this.lockQueue.acquire();
    let fd = -1;
    try {
      const lockPath = path.join(this.root, LOCK_FILE_NAME);
      try {
        fd = openFile(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644);
      } catch (error) {
        const cause = error as IOError;
        throw new IOError(`Cannot lock ${this.description}: ${cause.message}`, cause.transient, { cause, errno: cause.errno });
      }
      const startMs = performance.now();
      for (let pollMs = LOCK_POLL_MS_MIN; !tryLockExclusive(fd, lockPath); pollMs = Math.min(pollMs * 2, LOCK_POLL_MS_MAX)) {
        if (performance.now() - startMs > this.lockWaitMsMax) {
          throw new IOError(
            `Cannot lock ${this.description}: ${lockPath} held by another process for over ${this.lockWaitMsMax} ms`,
            true,
          );
        }
        await Bun.sleep(pollMs);
      }
      return await step();
    } finally {
      // Closing the descriptor releases the flock.
      if (fd >= 0) closeFile(fd, path.join(this.root, LOCK_FILE_NAME));
      this.lockQueue.release();
    }
  }

  /** Makes every name change this store finished before the call durable (see the header). */
  private syncDirectory(): Promise<void> {
    return this.directorySync.sync();
  }

  private async syncDirectoryOnce(): Promise<void> {
    if (this.closed) return await syncDirectoryAt(this.root);
    this.directory ??= openDirectory(this.root);
    try {
      await fsyncAsync(await this.directory);
    } catch (error) {
      // A descriptor that failed (or never opened) is not trusted for the next sync.
      await this.closeDirectory();
      throw error;
    }
  }

  private async closeDirectory(): Promise<void> {
    const directory = this.directory;
    this.directory = null;
    const fd = await directory?.catch(() => -1);
    if (fd !== undefined && fd >= 0) closeFile(fd, this.root);
  }

  /** ENOENT of the object itself is NotFound; anything else is an IOError naming the object and the reason. */
  private ioError(verb: string, name: string, error: unknown): Error {
    if (errorCode(error) === "ENOENT" && (verb === "read" || verb === "stat")) {
      return new NotFoundError(`Cannot ${verb} object ${name}: not found in ${this.description}`, { cause: error });
    }
    return new IOError(`Cannot ${verb} object ${name} in ${this.description}: ${reason(error)}`, isTransient(error), {
      cause: error,
      errno: errnoOf(error),
    });
  }

  private checkOpen(): void {
    assert(!this.closed, `${this.description} used after close`);
  }
}

function isTransient(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

/** "ENOSPC: no space left on device" without the path node repeats after it. */
function reason(error: unknown): string {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  if (code === "ENOENT") return "no such file or directory (ENOENT)";
  const short = message.split(",")[0] ?? message;
  return code !== undefined && !short.includes(code) ? `${short} (${code})` : short;
}
