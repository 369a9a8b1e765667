#!/usr/bin/env bash
# Garbage collection: what it costs clients and what it gives back, against the same runs without it.
#   gc      `lsvd serve` with its defaults (a round a second, --gc-threshold 0.5)
#   no-gc   `lsvd serve --no-gc`: the baseline, the backend log only grows
# Each run: a fresh volume (file backend and cache file in one temp dir on a real disk) filled with 1 MiB sequential
# writes, then 4 KiB random writes QD32 for RUNTIME seconds over the whole volume (every byte is overwritten about
# RUNTIME*IOPS*4K/SIZE times, so most objects die), then a clean stop. Runs alternate between the two.
# Reported per run and as medians: client IOPS during the random writes, backend bytes after the stop (all objects,
# `du`-style apparent sizes) over the volume size (space amplification), what the collector copied and deleted
# (from serve's stop line), and peak RSS. After each no-gc run, `lsvd gc --json` on that volume: its time, what it
# copied and deleted, and the backend bytes it leaves.
# Output: progress on stderr; a table and one JSON line on stdout.
#
# Usage: bench/gc_bench.sh
# Env:   RUNTIME   seconds of random writes per run (default 30)
#        RUNS      runs per mode (default 3)
#        SIZE_MIB  volume size (default 512)
#        TMP_PARENT  where the temp dir goes (default /var/tmp; refused if tmpfs)
#        LSVD_BIN  the lsvd binary (default: dist/lsvd)
set -euo pipefail

bench_name=gc-bench
runtime="${RUNTIME:-30}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-512}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
source "$(dirname "$0")/_gc_serve.sh"

[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 64 ]] || die "SIZE_MIB must be >= 64"
gc_make_workdir
trap gc_cleanup EXIT
results="$work/results.jsonl"
: >"$results"

backend_objects() { find "$work/vol/backend" -type f -name 'vol.*' | wc -l; }

one_run() {
  local mode="$1" run="$2"
  log "$mode run $run: fill ${size_mib} MiB, then ${runtime} s of 4 KiB random writes"
  local extra=()
  if [[ "$mode" == no-gc ]]; then extra=(--no-gc); fi
  gc_start_fresh "$((size_mib * 2))" "${extra[@]}"
  gc_fio_nbd --rw=write --bs=1m --iodepth=8 >/dev/null
  local json
  json="$(gc_fio_nbd --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" | "$bun" "$here/_fio_json.ts" --dir write)"
  local hwm
  hwm="$(awk '/VmHWM/ {printf "%.0f\n", $2 * 1024}' "/proc/$server_pid/status")"
  gc_stop_server
  local bytes objects stopline
  bytes="$(gc_backend_bytes)"
  objects="$(backend_objects)"
  stopline="$(gc_stop_line)"
  local offline="null"
  if [[ "$mode" == no-gc ]]; then
    local started_ns ended_ns
    started_ns="$(date +%s%N)"
    offline="$("$lsvd" gc --json --volume "$work/vol/backend/vol" --cache "$work/vol/cache" 2>/dev/null)"
    ended_ns="$(date +%s%N)"
    offline="$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["wall_s"]=int(sys.argv[2])/1e9; d["backend_bytes_after"]=int(sys.argv[3]); print(json.dumps(d))' \
      "$offline" "$((ended_ns - started_ns))" "$(gc_backend_bytes)")"
  fi
  python3 - "$mode" "$run" "$json" "$bytes" "$objects" "$hwm" "$stopline" "$offline" "$size_mib" >>"$results" <<'PY'
import json, re, sys
mode, run, fio, size_bytes, objects, hwm, stopline, offline, size_mib = sys.argv[1:]
fio = json.loads(fio)
m = re.search(r"gc cleaned (\d+) objects \(([\d.]+ \w+) copied\) and deleted (\d+)", stopline)
print(json.dumps({
    "mode": mode, "run": int(run), "iops": fio["iops"], "p99_us": fio.get("clatP99Us"),
    "backend_bytes": int(size_bytes), "backend_objects": int(objects), "space_amplification": int(size_bytes) / (int(size_mib) << 20),
    "rss_peak_bytes": int(hwm), "gc_cleaned": int(m.group(1)) if m else 0, "gc_copied": m.group(2) if m else "0 B",
    "gc_deleted": int(m.group(3)) if m else 0, "offline_gc": json.loads(offline),
}))
PY
  tail -1 "$results" >&2
}

for run in $(seq "$runs"); do
  for mode in gc no-gc; do one_run "$mode" "$run"; done
done

python3 - "$results" "$runtime" "$runs" "$size_mib" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
runtime, runs, size_mib = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def med(mode, key):
    return statistics.median(r[key] for r in rows if r["mode"] == mode)
summary = {}
print(f"4 KiB random writes QD32 for {runtime} s over a {size_mib} MiB volume, file backend; medians of {runs}")
print(f"{'mode':8} {'IOPS':>9} {'backend/volume':>15} {'objects':>8} {'deleted':>8} {'cleaned':>8} {'RSS MiB':>8}")
for mode in ("gc", "no-gc"):
    summary[mode] = {k: med(mode, k) for k in ("iops", "space_amplification", "backend_objects", "gc_deleted", "gc_cleaned", "rss_peak_bytes")}
    s = summary[mode]
    print(f"{mode:8} {s['iops']:9.0f} {s['space_amplification']:15.2f} {s['backend_objects']:8.0f} {s['gc_deleted']:8.0f} {s['gc_cleaned']:8.0f} {s['rss_peak_bytes'] / 2**20:8.0f}")
ratio = summary["gc"]["iops"] / summary["no-gc"]["iops"]
print(f"client IOPS with GC / without: {ratio:.3f}")
offline = [r["offline_gc"] for r in rows if r["mode"] == "no-gc"]
wall = statistics.median(o["wall_s"] for o in offline)
copied = statistics.median(o["copiedBytes"] for o in offline)
after = statistics.median(o["backend_bytes_after"] for o in offline) / (size_mib << 20)
print(f"lsvd gc after a no-gc run: {wall:.1f} s, copied {copied / 2**20:.0f} MiB, backend/volume {summary['no-gc']['space_amplification']:.2f} -> {after:.2f}")
print("RESULT " + json.dumps({"runtime_s": runtime, "runs": runs, "size_mib": size_mib, "modes": summary, "iops_ratio_gc_over_nogc": ratio,
                              "offline": {"wall_s": wall, "copied_bytes": copied, "space_amplification_after": after}, "rows": rows}))
PY
