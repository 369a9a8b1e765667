#!/usr/bin/env bash
# Snapshot creation time against map size, up to 1M extents (bench/snapshot_bench.ts does the work and says what it
# measures). Runs from a temp dir on a real disk (O_DIRECT cache): LSVD_BENCH_DIR, default /var/tmp.
#
#   bench/snapshot_bench.sh [--extents 1000,10000,100000,1000000] [--repeat 5]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export LSVD_BENCH_DIR="${LSVD_BENCH_DIR:-/var/tmp}"
[[ "$(stat -f -c %T "$LSVD_BENCH_DIR")" != tmpfs ]] || { echo "snapshot_bench: $LSVD_BENCH_DIR is tmpfs: O_DIRECT needs a real disk" >&2; exit 1; }
cd "$root"
exec "$root/node_modules/.bin/bun" bench/snapshot_bench.ts "$@"
