// Counters the write path's parts keep for logs and benchmarks (Volume.stats, `lsvd serve` at exit). spaceWaits:
// client writes that waited at the space gate (space_gate.ts); spaceWaitsTimedOut: of those, the ones that went at
// their bound rather than on the collector's progress; spaceWaitMs: their waits, summed.

export function newWriteStats() {
  return { writes: 0, writeBytes: 0, trims: 0, records: 0, objects: 0, objectsEndingInsideWrite: 0, checkpoints: 0, gcCopiedSectors: 0, gcSupersededSectors: 0, spaceWaits: 0, spaceWaitsTimedOut: 0, spaceWaitMs: 0 };
}

export type WriteStats = ReturnType<typeof newWriteStats>;
