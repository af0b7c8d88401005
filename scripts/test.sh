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
# Deployment tests (tests/tests/deploy.rs, compose_docker.rs): the offline
# Kubernetes schema validator (a PyPI package in its own venv), and, where
# a Docker engine runs, the release binaries the container image holds
# (compose_docker.rs builds the image from them; without Docker it skips).
scripts/setup-k8s-validate.sh >/dev/null
export PATE_REQUIRE_K8S_VALIDATE=1
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  # Incremental when the target directory is warm; the image and the
  # compose run itself take a few minutes (4 teachers, 300 queries).
  cargo build --workspace --release --bins
else
  echo "test: SKIP compose-on-Docker: no Docker engine reachable (docker info failed); tests/tests/compose_docker.rs will skip" >&2
fi
cargo test --workspace "$@"
# Interop of the trust model with a Python grpcio client built from proto/
# (venv cached in ~/.cache/pate/venv).
scripts/interop.sh
