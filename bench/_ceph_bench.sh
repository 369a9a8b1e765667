# Sourced by the benches that run on a Ceph cluster of their own (rbd_compare.sh, read_cache_rbd.sh,
# cpu_per_request.sh), not run. ceph_own_cluster_up sets CEPH_CONF, LSVD_CEPH_POOL... (from the cluster's env file);
# the sourcing script sets CEPH_TIMEOUT_S and SERVE_PID (the running `lsvd serve`, or empty).

# SIGTERM (clean: flush to the backend), wait bounded, then SIGKILL.
stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
}

# remove_rados_objects REGEX: deletes every object of the lsvd pool whose name matches (the bench's volumes).
remove_rados_objects() {
  timeout 300 rados --conf "$CEPH_CONF" -p "$LSVD_CEPH_POOL" ls 2>/dev/null | grep -E "$1" |
    while read -r name; do timeout "$CEPH_TIMEOUT_S" rados --conf "$CEPH_CONF" -p "$LSVD_CEPH_POOL" rm --force-full "$name" || true; done
}

# remove_rados_objects_now REGEX: the same as remove_rados_objects, in batches of 64 names per `rados rm` (one
# process per batch instead of one per object: a bench between runs, with the clock of a shared cluster running).
remove_rados_objects_now() {
  timeout 300 rados --conf "$CEPH_CONF" -p "$LSVD_CEPH_POOL" ls 2>/dev/null | grep -E "$1" |
    xargs -r -n 64 timeout "$CEPH_TIMEOUT_S" rados --conf "$CEPH_CONF" -p "$LSVD_CEPH_POOL" rm --force-full || true
}

# ceph_own_cluster_up REPO: starts a cluster of test/ceph/up.sh in a state directory of its own, made here (so it never
# reuses a cluster someone else started; free ports are picked by up.sh), and sources its env file: CEPH_CONF,
# CEPH_KEYRING, LSVD_CEPH_POOL... exported. LSVD_CEPH_DIR names the directory; ceph_own_cluster_down stops it.
# The caller calls ceph_own_cluster_down from its exit trap, which is safe before, during and after this.
ceph_own_cluster_up() {
  LSVD_CEPH_DIR="$(mktemp -d /tmp/lsvd-ceph-bench.XXXXXX)"
  export LSVD_CEPH_DIR
  local env_file
  env_file="$(timeout 900 "$1/test/ceph/up.sh" up | tail -n 1)" || return 1
  # shellcheck disable=SC1090
  source "$env_file"
  export CEPH_CONF CEPH_KEYRING
}

# Stops the cluster ceph_own_cluster_up started and deletes its directory (test/ceph/down.sh: by pid file and command
# line only). Nothing to do when none was started.
ceph_own_cluster_down() {
  [ -n "${LSVD_CEPH_DIR:-}" ] && [ -d "$LSVD_CEPH_DIR" ] || return 0
  "$(dirname "${BASH_SOURCE[0]}")/../test/ceph/down.sh" || true
}
