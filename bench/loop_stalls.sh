#!/usr/bin/env bash
# What stalls `lsvd serve`'s event loop under 4 KiB random writes QD32 (issue 17's tail latency): runs the server from
# source with bench/_loop_stalls.ts preloaded (a 1 ms timer chain, and named methods charged with their self time),
# drives it with fio's nbd engine, and prints the windows the loop was away longer than 2 ms, grouped by the name
# that took most of each (bench/_loop_stalls_report.ts), with fio's IOPS and latency percentiles.
# The sampler's wrappers cost CPU of their own: compare IOPS and p99 across runs of this script, not against
# bench/cpu_per_request.sh.
#
# Usage: bench/loop_stalls.sh
# Env:   RUNTIME     seconds of fio (default 25: long enough for checkpoints and GC rounds)
#        SIZE_MIB    volume and cache size (default 1024)
#        TMP_PARENT  where the temp dir goes (default /var/tmp; tmpfs is refused)
#        SERVE_ARGS  extra arguments for `lsvd serve` (e.g. "--batch-size 1m", "--no-gc")
#        STALLS_JSON also keep the sampler's raw JSON here
#        LOG_GC=1    also log JavaScriptCore's garbage collections (BUN_JSC_logGC) and print their pauses
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
runtime="${RUNTIME:-25}"
size_mib="${SIZE_MIB:-1024}"
tmp_parent="${TMP_PARENT:-/var/tmp}"
read -r -a serve_extra <<<"${SERVE_ARGS:-}"

die() {
  echo "loop_stalls: $*" >&2
  exit 1
}
for tool in fio nbdinfo; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$bun" ]] || die "bun not found at $bun (npm ci in $root)"
[[ "$runtime" =~ ^[0-9]+$ && "$runtime" -ge 1 ]] || die "RUNTIME must be a whole number of seconds >= 1"
fstype="$(df --output=fstype "$tmp_parent" | tail -1 | tr -d ' ')"
[[ "$fstype" != tmpfs && "$fstype" != ramfs ]] || die "$tmp_parent is $fstype: put TMP_PARENT on a real disk"

work="$(mktemp -d "$tmp_parent/lsvd-loop-stalls.XXXXXX")"
server_pid=""
cleanup() {
  local rc=$?
  set +e
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  ((rc != 0)) && [[ -s "$work/server.log" ]] && tail -n 15 "$work/server.log" >&2
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

cd "$root"
sock="$work/server.sock"
"$bun" src/cli/main.ts mkdisk --force --size "${size_mib}m" "$work/backend/vol" >/dev/null
"$bun" src/cli/main.ts mkcache --force --size "${size_mib}m" --volume "$work/backend/vol" "$work/cache" >/dev/null
gc_env=()
[[ "${LOG_GC:-}" == 1 ]] && gc_env=(BUN_JSC_logGC=1)
env "${gc_env[@]}" LSVD_STALLS_OUT="$work/stalls.json" "$bun" --preload ./bench/_loop_stalls.ts src/cli/main.ts serve \
  --volume "$work/backend/vol" --cache "$work/cache" --socket "$sock" "${serve_extra[@]}" >"$work/server.log" 2>&1 &
server_pid=$!
deadline=$((SECONDS + 30))
while ! nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1; do
  kill -0 "$server_pid" 2>/dev/null || die "serve exited before serving"
  ((SECONDS < deadline)) || die "serve did not start within 30 s"
  sleep 0.1
done
echo "$(date +%T) serve up; fio 4 KiB random write QD32 for ${runtime} s; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
fio --thread --output-format=json --name=stalls --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw=randwrite \
  --bs=4k --iodepth=32 --size="${size_mib}m" --time_based --runtime="$runtime" --norandommap --randrepeat=0 \
  >"$work/fio.json" 2>"$work/fio.err" || die "fio failed: $(tail -n 3 "$work/fio.err")"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
[[ -s "$work/stalls.json" ]] || die "the sampler wrote nothing"
[[ -n "${STALLS_JSON:-}" ]] && cp "$work/stalls.json" "$STALLS_JSON"
"$bun" "$here/_fio_json.ts" --dir write --set workload=randwrite-4k-qd32 <"$work/fio.json"
"$bun" "$here/_loop_stalls_report.ts" "$work/stalls.json"
if [[ "${LOG_GC:-}" == 1 ]]; then
  grep -o 'p=[0-9.]*ms' "$work/server.log" | tr -d 'pms=' | sort -n | awk '{ v[NR] = $1; s += $1 } END {
    if (NR == 0) { print "JSC GC: no pauses logged"; exit }
    printf "JSC GC pauses: %d, total %.0f ms, p50 %.2f, p99 %.2f, max %.2f ms\n", NR, s, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }'
  grep -o 'cycle [0-9.]*ms' "$work/server.log" | tr -d 'cyclems ' | sort -n | awk '{ v[NR] = $1 } END {
    if (NR > 0) printf "JSC GC cycles: %d, p50 %.1f, max %.1f ms (a cycle runs concurrently but for its pauses)\n", NR, v[int(NR * 0.5) + 1], v[NR] }'
fi
