#!/usr/bin/env bash
# bench/rbd_compare.sh — lsvd vs Ceph RBD on the same single-node test cluster (test/ceph/up.sh, memstore by default).
#
# For each workload, fio drives (a) an RBD image through librbd (fio's rbd engine) and (b) `lsvd serve` of a volume in
# rados://POOL/... through NBD on a unix socket (fio's nbd engine), with the lsvd cache a file on local disk:
#   randwrite  4 KiB random writes, QD32
#   randread   4 KiB random reads, QD32, over a region written beforehand (PREFILL, not measured)
#   seqwrite   64 KiB sequential writes, QD32
# RUNS runs of RUNTIME seconds each; the table shows medians and lsvd/RBD ratios. Around every run it reads the OSD's
# counters (`ceph daemon osd.0 perf dump`: op_w + op_rw write ops, op_in_bytes) and divides their growth by the writes
# fio completed: what one client write costs the cluster. For lsvd, each write run is a fresh `lsvd serve`, stopped
# with SIGTERM after fio: the count includes the objects put during the run AND the final flush on shutdown.
# Volumes: lsvd's random reads use a volume of their own (TAGr), prefilled once. Every lsvd WRITE run starts on a fresh
# volume (TAG) and that volume's objects are deleted after its counters are read: a 6-10 s run never lives long
# enough for garbage collection to free them, so without this the memstore OSD keeps every object each run wrote,
# and a memstore OSD gets slower as it fills: measured here (before lsvd had GC), lsvd 4 KiB random write runs back
# to back cost the OSD 4.1, 12.6, 23.8, then 27.2 us of CPU per client write (OSD RSS 5.3 -> 8.6 GB) and fell from
# 43,680 to 28,878 IOPS; after deleting the old objects, 4.2 us and 41,191. That slowdown also hit the RBD run that
# followed each lsvd run. Deleting them is what GC does in a long-running deployment, minus GC's own cost
# (rewriting live data), which a run on a fresh volume never pays.
# The OSD: memstore by default (objects in RAM: every new object costs the OSD page faults and zeroing, which lsvd,
# whose objects are all new, pays and RBD's overwrites do not; bench/RESULTS.md). LSVD_CEPH_OBJECTSTORE=bluestore
# puts them in a sparse file in the cluster's state directory (under /tmp: here the disk the lsvd cache is on), as
# a real OSD keeps them on its disk; LSVD_CEPH_BLUESTORE_MEDIA=ssd or hdd picks BlueStore's profile (test/ceph/up.sh;
# a virtio disk says "rotational", so hdd by default).
# (`rados df` / `ceph osd pool stats` need a mgr, which the test cluster does not run: they report nothing.)
# The OSD counters are cluster-wide: anything else using the cluster during a run is counted too.
#
# Usage: bench/rbd_compare.sh            (RUNTIME=10 RUNS=3)
#        RUNTIME=5 RUNS=1 bench/rbd_compare.sh   (quick validation)
# Environment: RUNTIME (s, default 10), RUNS (3), SIZE (2G: image and volume), PREFILL (512M), CACHE_SIZE (4G),
#   BENCH_DIR (work directory parent, default /var/tmp: must be a disk, not tmpfs, O_DIRECT), LSVD_BIN (default: build
#   one from source into the work directory), SERVE_ARGS (extra arguments for `lsvd serve`, e.g. "--batch-size 4m": the same object size as the
#   RBD image's default 4 MiB objects; lsvd's own default is 8 MiB). The cluster is the script's own (a fresh state directory, free ports), stopped at the
#   end: a run fills most of the memstore OSD, and nobody else's cluster is ever used.
# Output: a table on stdout, then one line `RESULT {json}`; raw fio JSON and logs stay in the work directory only if
#   KEEP=1. Cleanup (always, also on error or Ctrl-C): lsvd serve stopped, the RBD image and the lsvd volume's objects
#   deleted, the work directory removed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-10}
RUNS=${RUNS:-3}
SIZE=${SIZE:-2G}
PREFILL=${PREFILL:-512M}
CACHE_SIZE=${CACHE_SIZE:-4G}
SERVE_ARGS=${SERVE_ARGS:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
KEEP=${KEEP:-0}
# Every external call is bounded.
FIO_SLACK_S=120
CEPH_TIMEOUT_S=30

log() { echo "[rbd_compare] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in fio rbd rados ceph python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
fio --enghelp=rbd >/dev/null 2>&1 || die "this fio has no rbd engine"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"

source "$REPO/bench/_ceph_bench.sh"
trap 'ceph_own_cluster_down' EXIT
ceph_own_cluster_up "$REPO" || die "test/ceph/up.sh failed"

WORK=$(mktemp -d "$BENCH_DIR/lsvd-rbd-compare.XXXXXX")
TAG=b$(date +%s)$$
IMAGE=$TAG
VOLUME=rados://$LSVD_CEPH_POOL/$TAG
CACHE=$WORK/cache
READ_VOLUME=rados://$LSVD_CEPH_POOL/${TAG}r
READ_CACHE=$WORK/read-cache
SOCKET=$WORK/nbd.sock
SERVE_PID=

cleanup() {
  local rc=$?
  set +e # every step runs, whatever the one before it did: the cluster is always stopped
  stop_serve
  timeout "$CEPH_TIMEOUT_S" rbd --conf "$CEPH_CONF" rm "$LSVD_CEPH_RBD_POOL/$IMAGE" >/dev/null 2>&1 || true
  # The volumes: superblocks TAG and TAGr, objects TAG.%08x and TAGr.%08x, leases TAG.lease and TAGr.lease.
  remove_rados_objects "^${TAG}r?(\.[0-9a-f]{8}|\.lease)?$"
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  ceph_own_cluster_down
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${LSVD_BIN:-}" ]; then
  LSVD=$LSVD_BIN
else
  LSVD=$WORK/lsvd
  (cd "$REPO" && timeout 300 node_modules/.bin/bun build --compile --minify-syntax src/cli/main.ts --outfile "$LSVD" >/dev/null) ||
    die "building lsvd failed"
fi

osd_counters() { # "write_ops in_bytes all_ops" of osd.0
  timeout "$CEPH_TIMEOUT_S" ceph --conf "$CEPH_CONF" daemon osd.0 perf dump |
    python3 -c 'import json,sys; o=json.load(sys.stdin)["osd"]; print(o["op_w"]+o["op_rw"], o["op_in_bytes"], o["op"])'
}

# fio common options; each engine adds its own target.
FIO_COMMON=(--name=job --direct=1 --numjobs=1 --group_reporting=1 --output-format=json)
RBD_TARGET=(--ioengine=rbd --clientname=admin "--pool=$LSVD_CEPH_RBD_POOL" "--rbdname=$IMAGE")
NBD_TARGET=(--ioengine=nbd "--uri=nbd+unix:///?socket=$SOCKET")
workload_args() {
  case $1 in
    randwrite) echo "--rw=randwrite --bs=4k --iodepth=32 --size=$SIZE" ;;
    randread) echo "--rw=randread --bs=4k --iodepth=32 --size=$PREFILL" ;;
    seqwrite) echo "--rw=write --bs=64k --iodepth=32 --size=$SIZE" ;;
  esac
}

