// librados (Debian librados2, librados.so.2) through koffi: just what RadosStore (src/backend/rados_store.ts) needs.
// C API reference: /usr/include/rados/librados.h (librados-dev).
//
// Never blocks the event loop:
// - Object I/O uses the rados_aio_* calls. They return at once, and the JS thread polls their completions
//   (CompletionPoller below) instead of taking a completion callback: koffi runs a callback that comes from
//   librados' finisher thread on the JS thread and holds the finisher thread until it has run, so every completion
//   cost a cross-thread round trip and the completions behind it waited. Measured with 4 KiB reads at QD32 against
//   one memstore OSD on loopback: 12-13k reads/s at 90-97 us of process CPU each with the callback, 20.5-21.7k at
//   51-53 us polling (bench/RESULTS.md).
// - Calls without an aio form (connect, ioctx_create, listing, shutdown) run through koffi's `.async` on a worker
//   thread. Those workers are few (one per core) and shared with the rest of the process, so each such call is
//   bounded by librados' own timeouts (client_mount_timeout, rados_mon_op_timeout, rados_osd_op_timeout), set at
//   connect.
//
// Buffers: rados_aio_write_full copies the caller's bytes into a bufferlist before returning, so a JS buffer is
// fine there. rados_aio_read and rados_aio_stat write into their buffers later, on completion; those buffers are
// native memory (koffi.alloc) that cannot move or be collected before then, freed after completion.
//
// Errors: a negative return value (or completion result) becomes IOError with errno = -rv and a message naming the
// call; the caller (RadosStore) rewords it with the object name and decides NotFound vs transient.

import { RADOS_POLL_BUSY_MS, RADOS_POLL_IDLE_MS } from "../src/constants.ts";
import { assert, IOError } from "../src/errors.ts";
import { koffi } from "./koffi.ts";

const LIBRADOS_NAMES = ["librados.so.2", "/usr/lib/x86_64-linux-gnu/librados.so.2"];
/** rados_write_op_create: fail with -EEXIST if the object exists. */
const LIBRADOS_CREATE_EXCLUSIVE = 1;

type Pointer = unknown;
type Callback = (error: unknown, result: number) => void;

interface Bindings {
  rados_create2: KoffiAsyncFunction;
  rados_conf_read_file: KoffiAsyncFunction;
  rados_conf_set: KoffiAsyncFunction;
  rados_connect: KoffiAsyncFunction;
  rados_shutdown: KoffiAsyncFunction;
  rados_ioctx_create: KoffiAsyncFunction;
  rados_ioctx_destroy: KoffiAsyncFunction;
  rados_aio_create_completion2: KoffiAsyncFunction;
  rados_aio_release: KoffiAsyncFunction;
  rados_aio_get_return_value: KoffiAsyncFunction;
  rados_aio_is_complete: KoffiAsyncFunction;
  rados_aio_write_full: KoffiAsyncFunction;
  rados_aio_read: KoffiAsyncFunction;
  rados_aio_remove: KoffiAsyncFunction;
  rados_aio_stat: KoffiAsyncFunction;
  rados_aio_get_version: KoffiAsyncFunction;
  rados_create_read_op: KoffiAsyncFunction;
  rados_release_read_op: KoffiAsyncFunction;
  rados_read_op_stat: KoffiAsyncFunction;
  rados_read_op_read: KoffiAsyncFunction;
  rados_aio_read_op_operate: KoffiAsyncFunction;
  rados_create_write_op: KoffiAsyncFunction;
  rados_release_write_op: KoffiAsyncFunction;
  rados_write_op_create: KoffiAsyncFunction;
  rados_write_op_assert_version: KoffiAsyncFunction;
  rados_write_op_write_full: KoffiAsyncFunction;
  rados_aio_write_op_operate: KoffiAsyncFunction;
  rados_nobjects_list_open: KoffiAsyncFunction;
  rados_nobjects_list_next: KoffiAsyncFunction;
  rados_nobjects_list_close: KoffiAsyncFunction;
  strerror: KoffiAsyncFunction;
}

