#!/usr/bin/env bash
# Chunk sizes and zstd levels against the nightly dumps of scripts/bench.sh:
# for each setting, a fresh repository gets nights 1..N by stdin, and the
# repository size after each night and the time of each backup are printed.
#
#   bash scripts/measure/sweep.sh [WORKDIR]    (default /tmp/cairn-bench; run bench.sh --nights 5 --data-only first)
#
# Settings: "MIN,AVG,MAX level" pairs in SWEEP (KiB), default below.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/cairn-bench}
cairn=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}/release/cairn}
nights=$(cat "$work/data/.done-full" 2>/dev/null || echo 0)
[ "$nights" -ge 2 ] || { echo "no dumps in $work/data: run scripts/bench.sh --nights 5 --data-only" >&2; exit 1; }
SWEEP=${SWEEP:-"16,64,256:1 16,64,256:3 32,128,512:3 64,256,1024:3 64,256,1024:1 512,2048,8192:3"}
printf 'bench-password\n' >"$work/password"
export CAIRN_PASSWORD_FILE=$work/password
echo "| chunks min,avg,max KiB | zstd | night 1 MB | after $nights nights MB | per later night MB | backup s (night 1; mean of later) |"
echo "|---|---:|---:|---:|---:|---|"
for setting in $SWEEP; do
  sizes=${setting%:*} level=${setting#*:}
  r=$work/sweep/repo c=$work/sweep/cache
  rm -rf "$work/sweep"
  mkdir -p "$work/sweep"
  "$cairn" -q -r "$r" --cache-dir "$c" init --chunk-sizes "$sizes" --compression-level "$level"
  first_mb="" first_s="" later_s=0
  for n in $(seq 1 "$nights"); do
    start=$(date +%s.%N)
    "$cairn" -q -r "$r" --cache-dir "$c" backup --stdin --stdin-filename dump.sql <"$work/data/night$n.sql"
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    size=$(du -sb "$r" | cut -f1)
    if [ "$n" = 1 ]; then first_mb=$((size / 1000000)) first_s=$secs; else later_s=$(echo "$later_s + $secs" | bc); fi
  done
  total_mb=$((size / 1000000))
  per_night=$(((total_mb - first_mb) / (nights - 1)))
  printf '| %s | %s | %s | %s | %s | %.2f; %.2f |\n' "$sizes" "$level" "$first_mb" "$total_mb" "$per_night" "$first_s" "$(echo "$later_s / ($nights - 1)" | bc -l)"
done
rm -rf "$work/sweep"
