#!/usr/bin/env bash
# Makes the local Debian base image for deploy/docker/Dockerfile on a machine
# that cannot pull from any container registry: a minimal Debian root file
# system built from Debian's own packages with debootstrap, then
# `docker import`ed. Does nothing when the image already exists.
#
#   deploy/docker/base-image.sh [IMAGE]      (default pate-base:bookworm)
#
# Environment: PATE_BASE_IMAGE (image name), PATE_DEBIAN_SUITE (bookworm),
# PATE_DEBIAN_MIRROR (default: the Debian mirror apt already uses),
# PATE_CACHE_DIR (default ~/.cache/pate; the root file system tarball is kept
# there so a removed image is re-imported without downloading again).
set -euo pipefail

IMAGE="${1:-${PATE_BASE_IMAGE:-pate-base:bookworm}}"
SUITE="${PATE_DEBIAN_SUITE:-bookworm}"
CACHE="${PATE_CACHE_DIR:-$HOME/.cache/pate}"
TARBALL="$CACHE/rootfs-$SUITE.tar"

command -v docker >/dev/null || { echo "base-image: docker not found" >&2; exit 1; }
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: $IMAGE exists" >&2
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The mirror apt already uses (deb822 .sources or one-line .list), so the
# download goes where this machine is allowed to go.
mirror_from_apt() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^\s*#' \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' \
    | grep -v security | head -n1 | tr -d ' '
}
MIRROR="${PATE_DEBIAN_MIRROR:-$(mirror_from_apt || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if [ ! -s "$TARBALL" ]; then
  if ! command -v debootstrap >/dev/null; then
    echo "base-image: installing debootstrap" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
  fi
  mkdir -p "$CACHE"
  ROOT="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap '$SUDO rm -rf "$ROOT"' EXIT
  echo "base-image: debootstrap $SUITE from $MIRROR (a few minutes)" >&2
  # minbase: essential packages + apt only; the binaries need glibc and libgcc.
  $SUDO debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >&2
  # Package caches and docs are dead weight in a runtime image.
  $SUDO rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
  $SUDO tar --numeric-owner -C "$ROOT" -cf "$TARBALL.tmp" .
  $SUDO chown "$(id -u):$(id -g)" "$TARBALL.tmp"
  mv "$TARBALL.tmp" "$TARBALL"
fi

echo "base-image: importing $TARBALL as $IMAGE" >&2
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >/dev/null
echo "base-image: $IMAGE ready" >&2
