#!/usr/bin/env bash
# cairn against restic and against `zstd -T2` alone on the four inputs of
# scripts/corpora.sh (a text-heavy SQL dump, a tarball of compressed files,
# a tree of small files, a Redis RDB), plus the tarball's next night:
# first-night stored bytes and backup time (issue 21, items 4 and 5).
#
#   bash scripts/bench.sh --corpora [--quick] [--reps N] [--levels 1,3] [--no-doc] [WORKDIR]
#
# Each rep runs the tools in turn, the order rotating from rep to rep
# (cairn restic zstd, restic zstd cairn, ...), each backup into a fresh
# repository (init is not timed), so every tool sees the same machine load;
# ratios are taken rep by rep (paired) and the table shows their medians.
# --levels gives cairn's `init --compression-level` values to compare
# (default: cairn's default only), each with `zstd -T2 -LEVEL` as its floor.
# The tree's floor is `tar -cf - tree | zstd -T2 -LEVEL`. Stored bytes are
# `du -sb` of the repository. The table goes between the corpora markers of
# docs/PERFORMANCE.md unless --no-doc.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 reps=5 levels="" write_doc=1 work=/tmp/cairn-bench-corpora
while [ $# -gt 0 ]; do
  case "$1" in
    --corpora) ;;
    --quick) quick=1 ;;
    --reps) reps=$2; shift ;;
    --levels) levels=$2; shift ;;
    --no-doc) write_doc=0 ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) work=$1 ;;
  esac
  shift
