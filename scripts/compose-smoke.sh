#!/usr/bin/env bash
# Compose smoke test: build Dockerfile.worker, then run a real study through the project's
# own docker-compose.yml. tests/compose/smoke.yml changes only what this machine cannot do
# (host networking, an nx-27017 stand-in for mongo, CPU workers).
#
#   bash scripts/compose-smoke.sh     # exit 0 passed, 77 SKIPPED (no Docker engine), else failed
#
#   1. build strix-cpu from Dockerfile.worker (under a tag of this run's own)
#   2. up: mongo stand-in + 2 CPU workers (`--scale worker-cpu=2`)
#   3. run prepare at 28 px, then the coordinator service: 3 ConvStrix trials,
#      --limit 1000 --max-epochs 1
#   4. while worker 2 trains a trial, stop it with compose (scale down to 1 worker: compose
#      stops it with SIGTERM and waits stop_grace_period); the trial must go back to the
#      queue and be finished by worker 1
#   5. strix-results --format json from a container: every trial done exactly once
#   6. down -v: no container, volume or network of this run is left
#
# A Docker engine with Compose v2 must answer; otherwise, as root, the script starts one with
# ../shared/tools/docker-engine.sh, and where that fails too it prints one SKIPPED line and
# exits 77. It uses a project name and an image tag of its own, touches no other container,
# and cleans up on every exit; on an engine it started itself, the build cache goes too (CI
# disks are small). It never reads the checkout's .env. PYTHON_IMAGE, MONGO_IMAGE
# and PIP_INDEX_URL are taken from the environment (air-gapped hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$SECONDS

say() { printf 'compose-smoke: %s\n' "$*" >&2; }
skip() {
  printf 'compose-smoke: SKIPPED: %s\n' "$*"
  exit 77
}
fail() {
  say "FAILED: $*"
  exit 1
}
took() { printf '%ss' "$((SECONDS - $1))"; }

# --- a Docker engine, or SKIPPED -------------------------------------------------------
engine_ok() { docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }
own_engine=  # set when this script started the engine: its build cache is then ours to drop
if ! engine_ok; then
  tool=$ROOT/../shared/tools/docker-engine.sh
  [ -f "$tool" ] || skip "no Docker engine with Compose v2 answers, and there is no ../shared/tools/docker-engine.sh to start one"
  [ "$(id -u)" = 0 ] || skip "no Docker engine with Compose v2 answers, and ../shared/tools/docker-engine.sh needs root"
  say "no Docker engine answers: starting one with ../shared/tools/docker-engine.sh"
  bash "$tool" >&2 || say "docker-engine.sh failed (exit $?)"
  engine_ok || skip "no Docker engine with Compose v2 answers, and ../shared/tools/docker-engine.sh could not start one"
  own_engine=1
fi
command -v python3 >/dev/null || fail "python3 is needed on the host (free port, JSON checks)"

# --- inputs ----------------------------------------------------------------------------
data=
for dir in "${STRIX_DATA_DIR:-}" "$ROOT/../shared/data/fashion-mnist" /usr/share/datasets/fashion-mnist; do
  if [ -n "$dir" ] && { [ -f "$dir/train-labels-idx1-ubyte.gz" ] || [ -f "$dir/train-labels-idx1-ubyte" ]; }; then
    data=$(cd "$dir" && pwd -P)
    break
  fi
done
[ -n "$data" ] || fail "no Fashion-MNIST idx files in \$STRIX_DATA_DIR, ../shared/data/fashion-mnist or /usr/share/datasets/fashion-mnist (bash scripts/setup.sh installs them)"

run_id=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
PROJECT=strix-smoke-$run_id
TAG=smoke-$run_id
EXP=smoke-$run_id
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

dc() {
  docker compose --project-name "$PROJECT" --project-directory "$ROOT" \
    -f "$ROOT/docker-compose.yml" -f "$ROOT/tests/compose/smoke.yml" \
    --env-file "$tmp/smoke.env" --profile cpu --profile tools "$@"
}
label="label=com.docker.compose.project=$PROJECT"
leftovers() {
  [ -z "$(docker container ls -aq --filter "$label")" ] || printf 'containers '
  [ -z "$(docker volume ls -q --filter "$label")" ] || printf 'volumes '
  [ -z "$(docker network ls -q --filter "$label")" ] || printf 'networks '
}

