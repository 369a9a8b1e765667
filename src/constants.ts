// Every limit lsvd lives by, in one place (cf. tigerbeetle src/constants.zig).
// Units go last in names. Relations between constants are asserted at the bottom, with the reason.

/** Sector: the unit of every LBA and length in the LSVD v1 backend format. */
export const SECTOR_BYTES = 512;
/** Page: the O_DIRECT alignment for cache I/O and the granularity of journal records. */
export const PAGE_BYTES = 4096;
export const SECTORS_PER_PAGE = PAGE_BYTES / SECTOR_BYTES;

/** LSVD v1 data_map packs lba into 36 bits and len into 28 bits (sectors). */
export const LBA_BITS = 36;
export const EXTENT_LEN_BITS = 28;
export const VOLUME_SECTORS_MAX = 2 ** LBA_BITS;
export const VOLUME_BYTES_MAX = VOLUME_SECTORS_MAX * SECTOR_BYTES; // 32 TiB
export const EXTENT_SECTORS_MAX = 2 ** EXTENT_LEN_BITS - 1;

/** Default volume size for `lsvd mkdisk`. */
export const VOLUME_BYTES_DEFAULT = 1024 ** 3;

/** Backend batch (one DATA object's data area). Paper and reference: 8 MiB. */
export const BATCH_BYTES_DEFAULT = 8 * 1024 * 1024;
export const BATCH_BYTES_MIN = 64 * 1024;
export const BATCH_BYTES_MAX = 64 * 1024 * 1024;
/** A partial batch is sealed and put after this long without filling up. */
export const BATCH_IDLE_MS_DEFAULT = 2000;
/** Backend puts in flight at once; more sealed batches wait (bounded memory: this many batch buffers). */
export const PUTS_INFLIGHT_MAX = 4;
/**
 * Objects sealed (DATA and checkpoints) but not yet durable in the backend, at most: the write path waits before it
 * opens another batch. Without it the journal alone bounds how far writes run ahead of the backend, and at small
 * batches puts are paced by objects, not bytes: at 64 KiB a 128 MiB journal held ~2,000 objects the backend had not
 * seen, garbage collection's copies and checkpoints queued behind them, and retired objects waited seconds for the
 * checkpoints that let them be deleted (the backend held 4.4x the live data). 16 (4x PUTS_INFLIGHT_MAX) keeps every
 * put slot fed while a checkpoint sealed now is at most 16 puts from durable (each retired object waits for
 * CHECKPOINTS_KEPT of them); bench/RESULTS.md compares 16, 32 and no bound. The cost: at small batches the journal
 * absorbs only this many objects of writes while the backend is unreachable (1 MiB at 64 KiB batches); at the
 * default 8 MiB that is 128 MiB, and a journal of that size or less binds first.
 */
export const SEALED_OBJECTS_AHEAD_MAX = 16;
/** Backend ranged reads in flight at once. */
export const GETS_INFLIGHT_MAX = 64;
/** File backend: idle read handles kept open between ranged reads of objects (least recently used out first). */
export const FILE_STORE_READ_HANDLES_MAX = 256;
/**
 * File backend: bytes per O_DIRECT write(2) of a whole object, one after another, so the cache's journal writes on a
 * shared disk queue behind at most this much (file_store.ts, writeDirect). Whole objects smaller than this are read
 * through the page cache; larger ones with O_DIRECT, FILE_STORE_DIRECT_READ_BYTES_MAX at a time (readDirect).
 * Measured against 1 MiB for both (bench/RESULTS.md, "Object I/O in smaller pieces"): 4 KiB random writes at steady
 * state did more IOPS at a lower p99; writes of 256 KiB did too, but cost 64 KiB sequential writes ~10% more CPU
 * (every piece is a round trip through Bun's thread pool), and pieces of 128 KiB gained 4 KiB writes nothing more.
 */
export const FILE_STORE_DIRECT_WRITE_BYTES_MAX = 512 * 1024;
export const FILE_STORE_DIRECT_READ_BYTES_MAX = 256 * 1024;
/**
 * File backend: a name-changing step (rename, unlink, compare-and-rename) waits at most this long for the store's
 * lock file held by another process (a holder that is killed releases it; one that is stopped holds it), then fails
 * with a transient IOError.
 */
export const FILE_STORE_LOCK_WAIT_MS_MAX = 10_000;

