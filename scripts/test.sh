#!/usr/bin/env bash
# The whole test suite: set up, then every crate's unit tests and the
# end-to-end tests that run the real binaries over loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
