// An ObjectStore in a Ceph RADOS pool through librados (ffi/librados.ts). The interface is in object_store.ts;
// the URI rados://POOL/PREFIX opens one (backend_uri.ts). One RADOS object per lsvd object, in the pool's default
// namespace, named exactly as lsvd names it.
//
// put = rados_write_full: RADOS applies it as one transaction on the primary OSD and acknowledges once every
// replica has it, so a reader sees the old object or the new one and the new one is durable on success.
// get = stat, then read one byte more than the size: a read is atomic, so if it returns fewer bytes than it asked
// for it is the whole object as of that read; a full read means a larger version replaced it in between, and the
// next read asks for twice as much (no second stat, which a stream of alternating overwrites could outrun).
// Nothing here blocks the event loop (see librados.ts); librados' op timeout bounds every call.
//
// Conditional operations: the version is RADOS's object version (user_version), which the OSD raises on every write
// and never gives a name twice (it is the placement group's log position, which only grows; a deleted and
// recreated object gets a new, higher one). Equal bytes written twice are two versions.
// - getVersioned: one read operation holding stat + read, so the size, bytes and version (rados_aio_get_version of
//   the completion) describe the same object version.
// - putIfAbsent: one write operation holding create(LIBRADOS_CREATE_EXCLUSIVE) + write_full: -EEXIST is ConflictError.
// - putIfVersion: one write operation holding assert_version(expected) + write_full: -ERANGE (the object is newer),
//   -EOVERFLOW (older) and -ENOENT (absent) are ConflictError.
// The OSD applies a write operation as one transaction: the condition and the write cannot be separated by another
// client's write. An operation that timed out (ETIMEDOUT, transient) may still be applied by the OSD later; a
// conditional one then only lands if its condition still holds (RetryingStore reads back after a retry's conflict).

import { RADOS_OP_TIMEOUT_MS, RADOS_OPS_INFLIGHT_MAX, BACKEND_LIST_NAMES_MAX } from "../constants.ts";
import { assert, ConflictError, InvalidArgumentError, IOError, LsvdError, NotFoundError } from "../errors.ts";
import { RadosCluster, type RadosPool } from "../../ffi/librados.ts";
import { checkListPrefix, checkObjectName, checkRange, shortObjectError, sortNames } from "./_object_name.ts";
import type { ObjectStat, ObjectStore, ObjectVersion, VersionedObject } from "./object_store.ts";
import { Semaphore } from "./semaphore.ts";

export interface RadosStoreOptions {
  pool: string;
  /** Default: $CEPH_CONF, else /etc/ceph/ceph.conf. */
  confPath?: string;
  /** Default: whatever the conf file says (keyring = ...). */
  keyringPath?: string;
  /** Default: "client.admin". */
  clientName?: string;
  /** librados gives up on an operation (ETIMEDOUT, transient) after this long. Default RADOS_OP_TIMEOUT_MS. */
  opTimeoutMs?: number;
  /** aio operations in flight; more wait. Default RADOS_OPS_INFLIGHT_MAX. */
  inflightMax?: number;
}

const ENOENT = 2;
const EEXIST = 17;
const ERANGE = 34;
const EOVERFLOW = 75;
// errno values a retry can cure: the cluster is unreachable, busy, restarting, or slow.
const TRANSIENT_ERRNOS = new Set([
  4, // EINTR
  11, // EAGAIN
  12, // ENOMEM
  16, // EBUSY
  101, // ENETUNREACH
  103, // ECONNABORTED
  104, // ECONNRESET
  107, // ENOTCONN
  108, // ESHUTDOWN
  110, // ETIMEDOUT
  111, // ECONNREFUSED
  112, // EHOSTDOWN
  113, // EHOSTUNREACH
]);
/** Reads a get makes at most, each asking for twice the bytes of the last, while larger versions replace the object. */
const GET_ATTEMPTS_MAX = 4;
/** getVersioned's first read asks for this much: leases and superblocks fit, larger objects take a second read. */
const VERSIONED_READ_BYTES_FIRST = 64 * 1024;

export function defaultCephConfPath(): string {
  return process.env.CEPH_CONF ?? "/etc/ceph/ceph.conf";
}

export class RadosStore implements ObjectStore {
  readonly description: string;
  private readonly slots: Semaphore;
  private closed = false;

