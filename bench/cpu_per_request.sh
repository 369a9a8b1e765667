#!/usr/bin/env bash
# Where a request's CPU goes. For the same fio job against three NBD servers on one machine (runs alternating), this
# prints the server's CPU per request (user + system of every thread of the server process, from /proc/PID/stat)
# next to fio's own CPU per request, with IOPS:
#   lsvd         dist/lsvd serve: cache file and file backend in one temp dir on a real disk; a fresh volume per run
#   nbdkit       nbdkit file on a preallocated file on the same disk (its writes land in the page cache)
#   nbdkit-nocache  the same with cache=none: nbdkit pushes each write's pages to the disk (sync_file_range) and
#                evicts them, a window behind, so its writes reach the device as lsvd's journal writes do (yet
#                still acknowledged before they get there, and never flushed unless the client asks)
#   null-device  lsvd's own NBD layer (src/nbd/) over a device that does nothing (bench/_null_nbd_server.ts, by bun),
#                on io_uring as `lsvd serve` by default (NULL_NBD_IO)
# lsvd minus null-device is what the volume below the protocol costs (journal, map, batches, puts); null-device against
# nbdkit compares the protocol layers. On a machine where client and server share the cores, server CPU per request is
# what bounds IOPS, which is why the data-path bench's ratios follow it.
# Workloads: 4 KiB random write QD32, 64 KiB sequential write QD32. Output: two tables and one JSON line on stdout
# (the JSON line also to $JSON_OUT when set); progress on stderr.
# Where the server's CPU goes: the second table splits it by thread kind (the main thread, which runs the JS of the
# bun servers; JavaScriptCore's JIT and GC helpers; Bun's thread pool, which runs node:fs calls and koffi's .async
# calls; io_uring's kernel workers; librados' threads; other), from /proc/PID/task/*/stat sampled every 0.2 s during
# the run (a thread that ends between samples is "gone": the process total minus every thread seen). Beside it, what
# the machine spent outside the server: kernel threads (page-cache writeback, kworkers; machine-wide, so anything
# else running is counted too), interrupts and softirqs (/proc/stat), and the Ceph daemons for RADOS runs.
#
# Usage: bench/cpu_per_request.sh
# Env:   RUNTIME     seconds per run (default 6)
#        WARMUP      seconds of the same fio job against each fresh server before its measured run (default 0):
#                    the measured run then sees a server whose JIT has compiled the hot path and whose volume, GC and
#                    checkpoints are under way (steady state) instead of its first seconds. Every engine gets it.
#        RUNS        runs per engine and workload (default 3)
#        SIZE_MIB    volume and file size (default 1024)
#        TMP_PARENT  where the temp dir goes (default /var/tmp; tmpfs is refused)
#        JSON_OUT    also write the JSON line to this file
#        WORKLOADS   which workloads run (default "randwrite seqwrite")
#        SEQ_QD      queue depth of the 64 KiB sequential workload (default 32)
#        ENGINES     which engines run, in turn order (default "lsvd nbdkit null-device"; "lsvd-b" is a second lsvd,
#                    "nbdkit-nocache" nbdkit with cache=none)
#        LSVD_SERVE_ARGS    extra arguments for the lsvd engine's `lsvd serve` (e.g. "--no-gc")
#        LSVD_B_BIN, LSVD_B_SERVE_ARGS  binary (default dist/lsvd) and extra arguments of the lsvd-b engine (A/B runs)
#        LSVD_BACKEND_PARENT    where the lsvd engine's file backend goes (default the temp dir; e.g. /dev/shm: the
#                    backend off the cache's disk, so no object put's fsync flushes the disk under the journal's writes)
#        LSVD_B_BACKEND_PARENT  where lsvd-b's file backend goes (default the temp dir; e.g. /dev/shm: what the
#                    backend's object writes cost on the cache's disk, lsvd against lsvd-b)
#        LSVD_BIN    the lsvd engine's binary (default dist/lsvd)
#        NULL_NBD_IO uring (default, as lsvd serve's --nbd-io auto here) or socket (Bun's sockets): the null-device's
#                    transport
#        LSVD_BACKEND, LSVD_B_BACKEND  file (default) or rados: the volume in a pool of a single-node Ceph this script
#                    starts itself (test/ceph/up.sh in a fresh state directory, memstore OSD, free ports) and stops on
#                    exit, also on failure; never one it did not start. A fresh volume per run, its objects deleted
#                    after the run. LSVD_CEPH_OBJECTSTORE=bluestore puts the OSD's objects on disk instead.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
lsvd="${LSVD_BIN:-$root/dist/lsvd}"
runtime="${RUNTIME:-6}"
warmup="${WARMUP:-0}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-1024}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
start_timeout_s=30
seq_qd="${SEQ_QD:-32}"
read -r -a engines <<<"${ENGINES:-lsvd nbdkit null-device}"
read -r -a serve_extra <<<"${LSVD_SERVE_ARGS:-}"
read -r -a serve_extra_b <<<"${LSVD_B_SERVE_ARGS:-}"
lsvd_b="${LSVD_B_BIN:-$root/dist/lsvd}"
backend_a="${LSVD_BACKEND:-file}"
backend_b_kind="${LSVD_B_BACKEND:-file}"
sample_s=0.2

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "cpu_per_request: $*" >&2
  exit 1
}

