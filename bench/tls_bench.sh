#!/usr/bin/env bash
# What TLS costs: the same clients against one `lsvd serve --tls on` (which serves plain and TLS clients alike), over
# TCP on 127.0.0.1, plain (nbd://) and TLS (nbds://, certificates made here with openssl), alternating run by run
# (the mode that goes first alternates too):
#   read    nbdcopy of the whole volume to null: (MiB/s)
#   write   nbdcopy of an image of pseudo-random data onto the volume (MiB/s)
#   rand4k  fio --ioengine=nbd 4 KiB random reads, QD16, RUNTIME seconds (IOPS)
# The volume is `lsvd import`ed from that image first, on a file backend in a temp dir on a real disk.
# With each figure, the server's CPU for it (user + system of the lsvd process, /proc/PID/stat): ms per MiB for the
# copies, us per request for fio. CPU per unit is the steadier figure on a shared machine: wall-clock rates move with
# the load, the work a request costs much less.
# Output: progress on stderr; per-run figures, medians, min..max, and TLS / plain per workload on stdout.
#
# Usage: bench/tls_bench.sh
# Env:   RUNS        runs per mode (default 3)
#        SIZE_MIB    volume and image size (default 128)
#        RUNTIME     seconds of each fio run (default 5)
#        TMP_PARENT  where the temp dir goes (default /var/tmp)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
lsvd="$root/dist/lsvd"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-128}"
runtime="${RUNTIME:-5}"
tmp_parent="${TMP_PARENT:-/var/tmp}"

log() { echo "$(date +%T) $*" >&2; }
die() {
  echo "tls_bench: $*" >&2
  exit 1
}
for tool in nbdcopy nbdinfo fio openssl python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[[ -x "$lsvd" ]] || die "$lsvd is missing: run 'npm run build' in $root first"

tmp="$(mktemp -d "$tmp_parent/lsvd-tls-bench.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Certificates: a CA, and a server certificate for localhost signed by it (the layout lsvd serve and libnbd read).
pki="$tmp/pki"
mkdir -p "$pki"
key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${key[@]}" -keyout "$pki/ca-key.pem" -out "$pki/ca-cert.pem" -days 1 -subj "/CN=lsvd bench CA" 2>/dev/null
openssl req "${key[@]}" -keyout "$pki/server-key.pem" -out "$pki/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca-cert.pem" -CAkey "$pki/ca-key.pem" -CAcreateserial \
  -out "$pki/server-cert.pem" -days 1 -extfile "$pki/server.ext" 2>/dev/null

log "image: $size_mib MiB of pseudo-random data"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$tmp/image"
"$lsvd" import "$tmp/image" "$tmp/backend/vol" >&2
"$lsvd" mkcache --volume "$tmp/backend/vol" --size 512m "$tmp/cache" >/dev/null

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$lsvd" serve --quiet --tls on --tls-certificates "$pki" --cache "$tmp/cache" --listen "127.0.0.1:$port" "$tmp/backend/vol" 2>"$tmp/serve.log" &
server_pid=$!
plain_uri="nbd://localhost:$port/"
# fio's nbd engine refuses tls-certificates= in a URI (local file access); libnbd also finds the CA certificate in
# $HOME/.pki/libnbd, so every client runs with HOME pointing there and the TLS URI names no file.
mkdir -p "$tmp/home/.pki/libnbd"
cp "$pki/ca-cert.pem" "$tmp/home/.pki/libnbd/"
export HOME="$tmp/home"
tls_uri="nbds://localhost:$port/"
for _ in $(seq 1 300); do nbdinfo --size "$plain_uri" >/dev/null 2>&1 && break; sleep 0.1; done
nbdinfo --size "$tls_uri" >/dev/null || die "no TLS connection: $(tail -5 "$tmp/serve.log")"

now() { python3 -c 'import time; print(time.monotonic())'; }
mib_per_s() { python3 -c "print(f'{$size_mib / ($2 - $1):.1f}')"; }
ticks_per_second="$(getconf CLK_TCK)"
# user + system clock ticks of the server process so far (fields 14 and 15 of /proc/PID/stat, after the comm field).
server_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$server_pid/stat"; }
# Server CPU between two tick counts, in ms per MiB copied (argument 3: MiB) or us per request (argument 3: requests).
cpu_ms_per_mib() { python3 -c "print(f'{($2 - $1) * 1000 / $ticks_per_second / $3:.2f}')"; }
cpu_us_per_request() { python3 -c "print(f'{($2 - $1) * 1e6 / $ticks_per_second / max($3, 1):.1f}')"; }

