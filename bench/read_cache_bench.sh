#!/usr/bin/env bash
# The read cache, measured (file backend; the backend is on the same disk as the cache unless BACKEND_PARENT moves it):
#   zipf     4 KiB random reads QD32 with fio random_distribution=zipf:1.1 over a volume larger than the read cache,
#            with --read-cache and with --no-read-cache, runs alternating: IOPS, and the cache's hit rate (hits over
#            hits + misses from `lsvd status --json`, counted in read requests).
#   restart  the same zipf job on a server started after a clean stop of a warm one: hit rate and IOPS from the start.
#   write    4 KiB random writes QD32 with --read-cache (written blocks are copied into the cache once their object is
#            durable) and with --no-read-cache, runs alternating, a fresh volume each: the cost of the migration.
# Every volume is filled once with 1 MiB sequential writes first (untimed). Medians of RUNS runs; ratios on vs off.
# Usage: bench/read_cache_bench.sh      Env: RUNTIME (s, default 8), RUNS (default 3), SIZE_MIB (default 512),
#        CACHE_MIB (default 256: half journal, half read cache), TMP_PARENT (default /var/tmp), BACKEND_PARENT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
lsvd="$root/dist/lsvd"
runtime="${RUNTIME:-8}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-512}"
cache_mib="${CACHE_MIB:-256}"
work="$(mktemp -d "${TMP_PARENT:-/var/tmp}/lsvd-rcache-bench.XXXXXX")"
backend_dir="$(mktemp -d "${BACKEND_PARENT:-$work}/backend.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$backend_dir"
}
trap cleanup EXIT
log() { echo "$(date +%T) $*" >&2; }
[[ -x "$lsvd" ]] || { echo "read_cache_bench: build dist/lsvd first (npm run build)" >&2; exit 1; }

sock="$work/nbd.sock"
admin="$work/admin.sock"
fresh() { # a new volume and cache
  rm -rf "${backend_dir:?}"/* "$work/cache"
  "$lsvd" mkdisk --size "${size_mib}m" "$backend_dir/vol" >/dev/null
  "$lsvd" mkcache --volume "$backend_dir/vol" --size "${cache_mib}m" "$work/cache" >/dev/null
}
start() { # serve options...
  "$lsvd" serve --volume "$backend_dir/vol" --cache "$work/cache" --socket "$sock" --admin-socket "$admin" --quiet "$@" \
    >"$work/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do [[ -S "$sock" ]] && nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return; sleep 0.1; done
  cat "$work/serve.log" >&2; exit 1
}
stop() {
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
}
fio_run() { # fio args... -> prints IOPS
  fio --thread --output-format=json --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --size="${size_mib}m" "$@" \
    >"$work/fio.json"
  sed -n '/^{/,$p' "$work/fio.json" | jq '[.jobs[0].read.iops, .jobs[0].write.iops] | max'
}
prefill() { fio_run --rw=write --bs=1m --iodepth=8 >/dev/null; }
zipf() { fio_run --rw=randread --bs=4k --iodepth=32 --random_distribution=zipf:1.1 --time_based --runtime="$runtime" --randrepeat=0; }
hit_rate() { "$lsvd" status --json --admin-socket "$admin" | jq -r '.readCache | if . == null then "-" else (.hits / ((.hits + .misses) | if . == 0 then 1 else . end) * 1000 | round / 10 | tostring) end'; }
flag() { [[ "$1" == on ]] && echo --read-cache || echo --no-read-cache; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A iops hits
for ((run = 1; run <= runs; run++)); do
  for mode in $( ((run % 2)) && echo "on off" || echo "off on"); do
    fresh
    start --no-read-cache; prefill; stop
    start "$(flag "$mode")"
    value=$(zipf); rate=$(hit_rate)
    iops[zipf_$mode]+="$value "; hits[zipf_$mode]+="$rate "
    log "zipf run $run read cache $mode: $value IOPS, hit rate $rate %"
    if [[ "$mode" == on ]]; then
      stop; start --read-cache
      value=$(zipf); rate=$(hit_rate)
      iops[restart_on]+="$value "; hits[restart_on]+="$rate "
      log "zipf after a clean restart run $run: $value IOPS, hit rate $rate %"
    fi
    stop
  done
  for mode in $( ((run % 2)) && echo "on off" || echo "off on"); do
    fresh
    start "$(flag "$mode")"
    value=$(fio_run --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" --randrepeat=0)
    iops[write_$mode]+="$value "
    log "randwrite run $run read cache $mode: $value IOPS"
    stop
  done
done
printf '%-26s %12s %12s %8s  %s\n' workload "on IOPS" "off IOPS" ratio "hit rate on (runs, %)"
for workload in zipf restart write; do
  on=$(tr ' ' '\n' <<<"${iops[${workload}_on]}" | grep . | median)
  off=$( [[ "$workload" == restart ]] && echo "$(tr ' ' '\n' <<<"${iops[zipf_off]}" | grep . | median)" || tr ' ' '\n' <<<"${iops[${workload}_off]}" | grep . | median)
  printf '%-26s %12.0f %12.0f %8.2f  %s\n' "$workload" "$on" "$off" "$(echo "$on / $off" | bc -l)" "${hits[${workload}_on]:-}"
done
