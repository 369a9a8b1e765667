#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine with Node/npm and root: install what is missing, build dist/lsvd,
# create a demo volume (file backend) and its cache under ./.lsvd-demo, and serve it over NBD on 127.0.0.1:10809.
# Ctrl-C stops the server cleanly (everything is flushed to the backend); running again reuses the volume.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh demo
npm run --silent build
dir=${LSVD_DEMO_DIR:-$PWD/.lsvd-demo}
mkdir -p "$dir/backend"
if [ ! -e "$dir/backend/demo" ]; then
  dist/lsvd mkdisk --size "${LSVD_DEMO_SIZE:-1g}" "$dir/backend/demo"
  dist/lsvd mkcache --volume "$dir/backend/demo" --size "${LSVD_DEMO_CACHE_SIZE:-256m}" "$dir/cache"
fi
port=${LSVD_DEMO_PORT:-10809}
cat <<TXT

lsvd demo volume: $dir/backend/demo (cache $dir/cache)
Reach it with, for example:
  nbdinfo nbd://127.0.0.1:$port
  fio --name=randwrite --ioengine=nbd --uri=nbd://127.0.0.1:$port --rw=randwrite --bs=4k --iodepth=32 --size=256m --runtime=10 --time_based
Stop with Ctrl-C (or SIGTERM): in-flight requests finish and everything is flushed to the backend.

TXT
exec dist/lsvd serve --volume "$dir/backend/demo" --cache "$dir/cache" --listen "127.0.0.1:$port"
