#!/usr/bin/env bash
# The data-path benchmark: fio against `lsvd serve` next to two baselines, on the same machine and disk, runs
# alternating so a slow phase of the disk or a noisy neighbour does not always land on the same engine.
#   lsvd    fio --ioengine=nbd over a unix socket to `dist/lsvd serve` (file backend, cache file, both in one temp
#           dir on a real disk); a fresh volume and cache per write run.
#   nbdkit  fio --ioengine=nbd over a unix socket to `nbdkit file` serving a preallocated file on the same disk, with
#           the plugin's defaults (page cache), as the baseline in docs/platform.md, "NBD baselines".
#   raw     fio --ioengine=io_uring --direct=1 on the lsvd cache file itself (preallocated), while no server uses it.
# Workloads: 4 KiB random write QD32, 64 KiB sequential write QD8, 4 KiB random read QD32 of written data.
# Random reads: each engine's region is first filled with 1 MiB sequential writes. For lsvd the data then sits in
# backend objects (every full batch is put while the fill runs; at most the last partial batch is still in memory) and
# lsvd has no read cache yet, so reads are ranged reads of file-backend objects. "lsvd" reads right after the fill on
# the same server; "lsvd-restart" reads after a clean stop (everything put, checkpointed) and a new server, so every
# read comes from a backend object through the map loaded from the checkpoint. The page cache is not dropped (it
# cannot be in this container), so lsvd and nbdkit reads are served from memory and raw O_DIRECT reads from the disk.
# Also reported: backend bytes per client byte for sequential writes (sizes of all new objects, data and checkpoint,
# after a clean stop, over the bytes fio wrote) and each lsvd server's peak RSS (VmHWM, sampled until it exits).
# Output: progress on stderr; a table and one JSON line on stdout (the JSON line also to $JSON_OUT when set).
#
# Usage: bench/serve_bench.sh
# Env:   RUNTIME    seconds per measured run (default 10)
#        RUNS       runs per engine and workload (default 3)
#        SIZE_MIB   volume, nbdkit file and raw region size (default 1024)
#        CACHE_MIB  lsvd cache file size, >= SIZE_MIB (default SIZE_MIB; half of it is the journal)
#        WORKLOADS  any of "randwrite seqwrite randread" (default all three)
#        RESTART_READS=0  skip the random reads after a restart
#        TMP_PARENT where the temp dir goes (default /var/tmp; refused if tmpfs)
#        BACKEND_PARENT  where lsvd's file backend goes (default: inside the temp dir, on the same disk as the
#                   cache). In production the backend is a remote store (RADOS, S3) and does not share the cache
#                   SSD; BACKEND_PARENT=/dev/shm models that by keeping the backend off the measured disk.
#        CPUS       pin every process to these CPUs with taskset (e.g. 0,1; default: no pinning)
#        LSVD_SERVE_ARGS  extra arguments for `lsvd serve` (e.g. "--batch-size 4m")
#        JSON_OUT   also write the JSON line to this file
#        BUILD=1    build dist/lsvd first (npm run build) instead of refusing when it is missing
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
lsvd="$root/dist/lsvd"
runtime="${RUNTIME:-10}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-1024}"
cache_mib="${CACHE_MIB:-$size_mib}"
workloads="${WORKLOADS:-randwrite seqwrite randread}"
restart_reads="${RESTART_READS:-1}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
read -r -a serve_extra <<<"${LSVD_SERVE_ARGS:-}"
pin=()
if [[ -n "${CPUS:-}" ]]; then pin=(taskset -c "$CPUS"); fi
# A server that has not opened its socket by then is stuck; a stop that takes longer than this is a bug or a disk
# far slower than any we bench on (a stop puts at most one journal's worth of writes).
start_timeout_s=30
stop_timeout_s=300

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "serve_bench: $*" >&2
  exit 1
}

# ---- preconditions --------------------------------------------------------------------------------------------------
for tool in fio nbdkit nbdinfo taskset; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$bun" ]] || die "bun not found at $bun (npm install in $root)"
if [[ ! -x "$lsvd" ]]; then
  [[ "${BUILD:-0}" == 1 ]] || die "$lsvd is missing: run 'npm run build' in $root first (or set BUILD=1)"
  log "building dist/lsvd"
  (cd "$root" && "$bun" run build >&2)
  [[ -x "$lsvd" ]] || die "build did not produce $lsvd"
