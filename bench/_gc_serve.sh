# Sourced by the benches that serve one fresh volume at a time (gc_bench.sh, gc_pace_bench.sh, clone_bench.sh,
# device_latency.sh), not run: served by `lsvd serve` on a unix socket in a temp dir on a real disk, driven with
# fio's nbd engine.
# The sourcing script sets, before it sources this: bench_name (for messages) and tmp_parent; and before calling
# these: lsvd (the binary), size_mib, work (from gc_make_workdir). Sets socket and server_pid.
# Env:   LSVD_BIN  the lsvd binary to run (default: this checkout's dist/lsvd)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
bun="$root/node_modules/.bin/bun"
lsvd="${LSVD_BIN:-$root/dist/lsvd}"
start_timeout_s=30
stop_timeout_s=300
server_pid=""

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "$bench_name: $*" >&2
  exit 1
}

# Checks the tools, the binary and the temp dir's file system, then makes the work dir (sets work).
gc_make_workdir() {
  for tool in fio python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
  [[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"
  [[ "$(stat -f -c %T "$tmp_parent")" != tmpfs ]] || die "$tmp_parent is tmpfs: O_DIRECT needs a real disk"
  work="$(mktemp -d "$tmp_parent/lsvd-$bench_name.XXXXXX")"
}

# The EXIT trap of a script with nothing else to stop (`trap gc_cleanup EXIT` after gc_make_workdir): kills a server
# still running, shows the end of its log when the script failed, removes the work dir, keeps the exit status.
gc_cleanup() {
  local rc=$?
  set +e
  [[ -n "$server_pid" ]] && { kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  ((rc != 0)) && [[ -s "$work/vol/serve.log" ]] && tail -n 15 "$work/vol/serve.log" >&2
  rm -rf "$work"
  exit "$rc"
}

# Starts `lsvd serve` on a fresh size_mib volume with a cache of $1 MiB and serve options $2...; waits until it serves.
gc_start_fresh() {
  local cache_mib="$1"
  shift
  rm -rf "$work/vol" && mkdir -p "$work/vol/backend"
  "$lsvd" mkdisk --size "${size_mib}m" "$work/vol/backend/vol" >/dev/null
  "$lsvd" mkcache --volume "$work/vol/backend/vol" --size "${cache_mib}m" "$work/vol/cache" >/dev/null
  socket="$work/vol/nbd.sock"
  # The admin socket in the work dir, not /run/lsvd: a run killed mid-way leaves nothing behind outside it.
  "$lsvd" serve --volume "$work/vol/backend/vol" --cache "$work/vol/cache" --socket "$socket" --admin-socket "$work/vol/admin.sock" "$@" 2>"$work/vol/serve.log" &
  server_pid=$!
  for _ in $(seq $((start_timeout_s * 10))); do
    grep -q "serving on" "$work/vol/serve.log" && return 0
    kill -0 "$server_pid" 2>/dev/null || die "serve exited: $(tail -3 "$work/vol/serve.log")"
    sleep 0.1
  done
  die "serve did not start in ${start_timeout_s} s"
}

gc_stop_server() {
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

# The backend's bytes: every file, apparent sizes.
gc_backend_bytes() { find "$work/vol/backend" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }

gc_fio_nbd() {
  fio --name=gc --ioengine=nbd --uri="nbd+unix:///?socket=$socket" --size="${size_mib}m" --output-format=json "$@"
}

# serve's stop line: "gc cleaned N objects (X copied) and deleted M ..."
gc_stop_line() { grep "stopped after" "$work/vol/serve.log" | tail -1; }
