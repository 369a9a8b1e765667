#!/usr/bin/env bash
# What serve's per-request metrics (the NBD latency histogram and error counters, src/cli/serve_metrics.ts) cost on
# the hot path, where it shows most: lsvd's NBD layer over a device that does nothing (bench/_null_nbd_server.ts),
# with LSVD_BENCH_METRICS=1 (recording) and without (baseline), runs alternating. Prints per run and the medians:
# IOPS and server CPU per request (utime + stime from /proc/PID/stat), and the ratio recording / baseline.
# Workload: fio 4 KiB random write, QD32, over the unix socket.
#
# Usage: bench/metrics_overhead.sh        Env: RUNTIME seconds per run (default 5), RUNS per variant (default 5)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
runtime="${RUNTIME:-5}"
runs="${RUNS:-5}"
command -v fio >/dev/null || { echo "metrics_overhead: fio is not installed" >&2; exit 1; }
ticks_per_second="$(getconf CLK_TCK)"
work="$(mktemp -d /tmp/lsvd-metrics-bench.XXXXXX)"
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill -KILL "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# One run: prints "IOPS CPU_US_PER_REQUEST".
run_one() {
  local metrics=$1 socket="$work/nbd.sock" json="$work/fio.json"
  LSVD_BENCH_METRICS=$metrics "$bun" "$here/_null_nbd_server.ts" "$socket" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do [[ -S "$socket" ]] && break; sleep 0.05; done
  local before after
  before=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --rw=randwrite --bs=4k --iodepth=32 --size=256m \
    --time_based --runtime="$runtime" --output-format=json --output="$json" >/dev/null
  after=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  "$bun" -e "const j=JSON.parse(require('fs').readFileSync('$json','utf8')).jobs[0].write; const req=j.total_ios; console.log(Math.round(j.iops), ((($after-$before)/$ticks_per_second)*1e6/req).toFixed(2))"
}

baseline=(); recording=()
for run in $(seq "$runs"); do
  b=$(run_one 0); r=$(run_one 1)
  echo "run $run: baseline $b | recording $r   (IOPS, server CPU us/request)" >&2
  baseline+=("$b"); recording+=("$r")
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s\n' "$@" | awk -v c="$col" '{ print $c }'; }
col=1; bi=$(col "${baseline[@]}" | median); ri=$(col "${recording[@]}" | median)
col=2; bc=$(col "${baseline[@]}" | median); rc=$(col "${recording[@]}" | median)
spread() { printf '%s\n' "$@" | awk -v c="$col" 'NR == 1 { lo = hi = $c } { if ($c < lo) lo = $c; if ($c > hi) hi = $c } END { printf "%s..%s", lo, hi }'; }
col=1; echo "IOPS:            baseline median $bi ($(spread "${baseline[@]}")), recording median $ri ($(spread "${recording[@]}")), ratio $(awk -v a="$ri" -v b="$bi" 'BEGIN { printf "%.3f", a / b }')"
col=2; echo "CPU us/request:  baseline median $bc ($(spread "${baseline[@]}")), recording median $rc ($(spread "${recording[@]}")), ratio $(awk -v a="$rc" -v b="$bc" 'BEGIN { printf "%.3f", a / b }')"