/** NBD: largest READ/WRITE payload accepted (advertised as INFO_BLOCK_SIZE maximum). */
export const NBD_REQUEST_BYTES_MAX = 32 * 1024 * 1024;
/** NBD: requests in flight per connection before the server stops reading from the socket. */
export const NBD_INFLIGHT_PER_CONNECTION_MAX = 128;
/** NBD: WRITE payloads at most this large are kept in reused buffers (the largest payload size class). */
export const NBD_ASSEMBLY_BUFFER_BYTES = 128 * 1024;
/**
 * NBD: idle bytes a connection keeps per payload size class (nbd/payload_buffers.ts) for reuse; the rest are left to the
 * garbage collector.
 */
export const NBD_PAYLOAD_IDLE_BYTES_PER_CLASS = 1024 * 1024;
/** NBD: option payloads larger than this close the connection (hostile handshake). */
export const NBD_OPTION_BYTES_MAX = 64 * 1024;
/** NBD: connections at once (negotiating or established); more are refused (closed at accept). */
export const NBD_CONNECTIONS_MAX = 64;
/**
 * NBD: connections still negotiating (or waiting for the greeting while the volume recovers); more are refused, so
 * clients that connect and say nothing cannot hold the slots established clients need (qemu CVE-2024-7409). Half of
 * all: a burst of this many clients connecting in the same instant (fio numjobs=32) is still served.
 */
export const NBD_NEGOTIATING_MAX = 32;
/** NBD: a client must finish negotiating this long after its greeting, or it is disconnected (qemu's default too). */
export const NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
/** NBD: failed requests (and refused connections) logged per second; the rest are summed up per kind. */
export const NBD_ERROR_LOG_LINES_PER_SECOND = 10;
export const NBD_PORT_DEFAULT = 10809;
/** NBD: options one client may send before the server hangs up (a client looping in negotiation is a DoS). */
export const NBD_HANDSHAKE_OPTIONS_MAX = 256;
/** NBD: unsent reply bytes per connection before the server stops reading requests (a client not reading). */
export const NBD_OUTPUT_QUEUED_BYTES_MAX = 2 * NBD_REQUEST_BYTES_MAX;
/**
 * NBD: WRITE payload bytes per connection received and not yet completed before the server stops reading requests
 * (the journal being full holds writes back; without this, 128 pipelined 32 MiB writes would hold 4 GiB).
 */
export const NBD_INFLIGHT_WRITE_BYTES_MAX = 2 * NBD_REQUEST_BYTES_MAX;
/** NBD: descriptors in one BLOCK_STATUS reply; the client asks again for the rest. */
export const NBD_BLOCK_STATUS_EXTENTS_MAX = 4096;
/**
 * NBD: WRITE_ZEROES with NO_HOLE is done as writes of a shared zero buffer this large: the largest client WRITE, so
 * that a zeroing a client may send as one request is one volume write (whole after cache loss, like a WRITE).
 */
export const NBD_ZERO_WRITE_BYTES_MAX = NBD_REQUEST_BYTES_MAX;
/**
 * Any-size I/O (volume/any_size.ts): writes, trims and zeroings in flight on one volume, at most. The NBD layer lets
 * each connection have NBD_INFLIGHT_PER_CONNECTION_MAX requests in flight; more would be a bug there.
 */
export const ANY_SIZE_INFLIGHT_MAX = NBD_INFLIGHT_PER_CONNECTION_MAX * NBD_CONNECTIONS_MAX;
/**
 * Any-size I/O: an unaligned write up to this long reads all its sectors in one read before it rewrites them; a
 * longer one reads only its one or two partial sectors. One read of a few KiB from a backend object costs about what
 * one of 512 bytes does, and two cost two round trips.
 */
export const ANY_SIZE_READ_WHOLE_BYTES_MAX = 64 * 1024;
/** NBD: on close(), how long connections may take to finish in-flight requests and send replies. */
export const NBD_CLOSE_DRAIN_MS_MAX = 30_000;
/**
 * NBD on io_uring: receive buffers the kernel picks from (one group for every connection of the server), and the
 * bytes of each. A buffer goes back in the same reap unless a WRITE whose payload lies whole in it keeps it until the
 * WRITE completes; keeping stops at three quarters of them out (ffi/uring_buffers.ts). When none is free a
 * connection's receive ends (-ENOBUFS) and is started again.
 */