logs_pid=
coord_pid=
cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  [ -z "$logs_pid" ] || kill "$logs_pid" 2>/dev/null
  [ -z "$coord_pid" ] || kill "$coord_pid" 2>/dev/null
  if [ "$rc" -ne 0 ]; then
    say "--- diagnostics of project $PROJECT ---"
    dc ps -a >&2
    dc logs --no-color --tail 40 worker-cpu >&2
    dc logs --no-color --tail 10 mongo >&2
    [ ! -s "$tmp/coordinator.log" ] || { say "--- coordinator ---"; tail -n 40 "$tmp/coordinator.log" >&2; }
  fi
  dc down -v --remove-orphans --timeout 10 >/dev/null 2>&1
  # one-off `run` containers and anything else labelled with this run's project only
  local ids
  ids=$(docker container ls -aq --filter "$label")
  [ -z "$ids" ] || docker container rm -f $ids >/dev/null
  ids=$(docker volume ls -q --filter "$label")
  [ -z "$ids" ] || docker volume rm $ids >/dev/null
  docker image rm "strix-cpu:$TAG" >/dev/null 2>&1
  # The build leaves about 5 GB of cache (TensorFlow twice: the build stage and the copy).
  # A user's own engine keeps it for the next build; one this script started (CI) drops it.
  [ -z "$own_engine" ] || docker builder prune --all --force >/dev/null 2>&1
  [ -z "$tmp" ] || rm -rf "$tmp"
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    say "FAILED: cleanup left these of project $PROJECT behind: $left"
    rc=1
  fi
  [ "$rc" -eq 0 ] || say "FAILED after $(took "$START") (exit $rc)"
  exit "$rc"
}
tmp=
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d)
chmod 700 "$tmp"
# Everything the compose files interpolate comes from this file, never from the checkout's
# .env. The password is random, unused by the stand-in, and never printed.
unset COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME COMPOSE_ENV_FILES IMAGE_TAG \
  SMOKE_MONGO_PORT FASHION_MNIST_DIR WEIGHTS_DIR MONGO_ROOT_USER MONGO_ROOT_PASSWORD \
  IMAGE_SIZE CHANNELS STRIX_DB STRIX_HOST GPU_CAPACITY HEARTBEAT_S
(
  umask 077
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  cat >"$tmp/smoke.env" <<EOF
MONGO_ROOT_USER=smoke
MONGO_ROOT_PASSWORD=$password
IMAGE_TAG=$TAG
SMOKE_MONGO_PORT=$port
FASHION_MNIST_DIR=$data
EOF
)

say "project $PROJECT, image strix-cpu:$TAG, stand-in mongo on 127.0.0.1:$port, data $data"

# --- 1. build --------------------------------------------------------------------------
t=$SECONDS
if ! dc build worker-cpu >"$tmp/build.log" 2>&1; then
  tail -n 60 "$tmp/build.log" >&2
  fail "docker compose build worker-cpu (Dockerfile.worker)"
fi
say "built strix-cpu:$TAG from Dockerfile.worker in $(took "$t")"

# --- 2. mongo + 2 CPU workers ----------------------------------------------------------
t=$SECONDS
dc up -d --quiet-pull --scale worker-cpu=2 worker-cpu >"$tmp/up.log" 2>&1 ||
  { cat "$tmp/up.log" >&2; fail "docker compose up --scale worker-cpu=2 worker-cpu"; }
dc logs -f --no-color worker-cpu >"$tmp/workers.log" 2>&1 &
logs_pid=$!
say "mongo healthy and 2 workers up in $(took "$t")"

# --- 3. prepare, then the coordinator in the background ---------------------------------
t=$SECONDS
dc run --rm -T prepare --size 28 --channels 1 >"$tmp/prepare.log" 2>&1 ||
  { tail -n 40 "$tmp/prepare.log" >&2; fail "docker compose run prepare --size 28"; }
say "prepared the 28 px cache in $(took "$t")"

t=$SECONDS
dc run --rm -T coordinator --model convstrix --max-evals 3 --image-size 28 --clamp \
  --limit 1000 --max-epochs 1 --seed 1 --exp-key "$EXP" --no-progress \
  >"$tmp/coordinator.log" 2>&1 &
coord_pid=$!

# --- 4. stop worker 2 in the middle of a trial ------------------------------------------
# `docker compose logs` starts each line with "worker-cpu-N  | " (after a terminal escape).
started() { sed -n "s/.*$1  *| .* trial \([0-9][0-9]*\) of $EXP started.*/\1/p" "$tmp/workers.log"; }
line() { grep -c "$1  *| .* trial $2 $3" "$tmp/workers.log" || true; }
deadline=$((SECONDS + 300))
victim=
while [ -z "$victim" ]; do
  victim=$(started worker-cpu-2 | head -n 1)
  [ -z "$victim" ] || break
  kill -0 "$coord_pid" 2>/dev/null || fail "the coordinator ended before worker-cpu-2 started a trial"
  [ "$SECONDS" -lt "$deadline" ] || fail "worker-cpu-2 started no trial in 300 s"
  sleep 0.2