interface KoffiAsyncFunction {
  (...args: unknown[]): unknown;
  async: (...args: unknown[]) => void;
}

let bindings: Bindings | undefined;

function load(): Bindings {
  if (bindings !== undefined) return bindings;
  let lib: ReturnType<typeof koffi.load> | undefined;
  const failures: string[] = [];
  for (const name of LIBRADOS_NAMES) {
    try {
      lib = koffi.load(name);
      break;
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (lib === undefined) {
    throw new IOError(`Cannot load librados.so.2 (install Debian package librados2): ${failures.join("; ")}`);
  }
  const libc = koffi.load("libc.so.6");
  const f = (signature: string) => lib.func(signature) as unknown as KoffiAsyncFunction;
  // rados_t, rados_ioctx_t, rados_completion_t and rados_list_ctx_t are opaque pointers: void * here.
  bindings = {
    rados_create2: f("int rados_create2(_Out_ void **pcluster, const char *clustername, const char *name, uint64_t flags)"),
    rados_conf_read_file: f("int rados_conf_read_file(void *cluster, const char *path)"),
    rados_conf_set: f("int rados_conf_set(void *cluster, const char *option, const char *value)"),
    rados_connect: f("int rados_connect(void *cluster)"),
    rados_shutdown: f("void rados_shutdown(void *cluster)"),
    rados_ioctx_create: f("int rados_ioctx_create(void *cluster, const char *pool, _Out_ void **ioctx)"),
    rados_ioctx_destroy: f("void rados_ioctx_destroy(void *ioctx)"),
    // No callback (complete = NULL): completions are polled, see the header.
    rados_aio_create_completion2: f("int rados_aio_create_completion2(void *arg, void *complete, _Out_ void **completion)"),
    rados_aio_release: f("void rados_aio_release(void *completion)"),
    rados_aio_get_return_value: f("int rados_aio_get_return_value(void *completion)"),
    rados_aio_is_complete: f("int rados_aio_is_complete(void *completion)"),
    rados_aio_write_full: f(
      "int rados_aio_write_full(void *ioctx, const char *oid, void *completion, const uint8_t *buf, size_t len)",
    ),
    rados_aio_read: f("int rados_aio_read(void *ioctx, const char *oid, void *completion, void *buf, size_t len, uint64_t off)"),
    rados_aio_remove: f("int rados_aio_remove(void *ioctx, const char *oid, void *completion)"),
    rados_aio_stat: f("int rados_aio_stat(void *ioctx, const char *oid, void *completion, void *psize, void *pmtime)"),
    // The object version (user_version) the completed operation read or wrote.
    rados_aio_get_version: f("uint64_t rados_aio_get_version(void *completion)"),
    // Compound operations, applied atomically by the primary OSD. rados_read_op_t and rados_write_op_t: void *.
    rados_create_read_op: f("void *rados_create_read_op()"),
    rados_release_read_op: f("void rados_release_read_op(void *read_op)"),
    rados_read_op_stat: f("void rados_read_op_stat(void *read_op, void *psize, void *pmtime, void *prval)"),
    rados_read_op_read: f(
      "void rados_read_op_read(void *read_op, uint64_t offset, size_t len, void *buffer, void *bytes_read, void *prval)",
    ),
    rados_aio_read_op_operate: f(
      "int rados_aio_read_op_operate(void *read_op, void *ioctx, void *completion, const char *oid, int flags)",
    ),
    rados_create_write_op: f("void *rados_create_write_op()"),
    rados_release_write_op: f("void rados_release_write_op(void *write_op)"),
    rados_write_op_create: f("void rados_write_op_create(void *write_op, int exclusive, const char *category)"),
    rados_write_op_assert_version: f("void rados_write_op_assert_version(void *write_op, uint64_t ver)"),
    // Copies the buffer into the operation's bufferlist before it returns (like rados_aio_write_full).
    rados_write_op_write_full: f("void rados_write_op_write_full(void *write_op, const uint8_t *buffer, size_t len)"),
    rados_aio_write_op_operate: f(
      "int rados_aio_write_op_operate(void *write_op, void *ioctx, void *completion, const char *oid, void *mtime, int flags)",
    ),
    rados_nobjects_list_open: f("int rados_nobjects_list_open(void *ioctx, _Out_ void **ctx)"),
    rados_nobjects_list_next: f(
      "int rados_nobjects_list_next(void *ctx, _Out_ const char **entry, _Out_ const char **key, _Out_ const char **nspace)",
    ),
    rados_nobjects_list_close: f("void rados_nobjects_list_close(void *ctx)"),
    strerror: libc.func("const char *strerror(int errnum)") as unknown as KoffiAsyncFunction,
  };
  return bindings;
}

function loaded(): Bindings {
  assert(bindings !== undefined, "librados bindings not loaded");
  return bindings;
}

/** Runs a blocking librados call on a koffi worker thread. */
function onWorker(fn: KoffiAsyncFunction, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const callback: Callback = (error, result) => (error ? reject(error) : resolve(Number(result ?? 0)));
    fn.async(...args, callback);
  });
}