export const NBD_URING_RECEIVE_BUFFERS = 64;
export const NBD_URING_RECEIVE_BYTES = 128 * 1024;
/** NBD on io_uring: bytes of replies one send carries; a connection has two such buffers, one filling, one sent. */
export const NBD_URING_SEND_BYTES = 128 * 1024;
/** NBD on io_uring: listeners one server may have (each holds an accept and may need a cancel in flight). */
export const NBD_URING_LISTENERS_MAX = 8;
/**
 * NBD on io_uring: socket ops in flight at most: a receive, a send and a cancel (of the receive, to pause it) per
 * connection, an accept and a cancel per listener.
 */
export const NBD_URING_SOCKET_SLOTS = 3 * NBD_CONNECTIONS_MAX + 2 * NBD_URING_LISTENERS_MAX;
/** NBD on io_uring: after an accept failed for want of descriptors or memory, the listener tries again this much later. */
export const NBD_URING_ACCEPT_RETRY_MS = 100;

/** io_uring: submission queue entries per ring; more requests queue in JS and wait. */
export const URING_QUEUE_DEPTH = 128;
/**
 * io_uring: event-loop turns (about 1-2 us each) a ring keeps polling its completion queue after the last completion,
 * with eventfd signals off, before it falls back to waking on the eventfd; 0: it never polls and every burst of
 * completions is one eventfd wake. Polling once took a raw io_uring loop's 4 KiB QD32 writes from 0.54 to 0.65-0.74
 * of fio (bench/uring_vs_fio.sh, 2026-12-01); on 2026-12-06 the same script gave 0.92 of fio without polling and 0.79
 * with 64 turns (`POLL_TURNS`, one script run each, load 3-5). Each turn is a zero-timeout epoll, ~24 turns per
 * request burst under lsvd serve, and where the server shares two cores with its clients not polling took server
 * CPU per 4 KiB write from 32.4 to 25.2 us and from 29.1 to 24.2 us (two same-run A/Bs, bench/cpu_per_request.sh),
 * so the cache device does not poll.
 */
export const URING_POLL_IDLE_TURNS = 0;
/**
 * io_uring: a turn's SQEs are submitted in batches of this many as they are written (the rest at the end of the
 * turn). Measured with bench/uring_vs_fio.sh (4 KiB random writes, QD32, ratio to fio in the same script, medians
 * of 3) on a virtualised disk whose completions come in bursts: one submit per turn 0.65-0.70; batches of 8: 0.83;
 * of 4: 0.81-0.94; of 2: 0.96-1.03; of 1 (a call per I/O, which we do not want): 1.04.
 */
export const URING_SUBMIT_BATCH_SQES = 2;
/** io_uring: while not polling with ops in flight, the completion queue is also checked this often (a backstop). */
export const URING_BACKSTOP_MS = 10;
/**
 * librados: completions are polled once per event-loop turn while operations are in flight and one completed (or
 * started) within this many milliseconds; past that (a long put, an OSD away) they are polled every
 * RADOS_POLL_IDLE_MS, so a stalled cluster does not keep a core busy. See ffi/librados.ts.
 */
export const RADOS_POLL_BUSY_MS = 2;
export const RADOS_POLL_IDLE_MS = 1;
/** io_uring: iovecs in one vectored op (kernel UIO_MAXIOV is 1024); longer writes become several ops. */
export const URING_IOVECS_PER_OP_MAX = 256;
/** io_uring: requests waiting in JS for a free ring slot. Callers bound their own work far below this; past it, fail. */
export const URING_WAITING_MAX = 65_536;
/** Aligned buffer pool: the largest single buffer, and the default bound on all buffers (in use + cached). */
export const ALIGNED_BUFFER_BYTES_MAX = 64 * 1024 * 1024;
export const ALIGNED_POOL_BYTES_DEFAULT = 256 * 1024 * 1024;

/** Journal group commit: a record carries at most this many extents (one header page) and this much data. */
export const JOURNAL_RECORD_EXTENTS_MAX = 251;
export const JOURNAL_RECORD_DATA_BYTES_MAX = 4 * 1024 * 1024;
/** Journal records being written to the cache at once. */
export const JOURNAL_WRITES_INFLIGHT_MAX = 8;

/** Garbage collection: objects whose live share is below this are cleaned (lsvd serve --gc-threshold). */
export const GC_THRESHOLD_DEFAULT = 0.5;
/**
 * Time between garbage collection rounds when garbage comes slowly. Rounds come sooner, down to this over
 * GC_ROUND_SPEEDUP_MAX, when the garbage made since the previous round's start would reach GC_ROUND_GARBAGE_SHARE of
 * the live data before then (volume/gc_pace.ts): a 32 MiB volume overwritten at 40 MB/s needs a round every 50 ms.
 */
