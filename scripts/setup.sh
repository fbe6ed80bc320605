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
# generated man page in its test (scripts/man.sh). fuse3: fusermount3 for
# `cairn mount` and its tests (tests/it/mount.rs).
for pkg in libclang-dev clang pkg-config attr postgresql-15 redis-server \
  tar gzip zstd xz-utils bzip2 util-linux groff-base python3 python3-venv \
  python3-pip fuse3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# chromium: the audit report's HTML page is rendered headless in its test
# (tests/it/audit_report.rs), which fails without it.
for pkg in chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The S3 tests run real servers on a loopback port (tests/it/s3_server.rs):
# Garage, a distributed object store (the data path), and moto's server
# (conditional writes, which Garage ignores). Only the tests need them
# (scripts/test.sh passes --test-servers; the demo does not wait for them).
# Both go into a cache directory outside the clone, like the target
# directory (scripts/env.sh): Garage's build takes about 9 minutes on 2 idle
# cores, so it is paid once per machine.
if [ "${1:-}" = "--test-servers" ]; then
  tools="${CAIRN_TOOLS_DIR:-$HOME/.cache/cairn/tools}"
  mkdir -p "$tools"
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if [ ! -x "$tools/bin/garage" ]; then
    echo "setup: building garage into $tools (about 9 minutes on 2 cores)" >&2
    CARGO_TARGET_DIR="$HOME/.cache/cairn/garage-build" \
      nice -n 10 cargo install garage --version 2.5.0 --locked --root "$tools"
  fi
  if [ ! -x "$tools/moto/bin/moto_server" ]; then
    echo "setup: installing moto into $tools/moto" >&2
    /usr/bin/python3 -m venv "$tools/moto"
    "$tools/moto/bin/pip" install -q 'moto[server]==5.*'
  fi
fi