export function describeErrno(errno: number): string {
  const text = load().strerror(errno) as string | null;
  return text ?? `errno ${errno}`;
}

function check(call: string, rv: number): void {
  if (rv < 0) throw radosError(call, -rv);
}

function radosError(call: string, errno: number): IOError {
  return new IOError(`${call} failed: ${describeErrno(errno)} (errno ${errno})`, false, { errno });
}

/**
 * The objecter asks the monitor for a newer OSD map only when an op has been in flight longer than objecter_timeout
 * (default 10 s, checked every objecter_tick_interval, 5 s). With a shorter op timeout every op is cancelled before
 * that, so a client that saw an OSD die never learns the OSD's new address after it restarts, and times out forever
 * (seen: test/backend/ceph_fault_test.ts). Keep both well below the op timeout.
 */
function objecterSettings(opTimeoutSeconds: number): Record<string, string> {
  if (opTimeoutSeconds === 0) return {};
  return {
    objecter_timeout: String(Math.max(0.5, Math.min(10, opTimeoutSeconds / 3))),
    objecter_tick_interval: String(Math.max(0.25, Math.min(5, opTimeoutSeconds / 6))),
  };
}

export interface RadosConnectOptions {
  confPath: string;
  /** Overrides the conf file's keyring. */
  keyringPath?: string;
  /** "client.admin", "client.lsvd", ... */
  clientName: string;
  /** librados' own bound on every OSD and monitor operation and on connecting, in seconds; 0 = forever. */
  opTimeoutSeconds: number;
  /** Extra `option = value` settings (rados_conf_set), applied last. */
  settings?: Record<string, string>;
}

/** A connected cluster handle (rados_t). */
export class RadosCluster {
  private shutdownStarted = false;

  private constructor(private readonly handle: Pointer) {}

  static async connect(options: RadosConnectOptions): Promise<RadosCluster> {
    const lib = load();
    const out: Pointer[] = [null];
    check("rados_create2", Number(lib.rados_create2(out, "ceph", options.clientName, 0)));
    const handle = out[0];
    try {
      // Reading a local file and setting options touch no network: fine on this thread.
      check(`rados_conf_read_file(${options.confPath})`, Number(lib.rados_conf_read_file(handle, options.confPath)));
      const timeout = String(options.opTimeoutSeconds);
      const settings: Record<string, string> = {
        client_mount_timeout: timeout,
        rados_mon_op_timeout: timeout,
        rados_osd_op_timeout: timeout,
        ...objecterSettings(options.opTimeoutSeconds),
        ...(options.keyringPath !== undefined ? { keyring: options.keyringPath } : {}),
        ...options.settings,
      };
      for (const [key, value] of Object.entries(settings)) {
        check(`rados_conf_set(${key})`, Number(lib.rados_conf_set(handle, key, value)));
      }
      check("rados_connect", await onWorker(lib.rados_connect, handle));
    } catch (error) {
      // rados_shutdown is the only way to free a handle, connected or not.
      await onWorker(lib.rados_shutdown, handle);
      throw error;
    }
    return new RadosCluster(handle);
  }