export const GC_INTERVAL_MS_DEFAULT = 1000;
export const GC_ROUND_SPEEDUP_MAX = 100;
export const GC_ROUND_GARBAGE_SHARE = 1 / 16;
/**
 * The next round's delay is at most this many times the previous one: a round that saw little or no garbage in a
 * short window (the client paused for a few ms, or the collector's own copies held the write path) does not put the
 * next round a whole interval away while clients overwrite the volume several times a second. An idle volume's
 * rounds slow down to the interval within a second or two.
 */
export const GC_ROUND_DELAY_GROWTH_MAX = 2;
/**
 * A round also starts, whatever the timer says, once clients have displaced this share of the live data since the
 * last one began: the timer's rate is a guess from the last window, and a write path that stalled in it showed none.
 * A safety net, not the pace: at GC_ROUND_GARBAGE_SHARE it ran rounds (and the checkpoints they ask for) about twice
 * as often, and cost 8 MiB batches about a third of their IOPS (bench/RESULTS.md, "Space back-pressure").
 */
export const GC_ROUND_EARLY_SHARE = 1 / 4;
/**
 * GC holds the garbage in the backend's objects (not yet retired) near this share of the live data: a round reclaims
 * (in dead bytes of its victims) what is above it plus what was made since the previous round, and nothing while the
 * garbage stays below it. With the garbage waiting for checkpoints and made between rounds, the backend stays within
 * twice the live data.
 */
export const GC_GARBAGE_TARGET_SHARE = 1 / 2;
/** Pacing treats a volume as holding at least this much live data (an empty volume would otherwise get no slack). */
export const GC_LIVE_BYTES_FLOOR = 1024 * 1024;
/**
 * Space back-pressure (docs/architecture.md, "Garbage collection", "Space back-pressure"): while the backend's DATA
 * objects that garbage collection may clean or delete (snapshot-pinned and base objects left out) hold more than
 * SPACE_HIGH_WATER_RATIO times the live data (more for a low --gc-threshold, below), and the collector has something
 * it can free, a new client write waits for the collector's progress, at most SPACE_WAIT_MS_MAX; then it goes, freed
 * or not.
 */
export const SPACE_HIGH_WATER_RATIO = 1.8;
export const SPACE_WAIT_MS_MAX = 200;
/**
 * With a --gc-threshold T below 0.5 the mark is SPACE_HIGH_WATER_THRESHOLD_SHARE / T times the live data instead
 * (gc_pace.ts, spaceHighWaterRatio; no mark at T = 0). A collector that cleans only objects less than T live leaves
 * the objects just above T alone, so it cannot hold the backend below 1/T times the live data; a fixed 1.8 then made
 * writes wait out their bound for space that only deletes at checkpoint pace could bring. bench/gc_pace_bench.sh
 * with T = 0.3, 4 KiB random writes QD32 on a 1 GiB volume for 40 s (bench/RESULTS.md, "A high-water mark the
 * threshold can hold"): with 1.8, ~700 writes per run waited ~150 ms each and the slowest took 205-215 ms; with this
 * mark none waited and the slowest took 14-97 ms, the backend peaking at 1.87-1.97x. 0.9 keeps the default
 * threshold's mark at 1.8.
 */
export const SPACE_HIGH_WATER_THRESHOLD_SHARE = 0.9;
/** Retired objects wait at most this long for a checkpoint before the collector asks for one. */
export const GC_FORCE_CHECKPOINT_MS_DEFAULT = 30_000;
/**
 * A checkpoint is asked for early when the retired objects waiting for one hold at least this many times its size,
 * GC_WAITING_LIVE_SHARE of the live data and GC_FORCE_CHECKPOINT_BYTES_MIN: its write then pays for itself in space
 * freed, and the garbage waiting stays a small share of the backend (volume/gc_pace.ts, gcCheckpointDue).
 */
export const GC_CHECKPOINT_PAYBACK = 4;
export const GC_WAITING_LIVE_SHARE = 1 / 8;
export const GC_FORCE_CHECKPOINT_BYTES_MIN = 1024 * 1024;
/**
 * A GC round reads (victims are read whole) at most this many times the dead bytes it is to reclaim, and at most
 * GC_ROUND_READ_BYTES_MAX (the first victim is always read): a round's length stays bounded; more comes next round.
 */
