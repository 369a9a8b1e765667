#!/usr/bin/env bash
# bench/read_cache_rbd.sh — lsvd's SSD read cache on RADOS against Ceph RBD, on the test cluster (test/ceph/up.sh,
# memstore by default, a cluster of its own in a fresh state directory), fio 4 KiB random reads QD32 of a
# working set (WS) both systems prefilled (1 MiB writes, untimed). Each run, in this order:
#   rbd       RBD through librbd (fio's rbd engine)
#   off       lsvd serve --no-read-cache
#   cold      lsvd serve --read-cache on a freshly formatted cache: every read a miss at first, filling the cache
#   warm      the same server after one sequential pass over WS (1 MiB reads, untimed) filled the cache
#   restart   the same cache after a clean stop and a new `lsvd serve --read-cache`
# zipf phase: fio random_distribution=zipf:1.1 over WS with a read cache of a quarter of WS (on, cold at the start)
#   and without (off): IOPS and the hit rate (`lsvd status --json`, read requests).
# write phase: 4 KiB random writes QD32 over the volume: RBD, lsvd --read-cache (blocks migrate into the cache once
#   their object is durable), lsvd --no-read-cache; each lsvd run on a fresh volume.
# Medians of RUNS runs; the systems alternate inside each run. The lsvd cache is a file under BENCH_DIR (a disk).
#
# Usage: bench/read_cache_rbd.sh     Env: RUNTIME (s, default 8), RUNS (3), WS (256M), SIZE (1G: image and volume),
#   CACHE_SIZE (1G, half of it read cache), PHASES ("read zipf write"), BENCH_DIR (/var/tmp), LSVD_BIN (default: build
#   one). The cluster is the script's own (a fresh state directory, free ports), stopped at the end.
# Output: one line per run on stderr, a table and `RESULT {json}` on stdout. Cleanup always: servers stopped, the
#   image and the volumes' objects deleted, the work directory removed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-8}
RUNS=${RUNS:-3}
WS=${WS:-256M}
SIZE=${SIZE:-1G}
CACHE_SIZE=${CACHE_SIZE:-1G}
PHASES=${PHASES:-read zipf write}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
CEPH_TIMEOUT_S=30
FIO_SLACK_S=120

