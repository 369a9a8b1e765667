#!/usr/bin/env bash
# test/ceph/up.sh — a throwaway single-node Ceph for lsvd's backend tests, CI and users trying RADOS/S3.
#
# Plain processes from the Debian packages (no systemd, cephadm or containers), bound to 127.0.0.1 only, all state
# under one directory: one mon, one OSD, no mgr (RADOS, RBD and radosgw need none), radosgw with a test user and a
# bucket. Facts behind each setting: docs/ceph.md (measured on this kind of machine).
#
# Usage:
#   test/ceph/up.sh [up]        start, or reuse a healthy cluster this script started in the same directory
#   test/ceph/up.sh env         print the env file path (exit 1 if the cluster is not up)
#   test/ceph/up.sh kill-osd    SIGKILL the OSD (a crash)        test/ceph/up.sh start-osd   start it again
#   test/ceph/up.sh kill-rgw    SIGKILL radosgw                  test/ceph/up.sh start-rgw   start it again
#   test/ceph/up.sh restart-osd / restart-rgw   kill then start
# Then: source "$LSVD_CEPH_DIR/env.sh" (CEPH_CONF, CEPH_KEYRING, LSVD_CEPH_POOL, AWS_*, LSVD_S3_BUCKET).
#
# Environment:
#   LSVD_CEPH_DIR          state directory (default /tmp/lsvd-ceph-$UID)
#   LSVD_CEPH_OBJECTSTORE  memstore (default: RAM, fast, objects LOST when the OSD stops) or bluestore (a sparse file
#                          in the state directory: objects survive an OSD crash; use it to test OSD restarts)
#   LSVD_CEPH_BLUESTORE_MEDIA  default (what the kernel says of the disk under the state directory), hdd or ssd:
#                          which of BlueStore's two profiles the OSD uses (bluestore_debug_enforce_settings). They
#                          differ for small writes: hdd writes those up to 64 KiB twice (first to its RocksDB log,
#                          "deferred"), ssd once. A virtio disk reports itself rotational, so default is hdd there.
#   LSVD_CEPH_MON_PORT, LSVD_CEPH_MON_V1_PORT, LSVD_CEPH_RGW_PORT   fixed ports; default: three free ports picked at
#                          start (random, below the ephemeral range, each with no socket on it), recorded in the
#                          state directory and env.sh, so a cluster never depends on what else runs on the machine
#   LSVD_CEPH_POOL (lsvd), LSVD_CEPH_RBD_POOL (rbd), LSVD_S3_BUCKET (lsvd)
#   LSVD_NO_APT=1          never run apt-get; fail if a package is missing
set -euo pipefail
# Ceph's tools and daemons read these from the environment over their own config: a shell that sourced another
# cluster's env.sh would hand this cluster's commands that cluster's key (seen: the mon refusing every client with
# "unexpected key" until the script gave up). This script names its own conf and keyring everywhere.
unset CEPH_KEYRING CEPH_ARGS CEPH_CONF

DIR=${LSVD_CEPH_DIR:-/tmp/lsvd-ceph-$UID}
OBJECTSTORE=${LSVD_CEPH_OBJECTSTORE:-memstore}
BLUESTORE_MEDIA=${LSVD_CEPH_BLUESTORE_MEDIA:-default}
MON_PORT=${LSVD_CEPH_MON_PORT:-}
MON_V1_PORT=${LSVD_CEPH_MON_V1_PORT:-}
RGW_PORT=${LSVD_CEPH_RGW_PORT:-}
if [ -n "$MON_PORT$MON_V1_PORT$RGW_PORT" ]; then
  [ -n "$MON_PORT" ] && [ -n "$MON_V1_PORT" ] && [ -n "$RGW_PORT" ] ||
    { echo "test/ceph/up.sh: set all of LSVD_CEPH_MON_PORT, LSVD_CEPH_MON_V1_PORT, LSVD_CEPH_RGW_PORT or none" >&2; exit 2; }
  PORTS=fixed
