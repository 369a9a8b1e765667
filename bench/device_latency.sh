#!/usr/bin/env bash
# What the disk gives the journal's writes (issue 17's tail latency): the block layer's latency, issue to completion,
# of every request on the disk under the cache (perf's block_rq_issue / block_rq_complete tracepoints), by direction
# and size (bench/_device_latency_report.ts). Two phases, alternating RUNS times:
#   alone  fio's own journal-sized writes on that disk with nothing else on it (36 KiB random writes QD2, io_uring,
#          O_DIRECT: the records `lsvd serve` writes under 4 KiB random writes QD32 are ~36 KiB, 2-3 in flight)
#   lsvd   `lsvd serve` (cache file and file backend in one temp dir on that disk, a fresh 1 GiB volume) under fio's
#          4 KiB random writes QD32 through NBD; traced from TRACE_FROM s into the run for TRACE_SECONDS s, by then
#          the volume is written over and garbage collection runs (SERVE_ARGS="--no-gc" to see it without)
# A journal record is a write of at most 128 KiB here; object puts and GC's victim reads are 1 MiB pieces, deletes
# show as discards when the file system discards. lsvd's fio IOPS and p99 are printed beside each lsvd phase.
#
# Usage: bench/device_latency.sh
# Env:   RUNS           alternations (default 1)
#        RUNTIME        seconds of fio per lsvd phase (default 14); TRACE_FROM (default 6), TRACE_SECONDS (default 6)
#        SIZE_MIB       volume and cache size (default 1024)
#        TMP_PARENT     where the temp dir goes, on the disk to measure (default /var/tmp; tmpfs is refused)
#        SERVE_ARGS     extra arguments for `lsvd serve`
#        LSVD_BIN       the binary (default dist/lsvd)
# Needs root (tracepoints), perf (Debian: linux-perf), fio, nbdinfo.
set -euo pipefail

bench_name=device_latency
tmp_parent="${TMP_PARENT:-/var/tmp}"
# shellcheck source=bench/_gc_serve.sh
source "$(cd "$(dirname "$0")" && pwd)/_gc_serve.sh" # here, root, bun, lsvd, log, die, the serve helpers
runs="${RUNS:-1}"
runtime="${RUNTIME:-14}"
trace_from="${TRACE_FROM:-6}"
trace_seconds="${TRACE_SECONDS:-6}"
size_mib="${SIZE_MIB:-1024}"
read -r -a serve_extra <<<"${SERVE_ARGS:-}"

for tool in nbdinfo perf; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$bun" ]] || die "bun not found at $bun (npm ci in $root)"
for number in "$runs" "$runtime" "$trace_from" "$trace_seconds" "$size_mib"; do
  [[ "$number" =~ ^[0-9]+$ && "$number" -ge 1 ]] || die "RUNS, RUNTIME, TRACE_FROM, TRACE_SECONDS and SIZE_MIB are whole numbers >= 1"
done
((trace_from + trace_seconds <= runtime)) || die "TRACE_FROM + TRACE_SECONDS must end within RUNTIME"
gc_make_workdir
trap gc_cleanup EXIT
# The disk's device number as the block tracepoints name it (a partition's requests are its disk's).
majmin="$(stat -c '%Hd:%Ld' "$tmp_parent")"
[[ -e "/sys/dev/block/$majmin/partition" ]] && majmin="$(cat "/sys/dev/block/$majmin/../dev")"
dev="${majmin/:/,}"

# Traces the disk for TRACE_SECONDS from now and prints the report, labelled with the phase and run.
trace_report() {
  local phase=$1 run=$2
  perf record -q -a -e block:block_rq_issue -e block:block_rq_complete -o "$work/perf.data" -- sleep "$trace_seconds" \
    >/dev/null 2>"$work/perf.err" || die "perf record failed: $(tail -n 3 "$work/perf.err")"
  perf script -i "$work/perf.data" -F time,event,trace 2>/dev/null \
    | "$bun" "$here/_device_latency_report.ts" --dev "$dev" --set "phase=$phase" --set "run=$run"
}

phase_alone() {
  local run=$1
  fio --name=alone --filename="$work/alone.dat" --size="${size_mib}m" --rw=randwrite --bs=36k --iodepth=2 \
    --ioengine=io_uring --direct=1 --time_based --runtime="$((trace_seconds + 2))" --output-format=terse \
    >/dev/null 2>"$work/fio.err" &
  local fio_pid=$!
  sleep 1
  trace_report alone "$run"
  wait "$fio_pid" || die "fio failed: $(tail -n 3 "$work/fio.err")"
  rm -f "$work/alone.dat"
}

phase_lsvd() {
  local run=$1
  gc_start_fresh "$size_mib" "${serve_extra[@]}"
  gc_fio_nbd --thread --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" --norandommap \
    --randrepeat=0 >"$work/fio.json" 2>"$work/fio.err" &
  local fio_pid=$!
  sleep "$trace_from"
  trace_report lsvd "$run"
  wait "$fio_pid" || die "fio failed: $(tail -n 3 "$work/fio.err")"
  "$bun" "$here/_fio_json.ts" --dir write --set workload=randwrite-4k-qd32 --set "run=$run" <"$work/fio.json"
  gc_stop_server
}

log "disk $dev under $work; $runs run(s); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((run = 1; run <= runs; run++)); do
  phase_alone "$run"
  phase_lsvd "$run"
done
