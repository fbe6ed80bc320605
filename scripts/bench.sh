#!/usr/bin/env bash
# cairn side by side with restic and borg (Debian's packages) on the same
# data, in one run: wall time and peak RSS (/usr/bin/time -v) and repository
# size (du -sb), plus two floors (zstd -3 -T0 and b3sum of the dump).
#
#   bash scripts/bench.sh [--quick] [--reps N] [--nights N] [--scaling [BLOBS]] [--scaling-only]
#                          [--no-doc] [--data-only] [--report-only] [WORKDIR]
#   bash scripts/bench.sh --mount-only [--quick] [--full-tree] [--reps N] [WORKDIR]
#
# --report-only renders the table again from WORKDIR/results.tsv (same options);
# --scaling-only (with --scaling) redoes only the scaling rows and keeps the others.
# --mount-only runs only the mount rows (cat of the dump and ls -lR of the
# tree through cairn mount and restic mount, against cairn dump and cairn
# ls -l), on repositories made once in WORKDIR/mount-repos, and prints
# them (not written to docs/PERFORMANCE.md). --full-tree uses the full
# mode's tree (40,000+ files) in --quick mode too.
#
# WORKDIR (default /tmp/cairn-bench) holds the generated data, the
# repositories and the raw results; data is generated once and reused
# (delete WORKDIR/data to regenerate). The table is printed and written
# between the markers in docs/PERFORMANCE.md (unless --no-doc).
#
# Data: (a) plain SQL dumps (pg_dump -Fp) of a throwaway PostgreSQL 15
# cluster: pgbench -i plus the text-heavy tables of scripts/measure/gen_shop.sql,
# then each later night changes ~1% of the rows, ~90% of them among the newest
# 5% of ids (updates, inserts, deletes; see night_sql below); (b) a tree of
# real files copied from /usr (40,000+ files in the full mode).
#
# Stream cases redirect the dump into standard input. Every repository-mutating sequence (init, first backup, unchanged
# re-backup, second night, ...) runs --reps times on fresh repositories, and
# each figure is the best of the reps; restore, check and the floors run
# --reps times on the final repositories. Page cache is warm for every tool.
#
# --nights N backs up N nightly dumps (default 2), so the repository sizes
# after N nights can be compared. --scaling also backs up the first dump
# into a repository whose index already names BLOBS blobs (default 5
# million; made cheaply by benches/index_scaling.rs) and into an empty one,
# to compare cairn's peak memory.
#
# --s3 runs the object-storage mode instead (scripts/bench_s3.sh: cairn and
# restic on one Garage server started on a free loopback port).
# --corpora runs the compression comparison instead (scripts/bench_corpora.sh:
# cairn, restic and zstd -T2 alone on the four inputs of scripts/corpora.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
. scripts/bench_lib.sh
for arg in "$@"; do
  [ "$arg" = --s3 ] && exec bash scripts/bench_s3.sh "$@"
  [ "$arg" = --corpora ] && exec bash scripts/bench_corpora.sh "$@"
done

quick=0 data_only=0 report_only=0 scaling_only=0 scaling=0 reps="" nights=2 write_doc=1 work=/tmp/cairn-bench
mount_only=0 full_tree=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --reps) reps=$2; shift ;;
    --nights) nights=$2; shift ;;
    --no-doc) write_doc=0 ;;
    --data-only) data_only=1 ;;
    --report-only) report_only=1 ;;
    --scaling-only) scaling_only=1 ;;
    --mount-only) mount_only=1 write_doc=0 ;;
    --full-tree) full_tree=1 ;;
    --scaling)
      scaling=5000000
      if [ $# -gt 1 ] && [[ $2 =~ ^[0-9]+$ ]]; then scaling=$2; shift; fi ;;
    -h|--help) sed -n 2,36p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) work=$1 ;;
  esac
  shift
done
[ "$nights" -ge 2 ] || { echo "--nights must be at least 2" >&2; exit 2; }
if [ -z "$reps" ]; then reps=$([ $quick = 1 ] && echo 3 || echo 2); fi
mode=$([ $quick = 1 ] && echo quick || echo full)
mkdir -p "$work"
work=$(cd "$work" && pwd)
chmod 755 "$work"

