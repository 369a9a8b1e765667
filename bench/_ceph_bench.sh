# Sourced by the benches that compare lsvd with RBD on the project's Ceph cluster (rbd_compare.sh,
# read_cache_rbd.sh), not run. The sourcing script sets CEPH_CONF, CEPH_TIMEOUT_S, LSVD_CEPH_POOL (from the cluster's
# env file) and SERVE_PID (the running `lsvd serve`, or empty).

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
