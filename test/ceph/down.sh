#!/usr/bin/env bash
# test/ceph/down.sh — stop the cluster test/ceph/up.sh started in $LSVD_CEPH_DIR (default /tmp/lsvd-ceph-$UID) and
# delete its directory. Only processes whose pid file is in $LSVD_CEPH_DIR/run AND whose command line names its
# ceph.conf are signalled, never processes found by name. Idempotent. LSVD_CEPH_KEEP=1 keeps the directory (logs).
set -uo pipefail
DIR=${LSVD_CEPH_DIR:-/tmp/lsvd-ceph-$UID}
CONF=$DIR/ceph.conf
ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }
# Daemons are reparented to init, which may reap zombies late: a zombie counts as gone.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stopped=0
stop_group() { # SIGTERM every daemon named, wait up to 5 s, then SIGKILL whoever is left
  local pids=() f pid
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    if ours "$pid"; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
  done
  for _ in $(seq 50); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do ours "$pid" && alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  stopped=$((stopped + ${#pids[@]}))
}
# The OSD tells the mon it is going down, so the mon goes last.
stop_group "$DIR"/run/ceph-client.rgw.*.pid "$DIR"/run/ceph-osd.*.pid
stop_group "$DIR"/run/ceph-mon.*.pid
echo "lsvd ceph down: stopped $stopped daemon(s) in $DIR" >&2
[ "${LSVD_CEPH_KEEP:-0}" = 1 ] || rm -rf "$DIR"
