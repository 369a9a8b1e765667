#!/usr/bin/env bash
# lsvd export against nbdcopy through lsvd serve: the same volume read into a raw file both ways.
#   export    `lsvd export --force VOLUME FILE` (reads the backend through the map; sparse output)
#   nbdcopy   `lsvd serve` on a unix socket (started before the clock starts, stopped after), then
#             `nbdcopy nbd+unix:///?socket=... FILE` (timed alone)
# The volume: `lsvd import` of an image of SIZE_MIB with pseudo-random data in its first DATA_PERCENT and zeroes in
# the rest, on a file backend in a temp dir on a real disk. Runs alternate between the two modes; after each, the
# output is compared with the image (cmp) and dropped. Page cache not dropped (no root assumption): both read warm.
# Output: progress on stderr; per-run seconds and the medians on stdout.
#
# Usage: bench/export_bench.sh
# Env:   RUNS          runs per mode (default 5)
#        SIZE_MIB      image size (default 512)
#        DATA_PERCENT  share of the image with data (default 50)
#        TMP_PARENT    where the temp dir goes (default /var/tmp)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
lsvd="$root/dist/lsvd"
runs="${RUNS:-5}"
size_mib="${SIZE_MIB:-512}"
data_percent="${DATA_PERCENT:-50}"
tmp_parent="${TMP_PARENT:-/var/tmp}"

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "export_bench: $*" >&2
  exit 1
}
for tool in nbdcopy python3 cmp; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"

tmp="$(mktemp -d "$tmp_parent/lsvd-export-bench.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

data_mib=$((size_mib * data_percent / 100))
log "image: $size_mib MiB, $data_mib MiB of data"
head -c "$((data_mib * 1024 * 1024))" /dev/urandom >"$tmp/image"
truncate -s "${size_mib}M" "$tmp/image"
"$lsvd" import "$tmp/image" "$tmp/backend/vol" >&2
"$lsvd" mkcache --volume "$tmp/backend/vol" --size 256m "$tmp/cache" >/dev/null

now() { python3 -c 'import time; print(time.monotonic())'; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

run_export() {
  local start end
  start="$(now)"
  "$lsvd" export --force "$tmp/backend/vol" "$tmp/out" >/dev/null
  end="$(now)"
  elapsed "$start" "$end"
}

run_nbdcopy() {
  local start end socket="$tmp/sock"
  "$lsvd" serve --quiet --cache "$tmp/cache" --socket "$socket" "$tmp/backend/vol" 2>"$tmp/serve.log" &
  server_pid=$!
  for _ in $(seq 1 300); do [[ -S "$socket" ]] && nbdinfo --size "nbd+unix:///?socket=$socket" >/dev/null 2>&1 && break; sleep 0.1; done
  start="$(now)"
  nbdcopy "nbd+unix:///?socket=$socket" "$tmp/out"
  end="$(now)"
  kill -TERM "$server_pid"
  wait "$server_pid"
  server_pid=""
  elapsed "$start" "$end"
}

declare -a export_s nbdcopy_s
for run in $(seq 1 "$runs"); do
  rm -f "$tmp/out"
  export_s+=("$(run_export)")
  cmp -n "$((size_mib * 1024 * 1024))" "$tmp/image" "$tmp/out" || die "export run $run differs from the image"
  rm -f "$tmp/out"
  nbdcopy_s+=("$(run_nbdcopy)")
  cmp "$tmp/image" "$tmp/out" || die "nbdcopy run $run differs from the image"
  log "run $run: export ${export_s[-1]} s, nbdcopy ${nbdcopy_s[-1]} s"
done

median() { printf '%s\n' "$@" | sort -n | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; v.sort(); print(f"{v[len(v)//2]:.3f}")'; }
echo "export  s: ${export_s[*]}  median $(median "${export_s[@]}")"
echo "nbdcopy s: ${nbdcopy_s[*]}  median $(median "${nbdcopy_s[@]}")"
echo "(${size_mib} MiB image, ${data_mib} MiB data, file backend in $tmp_parent, $runs runs each, alternating)"
