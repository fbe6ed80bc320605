#!/usr/bin/env bash
# Installs everything cairn needs on a fresh Debian machine: the Debian packages
# the build and the real-tool tests use, and the cached cargo target directory.
# Idempotent: safe to run on every CI run.
set -euo pipefail

need=()
# libclang-dev: rocksdb's bindgen. attr: getfattr/setfattr for xattr checks.
# The dump and tarball tests run the real tools: PostgreSQL 15 (initdb,
# postgres, pg_dump, psql), Redis (redis-server, redis-cli, redis-check-rdb),
# GNU tar and the compressors import-tar detects. groff-base renders the
# generated man page in its test (scripts/man.sh).
for pkg in libclang-dev clang pkg-config attr postgresql-15 redis-server \
  tar gzip zstd xz-utils bzip2 util-linux groff-base; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