export const GC_ROUND_READ_FACTOR = 4;
export const GC_ROUND_READ_BYTES_MAX = 256 * 1024 * 1024;
/** Victims being read and copied at once: at most this many bytes (but always one victim) and this many objects. */
export const GC_READ_INFLIGHT_BYTES_MAX = 16 * 1024 * 1024;
export const GC_VICTIMS_INFLIGHT_MAX = 16;
/**
 * GC keeps the buffers it reads victims into (at most what it reads at once, volume/reused_buffers.ts) until its rounds
 * have found no victim for this long. Under steady load, rounds with and without victims alternate; freeing the buffers
 * at every round without one made the next victim take fresh memory, a page fault per 4 KiB page.
 */
export const GC_READ_BUFFERS_IDLE_MS = 30_000;
/**
 * Victim extents GC copies from per event-loop turn (garbage_collector.ts queueCopies): a victim of 4 KiB random
 * writes has ~2,000 extents, whose lookups and copies held the loop for 10-35 ms in one turn (bench/loop_stalls.sh).
 */
export const GC_CLEAN_SLICE_EXTENTS = 128;
/** The largest copy GC hands the write path at once (an extent longer than this goes as several: copyExtents). */
export const GC_COPY_BYTES_MAX = 1024 * 1024;
/** A victim whose cleaning failed is not tried again for this long. */
export const GC_VICTIM_RETRY_MS = 60_000;
/**
 * Backend deletes per round: GC_DELETES_RATE_FACTOR times the objects the log gained since the previous round (every
 * object made needs one delete some day; the factor drains a backlog), at least GC_DELETES_PER_ROUND_MIN, at most
 * GC_DELETES_PER_ROUND_MAX; GC_DELETES_INFLIGHT_MAX at once.
 */
export const GC_DELETES_RATE_FACTOR = 2;
export const GC_DELETES_PER_ROUND_MIN = 256;
export const GC_DELETES_PER_ROUND_MAX = 16_384;
export const GC_DELETES_INFLIGHT_MAX = 8;
/** The collector logs what it deleted at most this often. */
export const GC_LOG_INTERVAL_MS = 10_000;

/** A checkpoint is written after this many data objects (and on clean shutdown). */
export const CHECKPOINT_INTERVAL_OBJECTS = 64;
/** The superblock keeps the newest this-many checkpoints. */
export const CHECKPOINTS_KEPT = 3;
/**
 * Idle buffers the checkpoint scheduler keeps to build the next checkpoints in (reused_buffers.ts): room for a burst of
 * CHECKPOINTS_KEPT checkpoints of maps up to ~650k extents (16 bytes each); larger ones are built in fresh memory.
 */
export const CHECKPOINT_BUFFERS_IDLE_BYTES_MAX = 32 * 1024 * 1024;

/** Backend retry policy for transient errors. */
export const BACKEND_RETRIES_MAX = 8;
export const BACKEND_RETRY_DELAY_MS_MIN = 50;
export const BACKEND_RETRY_DELAY_MS_MAX = 5000;
export const BACKEND_REQUEST_TIMEOUT_MS = 30_000;
/** Backend requests (all kinds) in flight at once through one RetryingStore; more wait their turn (FIFO). */
export const BACKEND_REQUESTS_INFLIGHT_MAX = PUTS_INFLIGHT_MAX + GETS_INFLIGHT_MAX;
/** Callers waiting for a backend request slot; more is a bug in the caller's own bounds. */
export const BACKEND_REQUEST_WAITERS_MAX = 4096;
/** Object names: bytes at most (a file store adds a temporary-name suffix, and file names stop at 255). */
export const OBJECT_NAME_BYTES_MAX = 200;
/** A listing that returns more names than this is refused (1 TiB of 8 MiB objects is 131072 names). */
export const BACKEND_LIST_NAMES_MAX = 16 * 1024 * 1024;
/** S3: keys per ListObjectsV2 page (the protocol's maximum). */
export const S3_LIST_PAGE_KEYS = 1000;
/** S3: requests in flight per S3Store; more wait. */
export const S3_REQUESTS_INFLIGHT_MAX = 64;
/** S3: bucket creation (a signed fetch of our own) gives up after this long. */
export const S3_CREATE_BUCKET_TIMEOUT_MS = 30_000;
/**
 * S3: a PUT, DELETE or versioned GET (signed fetches of our own) is aborted after this long, so an attempt that
 * RetryingStore abandoned settles in bounded time (retrying_store.ts waits for it before the next attempt).
 */
