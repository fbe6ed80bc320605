#!/usr/bin/env bash
# Four kinds of input for comparing compression settings (issue 21), made
# by real tools from what is on the machine, never random bytes:
#
#   dump.sql        pg_dump -Fp of a throwaway PostgreSQL 15 cluster holding
#                   real text: documents (/usr/share/doc, gunzipped when
#                   needed), man pages (troff source), users, and JSON events
#                   built from those texts (scripts/measure/corpora_gen.py)
#   usr-share.tar   tar of /usr/share directories full of files compressed
#                   already (.gz man pages and changelogs, PNG icons, fonts,
#                   jars); usr-share-2.tar is the same a night later: ~1% of
#                   the files changed, 0.5% gone, a few new
#   tree/           a tree of small files: /usr/include and /usr/lib/python3.11
#   dump.rdb        a Redis RDB written by redis-server's SAVE (its default
#                   LZF string compression on): user hashes, JSON sessions,
#                   per-user event lists, a leaderboard, cached pages, tag sets
#
#   bash scripts/corpora.sh [--quick] [DIR]      (default DIR /tmp/cairn-corpora)
#
# About 830 MB in all, 610 MB without the second tarball (--quick: 260 MB),
# made in 2-3 minutes, once: a stamp file keeps them (delete DIR to make
# them again). Prints DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 dir=/tmp/cairn-corpora
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) dir=$1 ;;
  esac
  shift
done
log() { printf '== %s\n' "$*" >&2; }
mode=$([ $quick = 1 ] && echo quick || echo full)
if [ $quick = 1 ]; then
  dump_mb=40 rdb_mb=30
  tar_dirs=(/usr/share/man /usr/share/icons)
  tree_dirs=(/usr/lib/python3.11)
else
  dump_mb=150 rdb_mb=100
  tar_dirs=(/usr/share/doc /usr/share/man /usr/share/icons /usr/share/fonts /usr/share/java)
  tree_dirs=(/usr/include /usr/lib/python3.11)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ "$(cat "$dir/.done" 2>/dev/null)" = "$mode" ]; then
  echo "$dir"
  exit 0
fi
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v redis-server >/dev/null || need+=(redis-server)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rm -rf "$dir"/{dump.sql,usr-share.tar,usr-share-2.tar,tree,dump.rdb,pg,redis,.done}
gen=$PWD/scripts/measure/corpora_gen.py

# --- the SQL dump ---------------------------------------------------------------
pg=$dir/pg pgbin=/usr/lib/postgresql/15/bin port=54338 as=()
[ "$(id -u)" = 0 ] && as=(runuser -u postgres --)  # initdb refuses root
mkdir -p "$pg/sock" "$pg/copy"
log "dump: table data from the machine's documentation (${dump_mb} MB)"
python3 "$gen" pg "$pg/copy" "$dump_mb"
[ "$(id -u)" = 0 ] && chown -R postgres: "$pg"
"${as[@]}" "$pgbin/initdb" -D "$pg/db" -A trust -U postgres --no-sync >"$dir/pg.log" 2>&1
"${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -l "$pg/server.log" -w \
  -o "-p $port -k $pg/sock -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >>"$dir/pg.log"
trap '"${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -m immediate stop >/dev/null 2>&1 || true' EXIT
conn=(-h "$pg/sock" -p $port -U postgres)
"$pgbin/createdb" "${conn[@]}" site
"$pgbin/psql" "${conn[@]}" -q -v ON_ERROR_STOP=1 site >>"$dir/pg.log" <<SQL
CREATE TABLE documents (id int PRIMARY KEY, kind text NOT NULL, package text NOT NULL,
  path text NOT NULL, length int NOT NULL, body text NOT NULL);
CREATE TABLE users (id int PRIMARY KEY, login text UNIQUE NOT NULL, full_name text NOT NULL,
  email text NOT NULL, created_at timestamptz NOT NULL, bio text, prefs jsonb NOT NULL);
CREATE TABLE events (id bigint PRIMARY KEY, user_id int NOT NULL REFERENCES users,
  at timestamptz NOT NULL, kind text NOT NULL, payload jsonb NOT NULL);
\copy documents FROM '$pg/copy/documents.copy'
\copy users FROM '$pg/copy/users.copy'
\copy events FROM '$pg/copy/events.copy'
CREATE INDEX ON events (user_id, at);
SQL
"$pgbin/pg_dump" "${conn[@]}" -Fp site >"$dir/dump.sql"
"${as[@]}" "$pgbin/pg_ctl" -D "$pg/db" -m fast stop >>"$dir/pg.log"
trap - EXIT
rm -rf "$pg"

# --- the tarball and its next night ------------------------------------------------
log "tarball: tar of ${tar_dirs[*]}"
tar -cf "$dir/usr-share.tar" --sort=name "${tar_dirs[@]}" 2>/dev/null
python3 "$gen" retar "$dir/usr-share.tar" "$dir/usr-share-2.tar"

# --- the tree of small files ---------------------------------------------------------
log "tree: copying ${tree_dirs[*]}"
mkdir -p "$dir/tree"
for d in "${tree_dirs[@]}"; do
  cp -a "$d" "$dir/tree/$(echo "${d#/}" | tr / _)"
done

# --- the Redis RDB --------------------------------------------------------------------
log "redis: loading ${rdb_mb} MB of keys, then SAVE"
mkdir -p "$dir/redis"
sock=$dir/redis/redis.sock
redis-server --port 0 --unixsocket "$sock" --dir "$dir/redis" --dbfilename dump.rdb \
  --save '' --appendonly no --daemonize yes --logfile "$dir/redis/redis.log" \
  --pidfile "$dir/redis/redis.pid"
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
trap 'redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true' EXIT
python3 "$gen" redis "$rdb_mb" | redis-cli -s "$sock" --pipe >>"$dir/redis/redis.log"
redis-cli -s "$sock" save >/dev/null
redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
trap - EXIT
mv "$dir/redis/dump.rdb" "$dir/dump.rdb"
rm -rf "$dir/redis"

echo "$mode" >"$dir/.done"
ls -l "$dir" >&2
du -sb "$dir/tree" >&2
echo "$dir"
