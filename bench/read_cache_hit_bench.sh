#!/usr/bin/env bash
# Warm read-cache hits through NBD, two lsvd binaries side by side (file backend, no Ceph): a 512 MiB volume, a
# 128 MiB working set written once (1 MiB writes, --no-read-cache), then `lsvd serve --read-cache` on a 512 MiB cache
# file, two untimed 1 MiB sequential passes over the working set (they fill the read cache), then fio 4 KiB random
# reads QD32 over it: every read a hit. Also the NEW binary with --no-read-cache (the backend's files in the page cache).
# Runs alternate (A B, then B A); medians, all runs, server CPU per request (utime+stime over 4 s of the run), load.
# Usage: bench/read_cache_hit_bench.sh    Env: BASE (lsvd binary, required), NEW (default dist/lsvd), RUNS (3),
#   RUNTIME (s, 6), TMP_PARENT (/var/tmp). Output: one line per run on stderr, a table on stdout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${BASE:?set BASE to the baseline lsvd binary}"
new="${NEW:-$root/dist/lsvd}"
runs="${RUNS:-3}"
runtime="${RUNTIME:-6}"
work="$(mktemp -d "${TMP_PARENT:-/var/tmp}/lsvd-rc-hit.XXXXXX")"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "$(date +%T) $*" >&2; }
sock="$work/nbd.sock"
start() { # binary, serve options...
  local lsvd=$1; shift
  "$lsvd" serve --volume "$work/vol" --cache "$work/cache" --socket "$sock" --quiet "$@" >>"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do [[ -S "$sock" ]] && nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return; sleep 0.1; done
  cat "$work/serve.log" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }
fio_run() { # fio args... -> IOPS
  fio --thread --output-format=json --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --size=128m "$@" |
    sed -n '/^{/,$p' | jq '[.jobs[0].read.iops, .jobs[0].write.iops] | max'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
one() { # binary, read-cache flag -> "IOPS us-per-request"
  rm -rf "$work/vol" "$work/cache"
  "$1" mkdisk --size 512m "$work/vol" >/dev/null
  "$1" mkcache --volume "$work/vol" --size 512m "$work/cache" >/dev/null
  start "$1" --no-read-cache; fio_run --rw=write --bs=1m --iodepth=8 >/dev/null; stop
  start "$1" "$2"
  fio_run --rw=read --bs=1m --iodepth=8 >/dev/null; sleep 1.5; fio_run --rw=read --bs=1m --iodepth=8 >/dev/null
  local before after iops
  ( sleep 1; before=$(cpu_ticks "$pid"); sleep 4; after=$(cpu_ticks "$pid"); echo $((after - before)) >"$work/ticks" ) &
  iops=$(fio_run --rw=randread --bs=4k --iodepth=32 --time_based --runtime="$runtime" --randrepeat=0)
  wait $!
  stop
  # ticks are 10 ms: CPU seconds = ticks / 100 over 4 s, per request = that / (IOPS * 4)
  echo "$iops $(echo "$(cat "$work/ticks") * 10000 / ($iops * 4)" | bc -l)"
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A iops cpu
for ((run = 1; run <= runs; run++)); do
  for mode in $( ((run % 2)) && echo "new base off" || echo "off base new"); do
    case $mode in new) result=$(one "$new" --read-cache) ;; base) result=$(one "$base" --read-cache) ;; off) result=$(one "$new" --no-read-cache) ;; esac
    read -r value us <<<"$result"
    iops[$mode]+="$value "; cpu[$mode]+="$us "
    log "run $run $mode: $value IOPS, $us us CPU per request, load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
printf '%-34s %10s %8s %12s  %s\n' mode "IOPS" "vs base" "us/request" "runs (IOPS)"
b=$(tr ' ' '\n' <<<"${iops[base]}" | grep . | median)
for mode in new base off; do
  m=$(tr ' ' '\n' <<<"${iops[$mode]}" | grep . | median); c=$(tr ' ' '\n' <<<"${cpu[$mode]}" | grep . | median)
  label=$mode; [[ $mode == off ]] && label="new, --no-read-cache"
  printf '%-34s %10.0f %7.2fx %12.1f  %s\n' "$label" "$m" "$(echo "$m / $b" | bc -l)" "$c" "${iops[$mode]}"
done