for tool in fio nbdkit nbdinfo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$bun" ]] || die "bun not found at $bun (npm ci in $root)"
[[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"
[[ -x "$lsvd_b" ]] || die "$lsvd_b (LSVD_B_BIN) is missing"
known_engines="lsvd lsvd-b nbdkit nbdkit-nocache null-device" # the ones start_server knows
for engine in "${engines[@]}"; do
  [[ " $known_engines " == *" $engine "* ]] || die "unknown engine $engine (ENGINES: $known_engines)"
done
for kind in "$backend_a" "$backend_b_kind"; do [[ "$kind" == file || "$kind" == rados ]] || die "a backend is file or rados, not $kind"; done
uses_rados=0
if [[ "$backend_a $backend_b_kind" == *rados* ]]; then
  uses_rados=1
  for tool in ceph rados; do command -v "$tool" >/dev/null || die "$tool is not installed (needed for a rados backend)"; done
  # shellcheck source=bench/_ceph_bench.sh
  source "$here/_ceph_bench.sh"
  CEPH_TIMEOUT_S=30
fi
[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 64 ]] || die "SIZE_MIB must be >= 64"
fstype="$(df --output=fstype "$tmp_parent" | tail -1 | tr -d ' ')"
[[ "$fstype" != tmpfs && "$fstype" != ramfs ]] || die "$tmp_parent is $fstype: put TMP_PARENT on a real disk"
ticks_per_second="$(getconf CLK_TCK)"

work="$(mktemp -d "$tmp_parent/lsvd-cpu-bench.XXXXXX")"
backend_a_dir=""
if [[ -n "${LSVD_BACKEND_PARENT:-}" ]]; then backend_a_dir="$(mktemp -d "$LSVD_BACKEND_PARENT/lsvd-cpu-bench-backend.XXXXXX")"; fi
backend_b=""
if [[ -n "${LSVD_B_BACKEND_PARENT:-}" ]]; then backend_b="$(mktemp -d "$LSVD_B_BACKEND_PARENT/lsvd-cpu-bench-backend.XXXXXX")"; fi
server_pid=""
fio_pid=""
sampler_pid=""
rados_tag=""
rados_volumes=0
cleanup() {
  local rc=$?
  set +e
  for pid in $sampler_pid $fio_pid $server_pid; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if ((uses_rados)); then
    [[ -n "$rados_tag" ]] && remove_rados_objects_now "^${rados_tag}(\..*)?$"
    ceph_own_cluster_down
  fi
  if ((rc != 0)); then
    for f in "$work/server.log" "$work/fio.err"; do
      [[ -s "$f" ]] && { echo "--- last lines of $(basename "$f"):" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  rm -rf "$work"
  [[ -n "$backend_a_dir" ]] && rm -rf "$backend_a_dir"
  [[ -n "$backend_b" ]] && rm -rf "$backend_b"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

volume="${backend_a_dir:-$work/backend}/vol"
volume_b="${backend_b:-$work/backend}/vol"
cache="$work/cache"
nbdkit_img="$work/nbdkit.img"
sock="$work/server.sock"
results="$work/results.jsonl"
mkdir -p "$work/backend"
: >"$results"
log "temp dir $work ($fstype); ${runtime}s per run after ${warmup}s of warm-up, $runs run(s), ${size_mib} MiB; load: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((uses_rados)); then
  ceph_own_cluster_up "$root" || die "the Ceph cluster did not start"
  log "Ceph cluster in $LSVD_CEPH_DIR ($LSVD_CEPH_OBJECTSTORE), pool $LSVD_CEPH_POOL"
fi
dd if=/dev/zero of="$nbdkit_img" bs=1M count="$size_mib" oflag=direct status=none

# ---- servers: each run starts its server and stops it after, so every run starts from the same state ---------------
start_server() { # engine
  rm -f "$sock"
  case "$1" in
    lsvd | lsvd-b)
      local bin="$lsvd" extra=("${serve_extra[@]}") vol="$volume" kind="$backend_a" ceph=()
      [[ "$1" == lsvd-b ]] && bin="$lsvd_b" extra=("${serve_extra_b[@]}") vol="$volume_b" kind="$backend_b_kind"
      if [[ "$kind" == rados ]]; then
        rados_volumes=$((rados_volumes + 1))
        rados_tag="cpu$$v$rados_volumes"
        vol="rados://$LSVD_CEPH_POOL/$rados_tag"
        ceph=(--ceph-conf "$CEPH_CONF" --ceph-keyring "$CEPH_KEYRING")
      fi
      "$bin" mkdisk --force --size "${size_mib}m" "$vol" "${ceph[@]}" >/dev/null
      "$bin" mkcache --force --size "${size_mib}m" --volume "$vol" "$cache" "${ceph[@]}" >/dev/null
      "$bin" serve --volume "$vol" --cache "$cache" --socket "$sock" "${ceph[@]}" "${extra[@]}" >>"$work/server.log" 2>&1 &
      ;;
    nbdkit) nbdkit --exit-with-parent -U "$sock" -f file "$nbdkit_img" >>"$work/server.log" 2>&1 & ;;
    nbdkit-nocache) nbdkit --exit-with-parent -U "$sock" -f file "$nbdkit_img" cache=none >>"$work/server.log" 2>&1 & ;;
    null-device) LSVD_BENCH_NBD_IO="${NULL_NBD_IO:-uring}" "$bun" "$here/_null_nbd_server.ts" "$sock" "$((size_mib * 1024 * 1024))" >>"$work/server.log" 2>&1 & ;;
  esac
  server_pid=$!
  local deadline=$((SECONDS + start_timeout_s))
  while ! nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1; do
    kill -0 "$server_pid" 2>/dev/null || die "$1 exited before serving (see server.log)"
    ((SECONDS < deadline)) || die "$1 did not serve within ${start_timeout_s}s"
    sleep 0.05
  done
}

