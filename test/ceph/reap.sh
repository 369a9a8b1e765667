#!/usr/bin/env bash
# test/ceph/reap.sh — stop the test clusters one test run started, when that run ends, however it ends.
#
# Usage:
#   test/ceph/reap.sh PID ROOT     wait until process PID has exited, then reap ROOT (test/backend/_ceph.ts starts this
#                                  in the background for its own process: it runs even if the tests fail or the
#                                  process is killed)
#   test/ceph/reap.sh --now ROOT   reap ROOT at once (scripts/test.sh, at the end of a run)
# Reaping ROOT: test/ceph/down.sh for every cluster directory listed in ROOT/clusters (one per line, as cephUp
# registered them before starting each), then delete ROOT. Idempotent; never touches a cluster not listed there.
set -uo pipefail
[ $# = 2 ] || { echo "usage: $0 PID|--now ROOT" >&2; exit 2; }
PID=$1
ROOT=$2
if [ "$PID" != --now ]; then
  # tail --pid returns once PID is gone (it checks every second).
  tail --pid="$PID" -f /dev/null 2>/dev/null || while kill -0 "$PID" 2>/dev/null; do sleep 1; done
fi
if [ -f "$ROOT/clusters" ]; then
  while read -r dir; do
    [ -n "$dir" ] && LSVD_CEPH_DIR=$dir "$(dirname "$0")/down.sh"
  done <"$ROOT/clusters"
fi
rm -rf "$ROOT"
