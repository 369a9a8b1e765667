// Counters the write path's parts keep for logs and benchmarks (Volume.stats, `lsvd serve` at exit).

export function newWriteStats() {
  return { writes: 0, writeBytes: 0, trims: 0, records: 0, objects: 0, objectsEndingInsideWrite: 0, checkpoints: 0, gcCopiedSectors: 0, gcSupersededSectors: 0 };
}

export type WriteStats = ReturnType<typeof newWriteStats>;