else
  PORTS=auto
  # A cluster this script started here records the ports it picked: reuse, kill-osd, start-rgw... need them.
  if [ -f "$DIR/ports" ]; then read -r MON_PORT MON_V1_PORT RGW_PORT <"$DIR/ports" || true; fi
fi
POOL=${LSVD_CEPH_POOL:-lsvd}
RBD_POOL=${LSVD_CEPH_RBD_POOL:-rbd}
BUCKET=${LSVD_S3_BUCKET:-lsvd}
# Fixed test credentials: this cluster listens on loopback only and holds throwaway data.
S3_ACCESS_KEY=LSVDTESTACCESSKEY001
S3_SECRET_KEY=lsvdtestsecretkey000000000000000000000001
S3_REGION=us-east-1
# Capacity the memstore OSD reports to the mon; RAM is used only as objects are written.
MEMSTORE_BYTES=$((8 << 30))
# Size of the sparse bluestore block file; disk is used only as objects are written.
BLUESTORE_BYTES=$((10 << 30))
# Every wait is bounded: a `ceph` call gives up after CEPH_CALL_TIMEOUT_S, a readiness loop after its tries.
CEPH_CALL_TIMEOUT_S=20
WAIT_TRIES=150 # x 0.2 s

CONF=$DIR/ceph.conf
KEYRING=$DIR/keyring
ENV_FILE=$DIR/env.sh
if [ "$PORTS" = auto ]; then PORT_PARAM=auto; else PORT_PARAM=$MON_PORT,$MON_V1_PORT,$RGW_PORT; fi
PARAMS="objectstore=$OBJECTSTORE media=$BLUESTORE_MEDIA ports=$PORT_PARAM pool=$POOL rbd=$RBD_POOL bucket=$BUCKET"
T0=$(date +%s%N)
log() { echo "[lsvd ceph up $(( ($(date +%s%N) - T0) / 1000000 )) ms] $*" >&2; }
# Set once a fresh start begins: a failure from then on stops every daemon this run started (the logs stay).
FRESH_START=0
die() {
  log "ERROR: $*"
  for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "== tail $f" >&2; tail -n 10 "$f" >&2; }; done
  if [ "$FRESH_START" = 1 ]; then
    LSVD_CEPH_DIR=$DIR LSVD_CEPH_KEEP=1 "$(dirname "$0")/down.sh" || true
    log "stopped what this run started; logs kept in $DIR/log"
  fi
  exit 1
}
port_busy() { ss -tanH "sport = :$1" | grep -q .; }
# Three free TCP ports in a row at a random place in 20000..32767: below Linux's ephemeral range (a port there can be
# the local end of some connection at any moment) and away from the well-known ones. Bounded tries.
pick_ports() {
  local base
  for _ in $(seq 200); do
    base=$((20000 + (RANDOM % 4255) * 3))
    if ! port_busy "$base" && ! port_busy $((base + 1)) && ! port_busy $((base + 2)); then
      MON_PORT=$base MON_V1_PORT=$((base + 1)) RGW_PORT=$((base + 2))
      return 0
    fi
  done
  die "found no three free ports in 20000..32767"
}
ceph_() { timeout "$CEPH_CALL_TIMEOUT_S" ceph --conf "$CONF" --connect-timeout 10 "$@"; }
rados_() { timeout "$CEPH_CALL_TIMEOUT_S" rados --conf "$CONF" "$@"; }

# A pid is ours only if its command line names our ceph.conf: pid files can be stale and pids reused.
pid_of() { local f=$DIR/run/$1.pid; [ -f "$f" ] && cat "$f" 2>/dev/null || true; }
ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }
# Daemons are reparented to init, which may reap zombies late: a zombie counts as gone.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
kill_daemon() { # kill_daemon NAME SIGNAL: by pid file only, then wait (bounded) until it is gone
  local pid; pid=$(pid_of "$1")
  ours "$pid" || return 0
  kill -"$2" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid" && ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$DIR/run/$1.pid"
}

