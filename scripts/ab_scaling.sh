#!/usr/bin/env bash
# The scaling curves: nic_batch64_4k traffic (one submit of 64
# ops of 4 KiB, wait for all, next; the software provider's modeled NIC) as
# one dimension grows, for cpp, rust (LD_PRELOAD) and raw:
#   regions  1 16 256 4096 65536   registered 4 KiB regions on each side, op k
#                                  in region k % x on both sides
#   regions_local, regions_remote  the same points with x regions on one side
#                                  only (the initiator's, the target's) and one
#                                  on the other: which side's lookups grow
#                                  (not run by default; name them in
#                                  AB_SCALING_DIMS)
#   peers    1 4 16 64 256         target transports in the process (raw:
#                                  target engines), op k to peer k % x; the
#                                  targets run with connect_threads = 1
#   threads  1 2 4 8 16 32         submitting threads, one batch in flight each
# One benchmark process per point (mcfx_ab_bench --scaling DIM:X), so its
# VmRSS deltas (per region registered, per target transport, per peer
# connected) start from a fresh process. Every process is bounded by
# `timeout`. Writes target/ab/scaling.jsonl; prints the table and writes
# target/ab/scaling.json and target/ab/ab_scaling.png.
#
#   AB_QUICK=1               0.3 s measured per point instead of 0.5 s
#   AB_SCALING_ROUNDS=N      rounds (default 1)
#   AB_SCALING_DIMS="..."    curves to run (default: regions peers threads)
#   AB_NO_BUILD=1            skip the build (scripts/ab.sh has built)
#   AB_NO_REPORT=1           skip the report (scripts/ab.sh reports)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${AB_SCALING_ROUNDS:-1}
dims=${AB_SCALING_DIMS:-regions peers threads}
quick=()
[ "${AB_QUICK:-0}" = "1" ] && quick=(--quick)

. scripts/lib/ab.sh
[ "${AB_NO_BUILD:-0}" = "1" ] || ab_build

out=$ab_out
mkdir -p "$out"
runs=$out/scaling.jsonl
log=$out/scaling.log
: >"$runs"
: >"$log"

points() {
  case $1 in
    regions | regions_local | regions_remote) echo 1 16 256 4096 65536 ;;
    peers) echo 1 4 16 64 256 ;;
    threads) echo 1 2 4 8 16 32 ;;
    *) echo "ab_scaling.sh: unknown curve $1" >&2; exit 2 ;;
  esac
}

# One point: at most 10 minutes (the C++ baseline needs about a minute to
# register 2 x 65 536 regions on this kind of machine; the rest take seconds).
run_point() {
  local impl=$1 round=$2 point=$3 rc=0
  ab_as "$impl" timeout -k 10 600 "$ab_bench" --impl "$impl" --round "$round" \
    --scaling "$point" "${quick[@]}" >>"$runs" 2>>"$log" || rc=$?
  [ $rc -eq 0 ] || echo "ab_scaling.sh: $impl $point failed (exit $rc; see $log)" >&2
}

order=(cpp rust raw)
for ((r = 1; r <= rounds; r++)); do
  for dim in $dims; do
    echo "== scaling round $r/$rounds: $dim $(points "$dim")"
    ab_loadavg_line "$r" "\"curve\":\"$dim\"," >>"$runs"
    for x in $(points "$dim"); do
      for impl in "${order[@]}"; do
        run_point "$impl" "$r" "$dim:$x"
      done
      ab_rotate
    done
  done
done

if [ "${AB_NO_REPORT:-0}" != "1" ]; then
  /usr/bin/python3 bench/report/scaling_report.py "$runs" --commit "$(ab_commit)" --out "$out"
fi
