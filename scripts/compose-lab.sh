#!/usr/bin/env bash
# The federated PATE lab on the Docker engine, end to end: build the release
# binaries and the image (making the local Debian base image first if no
# registry can give one), generate the compose project with
# `pate deploy compose`, bring it up, wait for the student, collect
# DIR/report.json (the keys of `pate lab`'s report) and every container's
# log under DIR/logs/, and tear everything down (containers, networks,
# volumes), on success and on failure alike.
#
#   scripts/compose-lab.sh [pate lab flags] --out DIR [--image NAME] [--drill] [--keep]
#
# pate lab flags: --teachers N --queries Q --eval-size K --noise-scale B
#   --model mlp|cnn --teacher-epochs E --student-epochs E --epsilon-limit E
#   --delta D --seed S --data DIR, and --quorum Q --query-batch B
#   --query-interval SECONDS (see `pate deploy compose --help`).
# --image NAME  image to build and run (default pate:local).
# --drill       while the student queries: check from inside the student
#               container that no teacher is reachable (and the aggregator
#               is), that each container holds only its own certificate and
#               key (owned by uid 10001, key 0600), scrape the aggregator's
#               /metrics twice, kill the last teacher, restart the
#               aggregator; results in DIR/drill.json.
#               Pace the student (--query-batch 10 --query-interval 0.3) so
#               the drill happens mid-run.
# --keep        leave the project running (for inspection; tear it down
#               with docker-compose -p NAME down -v).
#
# Environment: CARGO_TARGET_DIR (where the release binaries are built),
# PATE_BIN_DIR (use binaries from there instead of building),
# PATE_BASE_IMAGE (default pate-base:bookworm), PATE_DOCKER_BASE and
# PATE_DOCKER_BUILDER (build arguments BASE and BUILDER of the Dockerfile;
# default: the local base image for both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

OUT="" IMAGE="pate:local" DRILL=0 KEEP=0 TEACHERS=20
LAB_ARGS=() DATA_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --image) IMAGE="$2"; shift 2 ;;
    --drill) DRILL=1; shift ;;
    --keep) KEEP=1; shift ;;
    --data) DATA_ARGS=(--data "$2"); shift 2 ;;
    --teachers) TEACHERS="$2"; LAB_ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --*=*) LAB_ARGS+=("$1"); shift ;;
    --*) [ $# -ge 2 ] || { echo "compose-lab: $1 needs a value" >&2; exit 2; }
         LAB_ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "compose-lab: unexpected argument $1" >&2; exit 2 ;;
  esac
done
case " ${LAB_ARGS[*]} " in *" --teachers "*) ;; *) LAB_ARGS+=(--teachers "$TEACHERS") ;; esac
[ -n "$OUT" ] || { echo "compose-lab: --out DIR is required" >&2; exit 2; }
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "compose-lab: --out $OUT is not empty; choose a new directory" >&2; exit 2
fi
command -v docker >/dev/null || { echo "compose-lab: docker not found" >&2; exit 3; }
docker info >/dev/null 2>&1 || { echo "compose-lab: the Docker engine is not reachable (docker info failed)" >&2; exit 3; }
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else echo "compose-lab: neither docker-compose nor 'docker compose' found" >&2; exit 3; fi