osd_up() { [ "$(ceph_ osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' 2>/dev/null)" = 1 ]; }
rgw_up() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$RGW_PORT/"; }
probe() { timeout 5 rados --conf "$CONF" --rados-osd-op-timeout 4 -p "$POOL" stat __lsvd_ceph_up_probe >/dev/null 2>&1; }
# A full OSD still answers reads (the probe) but blocks every write: a bench that filled the memstore OSD must not
# hand the test suite a cluster where each put times out.
not_full() { ! timeout 10 ceph --conf "$CONF" health 2>/dev/null | grep -qi "full"; }
healthy() {
  [ -f "$ENV_FILE" ] && [ "$(cat "$DIR/params" 2>/dev/null)" = "$PARAMS" ] && ours "$(pid_of ceph-mon.a)" &&
    ours "$(pid_of ceph-osd.0)" && ours "$(pid_of ceph-client.rgw.a)" && probe && rgw_up && not_full
}

start_osd() {
  ceph-osd --conf "$CONF" -i 0 >>"$DIR/log/start-osd.log" 2>&1 || die "ceph-osd did not start"
  if [ -f "$ENV_FILE" ]; then
    # A restart: the mon may still list the killed OSD as up (no peer reports it), so only a round trip through
    # the new OSD proves it serves.
    for _ in $(seq $WAIT_TRIES); do probe && break; sleep 0.2; done
    probe || die "the restarted OSD does not serve pool $POOL"
  else
    for _ in $(seq $WAIT_TRIES); do osd_up && break; sleep 0.2; done
    osd_up || die "the OSD did not come up"
  fi
}
start_rgw() {
  radosgw --conf "$CONF" -n client.rgw.a >>"$DIR/log/start-rgw.log" 2>&1 || die "radosgw did not start"
  # radosgw creates its pools before it listens: on bluestore and a slow disk that has taken over 30 s.
  for _ in $(seq $((WAIT_TRIES * 3))); do rgw_up && break; sleep 0.2; done
  rgw_up || die "radosgw did not answer on 127.0.0.1:$RGW_PORT"
}
require_up() { [ -f "$ENV_FILE" ] && ours "$(pid_of ceph-mon.a)" || die "no cluster from this script in $DIR"; }

case "${1:-up}" in
  up) ;;
  env) healthy && { echo "$ENV_FILE"; exit 0; }; exit 1 ;;
  kill-osd) require_up; kill_daemon ceph-osd.0 KILL; log "osd.0 killed"; exit 0 ;;
  start-osd) require_up; ours "$(pid_of ceph-osd.0)" || start_osd; log "osd.0 up"; exit 0 ;;
  restart-osd)
    require_up
    # memstore keeps objects only in the OSD's RAM: a restarted memstore OSD comes back empty, which is a
    # different (and, for lsvd, unrecoverable) failure than the crash it is meant to stand for.
    [ "$OBJECTSTORE" = bluestore ] || die "restart-osd needs LSVD_CEPH_OBJECTSTORE=bluestore (memstore loses every object)"
    kill_daemon ceph-osd.0 KILL; start_osd; log "osd.0 restarted"; exit 0 ;;
  kill-rgw) require_up; kill_daemon ceph-client.rgw.a KILL; log "radosgw killed"; exit 0 ;;
  start-rgw) require_up; ours "$(pid_of ceph-client.rgw.a)" || start_rgw; log "radosgw up"; exit 0 ;;
  restart-rgw) require_up; kill_daemon ceph-client.rgw.a KILL; start_rgw; log "radosgw restarted"; exit 0 ;;
  *) echo "usage: $0 [up|env|kill-osd|start-osd|restart-osd|kill-rgw|start-rgw|restart-rgw]" >&2; exit 2 ;;
esac

# --- packages ----------------------------------------------------------------------------------------------------------
need=()
for b in ceph-mon:ceph-mon ceph-osd:ceph-osd ceph:ceph-common rados:ceph-common radosgw:radosgw \
         radosgw-admin:radosgw monmaptool:ceph-common ceph-authtool:ceph-common; do
  command -v "${b%%:*}" >/dev/null || need+=("${b##*:}")
