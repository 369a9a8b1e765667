// Counters the write path's parts keep for logs and benchmarks (Volume.stats, `lsvd serve` at exit). spaceWaits:
// client writes that waited at the space gate (space_gate.ts); spaceWaitsTimedOut: of those, the ones that went at
// their bound rather than on the collector's progress; spaceWaitMs: their waits, summed. Where the record former
// (record_former.ts) held a record back, how often and for how long in all (ms, fractional): journalSlot*, every
// record write allowed in flight was; journalSpace*, the journal had no room; ahead*, a new batch could not open
// while SEALED_OBJECTS_AHEAD_MAX objects were not yet durable, or (the burst allowance spent: object_pipeline.ts) no
// batch buffer was free. Timed with performance.now(): read by people and
// metrics, never by a decision, so a simulation replays the same whatever they hold. gcCopiedSectors: sectors of
// victims' extents GC copied (still live when the copy formed its record); gcSupersededSectors: the rest of the
// extents it handed over (dead by then: overwritten, trimmed, or rewritten later in the same victim).

export function newWriteStats() {
  return { writes: 0, writeBytes: 0, trims: 0, records: 0, objects: 0, objectsEndingInsideWrite: 0, checkpoints: 0, gcCopiedSectors: 0, gcSupersededSectors: 0, spaceWaits: 0, spaceWaitsTimedOut: 0, spaceWaitMs: 0, journalSlotWaits: 0, journalSlotWaitMs: 0, journalSpaceWaits: 0, journalSpaceWaitMs: 0, aheadWaits: 0, aheadWaitMs: 0 };
}

export type WriteStats = ReturnType<typeof newWriteStats>;
