#!/usr/bin/env bash
# Writes the man pages (cairn.1 and one per command, e.g. cairn-backup.1)
# into target/man/, generated from the command-line definition by the
# hidden `cairn man` command, and checks that cairn.1 renders.
#     bash scripts/man.sh && man -l target/man/cairn.1
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --quiet --bin cairn
out=target/man
rm -rf "$out"
"$CARGO_TARGET_DIR/debug/cairn" man --dir "$out"
if command -v groff >/dev/null; then
  groff -man -Tascii -ww "$out/cairn.1" >/dev/null
fi
echo "man pages in $out: $(ls "$out" | tr '\n' ' ')"