export const S3_REQUEST_TIMEOUT_MS = BACKEND_REQUEST_TIMEOUT_MS;
/** RADOS: asynchronous librados operations in flight per RadosStore. */
export const RADOS_OPS_INFLIGHT_MAX = 64;
/** RADOS: librados gives up on an OSD or monitor operation after this long (ETIMEDOUT), instead of never. */
export const RADOS_OP_TIMEOUT_MS = BACKEND_REQUEST_TIMEOUT_MS;

function assert(condition: boolean, message: string): void {
  if (!condition) throw new Error(`constants: ${message}`);
}

// O_DIRECT needs page-aligned buffers, offsets and lengths; a page is a whole number of sectors.
assert(PAGE_BYTES % SECTOR_BYTES === 0, "a page is a whole number of sectors");
// A batch must be describable by one data_map entry length field and must fit the format's object size.
assert(BATCH_BYTES_MAX / SECTOR_BYTES <= EXTENT_SECTORS_MAX, "a batch fits one extent length");
assert(SEALED_OBJECTS_AHEAD_MAX > PUTS_INFLIGHT_MAX + 1, "sealed objects wait for every put slot and a checkpoint");
assert(BATCH_BYTES_DEFAULT >= BATCH_BYTES_MIN && BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX, "default batch in range");
// A journal record carries at most min(JOURNAL_RECORD_DATA_BYTES_MAX, batch size) data bytes: the write path splits
// writes into pieces that size (write/record_former.ts), GC copies no more (garbage_collector.ts), and a batch's
// buffer holds max(batch size, JOURNAL_RECORD_DATA_BYTES_MAX) (batch.ts batchCapacityBytes). At every batch size those pieces must
// be non-empty whole pages (the journal is page granular), and the buffer must be one aligned buffer.
assert(BATCH_BYTES_MIN >= PAGE_BYTES && BATCH_BYTES_MIN % PAGE_BYTES === 0 && BATCH_BYTES_MAX % PAGE_BYTES === 0, "batch sizes are whole pages");
assert(JOURNAL_RECORD_DATA_BYTES_MAX >= PAGE_BYTES && JOURNAL_RECORD_DATA_BYTES_MAX % PAGE_BYTES === 0, "a record's data is whole pages");
assert(Math.max(BATCH_BYTES_MAX, JOURNAL_RECORD_DATA_BYTES_MAX) <= ALIGNED_BUFFER_BYTES_MAX, "a batch buffer holds the largest record");
assert(GC_COPY_BYTES_MAX <= JOURNAL_RECORD_DATA_BYTES_MAX, "one GC copy fits a journal record");
// A record that needs a Pad before it takes two write slots at once (cache/journal.ts hasWriteSlot): with one slot it
// would wait forever at the journal's first wrap (a build with 1 hung under 4 KiB writes within seconds).
assert(JOURNAL_WRITES_INFLIGHT_MAX >= 2, "a Pad and its record fit the journal writes in flight");
// GC pacing: the backlog share is a share, a round may always read at least one largest object, deletes keep up.
assert(GC_GARBAGE_TARGET_SHARE > 0 && GC_GARBAGE_TARGET_SHARE < 1 && GC_ROUND_GARBAGE_SHARE > 0 && GC_ROUND_GARBAGE_SHARE <= 1 && GC_WAITING_LIVE_SHARE > 0, "gc shares");
assert(GC_ROUND_READ_BYTES_MAX >= BATCH_BYTES_MAX && GC_READ_INFLIGHT_BYTES_MAX <= GC_ROUND_READ_BYTES_MAX, "a gc round reads a whole batch");
assert(GC_DELETES_RATE_FACTOR > 1 && GC_DELETES_PER_ROUND_MIN <= GC_DELETES_PER_ROUND_MAX, "gc deletes outpace objects made");
// A round's deletes, reads and copies go through one RetryingStore: they must leave room for the write path.
assert(GC_DELETES_INFLIGHT_MAX + GC_VICTIMS_INFLIGHT_MAX <= BACKEND_REQUESTS_INFLIGHT_MAX - PUTS_INFLIGHT_MAX, "gc leaves backend slots");
// Every O_DIRECT write of an object but the last starts and ends on a page.
assert(FILE_STORE_DIRECT_WRITE_BYTES_MAX % PAGE_BYTES === 0 && FILE_STORE_DIRECT_WRITE_BYTES_MAX > 0, "object write pieces are whole pages");
assert(FILE_STORE_DIRECT_READ_BYTES_MAX % PAGE_BYTES === 0 && FILE_STORE_DIRECT_READ_BYTES_MAX > 0, "object read pieces are whole pages");
// Established clients always keep some slots: negotiating ones cannot take them all.
assert(NBD_NEGOTIATING_MAX < NBD_CONNECTIONS_MAX, "negotiating clients are a fraction of all connections");
// The largest NBD write must fit in a batch, so a write never straddles the capacity check of two batches.
assert(NBD_REQUEST_BYTES_MAX <= BATCH_BYTES_MAX, "an NBD write fits one batch");
// An unaligned write is rewritten as the sectors it touches (volume/any_size.ts): at most two sectors more.
assert(NBD_REQUEST_BYTES_MAX + 2 * SECTOR_BYTES <= BATCH_BYTES_MAX, "an unaligned NBD write, rounded out to sectors, fits one batch");
// A queued-output limit below one reply would stop reading for good after a single large READ.
assert(NBD_OUTPUT_QUEUED_BYTES_MAX > NBD_REQUEST_BYTES_MAX, "one largest reply fits the output limit");
assert(NBD_INFLIGHT_WRITE_BYTES_MAX >= NBD_REQUEST_BYTES_MAX, "one largest write fits the in-flight write limit");
// The retry delay range must be a range.
assert(BACKEND_RETRY_DELAY_MS_MIN > 0 && BACKEND_RETRY_DELAY_MS_MIN <= BACKEND_RETRY_DELAY_MS_MAX, "retry delays");
// A RetryingStore must admit every put and get the volume keeps in flight, or the volume's own bounds deadlock on it.
assert(BACKEND_REQUESTS_INFLIGHT_MAX >= PUTS_INFLIGHT_MAX + GETS_INFLIGHT_MAX, "backend slots cover the volume");
// A journal record (header page + one buffer per extent) goes out as a single vectored write.
assert(URING_IOVECS_PER_OP_MAX >= JOURNAL_RECORD_EXTENTS_MAX + 1, "a journal record fits one vectored op");
assert(URING_IOVECS_PER_OP_MAX <= 1024, "iovecs per op within the kernel's UIO_MAXIOV");
// The largest batch and the largest NBD request each fit one aligned buffer, and the pool holds a few of them.
assert(ALIGNED_BUFFER_BYTES_MAX >= BATCH_BYTES_MAX && ALIGNED_BUFFER_BYTES_MAX >= NBD_REQUEST_BYTES_MAX, "big buffers fit");
assert(ALIGNED_POOL_BYTES_DEFAULT >= 2 * ALIGNED_BUFFER_BYTES_MAX, "the pool holds at least two of the largest buffers");
// Volume sizes are JS numbers: they must stay exact.
assert(Number.isSafeInteger(VOLUME_BYTES_MAX), "volume bytes are safe integers");