log() { printf '== %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need_pkgs=()
command -v restic >/dev/null || need_pkgs+=(restic)
command -v borg >/dev/null || need_pkgs+=(borgbackup)
command -v b3sum >/dev/null || need_pkgs+=(b3sum)
command -v zstd >/dev/null || need_pkgs+=(zstd)
[ -x /usr/bin/time ] || need_pkgs+=(time)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_pkgs+=(postgresql-15 postgresql-client-15)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The shared target directory, also for `cargo bench` (--scaling) when
# CAIRN_BIN is given: without it cargo would build RocksDB again in ./target.
[ $data_only = 1 ] || . scripts/env.sh
if [ $data_only = 1 ]; then
  cairn=""
elif [ -n "${CAIRN_BIN:-}" ]; then
  cairn=$CAIRN_BIN
else
  log "cargo build --release (the first build compiles RocksDB: ~16 min on 2 cores)"
  cargo build --release --quiet --bin cairn
  cairn="$CARGO_TARGET_DIR/release/cairn"
fi

# --- data --------------------------------------------------------------------
data=$work/data
if [ $quick = 1 ]; then
  pgscale=3 customers=60000 orders=150000
  tree_dirs=(/usr/share/doc /usr/include)
else
  pgscale=20 customers=600000 orders=1500000
fi
if [ $quick = 0 ] || [ $full_tree = 1 ]; then
  tree_dirs=(/usr/share/doc /usr/share/man /usr/include /usr/lib/python3.11 /usr/share/locale
             /usr/share/perl /usr/share/zoneinfo /usr/share/i18n)
fi
stamp="$data/.done-$mode"  # holds the number of nights generated
# Which directories the tree holds (it is copied again when they change).
tree_stamp="$data/.tree-$(echo "${tree_dirs[*]}" | md5sum | cut -c1-8)"

# One night of changes, ~1% of the rows of each table: ~90% of the changed
# rows among the newest 5% of ids (recent activity), ~10% anywhere; new
# rows appended; a few recent orders and customers deleted. Updated rows
# move under MVCC, so in dump order they also vanish from their old place.
night_sql() {
  local night=$1
  local accounts=$((pgscale * 100000))
  local a_new=$((accounts * 95 / 100)) c_new=$((customers * 95 / 100)) o_new=$((orders * 95 / 100))
  local history=$((pgscale * 250)) c_ins=$((customers / 600)) o_ins=$((orders / 200))
  cat <<SQL
SELECT setseed(0.$((1000 + night)));
UPDATE pgbench_accounts SET abalance = abalance + (random()*10000)::int - 5000
  WHERE (aid > $a_new AND random() < 0.18) OR random() < 0.001;
UPDATE pgbench_tellers SET tbalance = tbalance + 17 WHERE random() < 0.10;
UPDATE pgbench_branches SET bbalance = bbalance + 99;
INSERT INTO pgbench_history (tid,bid,aid,delta,mtime)
  SELECT 1+(random()*$((pgscale * 10 - 1)))::int, 1+(random()*$((pgscale - 1)))::int,
         1+(random()*$((accounts - 1)))::int, (random()*10000)::int-5000,
         timestamp '2026-01-01' + $night * interval '1 day' + g * interval '1 second'
  FROM generate_series(1,$history) g;
UPDATE customers SET prefs = jsonb_set(prefs, '{last_login_ip}', to_jsonb((floor(random()*223)+1)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int))
  WHERE (id > $c_new AND random() < 0.144) OR random() < 0.0008;
UPDATE customers SET email = replace(email, '@', '+n$night@') WHERE (id > $c_new AND random() < 0.036) OR random() < 0.0002;
UPDATE orders SET status = CASE status WHEN 'placed' THEN 'paid' WHEN 'paid' THEN 'shipped' WHEN 'shipped' THEN 'delivered' ELSE 'returned' END
  WHERE (id > $o_new AND random() < 0.18) OR random() < 0.001;
INSERT INTO customers (first_name,last_name,email,phone,street,city,postcode,country,created_at,prefs)
  SELECT 'New','Customer'||g, 'new.customer'||g||'.n$night@example.com', '+1-555-'||lpad(g::text,7,'0'), g||' Station Road','Leeds','12345','GB',
         timestamptz '2026-01-01' + $night * interval '1 day', '{"lang":"en","tier":"free","tags":[],"newsletter":true}'
  FROM generate_series(1,$c_ins) g;
INSERT INTO orders (customer_id,status,placed_at,total,currency,items,shipping_note)
  SELECT 1+floor(random()*$c_new)::int, 'placed', timestamptz '2026-01-01' + $night * interval '1 day' + g * interval '1 second',
    round((5+random()*495)::numeric,2), 'EUR',
    jsonb_build_array(jsonb_build_object('sku','SKU-'||lpad(floor(random()*99999)::int::text,5,'0'),'name','Desk lamp','qty',1,'unit_price',39.90)), NULL
  FROM generate_series(1,$o_ins) g;
DELETE FROM orders WHERE (id > $o_new AND random() < 0.018) OR random() < 0.0001;
DELETE FROM customers c WHERE id > $c_new AND random() < 0.04 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id);
SQL
}

