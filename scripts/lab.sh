#!/usr/bin/env bash
# The main job: set up, build the binaries, and run a local PATE lab.
# Arguments go to `pate lab` (see `pate lab --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bins
exec target/release/pate lab "$@"
