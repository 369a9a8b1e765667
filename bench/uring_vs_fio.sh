#!/usr/bin/env bash
# fio (io_uring, O_DIRECT) against lsvd's io_uring layer (bench/uring_bench.ts) with the same jobs on the same file,
# runs alternating so disk drift hits both alike. Prints each run, then medians and the ratio lsvd/fio per job.
# The bar: ratio >= 0.9 for 4 KiB random writes at QD32.
#
# Usage: bench/uring_vs_fio.sh [FILE] ; env SECONDS_PER_RUN (default 5), RUNS (default 3), SIZE_MIB (default 1024),
#        POLL_TURNS (uring_bench.ts --poll-turns: default 0, the cache device's setting; 64 polls as before).
# FILE must be on a filesystem that supports O_DIRECT (not tmpfs); it is filled once with zeros so neither engine
# pays for block allocation, and left in place for reuse (delete it yourself).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bun="$here/../node_modules/.bin/bun"
file="${1:-/var/tmp/lsvd-uring-bench.img}"
seconds="${SECONDS_PER_RUN:-5}"
runs="${RUNS:-3}"
size_mib="${SIZE_MIB:-1024}"
size_bytes=$((size_mib * 1024 * 1024))

command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 1; }

if [[ ! -f "$file" ]] || [[ "$(stat -c %s "$file")" -ne "$size_bytes" ]]; then
  echo "preparing $file ($size_mib MiB of zeros)" >&2
  dd if=/dev/zero of="$file" bs=1M count="$size_mib" oflag=direct status=none
fi

# fio JSON -> the same fields uring_bench.ts prints.
fio_run() { # rw bs qd
  fio --name=job --filename="$file" --ioengine=io_uring --direct=1 --rw="$1" --bs="$2" --iodepth="$3" \
    --size="$size_bytes" --time_based --runtime="$seconds" --norandommap --randrepeat=0 \
    --output-format=json |
    "$bun" -e 'const j = JSON.parse(await Bun.stdin.text()).jobs[0].write;
      console.log(JSON.stringify({ engine: "fio", iops: Math.round(j.iops), mibPerSecond: +(j.bw / 1024).toFixed(1) }))'
}

lsvd_run() { # mode bs qd
  "$bun" "$here/uring_bench.ts" --file "$file" --mode "$1" --block-bytes "$2" --queue-depth "$3" \
    --seconds "$seconds" --size-bytes "$size_bytes" --poll-turns "${POLL_TURNS:-0}"
}

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# name fio-rw lsvd-mode bs qd
jobs=(
  "randwrite-4k-qd32 randwrite randwrite 4096 32"
  "seqwrite-64k-qd8 write seqwrite 65536 8"
)
for job in "${jobs[@]}"; do
  read -r name fio_rw lsvd_mode bs qd <<<"$job"
  for ((run = 1; run <= runs; run++)); do
    # Alternate who goes first, so a slow phase of the disk does not always land on the same engine.
    if ((run % 2 == 1)); then order="fio lsvd"; else order="lsvd fio"; fi
    for engine in $order; do
      if [[ $engine == fio ]]; then line="$(fio_run "$fio_rw" "$bs" "$qd")"; else line="$(lsvd_run "$lsvd_mode" "$bs" "$qd")"; fi
      echo "$name run $run $line"
      echo "$name $line" >>"$results"
    done
  done
done

"$bun" -e '
const lines = (await Bun.file(process.argv[1]).text()).trim().split("\n");
const byJob = new Map();
for (const line of lines) {
  const space = line.indexOf(" ");
  const job = line.slice(0, space);
  const result = JSON.parse(line.slice(space + 1));
  const engine = result.engine === "fio" ? "fio" : "lsvd";
  if (!byJob.has(job)) byJob.set(job, { fio: [], lsvd: [] });
  byJob.get(job)[engine].push(result);
}
const median = (values) => { const s = [...values].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const summary = [];
for (const [job, { fio, lsvd }] of byJob) {
  const fioIops = median(fio.map((r) => r.iops));
  const lsvdIops = median(lsvd.map((r) => r.iops));
  summary.push({
    job,
    fioIopsMedian: fioIops,
    lsvdIopsMedian: lsvdIops,
    fioMibPerSecondMedian: median(fio.map((r) => r.mibPerSecond)),
    lsvdMibPerSecondMedian: median(lsvd.map((r) => r.mibPerSecond)),
    ratioLsvdOverFio: +(lsvdIops / fioIops).toFixed(3),
  });
}
console.log(JSON.stringify(summary, null, 2));
' "$results"