generate_dumps() {
  # Globals, not locals: the EXIT trap below needs them.
  pg=$work/pg pgbin=/usr/lib/postgresql/15/bin port=54337 as=()
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: run the cluster as the postgres user.
    as=(runuser -u postgres --)
  fi
  # A cluster left running by an interrupted run would shut ours down.
  [ -e "$pg/db/postmaster.pid" ] && "${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg"
  mkdir -p "$pg/sock"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$pg"
  "${as[@]}" "$pgbin/initdb" -D "$pg/db" -A trust -U postgres --no-sync >"$work/pg.log" 2>&1
  "${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -l "$pg/server.log" -w \
    -o "-p $port -k $pg/sock -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=8GB" \
    start >>"$work/pg.log"
  local conn=(-h "$pg/sock" -p $port -U postgres)
  trap '"${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -m immediate stop >/dev/null 2>&1 || true' EXIT
  "$pgbin/createdb" "${conn[@]}" shop
  log "pgbench -i -s $pgscale"
  "$pgbin/pgbench" "${conn[@]}" -i -q -s $pgscale shop >>"$work/pg.log" 2>&1
  log "text-heavy tables: $customers customers, $orders orders (gen_shop.sql)"
  sed -e "s/generate_series(1,600000)/generate_series(1,$customers)/" \
      -e "s/generate_series(1,1500000)/generate_series(1,$orders)/" \
      -e "s/random()\*600000/random()*$customers/" \
      scripts/measure/gen_shop.sql | "$pgbin/psql" "${conn[@]}" -q -v ON_ERROR_STOP=1 shop >>"$work/pg.log"
  "$pgbin/pg_dump" "${conn[@]}" -Fp shop >"$data/night1.sql"
  for n in $(seq 2 "$nights"); do
    log "night $n: ~1% of the rows change"
    night_sql "$n" | "$pgbin/psql" "${conn[@]}" -q -v ON_ERROR_STOP=1 shop >>"$work/pg.log"
    "$pgbin/pg_dump" "${conn[@]}" -Fp shop >"$data/night$n.sql"
  done
  "${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -m fast stop >>"$work/pg.log"
  trap - EXIT
  rm -rf "$pg"
}

if [ "$(cat "$stamp" 2>/dev/null || echo 0)" -lt "$nights" ]; then
  rm -rf "$data"
  mkdir -p "$data/tree"
  started=$(date +%s)
  generate_dumps
  log "data generated in $(($(date +%s) - started)) s"
  echo "$nights" >"$stamp"