log() { echo "[read_cache_rbd] $(date +%T) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in fio rbd rados ceph python3 jq; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

source "$REPO/bench/_ceph_bench.sh"
trap 'ceph_own_cluster_down' EXIT
ceph_own_cluster_up "$REPO" || die "test/ceph/up.sh failed"

WORK=$(mktemp -d "$BENCH_DIR/lsvd-rc-rbd.XXXXXX")
TAG=rc$(date +%s)$$
IMAGE=$TAG
VOLUME=rados://$LSVD_CEPH_POOL/$TAG
WVOLUME=rados://$LSVD_CEPH_POOL/${TAG}w
CACHE=$WORK/cache
SOCKET=$WORK/nbd.sock
ADMIN=$WORK/admin.sock
SERVE_PID=
CEPH_ARGS_LSVD=(--ceph-conf "$CEPH_CONF" --ceph-keyring "$CEPH_KEYRING")

cleanup() {
  local rc=$?
  set +e # every step runs, whatever the one before it did: the cluster is always stopped
  stop_serve
  timeout "$CEPH_TIMEOUT_S" rbd --conf "$CEPH_CONF" rm "$LSVD_CEPH_RBD_POOL/$IMAGE" >/dev/null 2>&1 || true
  remove_rados_objects "^${TAG}w?(\.[0-9a-f]{8}|\.lease)?$"
  rm -rf "$WORK"
  ceph_own_cluster_down
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${LSVD_BIN:-}" ]; then LSVD=$LSVD_BIN; else
  LSVD=$WORK/lsvd
  (cd "$REPO" && timeout 300 node_modules/.bin/bun build --compile --minify-syntax src/cli/main.ts --outfile "$LSVD" >/dev/null) || die "building lsvd failed"
fi

FIO_COMMON=(--name=job --direct=1 --numjobs=1 --output-format=json --randrepeat=0)
RBD_TARGET=(--ioengine=rbd --clientname=admin "--pool=$LSVD_CEPH_RBD_POOL" "--rbdname=$IMAGE")
NBD_TARGET=(--ioengine=nbd "--uri=nbd+unix:///?socket=$SOCKET")

start_serve() { # start_serve VOLUME serve-args...
  local volume=$1; shift
  rm -f "$SOCKET"
  "$LSVD" serve --volume "$volume" --cache "$CACHE" --socket "$SOCKET" --admin-socket "$ADMIN" --quiet "${CEPH_ARGS_LSVD[@]}" "$@" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 600); do
    [ -S "$SOCKET" ] && nbdinfo --size "nbd+unix:///?socket=$SOCKET" >/dev/null 2>&1 && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || { tail -n 20 "$WORK/serve.log" >&2; die "lsvd serve exited"; }
    sleep 0.1
  done
  die "lsvd serve did not start"
}
fresh_cache() { # fresh_cache VOLUME [write-fraction]
  "$LSVD" mkcache --force --volume "$1" --size "$CACHE_SIZE" --write-fraction "${2:-0.5}" "$CACHE" "${CEPH_ARGS_LSVD[@]}" >/dev/null || die "mkcache failed"
}
fresh_volume() { # fresh_volume VOLUME: mkdisk --force deletes the old objects
  "$LSVD" mkdisk --force --size "$SIZE" "$1" "${CEPH_ARGS_LSVD[@]}" >/dev/null || die "mkdisk failed"
  fresh_cache "$1"
}
fio_iops() { # fio_iops rbd|nbd fio-args... -> IOPS of the job (read or write)
  local engine=$1 out=$WORK/fio.json; shift
  local -a target
  if [ "$engine" = rbd ]; then target=("${RBD_TARGET[@]}"); else target=("${NBD_TARGET[@]}"); fi
  timeout -k 10 $((RUNTIME + FIO_SLACK_S)) fio "${FIO_COMMON[@]}" "${target[@]}" "$@" "--output=$out" >/dev/null || die "fio failed: $*"
  sed -n '/^{/,$p' "$out" | jq '[.jobs[0].read.iops, .jobs[0].write.iops] | max'
}
randread() { fio_iops "$1" --rw=randread --bs=4k --iodepth=32 "--size=$WS" --time_based=1 "--runtime=$RUNTIME" "${@:2}"; }
hit_rate() { "$LSVD" status --json --admin-socket "$ADMIN" | jq -r '.readCache | if . == null then "null" else (.hits / ((.hits + .misses) | if . == 0 then 1 else . end)) end'; }
record() { echo "{\"phase\":\"$1\",\"mode\":\"$2\",\"run\":$3,\"iops\":$4,\"hit\":${5:-null}}" >>"$WORK/runs.jsonl"; log "$1 $2 run $3: $4 IOPS${5:+, hit rate $5}"; }

log "cluster $LSVD_CEPH_DIR ($LSVD_CEPH_OBJECTSTORE), work $WORK, RUNTIME=$RUNTIME RUNS=$RUNS WS=$WS SIZE=$SIZE CACHE_SIZE=$CACHE_SIZE PHASES=$PHASES"
timeout "$CEPH_TIMEOUT_S" rbd --conf "$CEPH_CONF" create --size "$SIZE" "$LSVD_CEPH_RBD_POOL/$IMAGE" || die "rbd create failed"
fresh_volume "$VOLUME"
log "prefill $WS of each"
fio_iops rbd --rw=write --bs=1m --iodepth=8 "--size=$WS" >/dev/null
start_serve "$VOLUME" --no-read-cache
fio_iops nbd --rw=write --bs=1m --iodepth=8 "--size=$WS" >/dev/null
stop_serve

if [[ " $PHASES " == *" read "* ]]; then
  for run in $(seq "$RUNS"); do
    record read rbd "$run" "$(randread rbd)"
    fresh_cache "$VOLUME"; start_serve "$VOLUME" --no-read-cache
    record read off "$run" "$(randread nbd)"; stop_serve
    fresh_cache "$VOLUME"; start_serve "$VOLUME" --read-cache
    record read cold "$run" "$(randread nbd)"
    fio_iops nbd --rw=read --bs=1m --iodepth=8 "--size=$WS" >/dev/null # the fill pass (untimed)
    sleep 3 # the fills and an index round finish
    record read warm "$run" "$(randread nbd)" "$(hit_rate)"
    stop_serve; start_serve "$VOLUME" --read-cache
    record read restart "$run" "$(randread nbd)" "$(hit_rate)"
    stop_serve
  done
fi

if [[ " $PHASES " == *" zipf "* ]]; then
  # The read-cache region: CACHE_SIZE * (1 - fraction) = WS / 4 (at CACHE_SIZE 1G and WS 256M: fraction 15/16).
  fraction=$(python3 -c "import sys; s={'K':2**10,'M':2**20,'G':2**30}; n=lambda v: int(v[:-1])*s[v[-1]]; print(1 - n('$WS') / 4 / n('$CACHE_SIZE'))")
  for run in $(seq "$RUNS"); do
    record zipf rbd "$run" "$(randread rbd --random_distribution=zipf:1.1)"
    for mode in $( ((run % 2)) && echo "on off" || echo "off on"); do
      fresh_cache "$VOLUME" "$fraction"
      start_serve "$VOLUME" "--$([ "$mode" = on ] && echo read-cache || echo no-read-cache)"
      iops=$(randread nbd --random_distribution=zipf:1.1)
      record zipf "$mode" "$run" "$iops" "$([ "$mode" = on ] && hit_rate)"
      stop_serve
    done
  done
fi

if [[ " $PHASES " == *" write "* ]]; then
  for run in $(seq "$RUNS"); do
    record write rbd "$run" "$(fio_iops rbd --rw=randwrite --bs=4k --iodepth=32 "--size=$SIZE" --time_based=1 "--runtime=$RUNTIME")"
    for mode in $( ((run % 2)) && echo "on off" || echo "off on"); do
      fresh_volume "$WVOLUME"
      start_serve "$WVOLUME" "--$([ "$mode" = on ] && echo read-cache || echo no-read-cache)"
      record write "$mode" "$run" "$(fio_iops nbd --rw=randwrite --bs=4k --iodepth=32 "--size=$SIZE" --time_based=1 "--runtime=$RUNTIME")"
      stop_serve
    done
  done
  fresh_volume "$WVOLUME" # its objects go now: the cleanup lists them by name
fi

python3 - "$WORK/runs.jsonl" "$RUNTIME" "$RUNS" "$WS" "$LSVD_CEPH_OBJECTSTORE" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
runtime, runs, ws, store = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def sel(phase, mode, key="iops"):
    return [r[key] for r in rows if r["phase"] == phase and r["mode"] == mode and r[key] is not None]
def med(phase, mode, key="iops"):
    values = sel(phase, mode, key)
    return statistics.median(values) if values else None
result = {"runtime_s": int(runtime), "runs": int(runs), "ws": ws, "objectstore": store, "phases": {}}
print(f"lsvd read cache vs RBD, {store} OSD, {runs} run(s) x {runtime} s, 4 KiB QD32, working set {ws}; medians (all runs)")
print(f"{'phase':<6} {'mode':<8} {'IOPS':>9} {'vs RBD':>7} {'hit rate':>9}  runs")
for phase in ("read", "zipf", "write"):
    rbd = med(phase, "rbd")
    if rbd is None: continue
    result["phases"][phase] = {}
    for mode in ("rbd", "off", "cold", "warm", "restart", "on"):
        value = med(phase, mode)
        if value is None: continue
        hit = med(phase, mode, "hit")
        result["phases"][phase][mode] = {"iops": value, "vs_rbd": value / rbd, "hit": hit, "runs": sel(phase, mode)}
        print(f"{phase:<6} {mode:<8} {value:>9.0f} {value / rbd:>6.2f}x {'' if hit is None else f'{100 * hit:.1f} %':>9}  {' '.join(f'{v:.0f}' for v in sel(phase, mode))}")
read = result["phases"].get("read", {})
if read:
    result["bars"] = {"warm_2x_rbd": read["warm"]["vs_rbd"] >= 2, "restart_0.9x_warm": read["restart"]["iops"] >= 0.9 * read["warm"]["iops"],
                      "cold_on_vs_off": read["cold"]["iops"] / read["off"]["iops"]}
    print(f"cold on/off {read['cold']['iops'] / read['off']['iops']:.2f}x; restart/warm {read['restart']['iops'] / read['warm']['iops']:.2f}x")
write = result["phases"].get("write", {})
if write: print(f"random writes on/off {write['on']['iops'] / write['off']['iops']:.2f}x")
print("RESULT " + json.dumps(result))
EOF