start_serve() { # start_serve VOLUME CACHE
  rm -f "$SOCKET"
  # shellcheck disable=SC2086 # SERVE_ARGS is a list of words
  "$LSVD" serve --volume "$1" --cache "$2" --socket "$SOCKET" --ceph-conf "$CEPH_CONF" \
    --ceph-keyring "$CEPH_KEYRING" $SERVE_ARGS >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 300); do
    [ -S "$SOCKET" ] && grep -q "serving on" "$WORK/serve.log" && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || { tail -n 20 "$WORK/serve.log" >&2; die "lsvd serve exited"; }
    sleep 0.1
  done
  die "lsvd serve did not start"
}

fresh_volume() { # fresh_volume VOLUME CACHE: (re)creates both; mkdisk --force deletes the volume's old objects
  "$LSVD" mkdisk --force --size "$SIZE" "$1" --ceph-conf "$CEPH_CONF" --ceph-keyring "$CEPH_KEYRING" >/dev/null ||
    die "mkdisk --force failed"
  "$LSVD" mkcache --force --volume "$1" --size "$CACHE_SIZE" "$2" --ceph-conf "$CEPH_CONF" \
    --ceph-keyring "$CEPH_KEYRING" >/dev/null || die "mkcache --force failed"
}

# run_fio SYSTEM WORKLOAD RUN: one measured run; appends a JSON line to $WORK/runs.jsonl
run_fio() {
  local system=$1 workload=$2 run=$3 out=$WORK/fio-$1-$2-$3.json before after
  local -a target
  # lsvd has no garbage collection yet: see "Volumes" at the top. RBD overwrites its image in place.
  if [ "$system" = rbd ]; then
    target=("${RBD_TARGET[@]}")
  elif [ "$workload" = randread ]; then
    start_serve "$READ_VOLUME" "$READ_CACHE"; target=("${NBD_TARGET[@]}")
  else
    start_serve "$VOLUME" "$CACHE"; target=("${NBD_TARGET[@]}") # fresh: created empty, wiped after every write run
  fi
  before=$(osd_counters)
  # shellcheck disable=SC2046
  timeout -k 10 $((RUNTIME + FIO_SLACK_S)) fio "${FIO_COMMON[@]}" "${target[@]}" $(workload_args "$workload") \
    --time_based=1 "--runtime=$RUNTIME" --randrepeat=0 "--output=$out" >/dev/null || die "fio $system $workload failed"
  # lsvd: the final flush (SIGTERM: put the open batch, checkpoint) belongs to the writes' cost.
  [ "$system" = lsvd ] && stop_serve
  after=$(osd_counters)
  # The run's objects go now (after its counters), so neither the next lsvd run nor the next RBD run works on a
  # fuller OSD than the first one did.
  if [ "$system" = lsvd ] && [ "$workload" != randread ]; then fresh_volume "$VOLUME" "$CACHE"; fi
  python3 - "$system" "$workload" "$run" "$out" "$before" "$after" >>"$WORK/runs.jsonl" <<'EOF'
import json, sys
system, workload, run, path, before, after = sys.argv[1:]
text = open(path).read()
job = json.loads(text[text.index("{"):])["jobs"][0]  # fio's nbd engine may print a line before the JSON
side = job["read" if workload == "randread" else "write"]
b, a = [list(map(int, x.split())) for x in (before, after)]
print(json.dumps({"system": system, "workload": workload, "run": int(run), "iops": side["iops"],
                  "mibps": side["bw_bytes"] / 2**20, "ios": side["total_ios"], "bytes": side["io_bytes"],
                  "osd_write_ops": a[0] - b[0], "osd_in_bytes": a[1] - b[1], "osd_ops": a[2] - b[2]}))
EOF
  log "$system $workload run $run: $(tail -n 1 "$WORK/runs.jsonl")"
}

