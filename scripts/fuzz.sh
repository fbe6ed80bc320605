#!/usr/bin/env bash
# Runs cairn's cargo-fuzz targets (fuzz/fuzz_targets/) for a while each, then
# replays the saved crash inputs in fuzz/regressions/<target>/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
#
# Needs a nightly toolchain and cargo-fuzz; without them it says it skipped
# and exits 0. Exits non-zero if any target crashes (or fails to build).
#
# Environment:
#   CAIRN_FUZZ_TARGET_DIR  cargo target dir (default ~/.cache/cairn/fuzz-target)
#   CAIRN_FUZZ_TARGETS     space-separated subset of targets to run
#   CARGO_BUILD_JOBS       build parallelism (default 1)
set -uo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

all_targets="pack_header index_file snapshot tree key_file config lock blob_open chunker tar_import audit_entry drill_record manifest"
targets="${CAIRN_FUZZ_TARGETS:-$all_targets}"

skip() {
  echo "fuzz: skipped (no nightly / cargo-fuzz)"
  exit 0
}

cargo +nightly --version >/dev/null 2>&1 || skip
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz not found; installing it from crates.io (takes a few minutes)"
  cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip
  cargo +nightly fuzz --version >/dev/null 2>&1 || skip
fi

export CARGO_TARGET_DIR="${CAIRN_FUZZ_TARGET_DIR:-$HOME/.cache/cairn/fuzz-target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"

echo "fuzz: writing seed corpora (fuzz/corpus/)"
if ! cargo +nightly run --quiet --manifest-path fuzz/Cargo.toml --bin make_seeds -- fuzz/corpus \
  >"$logs/make_seeds.log" 2>&1; then
  cat "$logs/make_seeds.log" >&2
  echo "fuzz: FAILED to build or run make_seeds" >&2
  exit 1
fi

echo "fuzz: building targets (cargo fuzz build, CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS)"
if ! cargo +nightly fuzz build >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log" >&2
  echo "fuzz: FAILED to build the fuzz targets" >&2
  exit 1
fi

failed=()
results=()
for t in $targets; do
  log="$logs/$t.log"
  mkdir -p "fuzz/corpus/$t"
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 >"$log" 2>&1
  rc=$?
  runs="$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -n 1 | grep -Eo '[0-9]+')"
  corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
  if [ $rc -eq 0 ]; then
    line="fuzz: $t: ok, ${runs:-?} runs in ${seconds}s, corpus $corpus"
  else
    artifact="$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //')"
    panic="$(grep -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" | head -n 2 | tr '\n' ' ')"
    line="fuzz: $t: CRASH (exit $rc) ${artifact:+input $artifact} ${panic}(log $log)"
    failed+=("$t")
    grep -A 4 "panicked at" "$log" | head -n 12 >&2
  fi

  # Saved crash inputs must keep passing.
  regressions=()
  if [ -d "fuzz/regressions/$t" ]; then
    while IFS= read -r -d '' f; do regressions+=("$f"); done \
      < <(find "fuzz/regressions/$t" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    rlog="$logs/$t.regressions.log"
    if cargo +nightly fuzz run "$t" "${regressions[@]}" -- -rss_limit_mb=2048 -timeout=60 >"$rlog" 2>&1; then
      line="$line; ${#regressions[@]} regression input(s) pass"
    else
      line="$line; REGRESSION input fails (log $rlog)"
      grep -E "Running:|panicked at" "$rlog" | tail -n 4 >&2
      [[ " ${failed[*]} " == *" $t "* ]] || failed+=("$t")
    fi
  fi
  results+=("$line")
  echo "$line"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: all ${#results[@]} targets passed"
