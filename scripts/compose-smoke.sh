#!/usr/bin/env bash
# The compose deployment tried end to end, the way it fails in production:
#
#   scripts/compose-smoke.sh                     # with `docker compose` (v2, BuildKit)
#   COMPOSE="docker-compose" scripts/compose-smoke.sh    # or any other compose-like command
#
# Builds the images, starts redis + server + worker, and checks, in order:
#   1. the server answers its health check and one job's masks come back;
#   2. `--scale worker=3` gives three workers, as `maskfarm workers` lists them;
#   3. a worker SIGKILLed in the middle of a job: the job still finishes, every frame;
#   4. Redis restarted in the middle of a job: the job still finishes, every frame;
#   5. `down` then `up`: a finished job and a queued one are still there, and the queued
#      one runs.
# Then `down` (volumes kept; KEEP_UP=1 leaves everything running). Exits non-zero at the
# first check that fails. Needs on this host: the compose command, docker, and a Python
# with the maskfarm client (`pip install .`, or the test venv: scripts/test.sh makes it).
# The worker must be able to load its model (MASKFARM_MODEL; a synthetic one is fine).
# Heavy (builds both images): not part of the test suite; runs are recorded in docs/DEPLOY.md.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
read -r -a compose <<<"${COMPOSE:-docker compose}"
python="${PYTHON:-$repo_root/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
export MASKFARM_TARGET="${MASKFARM_TARGET:-localhost:50051}"
work="$(mktemp -d)"
started=$SECONDS

say() { printf '[compose-smoke %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
c() { "${compose[@]}" "$@"; }
check() { "$python" "$repo_root/scripts/compose_smoke_checks.py" "$@"; }
finish() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        say "logs of the last 60 s:"
        c logs --no-color --tail=40 >&2 || true
    fi
    [[ "${KEEP_UP:-0}" == 1 ]] || c down >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT

say "build"
c build
say "up (redis, server, one worker)"
c up -d
check wait-healthy --workers 1 || fail "the server or the worker did not come up"

say "1. one job's masks back"
check one-job --output "$work/masks" || fail "one job"

say "2. --scale worker=3"
c up -d --scale worker=3
check wait-healthy --workers 3 || fail "maskfarm workers did not list three workers"

say "3. a worker SIGKILLed mid-job"
check kill-worker-mid-job || fail "the job of a killed worker did not finish"

say "4. Redis restarted mid-job"
check mid-job --during "${COMPOSE:-docker compose} restart redis" || fail "the job did not survive a Redis restart"

say "5. down / up keeps jobs"
check submit --frames 4 --wait --save "$work/jobs.json" || fail "could not run a job"
c up -d --scale worker=0
check submit --frames 4 --save "$work/jobs.json" || fail "could not queue a job"
c down
c up -d --scale worker=1
check wait-healthy --workers 1 || fail "the deployment did not come back up"
check finished --load "$work/jobs.json" || fail "jobs were lost across down/up"

say "PASS in $((SECONDS - started)) s"