fi
if [[ -n "$(find "$root/src" -name '*.ts' -newer "$lsvd" -print -quit)" ]]; then
  log "warning: src/ has files newer than dist/lsvd; the bench measures the binary (npm run build to refresh it)"
fi
[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 64 ]] || die "SIZE_MIB must be >= 64"
[[ "$cache_mib" =~ ^[0-9]+$ && "$cache_mib" -ge "$size_mib" ]] || die "CACHE_MIB must be >= SIZE_MIB"
for workload in $workloads; do
  [[ "$workload" =~ ^(randwrite|seqwrite|randread)$ ]] || die "unknown workload '$workload' in WORKLOADS"
done
fstype="$(df --output=fstype "$tmp_parent" | tail -1 | tr -d ' ')"
[[ "$fstype" != tmpfs && "$fstype" != ramfs ]] || die "$tmp_parent is $fstype: put TMP_PARENT on a real disk (O_DIRECT, honest numbers)"
# Room for the cache, the nbdkit file and a run's backend objects (a 10 s write run can put several GiB: every
# batch is kept, as overwritten data is reclaimed only by a garbage collector).
avail_mib=$(($(df --output=avail -k "$tmp_parent" | tail -1) / 1024))
need_mib=$((cache_mib + size_mib + 2048 + runtime * 1024))
((avail_mib >= need_mib)) || die "$tmp_parent has $avail_mib MiB free, want $need_mib"

