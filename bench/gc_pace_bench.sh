#!/usr/bin/env bash
# Garbage collection pacing: does the backend stay bounded under sustained overwrite at every batch size?
# For each --batch-size in BATCHES, each mode (gc: `lsvd serve` defaults; no-gc: `--no-gc`) and each lsvd binary in
# VARIANTS, alternating:
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
#        VARIANTS  binaries to compare, alternated run by run: "NAME=PATH ..." (default "current=" LSVD_BIN or dist/lsvd)
#        SERVE_ARGS  more `lsvd serve` arguments for every run (e.g. "--gc-threshold 0.3")
#        FILL      "seq" (default): fill the volume with 1 MiB writes first; "none": the random writes start on a fresh
#                  volume and fill it themselves (a new disk written at random; the ratios count the whole volume as
#                  live, so they read low until it is full)
set -euo pipefail

bench_name=gc-pace
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
fill="${FILL:-seq}"
read -r -a serve_args <<<"${SERVE_ARGS:-}"
source "$(dirname "$0")/_gc_serve.sh"
variants="${VARIANTS:-current=$lsvd}"

[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 8 ]] || die "SIZE_MIB must be >= 8"
[[ "$sample_s" =~ ^[0-9]+$ && "$sample_s" -ge 1 ]] || die "SAMPLE_S must be >= 1"
[[ "$warmup_s" =~ ^[0-9]+$ && "$warmup_s" -lt "$runtime" ]] || die "WARMUP_S must be below RUNTIME"
[[ -z "$rate_iops" || "$rate_iops" =~ ^[0-9]+$ ]] || die "RATE_IOPS must be a whole number"
[[ "$cache_mib" =~ ^[0-9]+$ && "$cache_mib" -ge 64 ]] || die "CACHE_MIB must be >= 64"
[[ "$fill" == seq || "$fill" == none ]] || die "FILL must be seq or none"
for variant in $variants; do
  [[ "$variant" == *=* && -x "${variant#*=}" ]] || die "VARIANTS: '$variant' is not NAME=an executable lsvd"
