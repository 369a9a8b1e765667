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
/** Backend ranged reads in flight at once. */
export const GETS_INFLIGHT_MAX = 64;

/** NBD: largest READ/WRITE payload accepted (advertised as INFO_BLOCK_SIZE maximum). */
export const NBD_REQUEST_BYTES_MAX = 32 * 1024 * 1024;
/** NBD: requests in flight per connection before the server stops reading from the socket. */
export const NBD_INFLIGHT_PER_CONNECTION_MAX = 128;
/** NBD: option payloads larger than this close the connection (hostile handshake). */
export const NBD_OPTION_BYTES_MAX = 64 * 1024;
export const NBD_CONNECTIONS_MAX = 64;
export const NBD_PORT_DEFAULT = 10809;

/** io_uring: submission queue entries per ring; more requests queue in JS and wait. */
export const URING_QUEUE_DEPTH = 128;

/** Journal group commit: a record carries at most this many extents (one header page) and this much data. */
export const JOURNAL_RECORD_EXTENTS_MAX = 252;
export const JOURNAL_RECORD_DATA_BYTES_MAX = 4 * 1024 * 1024;
/** Journal records being written to the cache at once. */
export const JOURNAL_WRITES_INFLIGHT_MAX = 8;

/** A checkpoint is written after this many data objects (and on clean shutdown). */
export const CHECKPOINT_INTERVAL_OBJECTS = 64;
/** The superblock keeps the newest this-many checkpoints. */
export const CHECKPOINTS_KEPT = 3;

/** Backend retry policy for transient errors. */
export const BACKEND_RETRIES_MAX = 8;
export const BACKEND_RETRY_DELAY_MS_MIN = 50;
export const BACKEND_RETRY_DELAY_MS_MAX = 5000;
export const BACKEND_REQUEST_TIMEOUT_MS = 30_000;

function assert(condition: boolean, message: string): void {
  if (!condition) throw new Error(`constants: ${message}`);
}

// O_DIRECT needs page-aligned buffers, offsets and lengths; a page is a whole number of sectors.
assert(PAGE_BYTES % SECTOR_BYTES === 0, "a page is a whole number of sectors");
// A batch must be describable by one data_map entry length field and must fit the format's object size.
assert(BATCH_BYTES_MAX / SECTOR_BYTES <= EXTENT_SECTORS_MAX, "a batch fits one extent length");
assert(BATCH_BYTES_DEFAULT >= BATCH_BYTES_MIN && BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX, "default batch in range");
// A journal record's data can always be placed into one batch.
assert(JOURNAL_RECORD_DATA_BYTES_MAX <= BATCH_BYTES_MIN * 64, "a journal record fits a batch");
// The largest NBD write must fit in a batch, so a write never straddles the capacity check of two batches.
assert(NBD_REQUEST_BYTES_MAX <= BATCH_BYTES_MAX, "an NBD write fits one batch");
// Volume sizes are JS numbers: they must stay exact.
assert(Number.isSafeInteger(VOLUME_BYTES_MAX), "volume bytes are safe integers");