done
ldconfig -p | grep -q 'librados\.so\.2 ' || need+=(librados2)
ldconfig -p | grep -q 'librbd\.so\.1 ' || need+=(librbd1)
if [ ${#need[@]} -gt 0 ]; then
  [ "${LSVD_NO_APT:-0}" = 1 ] && die "missing packages (LSVD_NO_APT=1): ${need[*]}"
  [ "$(id -u)" = 0 ] || die "missing packages and not root: apt-get install ceph-mon ceph-osd ceph-common radosgw librados2 librbd1"
  log "installing packages with apt-get: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update >/dev/null || die "apt-get update failed"
  timeout 600 apt-get install -y --no-install-recommends ceph-mon ceph-osd ceph-common radosgw librados2 librbd1 \
    >/dev/null || die "apt-get install failed"
fi

# --- reuse a healthy cluster, else start from scratch ------------------------------------------------------------------
if healthy; then
  log "reusing the cluster in $DIR"
  echo "$ENV_FILE"
  exit 0
fi
# Leftovers of an earlier run (ours by pid file and command line): stop them and wipe the directory.
for d in ceph-client.rgw.a ceph-osd.0 ceph-mon.a; do kill_daemon "$d" KILL; done
rm -rf "$DIR"
if [ "$PORTS" = auto ]; then
  pick_ports
else
  for p in "$MON_PORT" "$MON_V1_PORT" "$RGW_PORT"; do
    port_busy "$p" && die "port $p on 127.0.0.1 is in use (another cluster? leave LSVD_CEPH_*_PORT unset to pick free ones)"
  done
fi
mkdir -p "$DIR"/{run,log,mon,osd,rgw,tmp,crash}
FRESH_START=1
echo "$MON_PORT $MON_V1_PORT $RGW_PORT" >"$DIR/ports"
FSID=$(cat /proc/sys/kernel/random/uuid)

if [ "$OBJECTSTORE" = memstore ]; then
  STORE_CONF="osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
# 64 KiB pages instead of one contiguous buffer per object: small overwrites (RBD) ~1.5x faster
memstore page set = true"
elif [ "$OBJECTSTORE" = bluestore ]; then
  STORE_CONF="osd objectstore = bluestore
# a sparse regular file \$osd_data/block: no LVM, no loop device. 'bluestore block path' must stay unset.
bluestore block create = true
bluestore block size = $BLUESTORE_BYTES
bluestore block db create = false
bluestore block wal create = false
bluestore debug enforce settings = $BLUESTORE_MEDIA
# a small cache: this is a 2-core test machine shared with other work
osd memory target = 1073741824"
else
  die "LSVD_CEPH_OBJECTSTORE must be memstore or bluestore, not '$OBJECTSTORE'"
fi
case "$BLUESTORE_MEDIA" in
  default | hdd | ssd) ;;
  *) die "LSVD_CEPH_BLUESTORE_MEDIA must be default, hdd or ssd, not '$BLUESTORE_MEDIA'" ;;
esac

cat >"$CONF" <<EOF
# Generated by lsvd test/ceph/up.sh: throwaway single-node test cluster, loopback only.
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $KEYRING
# one OSD: one replica, and say so without a health warning
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
# radosgw creates ~7 pools; at the default 32 PGs each one OSD passes mon_max_pg_per_osd (250)
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
# every pool create waits one propose interval (default 1 s): 0.1 s cuts bootstrap from ~20 s to ~5 s
paxos propose interval = 0.1
# the mon stops under 5% free disk and warns under 30%: CI disks can be fuller than that
mon data avail crit = 1
mon data avail warn = 2
run dir = $DIR/run
admin socket = $DIR/run/\$cluster-\$name.asok
pid file = $DIR/run/\$cluster-\$name.pid
log file = $DIR/log/\$cluster-\$name.log
mon data = $DIR/mon/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
crash dir = $DIR/crash