  async openPool(pool: string): Promise<RadosPool> {
    assert(!this.shutdownStarted, "rados cluster used after shutdown");
    const out: Pointer[] = [null];
    // May wait for an OSD map from the monitor: on a worker.
    check(`rados_ioctx_create(${pool})`, await onWorker(loaded().rados_ioctx_create, this.handle, pool, out));
    return new RadosPool(out[0]);
  }

  /** Every pool must be closed and every operation settled first: shutdown waits for librados' own threads. */
  async shutdown(): Promise<void> {
    if (this.shutdownStarted) return;
    this.shutdownStarted = true;
    await onWorker(loaded().rados_shutdown, this.handle);
  }
}

/** An I/O context on one pool (rados_ioctx_t), default namespace. */
export class RadosPool {
  private operations = 0;
  private closed = false;

  constructor(private readonly ioctx: Pointer) {}

  /** aio operations not yet completed. */
  get inflight(): number {
    return this.operations;
  }

  /** Replaces the whole object atomically (RADOS applies a write_full as one transaction). */
  async writeFull(oid: string, data: Uint8Array): Promise<void> {
    const rv = await this.aio("rados_aio_write_full", (completion) =>
      loaded().rados_aio_write_full(this.ioctx, oid, completion, data, data.length),
    );
    check("rados_aio_write_full", rv);
  }

  /**
   * Up to `length` bytes at `offset`; fewer if the object ends first. `into` (at least `length` bytes): read straight
   * into it, as writeFull writes from the caller's buffer, and return a view of its start; else a new buffer.
   */
  async read(oid: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    assert(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0, "read range");
    if (into !== undefined && length > 0) {
      assert(into.byteLength >= length, "a buffer read into holds the length asked for");
      const rv = await this.aio("rados_aio_read", (completion) => loaded().rados_aio_read(this.ioctx, oid, completion, into, length, offset));
      check("rados_aio_read", rv);
      assert(rv <= length, "rados_aio_read returned more bytes than asked for");
      return into.subarray(0, rv);
    }
    // koffi cannot allocate zero bytes; a zero-length read still proves the object exists.
    const native = koffi.alloc("uint8_t", Math.max(length, 1));
    try {
      const rv = await this.aio("rados_aio_read", (completion) =>
        loaded().rados_aio_read(this.ioctx, oid, completion, native, length, offset),
      );
      check("rados_aio_read", rv);
      assert(rv <= length, "rados_aio_read returned more bytes than asked for");
      return new Uint8Array(koffi.view(native, Math.max(rv, 1))).slice(0, rv);
    } finally {
      koffi.free(native);
    }
  }

  /** Size in bytes. */
  async stat(oid: string): Promise<{ sizeBytes: number }> {
    // uint64_t size and time_t mtime, both written on completion.
    const size = koffi.alloc("uint64_t", 1);
    const mtime = koffi.alloc("int64_t", 1);
    try {
      const rv = await this.aio("rados_aio_stat", (completion) =>
        loaded().rados_aio_stat(this.ioctx, oid, completion, size, mtime),
      );
      check("rados_aio_stat", rv);
      const sizeBytes = new BigUint64Array(koffi.view(size, 8))[0]!;
      assert(sizeBytes <= BigInt(Number.MAX_SAFE_INTEGER), "object size is a safe integer");
      return { sizeBytes: Number(sizeBytes) };
    } finally {
      koffi.free(size);
      koffi.free(mtime);
    }
  }