fi
if [ ! -e "$tree_stamp" ]; then
  log "file tree: copying ${tree_dirs[*]}"
  rm -rf "$data/tree" "$data"/.tree-*
  mkdir -p "$data/tree"
  for d in "${tree_dirs[@]}"; do
    [ -d "$d" ] && cp -a "$d" "$data/tree/$(echo "${d#/}" | tr / _)"
  done
  touch "$tree_stamp"
fi
dump1=$data/night1.sql
dump1_bytes=$(stat -c %s "$dump1")
tree_bytes=$(du -sb --apparent-size "$data/tree" | cut -f1)
tree_files=$(find "$data/tree" -type f | wc -l)
log "dump $((dump1_bytes / 1000000)) MB; tree $tree_files files, $((tree_bytes / 1000000)) MB"
[ $data_only = 1 ] && exit 0

# --- measuring -----------------------------------------------------------------
results=$work/results.tsv
[ $mount_only = 1 ] && results=$work/results-mount.tsv
if [ $scaling_only = 1 ]; then
  grep -v '^scaling:' "$results" >"$results.tmp" || true
  mv "$results.tmp" "$results"
elif [ $report_only = 0 ]; then
  : >"$results"
fi
export RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_BASE_DIR=$work/state/borg BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
printf 'bench-password\n' >"$work/password"
export CAIRN_PASSWORD_FILE=$work/password CAIRN_CACHE_DIR=$work/state/cairn-cache
restic_cache=$work/state/restic-cache
unset CAIRN_PASSWORD CAIRN_PASSWORD_COMMAND RESTIC_REPOSITORY BORG_REPO

# measure CASE TOOL INPUT_BYTES REPO|- [< input] CMD...: one timed run,
# appended to results.tsv as case, tool, seconds, peak RSS KiB, bytes, repo bytes.
measure() {
  local case=$1 tool=$2 bytes=$3 repo=$4
  shift 4
  local t=$work/time.txt
  # Read the input (or the repository) into the page cache first: this
  # VM's kernel reclaims cold pages (DAMON), and whichever tool ran first
  # after a pause read from disk (cairn's tree backup: 1.7-1.9 s warm, 4.4 s
  # in a second rep, while restic right after it found the files cached).
  # Every tool's own cache ($work/state) too: cairn's restore once took
  # 1.5 s instead of 0.6 s reading its cold index cache from disk. Then
  # flush what the previous command wrote, so no tool pays for the previous
  # one's writeback.
  local w
  for w in ${warm:-} "$work/state"; do
    find "$w" -type f -exec cat {} + >/dev/null 2>&1 || true
  done
  sync
  # Every tool gets the same host-backed free memory (scripts/bench_lib.sh).
  fresh_memory "$work"
  local secs rss size=0 timing
  if ! timing=$(timed "$t" "$work/run.log" "$@"); then
    echo "FAILED: $case / $tool: $*" >&2
    return 1
  fi
  read -r secs rss <<<"$timing"
  [ "$repo" != - ] && size=$(du -sb "$repo" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$tool" "$secs" "$rss" "$bytes" "$size" >>"$results"
}
# Runs CMD with FILE as its standard input (a redirection, not a pipe:
# on this VM a pipe alone moves only ~600 MB/s, which would hide the tools'
# differences; every tool still reads the bytes with read(2) from stdin).
# exec, so that the RSS measured is CMD's.
stdin_of=(sh -c 'f=$1; shift; exec "$@" <"$f"' sh)

repos=$work/repos
run_sequence() {
  rm -rf "$repos" "$work/state"
  mkdir -p "$repos" "$work/state"
  local n night_bytes tree=$data/tree
  for tool in cairn restic borg; do
    local r=$repos/dump-$tool t=$repos/tree-$tool
    case $tool in
      cairn) "$cairn" -q -r "$r" init >>"$work/run.log"; "$cairn" -q -r "$t" init >>"$work/run.log" ;;
      restic) restic -q -r "$r" init >>"$work/run.log"; restic -q -r "$t" init >>"$work/run.log" ;;
      borg) borg init -e repokey "$r" >>"$work/run.log" 2>&1; borg init -e repokey "$t" >>"$work/run.log" 2>&1 ;;
    esac
  done
  for n in $(seq 1 "$nights"); do
    local dump=$data/night$n.sql
    warm=$dump
    night_bytes=$(stat -c %s "$dump")
    local label="dump night $n (stdin)"
    [ $n = 1 ] && label="dump first backup (stdin)"
    [ $n = 2 ] && label="dump second night (stdin)"
    measure "$label" cairn "$night_bytes" "$repos/dump-cairn" \
      "${stdin_of[@]}" "$dump" "$cairn" -q -r "$repos/dump-cairn" backup --stdin --stdin-filename dump.sql
    measure "$label" restic "$night_bytes" "$repos/dump-restic" \
      "${stdin_of[@]}" "$dump" restic -q -r "$repos/dump-restic" --cache-dir "$restic_cache" backup --stdin --stdin-filename dump.sql
    measure "$label" borg "$night_bytes" "$repos/dump-borg" \
      "${stdin_of[@]}" "$dump" borg create --compression zstd,3 --stdin-name dump.sql "$repos/dump-borg::night$n" -
    if [ $n = 1 ]; then
      label="dump unchanged re-backup (stdin)"
      measure "$label" cairn "$night_bytes" "$repos/dump-cairn" \
        "${stdin_of[@]}" "$dump" "$cairn" -q -r "$repos/dump-cairn" backup --stdin --stdin-filename dump.sql
      measure "$label" restic "$night_bytes" "$repos/dump-restic" \
        "${stdin_of[@]}" "$dump" restic -q -r "$repos/dump-restic" --cache-dir "$restic_cache" backup --stdin --stdin-filename dump.sql
      measure "$label" borg "$night_bytes" "$repos/dump-borg" \
        "${stdin_of[@]}" "$dump" borg create --compression zstd,3 --stdin-name dump.sql "$repos/dump-borg::night1-again" -
    fi
  done
  warm=$tree
  for round in first unchanged; do
    local label="tree first backup"
    [ $round = unchanged ] && label="tree unchanged re-backup"
    measure "$label" cairn "$tree_bytes" "$repos/tree-cairn" "$cairn" -q -r "$repos/tree-cairn" backup "$tree"
    measure "$label" restic "$tree_bytes" "$repos/tree-restic" \
      restic -q -r "$repos/tree-restic" --cache-dir "$restic_cache" backup "$tree"
    measure "$label" borg "$tree_bytes" "$repos/tree-borg" \
      borg create --compression zstd,3 "$repos/tree-borg::$round" "$tree"
  done
}

