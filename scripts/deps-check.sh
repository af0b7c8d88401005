#!/usr/bin/env bash
# Crate boundaries, checked: no crate lists a dependency it does not use
# (cargo-machete, installed here when missing), and the servers that do no
# ML link no candle (the aggregator counts votes; it never sees a model).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-machete >/dev/null || cargo install cargo-machete --locked
cargo machete
for crate in pate-aggregator pate-ledger pate-privacy pate-proto; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -q '^candle'; then
    echo "deps-check: $crate depends on candle" >&2
    exit 1
  fi
done
echo "deps-check: no unused dependencies; aggregator, ledger, privacy and proto free of candle"
