#!/usr/bin/env bash
# How long CI's test command takes on a fresh clone, idle and with both cores kept busy.
#
#   bash benchmarks/suite_time.sh [RUNS_UNDER_LOAD]      (default 5)
#
# Clones the committed HEAD into a temporary folder (as CI does), runs `bash .ci/run` once on an otherwise
# idle machine, then RUNS_UNDER_LOAD times while two busy loops occupy both cores, printing each run's
# wall time and exit status and the 15 slowest tests of the idle run. Results go in docs/testing.md.
# The first run also builds the clone's .venv (pip's cache makes that about a minute); its time is
# reported apart.
set -uo pipefail
runs=${1:-5}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
git clone -q "$src" "$work/clone"
cd "$work/clone"
start=$(date +%s); make venv >/dev/null 2>&1; echo "venv: $(( $(date +%s) - start )) s"
export CI=true
run() {  # label
  local start rc
  start=$(date +%s)
  PYTEST_ADDOPTS="--durations=15" bash .ci/run >"$work/$1.log" 2>&1; rc=$?
  echo "$1: $(( $(date +%s) - start )) s, exit $rc, $(grep -E '^[0-9]+ passed' "$work/$1.log" | tr '\n' ' ')"
}
run idle
grep -A16 "slowest 15 durations" "$work/idle.log" | head -17
for i in $(seq 1 "$runs"); do
  ( while :; do :; done ) & a=$!
  ( while :; do :; done ) & b=$!
  run "loaded-$i"
  kill $a $b
done
