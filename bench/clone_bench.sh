#!/usr/bin/env bash
# Clones (issue 14): what a clone costs to make, and what reading and writing through one costs against a plain
# volume. Short runs; alternating; medians. Temp dir on a real disk (O_DIRECT).
#   1. creation   `lsvd clone --json BASE@s NEW` on a map-only base whose snapshot checkpoint has N extents
#                 (bench/_clone_base.ts map): the command's own time ("ms" in its output) and the wall time of the
#                 process, for each N in EXTENTS. Creation copies the map (16 bytes an extent), never data.
#   2. randwrite  fio 4 KiB random writes, QD32, RUNTIME s, on a fresh clone (of the base below) against a fresh plain
#                 volume of the same size; fresh caches.
#   3. randread   fio 4 KiB random reads, QD32, RUNTIME s, of the base's data: through a clone that wrote nothing
#                 against the base volume itself; fresh caches (cold read cache) for both. The base is served (and
#                 closed) between runs, which moves its head checkpoint: reads through a clone read the snapshot's
#                 map, the base's reads its own (the same data, in the same objects: --no-gc).
# The base for 2 and 3: SIZE_MIB written sequentially (fio 1 MiB writes, pseudo-random data), closed, its newest
# checkpoint listed as snapshot "s" (bench/_clone_base.ts snapshot). Every volume is served with --no-gc.
# Output: progress on stderr; per-run figures, medians and the clone/plain ratios on stdout.
#
# Usage: bench/clone_bench.sh
# Env:   RUNS        runs per mode (default 3)
#        RUNTIME     fio seconds per run (default 8)
#        SIZE_MIB    volume size (default 256)
#        EXTENTS     map sizes for creation (default "1000 10000 100000 1000000")
#        TMP_PARENT  where the temp dir goes (default /var/tmp)
set -euo pipefail

bench_name=clone_bench
tmp_parent="${TMP_PARENT:-/var/tmp}"
# shellcheck source=bench/_gc_serve.sh
source "$(dirname "$0")/_gc_serve.sh"
runs="${RUNS:-3}"
runtime="${RUNTIME:-8}"
size_mib="${SIZE_MIB:-256}"
extents_list="${EXTENTS:-1000 10000 100000 1000000}"

gc_make_workdir
trap gc_cleanup EXIT
median() { python3 -c 'import sys; v=sorted(float(x) for x in sys.argv[1:]); print(f"{v[len(v)//2]:.3f}")' "$@"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.3f}")' "$1" "$2"; }
now() { python3 -c 'import time; print(time.monotonic())'; }

# ---- 1. creation time against map size
mkdir -p "$work/map"
for extents in $extents_list; do
  rm -f "$work/map/"*
  "$bun" "$here/_clone_base.ts" map "$work/map" base "$extents"
  declare -a own=() wall=()
  for run in $(seq 1 "$runs"); do
    start="$(now)"
    out="$("$lsvd" clone --json "$work/map/base@s" "$work/map/c$run")"
    end="$(now)"
    own+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ms"])' "$out")")
    wall+=("$(python3 -c "print(f'{($end - $start) * 1000:.1f}')")")
  done
  echo "creation  extents=$extents  command ms: ${own[*]} (median $(median "${own[@]}"))  process wall ms: ${wall[*]} (median $(median "${wall[@]}"))"
done

