#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with Node/npm and root:
# installs what is missing, type-checks, builds dist/lsvd, runs every test (the RADOS and S3 suites start their own
# single-node Ceph on 127.0.0.1), and ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test || { echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"

failed_steps=0
echo "== typecheck"
tsc --noEmit -p . || failed_steps=$((failed_steps + 1))
echo "== build"
npm run --silent build || failed_steps=$((failed_steps + 1))

echo "== bun test"
log=$(mktemp)
# The Ceph clusters the tests start live under this run's own directory (test/backend/_ceph.ts) and are stopped at
# the end, even if the run fails or is interrupted; nothing else running on the machine is reused or stopped.
LSVD_TEST_CEPH_ROOT=$(mktemp -d /tmp/lsvd-ceph-run.XXXXXX)
export LSVD_TEST_CEPH_ROOT
trap 'bash test/ceph/reap.sh --now "$LSVD_TEST_CEPH_ROOT" >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM
# A test without its own timeout gets 30 s, not bun's 5 s: CI machines are shared, and a test that hangs still ends.
bun test --timeout 30000 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
pass=$(grep -Eo '^ *[0-9]+ pass' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
fail=$(grep -Eo '^ *[0-9]+ fail' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
rm -f "$log"
bash test/ceph/reap.sh --now "$LSVD_TEST_CEPH_ROOT" >/dev/null 2>&1 || true
fail=$((fail + failed_steps))
if [ "$status" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
echo "${pass} passed, ${fail} failed"
[ "$fail" = 0 ]