# The last night's dump, restored from each tool's dump repository.
restore_and_check() {
  local last=$data/night$nights.sql last_bytes out=$work/restore
  last_bytes=$(stat -c %s "$last")
  rm -rf "$out"
  mkdir -p "$out"
  warm=$repos/dump-cairn
  measure "dump restore" cairn "$last_bytes" - "$cairn" -q -r "$repos/dump-cairn" restore latest --target "$out/cairn"
  warm=$repos/dump-restic
  measure "dump restore" restic "$last_bytes" - \
    restic -q -r "$repos/dump-restic" --cache-dir "$restic_cache" restore latest --target "$out/restic"
  mkdir -p "$out/borg"
  warm=$repos/dump-borg
  measure "dump restore" borg "$last_bytes" - \
    sh -c 'cd "$1" && exec borg extract "$2"' sh "$out/borg" "$repos/dump-borg::night$nights"
  for f in "$out/cairn/dump.sql" "$out/restic/dump.sql" "$out/borg/dump.sql"; do
    cmp -s "$last" "$f" || { echo "restore mismatch: $f" >&2; exit 1; }
  done
  rm -rf "$out"
  local size
  size=$(du -sb "$repos/dump-cairn" | cut -f1)
  warm=$repos/dump-cairn
  measure "dump check --read-data" cairn "$size" - "$cairn" -q -r "$repos/dump-cairn" check --read-data
  size=$(du -sb "$repos/dump-restic" | cut -f1)
  warm=$repos/dump-restic
  measure "dump check --read-data" restic "$size" - \
    restic -q -r "$repos/dump-restic" --cache-dir "$restic_cache" check --read-data
  size=$(du -sb "$repos/dump-borg" | cut -f1)
  warm=$repos/dump-borg
  measure "dump check --read-data" borg "$size" - borg check --verify-data "$repos/dump-borg"
  warm=$dump1
  measure "floor: compress dump" "zstd -3 -T0" "$dump1_bytes" - sh -c 'exec zstd -q -3 -T0 -c "$1" >/dev/null' sh "$dump1"
  measure "floor: hash dump" "b3sum" "$dump1_bytes" - b3sum --no-names "$dump1"
}