  /**
   * The object's first `lengthMax` bytes, its size and its version (user_version), from one read operation (stat +
   * read, applied atomically by the primary OSD, so the three describe one version). Throws IOError errno ENOENT if
   * absent.
   */
  async readVersioned(oid: string, lengthMax: number): Promise<{ data: Uint8Array; sizeBytes: number; version: bigint }> {
    assert(Number.isSafeInteger(lengthMax) && lengthMax >= 0, "read length");
    const lib = loaded();
    const buffer = koffi.alloc("uint8_t", Math.max(lengthMax, 1));
    const size = koffi.alloc("uint64_t", 1);
    const mtime = koffi.alloc("int64_t", 1);
    const bytesRead = koffi.alloc("size_t", 1);
    const statRvNative = koffi.alloc("int", 1);
    const readRvNative = koffi.alloc("int", 1);
    const op = lib.rados_create_read_op();
    assert(op !== null, "rados_create_read_op returned NULL");
    try {
      lib.rados_read_op_stat(op, size, mtime, statRvNative);
      lib.rados_read_op_read(op, 0, lengthMax, buffer, bytesRead, readRvNative);
      const { rv, version } = await this.aioVersioned("rados_aio_read_op_operate", (completion) =>
        lib.rados_aio_read_op_operate(op, this.ioctx, completion, oid, 0),
      );
      check("rados_aio_read_op_operate", rv);
      check("rados_read_op_stat", new Int32Array(koffi.view(statRvNative, 4))[0]!);
      check("rados_read_op_read", new Int32Array(koffi.view(readRvNative, 4))[0]!);
      const sizeBytes = new BigUint64Array(koffi.view(size, 8))[0]!;
      const read = Number(new BigUint64Array(koffi.view(bytesRead, 8))[0]!);
      assert(sizeBytes <= BigInt(Number.MAX_SAFE_INTEGER), "object size is a safe integer");
      assert(read <= lengthMax, "rados_read_op_read returned more bytes than asked for");
      const data = new Uint8Array(koffi.view(buffer, Math.max(read, 1))).slice(0, read);
      return { data, sizeBytes: Number(sizeBytes), version };
    } finally {
      lib.rados_release_read_op(op);
      for (const native of [buffer, size, mtime, bytesRead, statRvNative, readRvNative]) koffi.free(native);
    }
  }

