# Sourced by the other scripts: one shared, persistent cargo target directory
# outside the clone, so RocksDB (a ~16 minute C++ build) is compiled once per
# machine, not once per clone or CI run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
mkdir -p "$CARGO_TARGET_DIR"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cairn: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