# cairn mount against cairn dump / cairn ls -l, and against restic mount:
# `cat` of the last night's dump through each mount and `ls -lR` of the tree
# snapshot through it. Mounting is not timed (the mount is up before the
# measured command starts); the peak RSS recorded for a mount row is the
# mount process's (VmHWM), not cat's or ls's.
mnt_pid=""
mount_up() {  # TOOL REPO: mounts on $work/mnt in the background
  local tool=$1 repo=$2 mnt=$work/mnt i
  mkdir -p "$mnt"
  case $tool in
    cairn) "$cairn" -q -r "$repo" mount "$mnt" >>"$work/run.log" 2>&1 & ;;
    restic) restic -q -r "$repo" --cache-dir "$restic_cache" mount "$mnt" >>"$work/run.log" 2>&1 & ;;
  esac
  mnt_pid=$!
  for i in $(seq 1 300); do
    [ -d "$mnt/snapshots" ] && return 0
    sleep 0.1
  done
  echo "FAILED: $tool mount of $repo did not appear" >&2
  return 1
}
mount_down() {  # records the mount's peak RSS into the last results row
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$mnt_pid/status" 2>/dev/null || echo 0)
  kill -INT "$mnt_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$mnt_pid" 2>/dev/null || break; sleep 0.1; done
  fusermount3 -u -z "$work/mnt" 2>/dev/null || true
  awk -F'\t' -v OFS='\t' -v r="${rss:-0}" 'NR==n {$4=r} {print}' n="$(wc -l <"$results")" "$results" >"$results.tmp"
  mv "$results.tmp" "$results"
}
mount_rows() {
  local last=$data/night$nights.sql last_bytes mnt=$work/mnt tool
  last_bytes=$(stat -c %s "$last")
  warm=$repos/dump-cairn
  measure "dump cat: cairn dump" cairn "$last_bytes" - \
    sh -c 'exec "$1" -q -r "$2" dump latest dump.sql >/dev/null' sh "$cairn" "$repos/dump-cairn"
  warm=$repos/tree-cairn
  measure "tree listing: cairn ls -l" cairn "$tree_bytes" - \
    sh -c 'exec "$1" -q -r "$2" ls -l latest >/dev/null' sh "$cairn" "$repos/tree-cairn"
  for tool in cairn restic; do
    warm=$repos/dump-$tool
    mount_up "$tool" "$repos/dump-$tool" || continue
    measure "dump cat through mount" "$tool" "$last_bytes" - \
      sh -c 'exec cat "$1"/snapshots/latest/dump.sql >/dev/null' sh "$mnt"
    mount_down
    warm=$repos/tree-$tool
    mount_up "$tool" "$repos/tree-$tool" || continue
    measure "tree ls -lR through mount" "$tool" "$tree_bytes" - \
      sh -c 'exec ls -lR "$1"/snapshots/latest/ >/dev/null' sh "$mnt"
    mount_down
  done
}

# --mount-only: the mount rows alone, on repositories holding the last
# night's dump and the tree (made once, not timed), then a summary of the
# ratios the issue's targets are about.
if [ $mount_only = 1 ]; then
  : >"$work/run.log"
  : >"$results"
  repos=$work/mount-repos
  made="$repos/.made-$(basename "$tree_stamp")-$nights"
  if [ ! -e "$made" ]; then
    log "mount-only: repositories (not timed)"
    rm -rf "$repos" "$work/state"
    mkdir -p "$repos" "$work/state"
    last=$data/night$nights.sql
    "$cairn" -q -r "$repos/dump-cairn" init >>"$work/run.log"
    "$cairn" -q -r "$repos/tree-cairn" init >>"$work/run.log"
    "$cairn" -q -r "$repos/dump-cairn" backup --stdin --stdin-filename dump.sql <"$last" >>"$work/run.log"
    "$cairn" -q -r "$repos/tree-cairn" backup "$data/tree" >>"$work/run.log"
    restic -q -r "$repos/dump-restic" init >>"$work/run.log"
    restic -q -r "$repos/tree-restic" init >>"$work/run.log"
    restic -q -r "$repos/dump-restic" --cache-dir "$restic_cache" backup --stdin --stdin-filename dump.sql <"$last" >>"$work/run.log"
    restic -q -r "$repos/tree-restic" --cache-dir "$restic_cache" backup "$data/tree" >>"$work/run.log"
    touch "$made"
  fi
  for rep in $(seq 1 "$reps"); do
    log "rep $rep/$reps: mount"
    mount_rows
  done
  cut -d' ' -f1-3 /proc/loadavg >"$work/loadavg"
  python3 - "$results" "$(cat "$work/loadavg")" "$tree_files" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
