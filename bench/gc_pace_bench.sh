#!/usr/bin/env bash
# Garbage collection pacing: does the backend stay bounded under sustained overwrite at every batch size?
# For each --batch-size in BATCHES and each mode (gc: `lsvd serve` defaults; no-gc: `--no-gc`), alternating:
# a fresh SIZE_MIB volume (file backend and cache file in one temp dir on a real disk), filled with 1 MiB sequential
# writes (so every sector is live: live data = the volume size from then on), then 4 KiB random writes QD32 over the
# whole volume for RUNTIME seconds (fio --ioengine=nbd against dist/lsvd serve), then a clean stop.
# While fio runs, the backend's bytes (every file, apparent sizes) are sampled every SAMPLE_S seconds; the ratio
# backend bytes / live bytes is reported after WARMUP_S seconds of random writes: its maximum, median and last sample.
# Reported per run and as medians over runs: those ratios, client IOPS, and IOPS with GC over IOPS without.
# Output: progress on stderr; a table and one JSON line (RESULT ...) on stdout.
#
# Usage: bench/gc_pace_bench.sh
# Env:   BATCHES   batch sizes (default "64k 1m 8m")
#        RUNTIME   seconds of random writes per run (default 60)
#        RUNS      runs per batch size and mode (default 3)
#        SIZE_MIB  volume size (default 32)
#        SAMPLE_S  seconds between backend samples (default 5)
#        WARMUP_S  samples before this many seconds of random writes are left out (default 20)
#        MODES     default "gc no-gc"
#        RATE_IOPS  cap on the random writes' IOPS (default: none, as fast as the server takes them)
#        CACHE_MIB  cache size (default 256; the write journal is half of it)
#        TMP_PARENT  where the temp dir goes (default /var/tmp; refused if tmpfs)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
lsvd="$root/dist/lsvd"
batches="${BATCHES:-64k 1m 8m}"
runtime="${RUNTIME:-60}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-32}"
sample_s="${SAMPLE_S:-5}"
warmup_s="${WARMUP_S:-20}"
modes="${MODES:-gc no-gc}"
rate_iops="${RATE_IOPS:-}"
cache_mib="${CACHE_MIB:-256}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
start_timeout_s=30
stop_timeout_s=300

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "gc_pace_bench: $*" >&2
  exit 1
}

for tool in fio python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"
[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 8 ]] || die "SIZE_MIB must be >= 8"
[[ "$sample_s" =~ ^[0-9]+$ && "$sample_s" -ge 1 ]] || die "SAMPLE_S must be >= 1"
[[ "$warmup_s" =~ ^[0-9]+$ && "$warmup_s" -lt "$runtime" ]] || die "WARMUP_S must be below RUNTIME"
[[ -z "$rate_iops" || "$rate_iops" =~ ^[0-9]+$ ]] || die "RATE_IOPS must be a whole number"
[[ "$cache_mib" =~ ^[0-9]+$ && "$cache_mib" -ge 64 ]] || die "CACHE_MIB must be >= 64"
[[ "$(stat -f -c %T "$tmp_parent")" != tmpfs ]] || die "$tmp_parent is tmpfs: O_DIRECT needs a real disk"

