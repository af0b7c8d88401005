#!/usr/bin/env bash
# Runs every coverage-guided fuzz target in fuzz/ for a bounded time and
# prints libFuzzer's last status line of each (execs, coverage, corpus).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]   (default 120, all)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, installed here when missing).
# On stable Rust, RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z flags; -s none
# builds without a sanitizer (the project forbids unsafe code; debug
# assertions and overflow checks stay on). The instrumented build has its own
# target directory (a cold one compiles candle, OpenSSL and SQLite once,
# about 15 minutes on 2 cores). A crash stops the run with its reproducer
# under fuzz/artifacts/<target>/ and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-120}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(idx tensor votes_csv ledger_rows)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${PATE_FUZZ_TARGET_DIR:-$HOME/.cache/pate/target-fuzz}"
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/logs
for t in "${TARGETS[@]}"; do
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s" >&2
  # Corpus under fuzz/corpus/<target> (kept between runs, not committed).
  cargo fuzz run -s none "$t" -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    > "fuzz/logs/$t.log" 2>&1 || { tail -n 40 "fuzz/logs/$t.log" >&2; exit 1; }
  grep -E '^#[0-9]+' "fuzz/logs/$t.log" | tail -n 1 | sed "s/^/$t: /"
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "fuzz/logs/$t.log" | sed "s/^/$t: /"
done
