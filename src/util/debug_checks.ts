// Whether the expensive invariant checks (whole-structure walks, e.g. the write path's checkInvariants) run at every
// state change: under `bun test` (NODE_ENV=test) and with LSVD_DEBUG=1; off in a served binary.

export const debugChecks = process.env.NODE_ENV === "test" || process.env.LSVD_DEBUG === "1";