# ---- temp dir, process bookkeeping, cleanup -------------------------------------------------------------------------
work="$(mktemp -d "$tmp_parent/lsvd-serve-bench.XXXXXX")"
lsvd_pid=""
nbdkit_pid=""
fio_pid=""
cleanup() {
  local rc=$?
  set +e
  # On an abort the data is thrown away, so no clean stop: kill whatever this script started, then remove the dir.
  # fio first gets SIGTERM, which it passes on to its job (it runs jobs as threads here, --thread, so SIGKILL would
  # not leave a forked job behind either).
  if [[ -n "$fio_pid" ]]; then
    kill -TERM "$fio_pid" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$fio_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in $fio_pid $lsvd_pid $nbdkit_pid; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if ((rc != 0)); then
    for f in "$work/lsvd.log" "$work/nbdkit.log" "$work/fio.err"; do
      [[ -s "$f" ]] && { echo "--- last lines of $(basename "$f"):" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  rm -rf "$work"
  [[ -n "${BACKEND_PARENT:-}" && -n "${backend_dir:-}" ]] && rm -rf "$backend_dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

if [[ -n "${BACKEND_PARENT:-}" ]]; then
  backend_dir="$(mktemp -d "${BACKEND_PARENT%/}/lsvd-bench-backend.XXXXXX")"
else
  backend_dir="$work/backend"
fi
volume="$backend_dir/vol"
cache="$work/cache"
nbdkit_img="$work/nbdkit.img"
lsvd_sock="$work/lsvd.sock"
nbdkit_sock="$work/nbdkit.sock"
results="$work/results.jsonl"
mkdir -p "$backend_dir"
: >"$results"
log "temp dir $work ($fstype); runtime ${runtime}s, $runs run(s), region ${size_mib} MiB, cache ${cache_mib} MiB"

# Both files get real blocks (zeros), so no engine pays for block allocation during a run.
log "preallocating the cache file and the nbdkit file"
dd if=/dev/zero of="$cache" bs=1M count="$cache_mib" oflag=direct status=none
dd if=/dev/zero of="$nbdkit_img" bs=1M count="$size_mib" oflag=direct status=none

# ---- servers --------------------------------------------------------------------------------------------------------
wait_ready() { # socket pid logfile
  local deadline=$((SECONDS + start_timeout_s))
  while ! nbdinfo --size "nbd+unix:///?socket=$1" >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || die "server exited before serving $1 (see $(basename "$3"))"
    ((SECONDS < deadline)) || die "server did not serve $1 within ${start_timeout_s}s"
    sleep 0.05
  done
}

lsvd_fresh() { # a new empty volume and a freshly formatted cache (after raw fio scribbled over the cache file)
  "$lsvd" mkdisk --force --size "${size_mib}m" "$volume" >/dev/null
  "$lsvd" mkcache --force --volume "$volume" "$cache" >/dev/null
}

lsvd_start() {
  rm -f "$lsvd_sock"
  "${pin[@]}" "$lsvd" serve --volume "$volume" --cache "$cache" --socket "$lsvd_sock" "${serve_extra[@]}" >>"$work/lsvd.log" 2>&1 &
  lsvd_pid=$!
  wait_ready "$lsvd_sock" "$lsvd_pid" "$work/lsvd.log"
}

# Clean stop (SIGTERM: drain, put everything journaled, checkpoint), sampling VmHWM until the process is gone.
# Appends a server record (workload, phase) to the results.
lsvd_stop() { # workload phase
  local pid=$lsvd_pid hwm_kib=0 value start_ms end_ms rc=0
  # Sampled once before the signal too: a server with nothing to flush can be gone before the first loop read.
  hwm_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  start_ms=$(date +%s%3N)
  kill -TERM "$pid"
  local deadline=$((SECONDS + stop_timeout_s))
  while [[ -r "/proc/$pid/status" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
    value=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    if [[ -n "$value" ]] && ((value > hwm_kib)); then hwm_kib=$value; fi
    ((SECONDS < deadline)) || die "lsvd serve did not stop within ${stop_timeout_s}s"
    sleep 0.1
  done
  wait "$pid" || rc=$?
  lsvd_pid=""
  end_ms=$(date +%s%3N)
  ((rc == 0)) || die "lsvd serve exited with status $rc"
  local stop_line
  stop_line="$(grep 'stopped after' "$work/lsvd.log" | tail -n 1 | sed 's/^.*lsvd: //')"
  "$bun" -e 'const [workload, phase, kib, ms, line] = process.argv.slice(1);
    console.log(JSON.stringify({ kind: "server", workload, phase, peakRssKiB: Number(kib), shutdownSeconds: Number(ms) / 1000, stopLine: line }))' \
    "$1" "$2" "$hwm_kib" "$((end_ms - start_ms))" "$stop_line" >>"$results"
}

nbdkit_start() {
  rm -f "$nbdkit_sock"
  "${pin[@]}" nbdkit --exit-with-parent -U "$nbdkit_sock" -f file "$nbdkit_img" >>"$work/nbdkit.log" 2>&1 &
  nbdkit_pid=$!
  wait_ready "$nbdkit_sock" "$nbdkit_pid" "$work/nbdkit.log"
}

nbdkit_stop() {
  local rc=0
  kill -TERM "$nbdkit_pid"
  wait "$nbdkit_pid" || rc=$?
  nbdkit_pid=""
  # nbdkit exits 0 on SIGTERM; anything else is worth knowing about.
  ((rc == 0 || rc == 143)) || die "nbdkit exited with status $rc"
}

# ---- fio ------------------------------------------------------------------------------------------------------------
# fio runs in the background and is waited for, so a signal reaches the traps at once rather than after the run.
# --thread: the job is a thread of the fio process we started, so killing that pid ends the job too.
fio_to() { # output-file fio-args...
  local out=$1 rc=0
  shift
  "${pin[@]}" fio --thread --output-format=json "$@" >"$out" 2>"$work/fio.err" &
  fio_pid=$!
  wait "$fio_pid" || rc=$?
  fio_pid=""
  ((rc == 0)) || die "fio failed (status $rc): $*"
}

target_args() { # engine -> fio target options
  case "$1" in
    lsvd*) echo "--ioengine=nbd --uri=nbd+unix:///?socket=$lsvd_sock" ;;
    nbdkit) echo "--ioengine=nbd --uri=nbd+unix:///?socket=$nbdkit_sock" ;;
    raw) echo "--ioengine=io_uring --direct=1 --filename=$cache" ;;
  esac
}

# One timed fio job; its JSON stays in $work/fio.json until record() turns it into a results line.
measure() { # engine rw bs qd
  # shellcheck disable=SC2046 # target_args is split on purpose (no spaces inside its words)
  fio_to "$work/fio.json" --name=bench $(target_args "$1") --rw="$2" --bs="$3" --iodepth="$4" \
    --size="${size_mib}m" --time_based --runtime="$runtime" --norandommap --randrepeat=0
}

# Appends the last measured run to the results (with any extra --set key=value labels) and prints a progress line.
record() { # workload engine run dir [--set key=value ...]
  local workload=$1 engine=$2 run=$3 dir=$4 line
  shift 4
  line="$("$bun" "$here/_fio_json.ts" --dir "$dir" --set kind=fio --set workload="$workload" --set engine="$engine" \
    --set run="$run" "$@" <"$work/fio.json")"
  echo "$line" >>"$results"
  log "$workload run $run $engine: $line"
}

prefill() { # engine: write the whole region once, 1 MiB sequential, untimed
  # shellcheck disable=SC2046
  fio_to "$work/prefill.json" --name=prefill $(target_args "$1") --rw=write --bs=1m --iodepth=8 --size="${size_mib}m"
}

engines=(lsvd nbdkit raw)
engine_order() { # run -> the engines rotated by run-1, so each engine goes first in turn
  local start=$((($1 - 1) % ${#engines[@]})) i
  for ((i = 0; i < ${#engines[@]}; i++)); do echo "${engines[(start + i) % ${#engines[@]}]}"; done
}

# ---- write workloads ------------------------------------------------------------------------------------------------
write_workload() { # workload rw bs qd
  local workload=$1 rw=$2 bs=$3 qd=$4 run engine
  for ((run = 1; run <= runs; run++)); do
    for engine in $(engine_order "$run"); do
      case "$engine" in
        lsvd)
          lsvd_fresh
          lsvd_start
          measure lsvd "$rw" "$bs" "$qd"
          lsvd_stop "$workload" "run $run"
          if [[ "$workload" == seqwrite* ]]; then
            # After the clean stop every write is in the backend: all of this run's objects are counted.
            local backend
            backend="$("$bun" "$here/_backend_bytes.ts" "$backend_dir" vol)"
            record "$workload" lsvd "$run" write --set backend="$backend"
          else
            record "$workload" lsvd "$run" write
          fi
          ;;
        nbdkit)
          nbdkit_start
          measure nbdkit "$rw" "$bs" "$qd"
          nbdkit_stop
          record "$workload" nbdkit "$run" write
          ;;
        raw)
          measure raw "$rw" "$bs" "$qd"
          record "$workload" raw "$run" write
          ;;
      esac
    done
  done
}

# ---- random reads ---------------------------------------------------------------------------------------------------
read_workload() {
  local workload=randread-4k-qd32 run engine
  log "$workload: filling each engine's region (${size_mib} MiB, 1 MiB writes)"
  # The raw fill goes first: it overwrites the cache file, which lsvd_fresh then formats.
  prefill raw
  lsvd_fresh
  lsvd_start
  prefill lsvd
  nbdkit_start
  prefill nbdkit
  for ((run = 1; run <= runs; run++)); do
    for engine in $(engine_order "$run"); do
      measure "$engine" randread 4k 32
      record "$workload" "$engine" "$run" read
    done
  done
  lsvd_stop "$workload" "fill + reads"
  if [[ "$restart_reads" == 1 ]]; then
    lsvd_start
    for ((run = 1; run <= runs; run++)); do
      measure lsvd-restart randread 4k 32
      record "$workload" lsvd-restart "$run" read
    done
    lsvd_stop "$workload" "after restart"
  fi
  nbdkit_stop
}

for workload in $workloads; do
  case "$workload" in
    randwrite) write_workload randwrite-4k-qd32 randwrite 4k 32 ;;
    seqwrite) write_workload seqwrite-64k-qd8 write 64k 8 ;;
    randread) read_workload ;;
  esac
done

config="$("$bun" -e 'const [runtimeSeconds, runs, sizeMiB, cacheMiB, workloads, fstype, cpus, serveArgs, host] = process.argv.slice(1);
  console.log(JSON.stringify({ runtimeSeconds: +runtimeSeconds, runs: +runs, sizeMiB: +sizeMiB, cacheMiB: +cacheMiB,
    workloads: workloads.split(/\s+/).filter(Boolean), fstype, cpus: cpus || null, serveArgs, host, date: new Date().toISOString() }))' \
  "$runtime" "$runs" "$size_mib" "$cache_mib" "$workloads" "$fstype" "${CPUS:-}" "${LSVD_SERVE_ARGS:-}" "$(uname -n) $(nproc) cpu")"
"$bun" "$here/_serve_report.ts" "$results" "$config" | tee "$work/report.txt"
if [[ -n "${JSON_OUT:-}" ]]; then tail -n 1 "$work/report.txt" >"$JSON_OUT"; fi
