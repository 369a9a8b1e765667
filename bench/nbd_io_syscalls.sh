#!/usr/bin/env bash
# Syscalls per request of `lsvd serve` on its two NBD transports (--nbd-io socket, Bun's sockets; --nbd-io uring, its
# own sockets on the journal's io_uring): where their CPU differs (docs/architecture.md, "NBD on io_uring"). For each
# run, a fresh volume (file backend and cache in one temp dir on a real disk) is served, fio writes 4 KiB random
# blocks at QD32 over the unix socket, and `perf stat` counts the server's syscalls by kind for PERF_S seconds in the
# middle of the run. Runs alternate between the transports. Prints per run and the medians: syscalls per request
# (the count over the requests fio completed in that window, from its IOPS), and server CPU per request.
#
# Usage: bench/nbd_io_syscalls.sh
# Env:   RUNS per transport (default 3), RUNTIME fio seconds (default 8), PERF_S counted seconds (default 4),
#        LSVD_BIN (default dist/lsvd), TMP_PARENT where the temp dir goes (default /var/tmp; tmpfs is refused)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
lsvd="${LSVD_BIN:-$root/dist/lsvd}"
bun="$root/node_modules/.bin/bun"
runs="${RUNS:-3}"
runtime="${RUNTIME:-8}"
perf_s="${PERF_S:-4}"
die() { echo "nbd_io_syscalls: $*" >&2; exit 1; }
[[ -x "$lsvd" ]] || die "$lsvd is missing (npm run build, or LSVD_BIN)"
command -v fio >/dev/null || die "fio is not installed"
command -v perf >/dev/null || die "perf is not installed (apt-get install -y linux-perf)"
((perf_s + 2 < runtime)) || die "PERF_S must leave a second on either side of RUNTIME"
work="$(mktemp -d "${TMP_PARENT:-/var/tmp}/lsvd-nbd-io-syscalls.XXXXXX")"
[[ "$(stat -f -c %T "$work")" != "tmpfs" ]] || die "$work is on tmpfs: O_DIRECT needs a real disk"
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill -KILL "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
kinds="io_uring_enter preadv2 read epoll_ctl epoll_pwait2 recvfrom sendto futex"
events=$(for kind in $kinds; do printf 'syscalls:sys_enter_%s,' "$kind"; done)
ticks_per_second="$(getconf CLK_TCK)"

# One run on transport $1: prints "IOPS CPU_US_PER_REQUEST SYSCALLS_PER_REQUEST kind=per_request...".
run_one() {
  local io=$1 dir="$work/run" socket="$work/run/nbd.sock"
  rm -rf "$dir" && mkdir -p "$dir/store"
  "$lsvd" mkdisk --size 1g "file://$dir/store/vol" >/dev/null
  "$lsvd" mkcache --volume "file://$dir/store/vol" --size 512m "$dir/cache" >/dev/null
  "$lsvd" serve --nbd-io "$io" --cache "$dir/cache" --socket "$socket" --admin-socket "$dir/admin.sock" "file://$dir/store/vol" >"$dir/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do [[ -S "$socket" ]] && break; sleep 0.05; done
  [[ -S "$socket" ]] || die "serve --nbd-io $io did not start: $(tail -3 "$dir/serve.log")"
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --rw=randwrite --bs=4k --iodepth=32 --size=1g \
    --time_based --runtime="$runtime" --output-format=json --output="$dir/fio.json" >/dev/null &
  local fio_pid=$!
  sleep 1
  local before after
  before=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  perf stat -x, -e "${events%,}" -p "$server_pid" -o "$dir/perf.csv" -- sleep "$perf_s" >/dev/null 2>&1
  after=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  wait "$fio_pid"
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  local iops
  iops=$("$bun" -e "console.log(JSON.parse(require('fs').readFileSync('$dir/fio.json', 'utf8')).jobs[0].write.iops)")
  awk -F, -v iops="$iops" -v secs="$perf_s" -v cpu="$(((after - before)))" -v hz="$ticks_per_second" '
    /syscalls:sys_enter_/ { name = $3; sub(/syscalls:sys_enter_/, "", name); count[name] = $1; total += $1 }
    END {
      requests = iops * secs
      printf "%d %.2f %.2f", iops, cpu / hz * 1e6 / requests, total / requests
      for (name in count) printf " %s=%.3f", name, count[name] / requests
      printf "\n"
    }' "$dir/perf.csv"
}

declare -A rows
for run in $(seq "$runs"); do
  for io in socket uring; do
    row=$(run_one "$io")
    echo "run $run $io: $row   (IOPS, server CPU us/request, syscalls/request, by kind)" >&2
    rows[$io]+="$row"$'\n'
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { printf '%s' "${rows[$1]}" | awk -v key="$2" -v col="$3" 'NF { if (col > 0) print $col; else for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }'; }
printf '%-8s %8s %12s %14s' transport IOPS "cpu us/req" "syscalls/req"
for kind in $kinds; do printf ' %14s' "$kind"; done
printf '\n'
for io in socket uring; do
  printf '%-8s %8s %12s %14s' "$io" "$(field "$io" "" 1 | median)" "$(field "$io" "" 2 | median)" "$(field "$io" "" 3 | median)"
  for kind in $kinds; do printf ' %14s' "$(field "$io" "$kind" 0 | median)"; done
  printf '\n'
done
echo "medians of $runs run(s) each, alternating; syscalls counted over ${perf_s} s of each ${runtime} s run; load: $(cut -d' ' -f1-3 /proc/loadavg)"