stop_server() {
  local rc=0
  kill -TERM "$server_pid"
  wait "$server_pid" || rc=$?
  server_pid=""
  ((rc == 0 || rc == 143)) || die "server exited with status $rc"
  if [[ -n "$rados_tag" ]]; then
    remove_rados_objects_now "^${rados_tag}(\..*)?$"
    rados_tag=""
  fi
}
backend_of() { # engine -> file, rados or "" (not lsvd)
  case "$1" in lsvd) echo "$backend_a" ;; lsvd-b) echo "$backend_b_kind" ;; *) echo "" ;; esac
}

# Peak resident set of the server process (VmHWM, KiB).
server_peak_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status"; }

# utime + stime of the whole process (fields 14 and 15; the comm field has no spaces for these servers).
server_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }

# The /proc stat files named, one line each: "tid<TAB>comm<TAB>flags<TAB>utime+stime<TAB>stime". comm is the text between the
# first "(" and the last ")" (thread names hold spaces: "Bun Pool 0"); a file gone meanwhile is skipped.
stat_ticks() {
  { cat "$@" 2>/dev/null || true; } | awk '{ o = index($0, "("); c = match($0, /\)[^)]*$/); split(substr($0, c + 2), f, " ")
         printf "%s\t%s\t%s\t%d\t%d\n", substr($0, 1, o - 2), substr($0, o + 1, c - o - 1), f[7], f[12] + f[13], f[13] }'
}

# Snapshots of the server's threads every sample_s until killed, appended to FILE.
sample_threads() { # FILE
  while :; do
    stat_ticks /proc/"$server_pid"/task/*/stat >>"$1"
    sleep "$sample_s"
  done
}

# Every kernel thread (PF_KTHREAD, 0x00200000 in the flags field) on the machine, in stat_ticks' lines.
kernel_threads() { stat_ticks /proc/[0-9]*/stat | awk -F'\t' 'int($3 / 2097152) % 2 == 1'; }

# What the kernel threads of AFTER grew since BEFORE (kernel_threads' lines; one born in between counts whole).
kernel_thread_growth() { # BEFORE AFTER
  awk -F'\t' 'NR == FNR { seen[$1] = $4; next } { grown = $4 - (($1 in seen) ? seen[$1] : 0); if (grown > 0) s += grown }
               END { print s + 0 }' "$1" "$2"
}

