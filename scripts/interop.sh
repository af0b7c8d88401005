#!/usr/bin/env bash
# Python interop of the trust model: a grpcio client generated from proto/
# talks mutual TLS to a real teacher and aggregator (the binaries built by
# scripts/test.sh). The student's certificate gets labels from the
# aggregator and PERMISSION_DENIED from the teacher. The venv (grpcio,
# grpcio-tools from PyPI) is cached in ~/.cache/pate/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/debug"
for b in pate pate-teacher pate-aggregator; do
  [ -x "$BIN/$b" ] || { echo "interop: $BIN/$b not built (cargo build --workspace --bins)" >&2; exit 1; }
done

VENV="$HOME/.cache/pate/venv"
if ! "$VENV/bin/python" -c "import grpc, grpc_tools" 2>/dev/null; then
  echo "interop: creating $VENV (grpcio, grpcio-tools)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q grpcio grpcio-tools
fi
PY="$VENV/bin/python"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/stubs"
"$PY" -m grpc_tools.protoc -I proto/proto --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" pate/v1/pate.proto
touch "$WORK/stubs/pate/__init__.py" "$WORK/stubs/pate/v1/__init__.py"

"$BIN/pate" certs init --out "$WORK/certs" --teachers 1 --students 1 >/dev/null
tls() { echo --tls-cert "$WORK/certs/$1.pem" --tls-key "$WORK/certs/$1.key" --tls-ca "$WORK/certs/ca.pem"; }

# A small real teacher: one partition of 30, one epoch.
"$BIN/pate-teacher" train --partition 0 --partitions 30 --epochs 1 --out "$WORK/teacher" 2>"$WORK/train.log"

wait_file() {
  for _ in $(seq 1 600); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "interop: $1 never appeared; logs:" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1
}
# shellcheck disable=SC2046
"$BIN/pate-teacher" serve --checkpoint "$WORK/teacher" --listen 127.0.0.1:0 --addr-file "$WORK/teacher.addr" \
  $(tls teacher-0) 2>"$WORK/teacher.log" &
PIDS+=($!)
wait_file "$WORK/teacher.addr"
TEACHER="$(cat "$WORK/teacher.addr")"
# shellcheck disable=SC2046
"$BIN/pate-aggregator" --teacher "$TEACHER" --listen 127.0.0.1:0 --addr-file "$WORK/aggregator.addr" \
  --ledger "$WORK/ledger.db" --delta 0 --noise-scale 10 $(tls aggregator) 2>"$WORK/aggregator.log" &
PIDS+=($!)
wait_file "$WORK/aggregator.addr"
AGGREGATOR="$(cat "$WORK/aggregator.addr")"
# The aggregator binds before it has reached its teachers: wait until it serves.
for _ in $(seq 1 300); do grep -q "serving labels" "$WORK/aggregator.log" && break; sleep 0.1; done

# grpc's TLS checks the server name: the certificates hold localhost.
"$PY" tests/interop/client.py "$WORK/stubs" "$WORK/certs" "localhost:${AGGREGATOR##*:}" "localhost:${TEACHER##*:}"