/**
 * Backend object decoders reject headers and data areas larger than these (the v1 u32 sector fields would allow
 * 2 TiB). A checkpoint keeps its whole map in the header area, 16 bytes per extent: 10M extents = 160 MB.
 */
export const OBJECT_HEADER_BYTES_MAX = 1024 ** 3;
export const OBJECT_DATA_BYTES_MAX = 1024 ** 3;
// Every batch we seal must decode again; v1 offsets are u32 byte counts from the start of an object.
assert(BATCH_BYTES_MAX <= OBJECT_DATA_BYTES_MAX, "a batch fits the object data area bound");
assert(OBJECT_HEADER_BYTES_MAX + OBJECT_DATA_BYTES_MAX <= 2 ** 32, "object offsets fit v1 u32 offset fields");

/** Trims (TRIM/WRITE_ZEROES extents) one batch may carry; a batch with more is sealed early. */
export const BATCH_TRIMS_MAX = 4096;

/** fsck: lists in its report (holes, objects beyond the log end, stray names) keep this many items, and count all. */
export const FSCK_REPORT_ITEMS_MAX = 1000;

/**
 * SSD read-cache fills (docs/architecture.md, "The read path"): blocks read from the backend wait in a queue of at most
 * this many (4 MiB; more are skipped), and are written in batches of at most READ_CACHE_FILL_BATCH_BLOCKS_MAX, with at
 * most READ_CACHE_FILL_BATCHES_INFLIGHT_MAX batches written at once.
 */