done
log() { printf '== %s\n' "$*" >&2; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
command -v restic >/dev/null && command -v zstd >/dev/null && [ -x /usr/bin/time ] || {
  sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic zstd time >/dev/null
}
if [ -n "${CAIRN_BIN:-}" ]; then
  cairn=$CAIRN_BIN
else
  . scripts/env.sh
  log "cargo build --release"
  cargo build --release --quiet --bin cairn
  cairn="$CARGO_TARGET_DIR/release/cairn"
fi
default_level=$(sed -n 's/^pub const ZSTD_LEVEL_DEFAULT: i32 = \(-\?[0-9]*\);/\1/p' src/engine/repository.rs)
[ -n "$levels" ] || levels=$default_level
IFS=, read -r -a level_list <<<"$levels"

corpora=$(bash scripts/corpora.sh $([ $quick = 1 ] && echo --quick) "$work/data" | tail -1)

export RESTIC_PASSWORD=bench-password
printf 'bench-password\n' >"$work/password"
export CAIRN_PASSWORD_FILE=$work/password
unset CAIRN_PASSWORD CAIRN_PASSWORD_COMMAND RESTIC_REPOSITORY
results=$work/results.tsv
: >"$results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)

# timed CORPUS CASE TOOL REP REPO|- CMD...: one run with /usr/bin/time; the
# input is read into the page cache first and earlier writes are flushed.
timed() {
  local corpus=$1 case=$2 tool=$3 rep=$4 repo=$5
  shift 5
  local t=$work/time.txt
  sync
  if ! /usr/bin/time -f %e -o "$t" "$@" >>"$work/run.log" 2>&1; then
    echo "FAILED: $corpus / $case / $tool: $*" >&2
    tail -5 "$work/run.log" >&2
    exit 1
  fi
  local size=0
  [ "$repo" != - ] && size=$(du -sb "$repo" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$corpus" "$case" "$tool" "$rep" "$(tail -1 "$t")" "$size" >>"$results"
}
stdin_of=(sh -c 'f=$1; shift; exec "$@" <"$f"' sh)

# One tool's first night (and, for the tarball, second night) of CORPUS.
run_tool() {
  local corpus=$1 tool=$2 rep=$3 input=$corpora/$4
  local repo=$work/repos/$corpus-$tool cache=$work/state/$tool
  rm -rf "$repo" "$cache"
  export CAIRN_CACHE_DIR=$cache
  case $tool in
    cairn-*)
      local level=${tool#cairn-zstd}
      "$cairn" -q -r "$repo" init --compression-level "$level" >>"$work/run.log"
      if [ "$corpus" = tree ]; then
        (cd "$input" && timed "$corpus" first "$tool" "$rep" "$repo" "$cairn" -q -r "$repo" backup .)
      else
        timed "$corpus" first "$tool" "$rep" "$repo" \
          "${stdin_of[@]}" "$input" "$cairn" -q -r "$repo" backup --stdin --stdin-filename "$4"
      fi
      if [ "$corpus" = tarball ]; then
        timed "$corpus" second "$tool" "$rep" "$repo" \
          "${stdin_of[@]}" "$corpora/usr-share-2.tar" "$cairn" -q -r "$repo" backup --stdin --stdin-filename "$4"
      fi ;;
    restic)
      restic -q -r "$repo" init >>"$work/run.log"
      if [ "$corpus" = tree ]; then
        (cd "$input" && timed "$corpus" first restic "$rep" "$repo" restic -q -r "$repo" --cache-dir "$cache" backup .)
      else
        timed "$corpus" first restic "$rep" "$repo" \
          "${stdin_of[@]}" "$input" restic -q -r "$repo" --cache-dir "$cache" backup --stdin --stdin-filename "$4"
      fi
      if [ "$corpus" = tarball ]; then
        timed "$corpus" second restic "$rep" "$repo" \
          "${stdin_of[@]}" "$corpora/usr-share-2.tar" restic -q -r "$repo" --cache-dir "$cache" backup --stdin --stdin-filename "$4"
      fi ;;
    zstd-*)
      local level=${tool#zstd-}
      if [ "$corpus" = tree ]; then
        (cd "$input" && timed "$corpus" first "$tool" "$rep" - sh -c "tar -cf - . | zstd -q -T2 $level -o $work/out.zst -f")
      else
        timed "$corpus" first "$tool" "$rep" - zstd -q -T2 "$level" "$input" -o "$work/out.zst" -f
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$corpus" bytes "$tool" "$rep" 0 "$(stat -c %s "$work/out.zst")" >>"$results"
      rm -f "$work/out.zst" ;;
  esac
  rm -rf "$repo" "$cache"
}

tools=(restic)
for l in "${level_list[@]}"; do tools+=("cairn-zstd$l" "zstd--$l"); done
mkdir -p "$work/repos" "$work/state"
for corpus in dump tarball tree rdb; do
  case $corpus in
    dump) input=dump.sql ;; tarball) input=usr-share.tar ;; tree) input=tree ;; rdb) input=dump.rdb ;;
  esac
  # Into the page cache before the first timed run.
  find "$corpora/$input" -type f -exec cat {} + >/dev/null
  [ $corpus = tarball ] && cat "$corpora/usr-share-2.tar" >/dev/null
  for rep in $(seq 1 "$reps"); do
    log "$corpus rep $rep/$reps"
    n=${#tools[@]}
    for i in $(seq 0 $((n - 1))); do
      run_tool "$corpus" "${tools[$(((i + rep) % n))]}" "$rep" "$input"
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -------------------------------------------------------------------
input_sizes=$(for f in dump.sql usr-share.tar tree dump.rdb usr-share-2.tar; do
  printf '%s=%s ' "$f" "$(du -sb --apparent-size "$corpora/$f" | cut -f1)"; done)
table=$(python3 - "$results" "$input_sizes" <<'PY'
import collections, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
sizes = dict(kv.split("=") for kv in sys.argv[2].split())
names = {"dump": "dump.sql", "tarball": "usr-share.tar", "tree": "tree", "rdb": "dump.rdb"}
t = collections.defaultdict(dict)   # (corpus, case, tool) -> rep -> secs
b = collections.defaultdict(dict)   # (corpus, case, tool) -> rep -> bytes
for corpus, case, tool, rep, secs, size in rows:
    if case == "bytes":
        b[(corpus, "first", tool)][rep] = int(size)
    else:
        t[(corpus, case, tool)][rep] = float(secs)
        b[(corpus, case, tool)][rep] = int(size)
med = lambda d: statistics.median(d.values())
def ratio(a, c):
    return statistics.median(a[r] / c[r] for r in a if r in c and c[r] > 0)
out = ["| corpus | night | tool | seconds (median) | stored MB | bytes vs restic | time vs restic (paired median) | time vs zstd -T2 same level |",
       "|---|---|---|---:|---:|---:|---:|---:|"]
cairns = sorted({k[2] for k in t if k[2].startswith("cairn-")})
for corpus in ["dump", "tarball", "tree", "rdb"]:
    size = int(sizes[names[corpus]])
    for case in (["first", "second"] if corpus == "tarball" else ["first"]):
        label = {"first": "first", "second": "second (~1% changed)"}[case]
        rk = (corpus, case, "restic")
        out.append(f"| {corpus} ({size / 1e6:.0f} MB) | {label} | restic | {med(t[rk]):.2f} | {med(b[rk]) / 1e6:.1f} | | | |")
        for c in cairns:
            level = c[len("cairn-zstd"):]
            k, z = (corpus, case, c), (corpus, "first", f"zstd--{level}")
            added = lambda key: {r: v - (b[(corpus, 'first', key[2])][r] if case == "second" else 0) for r, v in b[key].items()}
            bytes_r = ratio(added(k), added(rk))
            zcol = f"{ratio(t[k], t[z]):.2f}x" if case == "first" else ""
            out.append(f"| | {label} | cairn, zstd {level} | {med(t[k]):.2f} | {med(b[k]) / 1e6:.1f} | {bytes_r:.2f}x | {ratio(t[k], t[rk]):.2f}x | {zcol} |")
        if case == "first":
            for c in cairns:
                level = c[len("cairn-zstd"):]
                z = (corpus, "first", f"zstd--{level}")
                out.append(f"| | | zstd -T2 -{level} (whole input) | {med(t[z]):.2f} | {med(b[z]) / 1e6:.1f} | {med(b[z]) / med(b[rk]):.2f}x | {ratio(t[z], t[rk]):.2f}x | |")
print("\n".join(out))
PY
)
header="Run: \`bash scripts/bench.sh --corpora --reps $reps --levels $levels\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(( $(date +%s) - started )) s; load average $load_start at the start, $load_end at the end (1, 5, 15 min). $(nproc) CPUs; restic $(restic version | cut -d' ' -f2), zstd $(zstd -V | grep -o 'v[0-9.]*'). Inputs: ${input_sizes% }."
printf '%s\n\n%s\n' "$header" "$table" | tee "$work/table.md"
if [ $write_doc = 1 ]; then
  python3 - docs/PERFORMANCE.md "$work/table.md" <<'PY'
import sys
doc, table = open(sys.argv[1]).read(), open(sys.argv[2]).read().strip()
b, e = "<!-- corpora:begin -->", "<!-- corpora:end -->"
if b in doc and e in doc:
    head, rest = doc.split(b, 1)
    doc = head + b + "\n" + table + "\n" + e + rest.split(e, 1)[1]
    open(sys.argv[1], "w").write(doc)
else:
    print("docs/PERFORMANCE.md has no corpora markers: table not written", file=sys.stderr)
PY
fi
