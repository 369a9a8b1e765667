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
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
lsvd="$root/dist/lsvd"
runtime="${RUNTIME:-30}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-512}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
start_timeout_s=30
stop_timeout_s=300

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "gc_bench: $*" >&2
  exit 1
}

for tool in fio python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"
[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
[[ "$runs" =~ ^[0-9]+$ && "$runs" -ge 1 ]] || die "RUNS must be >= 1"
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -ge 64 ]] || die "SIZE_MIB must be >= 64"
[[ "$(stat -f -c %T "$tmp_parent")" != tmpfs ]] || die "$tmp_parent is tmpfs: O_DIRECT needs a real disk"

work="$(mktemp -d "$tmp_parent/lsvd-gc-bench.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.jsonl"
: >"$results"

# Starts `lsvd serve` on a fresh volume; sets server_pid and socket.
start_fresh() {
  local mode="$1"
  rm -rf "$work/vol" && mkdir -p "$work/vol/backend"
  "$lsvd" mkdisk --size "${size_mib}m" "$work/vol/backend/vol" >/dev/null
  "$lsvd" mkcache --volume "$work/vol/backend/vol" --size "$((size_mib * 2))m" "$work/vol/cache" >/dev/null
  socket="$work/vol/nbd.sock"
  local extra=()
  if [[ "$mode" == no-gc ]]; then extra=(--no-gc); fi
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

backend_bytes() { find "$work/vol/backend" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}'; }
backend_objects() { find "$work/vol/backend" -type f -name 'vol.*' | wc -l; }

fio_nbd() {
  fio --name=gc --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --size="${size_mib}m" --output-format=json "$@"
}

one_run() {
  local mode="$1" run="$2"
  log "$mode run $run: fill ${size_mib} MiB, then ${runtime} s of 4 KiB random writes"
  start_fresh "$mode"
  fio_nbd --rw=write --bs=1m --iodepth=8 >/dev/null
  local json
  json="$(fio_nbd --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$runtime" | "$bun" "$here/_fio_json.ts" --dir write)"
  local hwm
  hwm="$(awk '/VmHWM/ {printf "%.0f\n", $2 * 1024}' "/proc/$server_pid/status")"
  stop_server
  local bytes objects stopline
  bytes="$(backend_bytes)"
  objects="$(backend_objects)"
  stopline="$(grep "stopped after" "$work/vol/serve.log" | tail -1)"
  local offline="null"
  if [[ "$mode" == no-gc ]]; then
    local started_ns ended_ns
    started_ns="$(date +%s%N)"
    offline="$("$lsvd" gc --json --volume "$work/vol/backend/vol" --cache "$work/vol/cache" 2>/dev/null)"
    ended_ns="$(date +%s%N)"
    offline="$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["wall_s"]=int(sys.argv[2])/1e9; d["backend_bytes_after"]=int(sys.argv[3]); print(json.dumps(d))' \
      "$offline" "$((ended_ns - started_ns))" "$(backend_bytes)")"
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
