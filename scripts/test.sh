#!/usr/bin/env bash
# The whole test suite: set up, then every crate's unit tests and the
# end-to-end tests that run the real binaries over loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Crate boundaries (unused dependencies, no candle in the aggregator).
scripts/deps-check.sh
# One build directory outside the checkout, so fresh clones on the same
# machine (CI) reuse compiled dependencies; a new machine builds it cold.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pate/target}"
# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace "$@"
# Interop of the trust model with a Python grpcio client built from proto/
# (venv cached in ~/.cache/pate/venv).
scripts/interop.sh