done
gc_make_workdir
sampler_pid=""
cleanup() {
  if [[ -n "$sampler_pid" ]]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [[ -n "$server_pid" ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.jsonl"
: >"$results"

# Writes "seconds bytes" lines to $1 every sample_s seconds until killed.
sample_backend() {
  local out="$1" started
  started="$(date +%s%N)"
  while :; do
    sleep "$sample_s"
    echo "$((($(date +%s%N) - started) / 1000000)) $(gc_backend_bytes)" >>"$out"
  done
}

one_run() {
  local variant="$1" mode="$2" batch="$3" run="$4"
  lsvd="${variant#*=}"
  log "${variant%%=*}: batch $batch, $mode, run $run: fill ${size_mib} MiB ($fill), then ${runtime} s of 4 KiB random writes"
  local extra=(--batch-size "$batch" "${serve_args[@]}")
  if [[ "$mode" == no-gc ]]; then extra+=(--no-gc); fi
  gc_start_fresh "$cache_mib" "${extra[@]}"
  if [[ "$fill" == seq ]]; then gc_fio_nbd --rw=write --bs=1m --iodepth=8 >/dev/null; fi
  local samples="$work/vol/samples"
  : >"$samples"
  sample_backend "$samples" &
  sampler_pid=$!
  local json
  local rate=()
  if [[ -n "$rate_iops" ]]; then rate=(--rate_iops="$rate_iops"); fi
  json="$(gc_fio_nbd --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" "${rate[@]}" | "$bun" "$here/_fio_json.ts" --dir write)"
  kill "$sampler_pid" && wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  gc_stop_server
  local stopline
  stopline="$(gc_stop_line)"
  local gclog
  gclog="$(grep "gc: deleted" "$work/vol/serve.log" | tail -3 || true)"
  python3 - "${variant%%=*}" "$mode" "$batch" "$run" "$json" "$samples" "$(gc_backend_bytes)" "$size_mib" "$warmup_s" "$stopline" "$gclog" >>"$results" <<'PY'
import json, re, statistics, sys
variant, mode, batch, run, fio, samples, after, size_mib, warmup_s, stopline, gclog = sys.argv[1:]
live = int(size_mib) << 20
series = [(int(ms) / 1000, int(b) / live) for ms, b in (line.split() for line in open(samples) if line.strip())]
warm = [r for t, r in series if t >= int(warmup_s)] or [series[-1][1]]
m = re.search(r"gc cleaned (\d+) objects \(([\d.]+ \w+) copied\) and deleted (\d+)", stopline)
waits = re.search(r"(\d+) client writes waited for backend space \(([\d.]+) s in all\)", stopline)
fio = json.loads(fio)
print(json.dumps({
    "variant": variant, "mode": mode, "batch": batch, "run": int(run), "gc_log": gclog.splitlines(), "iops": fio["iops"],
    "clat_p99_us": fio["clatP99Us"], "clat_p999_us": fio["clatP999Us"], "clat_max_us": fio["clatMaxUs"],
    "space_waits": int(waits.group(1)) if waits else 0, "space_wait_s": float(waits.group(2)) if waits else 0.0,
    "ratio_max": max(warm), "ratio_median": statistics.median(warm), "ratio_last": warm[-1],
    "ratio_after_stop": int(after) / live, "series": [[round(t), round(r, 3)] for t, r in series],
    "gc_cleaned": int(m.group(1)) if m else 0, "gc_copied": m.group(2) if m else "0 B", "gc_deleted": int(m.group(3)) if m else 0,
}))
PY
  tail -1 "$results" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r.pop("series"); print(json.dumps(r))' >&2
}

for run in $(seq "$runs"); do
  for batch in $batches; do
    for mode in $modes; do
      for variant in $variants; do one_run "$variant" "$mode" "$batch" "$run"; done
    done
  done
done

python3 - "$results" "$runtime" "$runs" "$size_mib" "$warmup_s" "$cache_mib" "${rate_iops:-0}" "$fill" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
runtime, runs, size_mib, warmup_s, cache_mib, rate_iops = (int(v) for v in sys.argv[2:8])
fill = sys.argv[8]
rate = f" capped at {rate_iops} IOPS" if rate_iops else ""
print(f"4 KiB random writes QD32{rate} for {runtime} s over a {size_mib} MiB volume (fill: {fill}) ({cache_mib} MiB cache), file backend")
print("backend bytes / live bytes")
print(f"after {warmup_s} s; medians of {runs} (min-max over runs in brackets)")
print(f"{'batch':6} {'variant/mode':20} {'IOPS':>22} {'ratio max':>20} {'ratio median':>20} {'ratio last':>10}")
summary = {}
def fmt(values, spec):
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}-{max(values):{spec}}]"
variants = list(dict.fromkeys(r["variant"] for r in rows))
for batch in dict.fromkeys(r["batch"] for r in rows):
    for variant in variants:
        modes = summary.setdefault(batch, {}).setdefault(variant, {})
        for mode in dict.fromkeys(r["mode"] for r in rows):
            got = [r for r in rows if r["batch"] == batch and r["mode"] == mode and r["variant"] == variant]
            if not got:
                continue
            col = {k: [r[k] for r in got] for k in ("iops", "ratio_max", "ratio_median", "ratio_last")}
            modes[mode] = {k: statistics.median(v) for k, v in col.items()}
            print(f"{batch:6} {variant + '/' + mode:20} {fmt(col['iops'], '.0f'):>22} {fmt(col['ratio_max'], '.2f'):>20} {fmt(col['ratio_median'], '.2f'):>20} {statistics.median(col['ratio_last']):10.2f}")
        if "gc" in modes and "no-gc" in modes:
            same = [r for r in rows if r["batch"] == batch and r["variant"] == variant]
            pairs = [g["iops"] / n["iops"] for g in same for n in same if g["run"] == n["run"] and g["mode"] == "gc" and n["mode"] == "no-gc"]
            modes["iops_ratio_gc_over_nogc"] = modes["gc"]["iops"] / modes["no-gc"]["iops"]
            print(f"{batch:6} {variant}: client IOPS with GC / without: {modes['iops_ratio_gc_over_nogc']:.3f} (pairs {min(pairs):.2f}-{max(pairs):.2f})")
print("client latency (p99.9, max) and writes that waited for backend space (count, seconds in all), medians")
print(f"{'batch':6} {'variant/mode':20} {'p99.9 ms':>10} {'max ms':>10} {'space waits':>12} {'wait s':>10} {'IOPS / ' + variants[0]:>14}")
for batch in dict.fromkeys(r["batch"] for r in rows):
    for mode in dict.fromkeys(r["mode"] for r in rows):
        base = [r["iops"] for r in rows if r["batch"] == batch and r["mode"] == mode and r["variant"] == variants[0]]
        for variant in variants:
            got = [r for r in rows if r["batch"] == batch and r["mode"] == mode and r["variant"] == variant]
            if not got or not base:
                continue
            med = lambda key: statistics.median((r.get(key) or 0) for r in got)
            ratio = statistics.median(r["iops"] for r in got) / statistics.median(base)
            print(f"{batch:6} {variant + '/' + mode:20} {med('clat_p999_us') / 1000:10.2f} {med('clat_max_us') / 1000:10.1f} {med('space_waits'):12.0f} {med('space_wait_s'):10.1f} {ratio:14.2f}")
print("RESULT " + json.dumps({"runtime_s": runtime, "runs": runs, "size_mib": size_mib, "warmup_s": warmup_s, "cache_mib": cache_mib, "rate_iops": rate_iops, "summary": summary, "rows": rows}))
PY