STORE_LABEL=$LSVD_CEPH_OBJECTSTORE
[ "$LSVD_CEPH_OBJECTSTORE" = bluestore ] && STORE_LABEL="bluestore ($LSVD_CEPH_BLUESTORE_MEDIA profile)"
log "cluster: $LSVD_CEPH_DIR ($STORE_LABEL); work: $WORK; RUNTIME=$RUNTIME RUNS=$RUNS SIZE=$SIZE PREFILL=$PREFILL SERVE_ARGS=${SERVE_ARGS:-(none)}"
timeout "$CEPH_TIMEOUT_S" rbd --conf "$CEPH_CONF" create --size "$SIZE" "$LSVD_CEPH_RBD_POOL/$IMAGE" || die "rbd create failed"
fresh_volume "$READ_VOLUME" "$READ_CACHE"
fresh_volume "$VOLUME" "$CACHE"

# Prefill the region the random reads read (both systems), not measured.
log "prefill $PREFILL of each"
timeout -k 10 600 fio "${FIO_COMMON[@]}" "${RBD_TARGET[@]}" --rw=write --bs=1m --iodepth=8 "--size=$PREFILL" --output=/dev/null >/dev/null ||
  die "prefill rbd failed"
start_serve "$READ_VOLUME" "$READ_CACHE"
timeout -k 10 600 fio "${FIO_COMMON[@]}" "${NBD_TARGET[@]}" --rw=write --bs=1m --iodepth=8 "--size=$PREFILL" --output=/dev/null >/dev/null ||
  die "prefill lsvd failed"