done
[ "$(line worker-cpu-2 "$victim" 'ok:')" = 0 ] ||
  fail "trial $victim ended on worker-cpu-2 before it could be stopped (the race this test must win)"
t_stop=$SECONDS
# Scaling down is compose's stop of one replica (the highest-numbered one): SIGTERM, then up
# to stop_grace_period before a SIGKILL. `docker compose stop` has no way to name a replica.
dc up -d --no-deps --no-recreate --scale worker-cpu=1 worker-cpu >"$tmp/scale.log" 2>&1 ||
  { cat "$tmp/scale.log" >&2; fail "docker compose up --scale worker-cpu=1 (stopping worker-cpu-2)"; }
say "stopped worker-cpu-2 in the middle of trial $victim in $(took "$t_stop")"
remaining=$(dc ps --format '{{.Name}}' worker-cpu)
[ "$remaining" = "$PROJECT-worker-cpu-1" ] || fail "after scaling down, expected only worker-cpu-1, found: $remaining"

# --- the study finishes on worker 1 -----------------------------------------------------
deadline=$((SECONDS + 420))
while kill -0 "$coord_pid" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the coordinator did not finish 3 trials in 420 s"
  sleep 1
done
coord_rc=0
wait "$coord_pid" || coord_rc=$?
coord_pid=
[ "$coord_rc" = 0 ] || fail "the coordinator exited $coord_rc"
say "coordinator finished 3 trials in $(took "$t")"

[ "$(line worker-cpu-2 "$victim" 'put back in the queue')" = 1 ] ||
  fail "worker-cpu-2 did not put trial $victim back in the queue on SIGTERM"
[ "$(line worker-cpu-1 "$victim" 'ok:')" = 1 ] ||
  fail "trial $victim was not finished by worker-cpu-1 after the requeue"
grep -q "worker-cpu-2  *| .* stopped after" "$tmp/workers.log" ||
  fail "worker-cpu-2 did not shut down cleanly"

# --- 5. strix-results from a container ---------------------------------------------------
dc run --rm -T --no-deps --entrypoint strix-results coordinator --exp-key "$EXP" --format json \
  >"$tmp/results.json" 2>"$tmp/results.err" ||
  { cat "$tmp/results.err" >&2; fail "strix-results --format json"; }
python3 - "$tmp/results.json" "$tmp/workers.log" "$victim" <<'PY' || fail "the study's results are wrong"
import json
import re
import sys

path, log_path, victim = sys.argv[1], sys.argv[2], int(sys.argv[3])
status = json.load(open(path, encoding="utf-8"))
counts = status["counts"]
bad = []
if counts["total"] != 3 or counts["ok"] != 3:
    bad.append(f"expected 3 trials, all ok: {counts}")
if any(counts[k] for k in ("queued", "running", "failed", "error")):
    bad.append(f"trials left queued/running/failed/error: {counts}")
if counts["requeued"] != 1:
    bad.append(f"expected exactly the stopped trial requeued: {counts}")
tids = [row["tid"] for row in status["top"]]
if len(tids) != 3 or len(set(tids)) != 3 or victim not in tids:
    bad.append(f"expected 3 distinct finished trials including {victim}: {tids}")
finished = re.findall(r" trial (\d+) ok:", open(log_path, encoding="utf-8").read())
if sorted(map(int, finished)) != sorted(tids):
    bad.append(f"workers logged these finished trials: {sorted(finished)}; results: {tids}")
for line in bad:
    print(f"compose-smoke: {line}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
say "results: 3 trials done exactly once; trial $victim requeued by the stopped worker, finished by the other"

# --- 6. down -v --------------------------------------------------------------------------
kill "$logs_pid" 2>/dev/null || true
logs_pid=
dc down -v --remove-orphans --timeout 30 >"$tmp/down.log" 2>&1 ||
  { cat "$tmp/down.log" >&2; fail "docker compose down -v"; }
left=$(leftovers)
[ -z "$left" ] || fail "docker compose down -v left these behind: $left"
say "PASSED in $(took "$START"): down -v removed every container, volume and network of $PROJECT"