# ---- the base for 2 and 3
serve_volume() { # $1 volume dir (backend/NAME + cache), $2 NAME
  local dir="$1" name="$2"
  socket="$dir/nbd.sock"
  rm -f "$socket"
  "$lsvd" serve --no-gc --volume "$dir/backend/$name" --cache "$dir/cache-$name" --socket "$socket" 2>"$dir/serve-$name.log" &
  server_pid=$!
  for _ in $(seq $((start_timeout_s * 10))); do
    grep -qs "serving on" "$dir/serve-$name.log" && return 0
    kill -0 "$server_pid" 2>/dev/null || die "serve exited: $(tail -3 "$dir/serve-$name.log")"
    sleep 0.1
  done
  die "serve did not start"
}
stop_volume() { kill -TERM "$server_pid"; wait "$server_pid" || die "serve exited with $?"; server_pid=""; }
fio_4k() { # $1 rw
  fio --name=clone --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --size="${size_mib}m" --rw="$1" --bs=4k --iodepth=32 \
    --time_based --runtime="$runtime" --randseed=42 --output-format=json | "$bun" "$here/_fio_json.ts" --dir "$2" |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["iops"]))'
}
base="$work/base"
mkdir -p "$base/backend"
"$lsvd" mkdisk --size "${size_mib}m" "$base/backend/base" >/dev/null
"$lsvd" mkcache --volume "$base/backend/base" --size 512m "$base/cache-base" >/dev/null
log "base: writing $size_mib MiB"
serve_volume "$base" base
fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --size="${size_mib}m" --rw=write --bs=1m --iodepth=8 \
  --refill_buffers --output-format=json >/dev/null
stop_volume
"$bun" "$here/_clone_base.ts" snapshot "$base/backend" base s
# Every clone is made now: serving the base later writes checkpoints, and without snapshot pinning (the snapshot
# half of issue 14) its close would delete the snapshot's checkpoint. A clone needs it only while it is made.
for run in $(seq 1 "$runs"); do
  for kind in w r; do "$lsvd" clone "$base/backend/base@s" "$base/backend/$kind$run" >/dev/null; done
done

declare -a w_plain=() w_clone=() r_plain=() r_clone=()
write_plain() {
  "$lsvd" mkdisk --size "${size_mib}m" "$base/backend/p$run" >/dev/null
  "$lsvd" mkcache --force --volume "$base/backend/p$run" --size 512m "$base/cache-p$run" >/dev/null
  serve_volume "$base" "p$run"; w_plain+=("$(fio_4k randwrite write)"); stop_volume
}
write_clone() {
  "$lsvd" mkcache --force --volume "$base/backend/w$run" --size 512m "$base/cache-w$run" >/dev/null
  serve_volume "$base" "w$run"; w_clone+=("$(fio_4k randwrite write)"); stop_volume
}
read_plain() {
  "$lsvd" mkcache --force --volume "$base/backend/base" --size 512m "$base/cache-base" >/dev/null
  serve_volume "$base" base; r_plain+=("$(fio_4k randread read)"); stop_volume
}
read_clone() {
  "$lsvd" mkcache --force --volume "$base/backend/r$run" --size 512m "$base/cache-r$run" >/dev/null
  serve_volume "$base" "r$run"; r_clone+=("$(fio_4k randread read)"); stop_volume
}
for run in $(seq 1 "$runs"); do
  # Which of the pair goes first alternates from run to run (the page cache and the disk warm up).
  if ((run % 2 == 1)); then write_plain; write_clone; read_plain; read_clone; else write_clone; write_plain; read_clone; read_plain; fi
  log "run $run: randwrite plain ${w_plain[-1]} clone ${w_clone[-1]}; randread plain ${r_plain[-1]} clone ${r_clone[-1]}"
  rm -f "$base/backend/p$run"* "$base/backend/w$run"* "$base/cache-p$run" "$base/cache-w$run" "$base/cache-r$run"
done
echo "randwrite 4k QD32 IOPS  plain: ${w_plain[*]} (median $(median "${w_plain[@]}"))  clone: ${w_clone[*]} (median $(median "${w_clone[@]}"))  clone/plain $(ratio "$(median "${w_clone[@]}")" "$(median "${w_plain[@]}")")"
echo "randread  4k QD32 IOPS  plain: ${r_plain[*]} (median $(median "${r_plain[@]}"))  clone: ${r_clone[*]} (median $(median "${r_clone[@]}"))  clone/plain $(ratio "$(median "${r_clone[@]}")" "$(median "${r_plain[@]}")")"
echo "(${size_mib} MiB volumes, ${runtime} s runs, $runs runs each, alternating; file backend in $tmp_parent; --no-gc)"
