#!/usr/bin/env bash
# The A/B comparison: the C++ baseline transport against the Rust transport,
# on the built-in software FlagCX provider, in one run.
#
# One benchmark binary (linked against the C++ baseline) runs alternately as
# itself (cpp), with LD_PRELOAD of the Rust cdylib (rust), and in raw mode
# (FlagCX called directly on the submitting thread: the floor), AB_ROUNDS
# rounds each (default 5), rotating the order every round; nic_* scenarios
# run on the software provider's modeled NIC; kv_* (a KV cache per request,
# from 10 threads that poll) and busy_* (beside busy loops of other
# processes on every core) are among them. Then the scaling curves
# (scripts/ab_scaling.sh: regions, peers, threads; one round). Prints the
# tables, the ratios, the overheads in cross-core round trips and the
# targets' PASS/FAIL, and writes target/ab/report.json, target/ab/ab.png
# and target/ab/ab_scaling.png.
#
#   AB_QUICK=1         short run, same output
#   AB_ROUNDS=N        rounds per implementation (default 5; quick: 3)
#   AB_SCENARIOS=a,b   only these scenarios (comma-separated names)
#   AB_SCALING=0       skip the scaling curves
#   AB_SCALING_ROUNDS=N  rounds of the curves (default 3; quick: 1)
#   scripts/ab.sh --scaling   only the scaling curves (and the report)
#
# Works on a fresh Debian 12 machine with Rust: installs cmake, g++,
# GoogleTest and matplotlib with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
default_rounds=5
default_scaling_rounds=3
if [ "${AB_QUICK:-0}" = "1" ]; then
  quick=(--quick)
  default_rounds=3
  default_scaling_rounds=1
fi
rounds=${AB_ROUNDS:-$default_rounds}
scenarios=all
[ -n "${AB_SCENARIOS:-}" ] && scenarios="round_trip,$AB_SCENARIOS"
only_scaling=0
case "${1:-}" in
  --scaling) only_scaling=1 ;;
  "") ;;
  *) echo "usage: scripts/ab.sh [--scaling]" >&2; exit 2 ;;
esac
scaling=${AB_SCALING:-1}

. scripts/lib/ab.sh

# ---- system packages and the build (release) ------------------------------------
ab_build

peer_bin=$PWD/target/release/flagcx-sw-peer
out=$ab_out
mkdir -p "$out"
runs=$out/runs.jsonl

if [ $only_scaling = 1 ]; then
  # Only the curves: their own table, scaling.json and ab_scaling.png;
  # runs.jsonl and report.json of the last full run stay as they are.
  AB_NO_BUILD=1 exec scripts/ab_scaling.sh
fi
: >"$runs"

run_impl() {
  local impl=$1 round=$2
  ab_as "$impl" "$ab_bench" --impl "$impl" --round "$round" --peer-bin "$peer_bin" \
    --scenario "$scenarios" "${quick[@]}"
}

start=$SECONDS
order=(cpp rust raw)
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r/$rounds: ${order[*]} (at $((SECONDS - start)) s)"
  # The host's 1-minute load average as each round starts: the machine may
  # be shared, and the report prints these next to the numbers.
  ab_loadavg_line "$r" >>"$runs"
  for impl in "${order[@]}"; do
    run_impl "$impl" "$r" >>"$runs"
  done
  ab_rotate
done
scaling_args=()
if [ "$scaling" = 1 ]; then
  echo "== scaling curves (at $((SECONDS - start)) s)"
  AB_SCALING_ROUNDS=${AB_SCALING_ROUNDS:-$default_scaling_rounds} AB_NO_BUILD=1 AB_NO_REPORT=1 \
    scripts/ab_scaling.sh
  scaling_args=(--scaling "$out/scaling.jsonl")
fi
echo "== measured in $((SECONDS - start)) s"

/usr/bin/python3 bench/report/ab_report.py "$runs" --commit "$(ab_commit)" --out "$out" \
  "${scaling_args[@]}"