# "busy irq+softirq" ticks of the whole machine from /proc/stat's cpu line (busy: all but idle and iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $7 + $8; exit }' /proc/stat; }

# Ticks of the Ceph daemons this script started ("osd other"), or "0 0" without a cluster.
ceph_ticks() {
  if ((!uses_rados)); then echo "0 0"; return; fi
  local osd other=0 name pid
  osd="$(awk '{ print $14 + $15 }' "/proc/$(cat "$LSVD_CEPH_DIR/run/ceph-osd.0.pid")/stat" 2>/dev/null || echo 0)"
  for name in ceph-mon.a ceph-client.rgw.a; do
    pid="$(cat "$LSVD_CEPH_DIR/run/$name.pid" 2>/dev/null)" || continue
    other=$((other + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$osd $other"
}

# The outside counters at one moment: "busy irq+softirq ceph-osd ceph-other"; the kernel threads go to FILE.
outside_ticks() { # FILE
  kernel_threads >"$1"
  echo "$(machine_ticks) $(ceph_ticks)"
}

# The workload's fio job ($rw $bs $qd) against the running server, for SECONDS; more fio options after.
fio_job() { # NAME SECONDS [OPTION...]
  fio --thread --name="$1" --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$rw" --bs="$bs" --iodepth="$qd" \
    --size="${size_mib}m" --time_based --runtime="$2" --norandommap --randrepeat=0 "${@:3}"
}

# ---- runs -----------------------------------------------------------------------------------------------------------
workloads=()
for name in ${WORKLOADS:-randwrite seqwrite}; do
  case "$name" in
    randwrite) workloads+=("randwrite-4k-qd32 randwrite 4k 32") ;;
    seqwrite) workloads+=("seqwrite-64k-qd$seq_qd write 64k $seq_qd") ;;
    *) die "unknown workload $name (randwrite, seqwrite)" ;;
  esac
done
for spec in "${workloads[@]}"; do
  read -r workload rw bs qd <<<"$spec"
  for ((run = 1; run <= runs; run++)); do
    for ((turn = 0; turn < ${#engines[@]}; turn++)); do
      engine="${engines[$(((turn + run - 1) % ${#engines[@]}))]}"
      start_server "$engine"
      if ((warmup > 0)); then
        fio_job warmup "$warmup" >/dev/null 2>"$work/fio.err" || die "the warm-up fio failed against $engine (see fio.err)"
      fi
      : >"$work/threads.txt"
      stat_ticks /proc/"$server_pid"/task/*/stat >"$work/threads-before.txt"
      outside_before="$(outside_ticks "$work/kthreads-before.txt")"
      before="$(server_ticks)"
      sample_threads "$work/threads.txt" &
      sampler_pid=$!
      fio_job bench "$runtime" --output-format=json >"$work/fio.json" 2>"$work/fio.err" &
      fio_pid=$!
      wait "$fio_pid" || die "fio failed against $engine (see fio.err)"
      fio_pid=""
      after="$(server_ticks)"
      outside_after="$(outside_ticks "$work/kthreads-after.txt")"
      kill -KILL "$sampler_pid" 2>/dev/null || true
      wait "$sampler_pid" 2>/dev/null || true
      sampler_pid=""
      stat_ticks /proc/"$server_pid"/task/*/stat >>"$work/threads.txt"
      peak_kib="$(server_peak_kib)"
      pid="$server_pid"
      stop_server
      threads="$("$bun" "$here/_cpu_report.ts" --threads "$work/threads-before.txt" "$work/threads.txt" \
        "$pid" "$((after - before))" "$ticks_per_second" "0 $outside_before" \
        "$(kernel_thread_growth "$work/kthreads-before.txt" "$work/kthreads-after.txt") $outside_after")"
      line="$("$bun" "$here/_fio_json.ts" --dir write --set workload="$workload" --set engine="$engine" \
        --set backend="$(backend_of "$engine")" --set run="$run" --set warmupS="$warmup" --set peakRssMiB="$((peak_kib / 1024))" \
        --set serverCpuSeconds="$(((after - before) * 1000 / ticks_per_second))e-3" --set cpu="$threads" <"$work/fio.json")"
      echo "$line" >>"$results"
      log "$workload run $run $engine: $line"
    done
  done
done

log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bun" "$here/_cpu_report.ts" "$results" "$(date -u +%FT%TZ)" | tee "$work/report.txt"
if [[ -n "${JSON_OUT:-}" ]]; then tail -n 1 "$work/report.txt" >"$JSON_OUT"; fi
