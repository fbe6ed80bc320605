#!/usr/bin/env bash
# Sets everything up and runs cairn's main job on a local repository:
# init, a directory backup, a stdin (dump) backup, an incremental second
# backup, snapshots, restore and dump, each checked byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
cargo build --quiet --bin cairn
cairn="$CARGO_TARGET_DIR/debug/cairn"

work="${CAIRN_DEMO_DIR:-$(mktemp -d /tmp/cairn-demo.XXXXXX)}"
mkdir -p "$work"
export CAIRN_REPOSITORY="$work/repo" CAIRN_PASSWORD_FILE="$work/password" CAIRN_CACHE_DIR="$work/cache"
unset CAIRN_PASSWORD CAIRN_PASSWORD_COMMAND
rm -rf "$work/repo" "$work/cache" "$work/restore" "$work/source"
head -c 24 /dev/urandom | base64 > "$CAIRN_PASSWORD_FILE"

echo "== source: a copy of /usr/share/doc and a generated SQL dump, in $work"
mkdir -p "$work/source"
cp -a /usr/share/doc "$work/source/doc" 2>/dev/null || true
seq 1 400000 | awk '{printf "INSERT INTO orders VALUES (%d, %d, '"'"'customer-%d@example.com'"'"', %d.%02d);\n", $1, $1*7919%100000, $1%5000, $1%997, $1%100}' > "$work/app.sql"

echo "== cairn init"
"$cairn" init
echo "== cairn backup (directory)"
"$cairn" backup "$work/source" --tag volumes
echo "== cairn backup --stdin (a dump piped in)"
"$cairn" backup --stdin --stdin-filename app.sql --tag postgres < "$work/app.sql"
echo "== a file changes; the second backup stores only the change"
echo "changed $(date)" >> "$work/source/doc/changed.txt"
"$cairn" backup "$work/source" --tag volumes
echo "== cairn snapshots"
"$cairn" snapshots
echo "== cairn restore latest (tag volumes) and compare"
"$cairn" restore latest --tag volumes --target "$work/restore"
diff -r --no-dereference "$work/source" "$work/restore$work/source"
echo "== cairn dump latest app.sql (tag postgres) and compare"
"$cairn" dump latest app.sql --tag postgres | cmp - "$work/app.sql"
echo "demo OK: repository at $CAIRN_REPOSITORY ($(du -sh "$CAIRN_REPOSITORY" | cut -f1)); source $(du -sh "$work/source" | cut -f1) + $(du -sh "$work/app.sql" | cut -f1) dump"
