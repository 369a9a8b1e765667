// The few error kinds lsvd raises (cf. leveldb Status). Only nbd/ maps them to NBD errno, only cli/ to exit codes.
// Messages name the thing and the reason: "Cannot read object obj.0000002a: bad CRC".

export type ErrorKind = "Corruption" | "InvalidArgument" | "NotFound" | "NotSupported" | "IO" | "NoSpace" | "Conflict";

export class LsvdError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = `${kind}Error`;
  }
}

/** Bytes that do not decode: bad magic, version, CRC, UUID, lengths. Never a partial result. */
export class CorruptionError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Corruption", message, options);
  }
}

/** The caller asked for something invalid: bad size, out-of-range I/O, malformed URI. */
export class InvalidArgumentError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("InvalidArgument", message, options);
  }
}

export class NotFoundError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NotFound", message, options);
  }
}

export class NotSupportedError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NotSupported", message, options);
  }
}

/** The world failed: a syscall, a device, a backend. `transient` marks errors worth retrying. */
export class IOError extends LsvdError {
  constructor(
    message: string,
    readonly transient = false,
    options?: { cause?: unknown; errno?: number },
  ) {
    super("IO", message, options);
    this.errno = options?.errno;
  }
  readonly errno: number | undefined;
}

/** A conditional backend write found another version than the one it was conditioned on (or an object it
 * must not replace): someone else wrote the name. Never transient: retrying the same condition cannot succeed. */
export class ConflictError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Conflict", message, options);
  }
}

export class NoSpaceError extends LsvdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NoSpace", message, options);
  }
}

/**
 * Programmer errors: stays on in production. It is better to stop than to go on in an incorrect state.
 */
export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
