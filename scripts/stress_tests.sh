#!/usr/bin/env bash
# Runs the Rust suites (cargo test --workspace) and the C++ suites (CTest, the
# plain build) while a CPU hog keeps every core busy: what a shared CI machine
# does to timing. A test that fails here depends on timing.
#
#   scripts/stress_tests.sh [rounds]     (default 1)
#
# Everything is built first, without the hog; then each round starts one
# busy-loop process per core (STRESS_HOGS=N to change; normal priority), runs
# both suites, and stops the hog. Each hog process ends by itself after
# STRESS_HOG_SECONDS (default 1800) and is killed when the script exits, however
# it exits. Logs: target/stress/. Exits non-zero if any suite failed in any
# round.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-1}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [rounds]   (rounds: a positive integer)" >&2
  exit 2
fi
hogs=${STRESS_HOGS:-$(nproc)}
hog_seconds=${STRESS_HOG_SECONDS:-1800}
jobs=$(nproc)
logs=target/stress
mkdir -p "$logs"

log() { printf '\n== %s\n' "$*"; }

# Job control: every background job below (hog process, suite) gets its own
# process group, so one kill reaches a suite's children too, and the script
# waits on them with `wait`, which a signal interrupts (a foreground command
# would hold the traps back until it ended).
set -m
hog_pids=()
suite_pid=
stop_jobs() { # pids...
  local pid
  for pid in "$@"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    wait "$pid" 2>/dev/null || true
  done
}
stop_hog() {
  stop_jobs "${hog_pids[@]}"
  hog_pids=()
}
cleanup() {
  [ -z "$suite_pid" ] || stop_jobs "$suite_pid"
  stop_hog
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_hog() {
  local i
  for ((i = 0; i < hogs; i++)); do
    # A pure busy loop that ends by itself after hog_seconds.
    (
      end=$((SECONDS + hog_seconds))
      while ((SECONDS < end)); do :; done
    ) &
    hog_pids+=($!)
  done
}

# ---- build everything first (no hog) ------------------------------------------
log "build: Rust test binaries"
cargo test --workspace --locked --no-run
log "build: C++ suites (CMake, plain)"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/test -j"$jobs"

# ---- rounds -------------------------------------------------------------------
failures=()
run_suite() { # name log command...
  local name=$1 out=$2
  shift 2
  local start=$SECONDS rc=0
  "$@" >"$out" 2>&1 &
  suite_pid=$!
  wait "$suite_pid" || rc=$?
  suite_pid=
  if [ "$rc" -eq 0 ]; then
    echo "   $name: passed ($((SECONDS - start)) s)"
  else
    echo "   $name: FAILED ($((SECONDS - start)) s), log $out; its tail:"
    grep -E "panicked|FAILED|Failed|failed|\[  FAILED  \]" "$out" | head -n 40 || true
    tail -n 20 "$out"
    failures+=("round $round: $name")
  fi
}

for ((round = 1; round <= rounds; round++)); do
  log "round $round of $rounds: $hogs busy-loop processes on $(nproc) cores"
  start_hog
  run_suite "cargo test --workspace" "$logs/round-$round-rust.log" \
    cargo test --workspace --locked
  run_suite "ctest (plain)" "$logs/round-$round-ctest.log" \
    ctest --test-dir build/test --output-on-failure -j"$jobs"
  stop_hog
done

if ((${#failures[@]} > 0)); then
  log "FAILED under load:"
  printf '   %s\n' "${failures[@]}"
  exit 1
fi
log "all suites passed under load ($rounds round(s))"
