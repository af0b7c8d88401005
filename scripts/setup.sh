#!/usr/bin/env bash
# Installs what pate needs beyond the Rust toolchain: Fashion-MNIST from
# Debian's dataset-fashion-mnist package (the default data, and what the
# tests train on). Safe to run again; does nothing when all is present.
set -euo pipefail

DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing dataset-fashion-mnist" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: no apt-get; run 'pate data fetch' to download Fashion-MNIST into the cache" >&2
  fi
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