stop_serve

for workload in randwrite randread seqwrite; do
  for run in $(seq "$RUNS"); do
    run_fio rbd "$workload" "$run"
    run_fio lsvd "$workload" "$run"
  done
done

python3 - "$WORK/runs.jsonl" "$RUNTIME" "$RUNS" "$STORE_LABEL" "$SERVE_ARGS" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
runtime, runs, store = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def med(system, workload, key):
    return statistics.median(r[key] for r in rows if r["system"] == system and r["workload"] == workload)
def per_write(system, workload, key):  # cluster cost per client write, summed over runs (ratio of sums)
    sel = [r for r in rows if r["system"] == system and r["workload"] == workload]
    return sum(r[key] for r in sel) / max(1, sum(r["ios"] for r in sel))
serve_args = sys.argv[5]
result = {"runtime_s": runtime, "runs": runs, "objectstore": store, "serve_args": serve_args, "workloads": {}}
print(f"lsvd vs RBD, {store} OSD, {runs} run(s) x {runtime} s, medians; lsvd serve extra args: {serve_args or '(none)'}")
print(f"{'workload':<10} {'RBD IOPS':>10} {'lsvd IOPS':>10} {'lsvd/RBD':>9} {'RBD MiB/s':>10} {'lsvd MiB/s':>11}"
      f" {'RBD ops/wr':>11} {'lsvd ops/wr':>12} {'fewer ops':>10} {'RBD B/B':>8} {'lsvd B/B':>9}")
for workload in ("randwrite", "randread", "seqwrite"):
    w = {}
    for system in ("rbd", "lsvd"):
        w[system] = {"iops": med(system, workload, "iops"), "mibps": med(system, workload, "mibps")}
        if workload != "randread":
            w[system]["osd_write_ops_per_write"] = per_write(system, workload, "osd_write_ops")
            w[system]["osd_bytes_per_byte"] = (sum(r["osd_in_bytes"] for r in rows if r["system"] == system and r["workload"] == workload)
                                              / max(1, sum(r["bytes"] for r in rows if r["system"] == system and r["workload"] == workload)))
    w["ratio_iops"] = w["lsvd"]["iops"] / w["rbd"]["iops"] if w["rbd"]["iops"] else None
    line = f"{workload:<10} {w['rbd']['iops']:>10.0f} {w['lsvd']['iops']:>10.0f} {w['ratio_iops']:>8.2f}x {w['rbd']['mibps']:>10.1f} {w['lsvd']['mibps']:>11.1f}"
    if workload != "randread":
        r, l = w["rbd"]["osd_write_ops_per_write"], w["lsvd"]["osd_write_ops_per_write"]
        w["ops_reduction"] = r / l if l else None
        fewer = f"{w['ops_reduction']:.0f}x" if l else "inf"
        line += f" {r:>11.4f} {l:>12.5f} {fewer:>10} {w['rbd']['osd_bytes_per_byte']:>8.2f} {w['lsvd']['osd_bytes_per_byte']:>9.2f}"
    print(line)
    result["workloads"][workload] = w
rw, sw = result["workloads"]["randwrite"], result["workloads"]["seqwrite"]
result["bars"] = {
    "randwrite_5x": rw["ratio_iops"] is not None and rw["ratio_iops"] >= 5,
    "seqwrite_no_worse": sw["ratio_iops"] is not None and sw["ratio_iops"] >= 1,
    "ops_10x_fewer": all(result["workloads"][k].get("ops_reduction") is None or result["workloads"][k]["ops_reduction"] >= 10
                         for k in ("randwrite", "seqwrite")),
}
print("bars: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in result["bars"].items()))
print("RESULT " + json.dumps(result))
EOF