rss = collections.defaultdict(int)
for line in open(sys.argv[1]):
    case, tool, secs, kib, nbytes, _ = line.rstrip("\n").split("\t")
    rows[(case, tool)].append(float(secs))
    rss[(case, tool)] = max(rss[(case, tool)], int(kib))
med = {k: statistics.median(v) for k, v in rows.items()}
print("| case | tool | seconds (median) | runs | peak RSS MiB |")
print("|---|---|---:|---:|---:|")
for (case, tool), v in rows.items():
    print(f"| {case} | {tool} | {med[(case, tool)]:.2f} | {len(v)} | {rss[(case, tool)] / 1024:.0f} |")
def ratio(a, b):
    return f"{med[a] / med[b]:.2f}" if a in med and b in med and med[b] > 0 else "n/a"
cat, dump = ("dump cat through mount", "cairn"), ("dump cat: cairn dump", "cairn")
print(f"\ncat through cairn mount / cairn dump: {ratio(cat, dump)}x the time (target <= 1.43)")
print(f"restic mount / cairn mount (cat): {ratio(('dump cat through mount', 'restic'), cat)}x the time (target >= 2)")
ls, lsl = ("tree ls -lR through mount", "cairn"), ("tree listing: cairn ls -l", "cairn")
print(f"ls -lR through cairn mount / cairn ls -l ({sys.argv[3]} files): {ratio(ls, lsl)}x (target <= 2)")
print(f"restic mount / cairn mount (ls -lR): {ratio(('tree ls -lR through mount', 'restic'), ls)}x the time")
print(f"load average at the end: {sys.argv[2]} (a shared machine: medians of interleaved runs)")
PY
  exit 0
fi