[osd]
$STORE_CONF

[client.rgw.a]
# no 'rgw dns name': clients must use path-style addressing (http://127.0.0.1:PORT/bucket/key)
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
EOF

# One keyring for every entity; 'ceph-mon --mkfs' imports all of it into the mon's auth database.
ceph-authtool --create-keyring "$KEYRING" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' \
  --cap osd 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
chmod 600 "$KEYRING"

monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]" "$DIR/tmp/monmap" >/dev/null
ceph-mon --conf "$CONF" --mkfs -i a --monmap "$DIR/tmp/monmap" --keyring "$KEYRING" >>"$DIR/log/mkfs-mon.log" 2>&1 ||
  die "ceph-mon --mkfs failed"
ceph-mon --conf "$CONF" -i a >>"$DIR/log/start-mon.log" 2>&1 || die "ceph-mon did not start"
for _ in $(seq $WAIT_TRIES); do ceph_ mon stat >/dev/null 2>&1 && break; sleep 0.2; done
ceph_ mon stat >/dev/null 2>&1 || die "the monitor did not come up"
log "mon up"

OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
[ "$(ceph_ osd new "$OSD_UUID")" = 0 ] || die "ceph osd new did not give osd id 0"
mkdir -p "$DIR/osd/ceph-0"
ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/mkfs-osd.log" 2>&1 || die "ceph-osd --mkfs failed"
start_osd
log "osd up ($OBJECTSTORE)"

ceph_ osd pool create "$POOL" 8 >/dev/null 2>&1 || die "creating pool $POOL failed"
ceph_ osd pool application enable "$POOL" rados >/dev/null 2>&1 || die "enabling rados on pool $POOL failed"
ceph_ osd pool create "$RBD_POOL" 8 >/dev/null 2>&1 || die "creating pool $RBD_POOL failed"
ceph_ osd pool application enable "$RBD_POOL" rbd >/dev/null 2>&1 || die "enabling rbd on pool $RBD_POOL failed"
# No mgr on purpose: a sticky mute keeps 'ceph health' quiet about it.
ceph_ health mute MGR_DOWN --sticky >/dev/null 2>&1 || true
echo ok >"$DIR/tmp/probe"
# The first write proves the PGs are active.
rados_ -p "$POOL" put __lsvd_ceph_up_probe "$DIR/tmp/probe" || die "rados put into pool $POOL failed"
log "pools $POOL and $RBD_POOL ready"

start_rgw
timeout 60 radosgw-admin --conf "$CONF" -n client.admin user create --uid=lsvd-test --display-name="lsvd test" \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$DIR/tmp/s3user.json" 2>>"$DIR/log/radosgw-admin.log" ||
  die "radosgw-admin user create failed"
# curl 7.88's --aws-sigv4 does not send x-amz-content-sha256, which radosgw requires.
curl -sS -f -m 20 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X PUT "http://127.0.0.1:$RGW_PORT/$BUCKET" >/dev/null ||
  die "creating bucket $BUCKET failed"
log "radosgw on 127.0.0.1:$RGW_PORT, bucket $BUCKET"

cat >"$ENV_FILE.tmp" <<EOF
# Source me: the test Ceph cluster started by lsvd test/ceph/up.sh ($PARAMS).
export LSVD_CEPH_DIR=$DIR
export CEPH_CONF=$CONF
export CEPH_KEYRING=$KEYRING
export CEPH_CLIENT_NAME=client.admin
export LSVD_CEPH_POOL=$POOL
export LSVD_CEPH_RBD_POOL=$RBD_POOL
export LSVD_CEPH_OBJECTSTORE=$OBJECTSTORE
export LSVD_CEPH_BLUESTORE_MEDIA=$BLUESTORE_MEDIA
export AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=$S3_REGION
export LSVD_S3_BUCKET=$BUCKET
EOF
echo "$PARAMS" >"$DIR/params"
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "ready: source $ENV_FILE"
echo "$ENV_FILE"