  private constructor(
    private readonly cluster: RadosCluster,
    private readonly pool: RadosPool,
    readonly poolName: string,
    inflightMax: number,
  ) {
    this.description = `rados://${poolName}`;
    this.slots = new Semaphore(inflightMax);
  }

  static async open(options: RadosStoreOptions): Promise<RadosStore> {
    const confPath = options.confPath ?? defaultCephConfPath();
    const clientName = options.clientName ?? "client.admin";
    const opTimeoutMs = options.opTimeoutMs ?? RADOS_OP_TIMEOUT_MS;
    assert(opTimeoutMs >= 1000 && opTimeoutMs % 1000 === 0, "librados timeouts are whole seconds");
    const where = `rados://${options.pool} (conf ${confPath}, ${clientName})`;
    let cluster: RadosCluster;
    try {
      cluster = await RadosCluster.connect({
        confPath,
        keyringPath: options.keyringPath,
        clientName,
        opTimeoutSeconds: opTimeoutMs / 1000,
      });
    } catch (error) {
      throw rewordError(`Cannot connect to ${where}`, error);
    }
    try {
      const pool = await cluster.openPool(options.pool);
      return new RadosStore(cluster, pool, options.pool, options.inflightMax ?? RADOS_OPS_INFLIGHT_MAX);
    } catch (error) {
      await cluster.shutdown();
      const errno = (error as IOError).errno;
      if (errno === ENOENT) throw new NotFoundError(`Cannot open ${where}: no such pool`, { cause: error });
      throw rewordError(`Cannot open ${where}`, error);
    }
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    checkObjectName(name);
    try {
      await this.slots.run(() => this.pool.writeFull(name, data));
    } catch (error) {
      throw this.objectError("write", name, error);
    }
  }