log() { printf 'compose-lab: %s\n' "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
T0=$(now)

# 1. Binaries (release), then the compose project (which checks every flag,
# the image name included, and writes nothing on bad input), then the image.
if [ -n "${PATE_BIN_DIR:-}" ]; then
  BIN="$PATE_BIN_DIR"
else
  log "building release binaries"
  cargo build --workspace --release --bins >&2
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
for b in pate pate-teacher pate-aggregator pate-student; do
  [ -x "$BIN/$b" ] || { echo "compose-lab: $BIN/$b missing" >&2; exit 1; }
done
OUT="$(realpath -m "$OUT")"
"$BIN/pate" deploy compose "${LAB_ARGS[@]}" "${DATA_ARGS[@]}" --image "$IMAGE" --out "$OUT/compose" >&2
BASE_IMAGE="${PATE_BASE_IMAGE:-pate-base:bookworm}"
DOCKER_BASE="${PATE_DOCKER_BASE:-$BASE_IMAGE}"
DOCKER_BUILDER="${PATE_DOCKER_BUILDER:-$BASE_IMAGE}"
if [ "$DOCKER_BASE" = "$BASE_IMAGE" ] || [ "$DOCKER_BUILDER" = "$BASE_IMAGE" ]; then
  deploy/docker/base-image.sh "$BASE_IMAGE"
fi
CTX="$(mktemp -d)"
mkdir -p "$CTX/prebuilt"
cp "$BIN/pate" "$BIN/pate-teacher" "$BIN/pate-aggregator" "$BIN/pate-student" "$CTX/prebuilt/"
# Debug info is most of a binary's size and the image needs none of it
# (symbols stay, so backtraces still name functions).
if command -v strip >/dev/null; then strip --strip-debug "$CTX"/prebuilt/*; fi
log "building image $IMAGE (BASE=$DOCKER_BASE)"
TB=$(now)
DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/Dockerfile \
  --build-arg "BUILDER=$DOCKER_BUILDER" --build-arg "BASE=$DOCKER_BASE" -t "$IMAGE" "$CTX" >/dev/null
rm -rf "$CTX"
log "image built in $(secs "$TB" "$(now)") s"

# 2. Up, under a project name of its own.
PROJECT="pate$(date +%s)$$"
DC=("${COMPOSE[@]}" -p "$PROJECT" -f "$OUT/compose/docker-compose.yml")
mkdir -p "$OUT/logs" "$OUT/collected"

cid() { "${DC[@]}" ps -a -q "$1" 2>/dev/null | head -n1; }
health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"; }
collect_logs() { # one file per service, straight from the engine (docker-compose logs is slow)
  docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --format '{{.Label "com.docker.compose.service"}} {{.ID}}' |
    while read -r svc id; do docker logs "$id" >"$OUT/logs/$svc.log" 2>&1 || true; done
}
cleanup() {
  local rc=$?
  collect_logs
  if [ "$KEEP" = 1 ]; then
    log "left running: ${DC[*]} down -v"
  else
    "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  [ $rc -eq 0 ] || log "FAILED (exit $rc); logs in $OUT/logs/"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 3. Up: trainings first (compose starts teacher-i once train-i succeeded).
log "project $PROJECT: training $TEACHERS teachers, then serving"
TU=$(now)
"${DC[@]}" up -d aggregator >&2
# The student starts once the aggregator is healthy (its teachers reached,
# quorum up), as `depends_on: condition: service_healthy` has it.
AGG=$(cid aggregator)
for ((t = 0; ; t++)); do
  [ "$(health_of "$AGG")" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$AGG")" = true ] || { echo "compose-lab: the aggregator exited before becoming healthy" >&2; exit 1; }
  [ "$t" -lt 600 ] || { echo "compose-lab: the aggregator was not healthy after 600 s (see $OUT/logs/aggregator.log)" >&2; exit 1; }
  sleep 1
done
TUP=$(now)
# The student is created, then started directly, so that the drill below
# starts with its first query (compose itself can be slow to return).
"${DC[@]}" up --no-start student >&2
STUDENT=$(cid student)
[ -n "$STUDENT" ] || { echo "compose-lab: no student container" >&2; exit 1; }
docker start "$STUDENT" >/dev/null

# Times from the engine's own record of each container.
started() { docker inspect -f '{{.State.StartedAt}}' "$1" | xargs -I{} date -d {} +%s.%N; }
finished() { docker inspect -f '{{.State.FinishedAt}}' "$1" | xargs -I{} date -d {} +%s.%N; }

batches() { docker logs "$STUDENT" 2>&1 | grep -c 'labelled batch' || true; }
wait_batches() { # wait_batches N: until the student labelled N batches (fails if it exits first)
  while [ "$(batches)" -lt "$1" ]; do
    [ "$(docker inspect -f '{{.State.Running}}' "$STUDENT")" = true ] || {
      echo "compose-lab: the student finished before batch $1 of the drill; pace it with --query-batch and --query-interval" >&2; return 1; }
    sleep 0.2
  done
}
scrape() { # scrape CONTAINER: the Prometheus text of its /metrics, from inside it
  docker exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9090 && printf "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3'
}
can_connect() { # can_connect CONTAINER HOST PORT: exit 0 iff a TCP connection opens
  docker exec "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" >/dev/null 2>&1
}
certs_of() { # certs_of CONTAINER: "name:uid:mode" of each file in its certificate directory
  docker exec "$1" bash -c 'cd /var/lib/pate/certs && for f in *; do stat -c "%n:%u:%a" "$f"; done' | tr '\n' ' ' | sed 's/ $//'
}

if [ "$DRILL" = 1 ]; then
  LAST=$((TEACHERS - 1))
  # Faults first (they must land mid-run), then the isolation probes
  # (docker exec needs the student still running).
  wait_batches 2
  scrape "$AGG" >"$OUT/metrics-1.txt"
  log "killing teacher-$LAST mid-run (after $(batches) batches)"
  # For good: without its restart policy (on-failure would bring it back).
  DEAD=$(cid "teacher-$LAST")
  docker update --restart=no "$DEAD" >/dev/null
  docker kill "$DEAD" >/dev/null
  # The batch after the next one started after the kill (the student goes
  # on while docker works), so it asked the dead teacher too.
  wait_batches $(($(batches) + 2))
  # Second scrape before the restart (a restarted process starts its
  # counters from zero): the counters moved, the dead teacher shows errors.
  scrape "$AGG" >"$OUT/metrics-2.txt"
  AGG_HEALTH=$(health_of "$AGG") # 3 of 4 teachers still make the quorum
  AGG_RESTARTED_AT=$(batches)
  log "restarting the aggregator mid-run (after $AGG_RESTARTED_AT batches)"
  docker restart -t 10 "$AGG" >/dev/null
  wait_batches $((AGG_RESTARTED_AT + 3))
  # Isolation, from inside the student container: no teacher by name or by
  # address; the aggregator, as a control that the probe can succeed.
  TEACHER_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(cid teacher-0)")
  student_to_teacher_name=false student_to_teacher_ip=false student_to_aggregator=false aggregator_to_teacher=false
  can_connect "$STUDENT" aggregator 50050 && student_to_aggregator=true
  can_connect "$AGG" "$TEACHER_IP" 50051 && aggregator_to_teacher=true
  can_connect "$STUDENT" teacher-0 50051 && student_to_teacher_name=true
  can_connect "$STUDENT" "$TEACHER_IP" 50051 && student_to_teacher_ip=true
  # Each party holds its own identity only (the CA's key is nowhere).
  CERTS_TEACHER=$(certs_of "$(cid teacher-0)") CERTS_STUDENT=$(certs_of "$STUDENT") CERTS_AGG=$(certs_of "$AGG")
  STUDENT_RUNNING=$(docker inspect -f '{{.State.Running}}' "$STUDENT")
  log "isolation: student->teacher-0 by name $student_to_teacher_name, by ip $TEACHER_IP $student_to_teacher_ip; student->aggregator $student_to_aggregator; aggregator->teacher $aggregator_to_teacher"
  cat >"$OUT/drill.json" <<EOF
{
  "teacher_ip": "$TEACHER_IP",
  "student_to_teacher_by_name": $student_to_teacher_name,
  "student_to_teacher_by_ip": $student_to_teacher_ip,
  "student_to_aggregator": $student_to_aggregator,
  "aggregator_to_teacher": $aggregator_to_teacher,
  "student_running_after_probes": $STUDENT_RUNNING,
  "killed_teacher": $LAST,
  "certs_teacher_0": "$CERTS_TEACHER",
  "certs_student": "$CERTS_STUDENT",
  "certs_aggregator": "$CERTS_AGG",
  "aggregator_health_after_kill": "$AGG_HEALTH",
  "aggregator_restarted_after_batches": $AGG_RESTARTED_AT
}
EOF
fi

# 4. Wait for the student.
log "waiting for the student"
CODE=$(docker wait "$STUDENT")
[ "$CODE" = 0 ] || { echo "compose-lab: the student exited with $CODE" >&2; docker logs --tail 30 "$STUDENT" >&2; exit 1; }
TEND=$(now)

# 5. Collect: the student's report, the ledger (aggregator stopped first, so
# SQLite has checkpointed), every teacher's checkpoint.
"${DC[@]}" stop -t 20 aggregator >/dev/null 2>&1
docker cp "$STUDENT:/var/lib/pate/out" "$OUT/collected/student"
docker cp "$(cid aggregator):/var/lib/pate/ledger" "$OUT/collected/ledger"
mkdir -p "$OUT/collected/teachers"
for ((i = 0; i < TEACHERS; i++)); do
  docker cp "$(cid "teacher-$i"):/var/lib/pate/model/teacher" "$OUT/collected/teachers/$i"
done
TRAIN_START=$(for ((i = 0; i < TEACHERS; i++)); do started "$(cid "train-$i")"; done | sort -n | head -n1)
TRAIN_END=$(for ((i = 0; i < TEACHERS; i++)); do finished "$(cid "train-$i")"; done | sort -n | tail -n1)
S_START=$(started "$STUDENT"); S_END=$(finished "$STUDENT")
"$BIN/pate" deploy report "${LAB_ARGS[@]}" --dir "$OUT" \
  --train-seconds "$(secs "$TRAIN_START" "$TRAIN_END")" --serve-seconds "$(secs "$TRAIN_END" "$TUP")" \
  --student-seconds "$(secs "$S_START" "$S_END")" --total-seconds "$(secs "$T0" "$TEND")"
log "up took $(secs "$TU" "$TUP") s; report: $OUT/report.json; logs: $OUT/logs/"
