#!/usr/bin/env bash
# Installs the offline Kubernetes schema validator the manifest tests use:
# `kubernetes-validate` (PyPI; it ships the Kubernetes JSON schemas, so
# validating needs no cluster and no network) into its own virtual
# environment, ~/.cache/pate/venv-k8s (or $PATE_K8S_VENV). Prints the path
# of the `kubernetes-validate` executable. Safe to run again.
set -euo pipefail

VENV="${PATE_K8S_VENV:-${PATE_CACHE_DIR:-$HOME/.cache/pate}/venv-k8s}"
VERSION=1.37.0
BIN="$VENV/bin/kubernetes-validate"

if [ -x "$BIN" ] && "$VENV/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $VERSION"; then
  echo "$BIN"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup-k8s-validate: installing python3-venv" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
echo "setup-k8s-validate: installing kubernetes-validate $VERSION into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
echo "$BIN"