work="$(mktemp -d "$tmp_parent/lsvd-gc-pace.XXXXXX")"
server_pid=""
sampler_pid=""
cleanup() {
  if [[ -n "$sampler_pid" ]]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [[ -n "$server_pid" ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.jsonl"
: >"$results"

# Starts `lsvd serve` on a fresh volume; sets server_pid and socket.
start_fresh() {
  local mode="$1" batch="$2"
  rm -rf "$work/vol" && mkdir -p "$work/vol/backend"
  "$lsvd" mkdisk --size "${size_mib}m" "$work/vol/backend/vol" >/dev/null
  "$lsvd" mkcache --volume "$work/vol/backend/vol" --size "${cache_mib}m" "$work/vol/cache" >/dev/null
  socket="$work/vol/nbd.sock"
  local extra=(--batch-size "$batch")
  if [[ "$mode" == no-gc ]]; then extra+=(--no-gc); fi
  "$lsvd" serve --volume "$work/vol/backend/vol" --cache "$work/vol/cache" --socket "$socket" "${extra[@]}" 2>"$work/vol/serve.log" &
  server_pid=$!
  for _ in $(seq $((start_timeout_s * 10))); do
    grep -q "serving on" "$work/vol/serve.log" && return 0
    kill -0 "$server_pid" 2>/dev/null || die "serve exited: $(tail -3 "$work/vol/serve.log")"
    sleep 0.1
  done
  die "serve did not start in ${start_timeout_s} s"
}

stop_server() {
  kill -TERM "$server_pid"
  local waited=0
  while kill -0 "$server_pid" 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    [[ "$waited" -lt $((stop_timeout_s * 5)) ]] || die "serve did not stop in ${stop_timeout_s} s"
  done
  wait "$server_pid" || die "serve exited with $?: $(tail -3 "$work/vol/serve.log")"
  server_pid=""
}

backend_bytes() { find "$work/vol/backend" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }

# Writes "seconds bytes" lines to $1 every sample_s seconds until killed.
sample_backend() {
  local out="$1" started
  started="$(date +%s%N)"
  while :; do
    sleep "$sample_s"
    echo "$((($(date +%s%N) - started) / 1000000)) $(backend_bytes)" >>"$out"
  done
}

fio_nbd() {
  fio --name=gc --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --size="${size_mib}m" --output-format=json "$@"
}

one_run() {
  local mode="$1" batch="$2" run="$3"
  log "batch $batch, $mode, run $run: fill ${size_mib} MiB, then ${runtime} s of 4 KiB random writes"
  start_fresh "$mode" "$batch"
  fio_nbd --rw=write --bs=1m --iodepth=8 >/dev/null
  local samples="$work/vol/samples"
  : >"$samples"
  sample_backend "$samples" &
  sampler_pid=$!
  local json
  local rate=()
  if [[ -n "$rate_iops" ]]; then rate=(--rate_iops="$rate_iops"); fi
  json="$(fio_nbd --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" "${rate[@]}" | "$bun" "$here/_fio_json.ts" --dir write)"
  kill "$sampler_pid" && wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  stop_server
  local stopline
  stopline="$(grep "stopped after" "$work/vol/serve.log" | tail -1)"
  python3 - "$mode" "$batch" "$run" "$json" "$samples" "$(backend_bytes)" "$size_mib" "$warmup_s" "$stopline" >>"$results" <<'PY'
import json, re, statistics, sys
mode, batch, run, fio, samples, after, size_mib, warmup_s, stopline = sys.argv[1:]
live = int(size_mib) << 20
series = [(int(ms) / 1000, int(b) / live) for ms, b in (line.split() for line in open(samples) if line.strip())]
warm = [r for t, r in series if t >= int(warmup_s)] or [series[-1][1]]
m = re.search(r"gc cleaned (\d+) objects \(([\d.]+ \w+) copied\) and deleted (\d+)", stopline)
print(json.dumps({
    "mode": mode, "batch": batch, "run": int(run), "iops": json.loads(fio)["iops"],
    "ratio_max": max(warm), "ratio_median": statistics.median(warm), "ratio_last": warm[-1],
    "ratio_after_stop": int(after) / live, "series": [[round(t), round(r, 3)] for t, r in series],
    "gc_cleaned": int(m.group(1)) if m else 0, "gc_copied": m.group(2) if m else "0 B", "gc_deleted": int(m.group(3)) if m else 0,
}))
PY
  tail -1 "$results" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r.pop("series"); print(json.dumps(r))' >&2
}

for run in $(seq "$runs"); do
  for batch in $batches; do
    for mode in $modes; do one_run "$mode" "$batch" "$run"; done
  done
done

python3 - "$results" "$runtime" "$runs" "$size_mib" "$warmup_s" "$cache_mib" "${rate_iops:-0}" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
runtime, runs, size_mib, warmup_s, cache_mib, rate_iops = (int(v) for v in sys.argv[2:])
rate = f" capped at {rate_iops} IOPS" if rate_iops else ""
print(f"4 KiB random writes QD32{rate} for {runtime} s over a filled {size_mib} MiB volume ({cache_mib} MiB cache), file backend")
print("backend bytes / live bytes")
print(f"after {warmup_s} s; medians of {runs} (min-max over runs in brackets)")
print(f"{'batch':6} {'mode':6} {'IOPS':>22} {'ratio max':>20} {'ratio median':>20} {'ratio last':>10}")
summary = {}
def fmt(values, spec):
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}-{max(values):{spec}}]"
for batch in dict.fromkeys(r["batch"] for r in rows):
    for mode in dict.fromkeys(r["mode"] for r in rows):
        got = [r for r in rows if r["batch"] == batch and r["mode"] == mode]
        if not got:
            continue
        col = {k: [r[k] for r in got] for k in ("iops", "ratio_max", "ratio_median", "ratio_last")}
        summary.setdefault(batch, {})[mode] = {k: statistics.median(v) for k, v in col.items()}
        print(f"{batch:6} {mode:6} {fmt(col['iops'], '.0f'):>22} {fmt(col['ratio_max'], '.2f'):>20} {fmt(col['ratio_median'], '.2f'):>20} {statistics.median(col['ratio_last']):10.2f}")
    modes = summary[batch]
    if "gc" in modes and "no-gc" in modes:
        pairs = [g["iops"] / n["iops"] for g in rows for n in rows if g["batch"] == n["batch"] == batch and g["run"] == n["run"] and g["mode"] == "gc" and n["mode"] == "no-gc"]
        modes["iops_ratio_gc_over_nogc"] = modes["gc"]["iops"] / modes["no-gc"]["iops"]
        print(f"{batch:6} client IOPS with GC / without: {modes['iops_ratio_gc_over_nogc']:.3f} (pairs {min(pairs):.2f}-{max(pairs):.2f})")
print("RESULT " + json.dumps({"runtime_s": runtime, "runs": runs, "size_mib": size_mib, "warmup_s": warmup_s, "cache_mib": cache_mib, "rate_iops": rate_iops, "summary": summary, "rows": rows}))
PY
