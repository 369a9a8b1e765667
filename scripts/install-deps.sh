#!/usr/bin/env bash
# Installs what lsvd needs on a Debian 12 machine, skipping what is already there.
#   scripts/install-deps.sh runtime   liburing2 (the binary's only library beyond libc/libstdc++)
#   scripts/install-deps.sh demo      runtime + NBD clients to talk to the demo (nbdinfo, fio)
#   scripts/install-deps.sh test      everything the test suite drives: NBD clients, qemu-utils, fio, nbdkit,
#                                     liburing headers, Ceph (mon, osd, radosgw) for the RADOS and S3 suites,
#                                     qemu-system-x86 + linux-image-cloud-amd64 + busybox-static for the VM boot
#                                     test, systemd (systemd-socket-activate, systemd-analyze) for the systemd tests,
#                                     prometheus (promtool checks the metrics a live server serves),
#                                     openssl (certificates for the TLS tests), util-linux-extra (fincore: what
#                                     the file backend's reads leave in the page cache)
# Then `npm ci` (JS packages from the committed lockfile). Needs root for apt-get.
set -euo pipefail
profile=${1:-runtime}

runtime_pkgs=(liburing2 libisal2 libstdc++6 ca-certificates)
demo_pkgs=(libnbd-bin fio)
test_pkgs=(libnbd-bin python3-libnbd nbdkit qemu-utils fio liburing-dev curl procps
           ceph-mon ceph-osd ceph-common radosgw librados2 librbd1
           qemu-system-x86 linux-image-cloud-amd64 busybox-static e2fsprogs systemd prometheus openssl
           util-linux-extra)

case "$profile" in
  runtime) pkgs=("${runtime_pkgs[@]}") ;;
  demo) pkgs=("${runtime_pkgs[@]}" "${demo_pkgs[@]}") ;;
  test) pkgs=("${runtime_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 runtime|demo|test" >&2; exit 2 ;;
esac

missing=()
for pkg in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