if [ $report_only = 0 ]; then
: >"$work/run.log"
started=$(date +%s)
# Which cairn is measured: the commit checked out (a given CAIRN_BIN is
# assumed to be built from it), recorded now in case it moves meanwhile;
# a --scaling-only run records its own for the scaling rows.
c=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo "an unknown commit")
if [ -n "$(git -C "$repo_root" status --porcelain -- src benches Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  c="$c plus uncommitted changes"
fi
if [ $scaling_only = 0 ]; then
  echo "$c" >"$work/commit"
  rm -f "$work/commit-scaling"
else
  echo "$c" >"$work/commit-scaling"
fi
[ $scaling_only = 1 ] || for rep in $(seq 1 "$reps"); do
  log "rep $rep/$reps: backups"
  run_sequence
  log "rep $rep/$reps: restore, check, floors"
  restore_and_check
  log "rep $rep/$reps: mount"
  mount_rows
done
# Peak memory against the size of the index: the same backups into an
# empty repository and into one that already indexes $scaling blobs.
if [ "$scaling" -gt 0 ]; then
  log "scaling: a repository indexing $scaling blobs (benches/index_scaling.rs)"
  s=$work/scaling
  rm -rf "$s"
  mkdir -p "$s"
  cargo bench --quiet --bench index_scaling -- "$s/big" "$s/cache" "$work/password" "$scaling" >>"$work/run.log" 2>&1
  "$cairn" -q -r "$s/empty" --cache-dir "$s/cache" init >>"$work/run.log"
  # One small backup into each first: the first open after a bulk cache sync
  # compacts it once (a one-off that a repository backed up nightly has long
  # paid), and the comparison is of steady states.
  for r in empty big; do
    head -c 1000000 "$dump1" | "$cairn" -q -r "$s/$r" --cache-dir "$s/cache" backup --stdin --stdin-filename warmup.sql >>"$work/run.log"
  done
  for round in first unchanged; do
    for r in empty big; do
      label="scaling: dump $round backup, repo $r"
      if [ $r = big ]; then
        count="$((scaling / 1000))k"
        [ "$scaling" -ge 1000000 ] && count="$((scaling / 1000000))M"
        label="scaling: dump $round backup, repo of $count blobs"
      fi
      measure "$label" cairn "$dump1_bytes" "$s/$r" \
        "${stdin_of[@]}" "$dump1" "$cairn" -q -r "$s/$r" --cache-dir "$s/cache" backup --stdin --stdin-filename dump.sql
    done
  done
fi
[ $scaling_only = 1 ] || echo $(($(date +%s) - started)) >"$work/elapsed"
[ $scaling_only = 1 ] || cut -d' ' -f1-3 /proc/loadavg >"$work/loadavg"
fi
elapsed=$(cat "$work/elapsed")
commit=$(cat "$work/commit" 2>/dev/null || echo "an unknown commit")
if [ -f "$work/commit-scaling" ] && [ "$(cat "$work/commit-scaling")" != "$commit" ]; then
  commit="$commit (scaling rows: $(cat "$work/commit-scaling"), --scaling-only)"
fi


versions="cairn $("$cairn" --version | awk '{print $2}'), $(restic version | awk '{print $1, $2}'), $(borg --version), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1), b3sum $(b3sum --version | awk '{print $2}'), PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}')"
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, work dir on $(df -T "$work" | awk 'NR==2 {print $2" "$1}')"
python3 - "$results" "$repo_root/docs/PERFORMANCE.md" "$write_doc" <<PY
import sys, collections
results, doc, write_doc = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
best = collections.OrderedDict()
slowest = {}
for line in open(results):
    case, tool, secs, rss, nbytes, repo = line.rstrip("\n").split("\t")
    key = (case, tool)
    row = (float(secs), int(rss), int(nbytes), int(repo))
    old = best.get(key)
    # Best time of the reps; peak RSS is the largest seen (memory is not noise).
    best[key] = row if old is None else (min(old[0], row[0]), max(old[1], row[1]), row[2], row[3])
    slowest[key] = max(slowest.get(key, 0.0), row[0])
floors = {"floor: compress dump": "dump first backup (stdin)", "floor: hash dump": "dump unchanged re-backup (stdin)"}
lines = ["| case | tool | seconds (best) | slowest rep | MB/s | peak RSS MiB | repo MB | cairn's ratio |",
         "|---|---|---:|---:|---:|---:|---:|---|"]
for (case, tool), (secs, rss, nbytes, repo) in best.items():
    mbs = nbytes / 1e6 / secs if secs > 0 else float("inf")
    if case in floors:
        c = best.get((floors[case], "cairn"))
        ratio = f"cairn {c[0] / secs:.2f}x this time" if c and secs > 0 else ""
    elif case.startswith("scaling:") and "repo of" in case:
        e = best.get((case.split(", repo of")[0] + ", repo empty", tool))
        ratio = f"{rss / e[1]:.2f}x the RSS, {secs / e[0]:.2f}x the time of the empty repo" if e else ""
    elif tool == "cairn":
        ratio = ""
    else:
        c = best.get((case, "cairn"))
        ratio = f"{secs / c[0]:.2f}x faster, {c[1] / rss:.2f}x the RSS" if c and c[0] > 0 else ""
        if c and repo:
            ratio += f", {c[3] / repo:.2f}x the size"
    repo_mb = f"{repo / 1e6:.1f}" if repo else ""
    lines.append(f"| {case} | {tool} | {secs:.2f} | {slowest[(case, tool)]:.2f} | {mbs:.0f} | {rss / 1024:.0f} | {repo_mb} | {ratio} |")
table = "\n".join(lines)
print(table)
if write_doc:
    header = """Run: \`bash scripts/bench.sh $([ $quick = 1 ] && echo '--quick ')--reps $reps --nights $nights$([ "$scaling" -gt 0 ] && echo " --scaling $scaling")\` on $(date -u +%Y-%m-%d) at commit $commit ($mode mode, best of $reps reps, $elapsed s; load average at the end $(cat "$work/loadavg" 2>/dev/null || echo unknown), the bench's own commands included).

- Machine: $machine.
- Versions: $versions.
- Data: dump night 1 = $dump1_bytes bytes (pg_dump -Fp, pgbench scale $pgscale + $customers customers + $orders orders); tree = $tree_files files, $tree_bytes bytes.
"""
    block = "<!-- bench:begin -->\n" + header + "\n" + table + "\n<!-- bench:end -->"
    try:
        text = open(doc).read()
    except FileNotFoundError:
        text = "# Performance\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
    start, end = text.find("<!-- bench:begin -->"), text.find("<!-- bench:end -->")
    if start < 0 or end < 0:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = text[:start] + block + text[end + len("<!-- bench:end -->"):]
    open(doc, "w").write(text)
    print(f"\nwritten to {doc}", file=sys.stderr)
PY