  /**
   * write_full under a condition, in one write operation (all or nothing): `{ exclusive: true }` creates the object
   * only if it does not exist (else -EEXIST); `{ version }` replaces it only if its version is exactly that (else
   * -ERANGE when it is newer, -EOVERFLOW when older; -ENOENT when absent). Resolves with the new version.
   */
  async writeFullIf(oid: string, data: Uint8Array, condition: { exclusive: true } | { version: bigint }): Promise<bigint> {
    const lib = loaded();
    const op = lib.rados_create_write_op();
    assert(op !== null, "rados_create_write_op returned NULL");
    try {
      if ("exclusive" in condition) lib.rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, null);
      else lib.rados_write_op_assert_version(op, condition.version);
      lib.rados_write_op_write_full(op, data, data.length);
      const { rv, version } = await this.aioVersioned("rados_aio_write_op_operate", (completion) =>
        lib.rados_aio_write_op_operate(op, this.ioctx, completion, oid, null, 0),
      );
      check("rados_aio_write_op_operate", rv);
      return version;
    } finally {
      lib.rados_release_write_op(op);
    }
  }

  async remove(oid: string): Promise<void> {
    const rv = await this.aio("rados_aio_remove", (completion) => loaded().rados_aio_remove(this.ioctx, oid, completion));
    check("rados_aio_remove", rv);
  }

  /**
   * Names of all objects in the pool's default namespace, in no particular order, each passed to `accept`; stops
   * early (throwing its error) if `accept` throws. One worker-thread call per name.
   */
  async listNames(accept: (name: string) => void): Promise<void> {
    assert(!this.closed, "rados pool used after close");
    const lib = loaded();
    const out: Pointer[] = [null];
    check("rados_nobjects_list_open", await onWorker(lib.rados_nobjects_list_open, this.ioctx, out));
    const context = out[0];
    try {
      for (;;) {
        const entry: Array<string | null> = [null];
        const rv = await onWorker(lib.rados_nobjects_list_next, context, entry, [null], [null]);
        if (rv === -2) return; // -ENOENT: the end of the listing
        check("rados_nobjects_list_next", rv);
        assert(entry[0] !== null, "rados_nobjects_list_next gave no name");
        accept(entry[0]);
      }
    } finally {
      await onWorker(lib.rados_nobjects_list_close, context);
    }
  }

  /** Operations must have settled. */
  close(): void {
    if (this.closed) return;
    assert(this.operations === 0, "rados pool closed with operations in flight");
    this.closed = true;
    loaded().rados_ioctx_destroy(this.ioctx);
  }

  /** Starts one aio operation and resolves with its completion's return value (negative errno on failure). */
  private async aio(call: string, start: (completion: Pointer) => unknown): Promise<number> {
    return (await this.aioVersioned(call, start)).rv;
  }

  /** aio, also giving the object version the completed operation saw or made (0 if it failed). */
  private aioVersioned(call: string, start: (completion: Pointer) => unknown): Promise<{ rv: number; version: bigint }> {
    assert(call.startsWith("rados_aio_"), "aio call name");
    assert(!this.closed, "rados pool used after close");
    const lib = loaded();
    const out: Pointer[] = [null];
    check("rados_aio_create_completion2", Number(lib.rados_aio_create_completion2(null, null, out)));
    const completion = out[0];
    this.operations += 1;
    const rv = Number(start(completion));
    if (rv < 0) {
      // Not started: it will never complete.
      this.operations -= 1;
      lib.rados_aio_release(completion);
      return Promise.resolve({ rv, version: 0n });
    }
    return new Promise((resolve) => {
      completions.add(completion, (result) => {
        this.operations -= 1;
        const version = result < 0 ? 0n : BigInt(lib.rados_aio_get_version(completion) as number | bigint);
        lib.rados_aio_release(completion);
        resolve({ rv: result, version });
      });
    });
  }
}

/**
 * The aio completions in flight, polled on the JS thread (why: see the header). While any is in flight, each
 * event-loop turn asks librados which are complete (rados_aio_is_complete takes the completion's lock and reads a
 * flag: no I/O, no wait). When none completed or started for RADOS_POLL_BUSY_MS, it polls every RADOS_POLL_IDLE_MS
 * instead. Bounded by the callers' own bounds on operations in flight (RetryingStore's request slots).
 */
class CompletionPoller {
  private readonly inflight: Array<{ completion: Pointer; settle: (result: number) => void }> = [];
  private scheduled = false;
  private lastProgressMs = 0;
  private readonly turnBound = () => this.turn();

  add(completion: Pointer, settle: (result: number) => void): void {
    this.inflight.push({ completion, settle });
    this.lastProgressMs = performance.now();
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.inflight.length === 0) return;
    this.scheduled = true;
    if (performance.now() - this.lastProgressMs < RADOS_POLL_BUSY_MS) setImmediate(this.turnBound);
    else setTimeout(this.turnBound, RADOS_POLL_IDLE_MS);
  }

  private turn(): void {
    this.scheduled = false;
    const lib = loaded();
    let kept = 0;
    const done: Array<{ settle: (result: number) => void; result: number }> = [];
    for (const entry of this.inflight) {
      if (Number(lib.rados_aio_is_complete(entry.completion)) !== 0) {
        done.push({ settle: entry.settle, result: Number(lib.rados_aio_get_return_value(entry.completion)) });
      } else {
        this.inflight[kept++] = entry;
      }
    }
    this.inflight.length = kept;
    if (done.length > 0) this.lastProgressMs = performance.now();
    // Settled after the list is consistent: a settle may start the next operation (add) at once.
    for (const { settle, result } of done) settle(result);
    this.schedule();
  }
}

const completions = new CompletionPoller();