export const READ_CACHE_FILL_BLOCKS_QUEUED_MAX = 1024;
export const READ_CACHE_FILL_BATCH_BLOCKS_MAX = 256;
/** A batch starts once this many blocks wait, or READ_CACHE_FILL_GATHER_MS after the first of fewer. */
export const READ_CACHE_FILL_BATCH_BLOCKS_MIN = 64;
export const READ_CACHE_FILL_GATHER_MS = 20;
export const READ_CACHE_FILL_BATCHES_INFLIGHT_MAX = 2;
/** Bytes of durable batches copied for write-to-read migration and not yet in their slots (two full batches). */
export const READ_CACHE_ADOPT_BYTES_QUEUED_MAX = 16 * 1024 * 1024;
/**
 * Write-to-read migration's budget: a token bucket of this many bytes a second, holding at most
 * READ_CACHE_ADOPT_BURST_BYTES. Every adopted byte is written to the cache device a second time (after the journal):
 * unbounded, sustained random writes paid for it with client IOPS (bench/RESULTS.md). Batches beyond it are skipped.
 */
export const READ_CACHE_ADOPT_BYTES_PER_SECOND = 16 * 1024 * 1024;
export const READ_CACHE_ADOPT_BURST_BYTES = 64 * 1024 * 1024;
/**
 * Write-to-read migration skips a durable batch while its volume's client writes are busy (src/cache/
 * migration_rules.ts): more than this many queued and not yet acknowledged, or more than this many bytes a second
 * written since the volume's previous durable batch. Sustained writes above either pay nothing for migration.
 */
export const READ_CACHE_ADOPT_WRITES_IN_FLIGHT_MAX = 4;
export const READ_CACHE_ADOPT_WRITE_BYTES_PER_SECOND_MAX = 32 * 1024 * 1024;

// ---- Ownership and fencing (docs/architecture.md, "Ownership and fencing") ----------------------------------------

/** How long a lease holds without renewal (`--lease-seconds` changes it, for tests). */
export const LEASE_DURATION_MS_DEFAULT = 30_000;
/** The holder renews every duration / LEASE_RENEW_DIVISOR, so two renewals may fail before it is fenced. */
export const LEASE_RENEW_DIVISOR = 3;
/**
 * The holder stops (fences itself) at duration - duration / LEASE_MARGIN_DIVISOR after it sent its last successful
 * renewal, by its monotonic clock; others may take the lease at duration after that renewal's wall-clock time. The
 * gap is what wall clocks of two hosts may disagree by (5 s at the default duration).
 */
export const LEASE_MARGIN_DIVISOR = 6;
/** Shortest lease `--lease-seconds` accepts. */
export const LEASE_DURATION_MS_MIN = 1000;
/**
 * Seqs a new ownership leaves unused above every name that exists when the previous holder did not release its lease
 * cleanly: a writer that lost its lease may still land puts it had started, at seqs no higher than the highest name
 * that exists plus the puts it had in flight (PUTS_INFLIGHT_MAX). Seqs are uint32: a margin per unclean takeover costs
 * nothing that matters.
 */
export const STALE_SEQ_MARGIN = 1024;
/** Skipped seq ranges a superblock may carry (docs/format.md); a takeover checkpoint keeps the count near 3. */
export const SKIPPED_RANGES_MAX = 64;
/** Snapshots a volume may carry (docs/format.md): each pins a checkpoint and every object its map names. */
export const SNAPSHOTS_MAX = 256;
/** Clone registrations a volume's superblock may carry (docs/format.md, `clone_ref`): up to ~280 KiB of header. */
export const CLONE_REFS_MAX = 1024;
/** Attempts at the superblock rewrite that records a new owner's epoch while a stale holder's last write lands. */
export const SUPERBLOCK_CAS_ATTEMPTS_MAX = 8;

// A stale writer's late puts land at most PUTS_INFLIGHT_MAX seqs above the highest existing name.
assert(STALE_SEQ_MARGIN > PUTS_INFLIGHT_MAX + 1, "the stale-seq margin covers every put a writer has in flight");
// Two renewals fit before the local deadline, and the deadline comes before anyone else may take the lease.
assert(1 - 1 / LEASE_MARGIN_DIVISOR > 2 / LEASE_RENEW_DIVISOR, "two renewals come before the local deadline");
assert(LEASE_DURATION_MS_DEFAULT >= LEASE_DURATION_MS_MIN, "default lease duration");

/** A clone's chain of bases is at most this deep (clone_chain.ts): a longer one is refused as corrupt. */
export const CLONE_DEPTH_MAX = 16;
assert(
  NBD_URING_RECEIVE_BUFFERS <= URING_QUEUE_DEPTH + NBD_URING_SOCKET_SLOTS,
  "the CQ (2 x slots) holds a CQE per slot and one per receive buffer handed out: NBD on io_uring never overflows it",
);
