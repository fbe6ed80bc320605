#!/usr/bin/env bash
# Runs cairn's tests: setup, formatting and lint checks, then every unit,
# property and integration test (the integration tests drive the real
# binary against real repositories). CAIRN_SLOW_TESTS=1 enlarges the big
# round-trip tests (500 MB stream); CI sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test-servers
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --all-targets --features failpoints --quiet -- -D warnings
cargo test --features failpoints --lib --bins --tests -- --test-threads=2
cargo test --features failpoints --doc --quiet
