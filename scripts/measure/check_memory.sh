#!/usr/bin/env bash
# Peak memory and time of `backup`, `check`, `prune --dry-run` and `restore`
# on repositories whose index names millions of blobs
# (benches/index_scaling.rs --packs: fake blobs in sparse pack files, one
# snapshot using every fourth blob). The backup stores a 60 MB file of
# numbers (new data: every chunk is looked up in the big index), check and
# prune then see that snapshot too, and restore writes it back.
#
#   bash scripts/measure/check_memory.sh [--keep] [WORKDIR] [BLOBS ...]
#
# Default: /tmp/cairn-check-memory, 1000000 5000000 20000000. CAIRN_BIN
# names the cairn binary (default: a release build in the shared target
# directory), INDEX_SCALING a built benches/index_scaling.rs (default: cargo
# bench builds it); CAIRN_ARGS adds arguments to both commands (e.g.
# --memory 64M).
# Prints one line per command and size: blobs, seconds, peak RSS in MiB,
# bytes per blob over the smallest size. The repositories are deleted after
# each size unless --keep.
set -euo pipefail
cd "$(dirname "$0")/../.."
keep=0
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
work=${1:-/tmp/cairn-check-memory}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 5000000 20000000)
. scripts/env.sh
if [ -z "${CAIRN_BIN:-}" ]; then
  cargo build --release --quiet --bin cairn
  CAIRN_BIN=$CARGO_TARGET_DIR/release/cairn
fi
mkdir -p "$work"
printf 'bench-password\n' >"$work/password"
mkdir -p "$work/src"
[ -s "$work/src/numbers.txt" ] || seq 1 8000000 >"$work/src/numbers.txt"
export CAIRN_PASSWORD_FILE=$work/password
unset CAIRN_PASSWORD CAIRN_PASSWORD_COMMAND

measure() { # label repo cache args...
  local label=$1 repo=$2 cache=$3
  shift 3
  sync
  /usr/bin/time -f '%e %M' -o "$work/time" \
    "$CAIRN_BIN" -r "$repo" --cache-dir "$cache" "$@" ${CAIRN_ARGS:-} >"$work/out" 2>&1 || true
  read -r secs kib <"$work/time"
  printf '%-16s %10s blobs  %7.2f s  %7.1f MiB  %s\n' "$label" "$n" "$secs" \
    "$(echo "$kib / 1024" | bc -l)" "$(tail -1 "$work/out" | cut -c1-70)"
}

for n in "${sizes[@]}"; do
  repo=$work/repo-$n cache=$work/cache-$n
  rm -rf "$repo" "$cache"
  if [ -n "${INDEX_SCALING:-}" ]; then
    "$INDEX_SCALING" "$repo" "$cache" "$work/password" "$n" --packs >&2
  else
    cargo bench --quiet --bench index_scaling -- "$repo" "$cache" "$work/password" "$n" --packs >&2
  fi
  measure backup "$repo" "$cache" backup "$work/src"
  measure check "$repo" "$cache" check
  measure "prune --dry-run" "$repo" "$cache" prune --dry-run
  rm -rf "$work/restored"
  measure restore "$repo" "$cache" restore latest --path "$work/src" --target "$work/restored"
  cmp "$work/src/numbers.txt" "$work/restored$work/src/numbers.txt" >&2 || echo "restore: wrong bytes" >&2
  rm -rf "$work/restored"
  [ $keep = 1 ] || rm -rf "$repo" "$cache"
done