# Prints "MiB/s cpu-ms-per-MiB".
run_copy() {
  local start end ticks_before ticks_after
  ticks_before="$(server_ticks)"
  start="$(now)"
  nbdcopy "$1" "$2"
  end="$(now)"
  ticks_after="$(server_ticks)"
  echo "$(mib_per_s "$start" "$end") $(cpu_ms_per_mib "$ticks_before" "$ticks_after" "$size_mib")"
}
run_read() { run_copy "$1" null:; }
run_write() { run_copy "$tmp/image" "$1"; }

# Prints "IOPS cpu-us-per-request".
run_rand4k() {
  local ticks_before ticks_after iops
  ticks_before="$(server_ticks)"
  fio --name=rand4k --ioengine=nbd --uri="$1" --rw=randread --bs=4k --iodepth=16 --size="${size_mib}m" \
    --runtime="$runtime" --time_based --output-format=json --output="$tmp/fio.json" 2>"$tmp/fio.err" >&2 ||
    die "fio failed: $(tail -3 "$tmp/fio.err") $(tail -3 "$tmp/serve.log")"
  ticks_after="$(server_ticks)"
  iops="$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$tmp/fio.json")"
  echo "$iops $(cpu_us_per_request "$ticks_before" "$ticks_after" "$((iops * runtime))")"
}

declare -A figures
for run in $(seq 1 "$runs"); do
  if ((run % 2 == 1)); then order=(plain tls); else order=(tls plain); fi
  for mode in "${order[@]}"; do
    uri="$plain_uri"
    [[ "$mode" == tls ]] && uri="$tls_uri"
    out="$(run_read "$uri")"
    read -r read_rate read_cpu <<<"$out"
    out="$(run_write "$uri")"
    read -r write_rate write_cpu <<<"$out"
    out="$(run_rand4k "$uri")"
    read -r iops rand_cpu <<<"$out"
    figures[$mode,read]+="$read_rate "
    figures[$mode,read_cpu]+="$read_cpu "
    figures[$mode,write]+="$write_rate "
    figures[$mode,write_cpu]+="$write_cpu "
    figures[$mode,rand4k]+="$iops "
    figures[$mode,rand4k_cpu]+="$rand_cpu "
    log "run $run $mode: read $read_rate MiB/s ($read_cpu ms/MiB), write $write_rate MiB/s ($write_cpu ms/MiB), rand4k $iops IOPS ($rand_cpu us/request)"
  done
done
kill -TERM "$server_pid"
wait "$server_pid" || die "lsvd serve exited with $?: $(tail -5 "$tmp/serve.log")"
server_pid=""

summary() {
  python3 - "$@" <<'PY'
import statistics, sys
name, unit, plain, tls = sys.argv[1], sys.argv[2], [float(v) for v in sys.argv[3].split()], [float(v) for v in sys.argv[4].split()]
mp, mt = statistics.median(plain), statistics.median(tls)
print(f"{name:7} {unit:6} plain {' '.join(f'{v:g}' for v in plain)} median {mp:g} ({min(plain):g}..{max(plain):g})"
      f" | tls {' '.join(f'{v:g}' for v in tls)} median {mt:g} ({min(tls):g}..{max(tls):g}) | tls/plain {mt / mp:.2f}")
PY
}
summary read "MiB/s" "${figures[plain,read]}" "${figures[tls,read]}"
summary read "ms/MiB" "${figures[plain,read_cpu]}" "${figures[tls,read_cpu]}"
summary write "MiB/s" "${figures[plain,write]}" "${figures[tls,write]}"
summary write "ms/MiB" "${figures[plain,write_cpu]}" "${figures[tls,write_cpu]}"
summary rand4k "IOPS" "${figures[plain,rand4k]}" "${figures[tls,rand4k]}"
summary rand4k "us/req" "${figures[plain,rand4k_cpu]}" "${figures[tls,rand4k_cpu]}"
echo "(ms/MiB, us/req: the server process's CPU, user + system)"
echo "($size_mib MiB volume, file backend in $tmp_parent, fio ${runtime} s QD16, $runs runs per mode alternating, one lsvd serve --tls on)"