  /** `into` is read into when it holds the size asked for (the object's size and one byte more: see the header). */
  async get(name: string, into?: Uint8Array): Promise<Uint8Array> {
    checkObjectName(name);
    // Why the sizes: see the header ("get = ...").
    let askBytes = 0;
    for (let attempt = 0; attempt < GET_ATTEMPTS_MAX; attempt++) {
      let data: Uint8Array;
      try {
        if (attempt === 0) askBytes = (await this.slots.run(() => this.pool.stat(name))).sizeBytes + 1;
        const ask = askBytes;
        const lent = into !== undefined && into.byteLength >= ask ? into : undefined;
        data = await this.slots.run(() => this.pool.read(name, 0, ask, lent));
      } catch (error) {
        throw this.objectError("read", name, error);
      }
      if (data.length < askBytes) return data;
      askBytes *= 2;
    }
    throw new IOError(`Cannot read object ${name} in ${this.description}: it kept growing while being read`, true);
  }

  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    checkObjectName(name);
    checkRange(name, offset, length);
    let data: Uint8Array;
    try {
      data = await this.slots.run(() => this.pool.read(name, offset, length));
    } catch (error) {
      throw this.objectError("read", name, error);
    }
    if (data.length < length || length === 0) {
      // Short (or empty) read: find out whether the range really is outside the object, for the message.
      const stat = await this.stat(name);
      if (stat === null) throw new NotFoundError(`Cannot read object ${name}: not found in ${this.description}`);
      if (offset + length > stat.size) throw shortObjectError(name, offset, length, stat.size);
      if (data.length < length) {
        throw new IOError(`Cannot read object ${name} in ${this.description}: short read of ${data.length} bytes`, true);
      }
    }
    return data;
  }

  async delete(name: string): Promise<void> {
    checkObjectName(name);
    try {
      await this.slots.run(() => this.pool.remove(name));
    } catch (error) {
      if ((error as IOError).errno === ENOENT) return;
      throw this.objectError("delete", name, error);
    }
  }

  async list(prefix: string): Promise<string[]> {
    checkListPrefix(prefix);
    const names: string[] = [];
    try {
      await this.slots.run(() =>
        this.pool.listNames((name) => {
          if (!name.startsWith(prefix)) return;
          if (names.length >= BACKEND_LIST_NAMES_MAX) {
            throw new IOError(`Cannot list ${this.description}: more than ${BACKEND_LIST_NAMES_MAX} objects named ${prefix}*`);
          }
          names.push(name);
        }),
      );
    } catch (error) {
      if (error instanceof LsvdError && (error as IOError).errno === undefined) throw error;
      throw rewordError(`Cannot list objects ${prefix}* in ${this.description}`, error);
    }
    return sortNames(names);
  }

  async getVersioned(name: string): Promise<VersionedObject | null> {
    checkObjectName(name);
    let askBytes = VERSIONED_READ_BYTES_FIRST;
    for (let attempt = 0; attempt < GET_ATTEMPTS_MAX; attempt++) {
      let result: { data: Uint8Array; sizeBytes: number; version: bigint };
      try {
        const ask = askBytes;
        result = await this.slots.run(() => this.pool.readVersioned(name, ask));
      } catch (error) {
        if ((error as IOError).errno === ENOENT) return null;
        throw this.objectError("read", name, error);
      }
      // stat and read ran in one operation: a whole object when it was no larger than the read.
      if (result.sizeBytes <= askBytes) {
        assert(result.data.length === result.sizeBytes, `rados read of ${name}: ${result.data.length} of ${result.sizeBytes} bytes`);
        return { data: result.data, version: result.version.toString() };
      }
      askBytes = result.sizeBytes;
    }
    throw new IOError(`Cannot read object ${name} in ${this.description}: it kept growing while being read`, true);
  }

  async putIfAbsent(name: string, data: Uint8Array): Promise<ObjectVersion> {
    checkObjectName(name);
    try {
      const version = await this.slots.run(() => this.pool.writeFullIf(name, data, { exclusive: true }));
      return version.toString();
    } catch (error) {
      if ((error as IOError).errno === EEXIST) {
        throw new ConflictError(`Cannot create object ${name}: it exists in ${this.description}`, { cause: error });
      }
      throw this.objectError("write", name, error);
    }
  }

  async putIfVersion(name: string, data: Uint8Array, expected: ObjectVersion): Promise<ObjectVersion> {
    checkObjectName(name);
    // Versions come from getVersioned/putIf* of a RADOS store; the OSD refuses version 0 (EINVAL).
    if (!/^[1-9][0-9]{0,19}$/.test(expected) || BigInt(expected) >= 2n ** 64n) {
      throw new InvalidArgumentError(`Cannot replace object ${name} in ${this.description}: ${expected} is not a RADOS version`);
    }
    try {
      const version = await this.slots.run(() => this.pool.writeFullIf(name, data, { version: BigInt(expected) }));
      return version.toString();
    } catch (error) {
      const errno = (error as IOError).errno;
      if (errno === ERANGE || errno === EOVERFLOW || errno === ENOENT) {
        // The OSD compares with the object's version; an absent object has version 0, so absent is -EOVERFLOW too.
        const why = errno === ERANGE ? `it changed after version ${expected}` : `it is absent or older than version ${expected}`;
        throw new ConflictError(`Cannot replace object ${name}: ${why} in ${this.description}`, { cause: error });
      }
      throw this.objectError("write", name, error);
    }
  }

  async stat(name: string): Promise<ObjectStat | null> {
    checkObjectName(name);
    try {
      const { sizeBytes } = await this.slots.run(() => this.pool.stat(name));
      return { size: sizeBytes };
    } catch (error) {
      if ((error as IOError).errno === ENOENT) return null;
      throw this.objectError("stat", name, error);
    }
  }

  /** Waits for operations in flight, then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Taking every slot means every operation has settled.
    for (let i = 0; i < this.slots.permits; i++) await this.slots.acquire();
    this.pool.close();
    await this.cluster.shutdown();
  }

  private objectError(verb: string, name: string, error: unknown): Error {
    if ((error as IOError).errno === ENOENT && verb === "read") {
      return new NotFoundError(`Cannot read object ${name}: not found in ${this.description}`, { cause: error });
    }
    return rewordError(`Cannot ${verb} object ${name} in ${this.description}`, error);
  }
}

/** "Cannot write object obj.00000001 in rados://lsvd: rados_aio_write_full failed: Connection timed out (errno 110)" */
function rewordError(context: string, error: unknown): Error {
  if (!(error instanceof IOError) || error.errno === undefined) {
    if (error instanceof LsvdError) return error;
    return new IOError(`${context}: ${(error as Error)?.message ?? String(error)}`, false, { cause: error });
  }
  return new IOError(`${context}: ${error.message}`, TRANSIENT_ERRNOS.has(error.errno), {
    cause: error,
    errno: error.errno,
  });
}
