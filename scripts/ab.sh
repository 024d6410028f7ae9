#!/usr/bin/env bash
# The A/B comparison: the C++ baseline transport against the Rust transport,
# on the built-in software FlagCX provider, in one run.
#
# One benchmark binary (linked against the C++ baseline) runs alternately as
# itself (cpp), with LD_PRELOAD of the Rust cdylib (rust), and in raw mode
# (FlagCX called directly on the submitting thread: the floor), AB_ROUNDS
# rounds each (default 5), rotating the order every round; nic_* scenarios
# run on the software provider's modeled NIC. Prints the table, the ratios,
# the overheads in cross-core round trips and the targets' PASS/FAIL, and
# writes target/ab/report.json and target/ab/ab.png.
#
#   AB_QUICK=1   short run (2-3 minutes), same output
#   AB_ROUNDS=N  rounds per implementation (default 5)
#
# Works on a fresh Debian 12 machine with Rust: installs cmake, g++,
# GoogleTest and matplotlib with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${AB_ROUNDS:-5}
quick=()
[ "${AB_QUICK:-0}" = "1" ] && quick=(--quick)

# ---- system packages ----------------------------------------------------------
. scripts/lib/need.sh
need_pkgs cmake g++ make /usr/include/gtest/gtest.h:libgtest-dev \
  py.matplotlib:python3-matplotlib

# ---- build (release) ----------------------------------------------------------
echo "== building (cargo release + CMake)"
cmake -S . -B build/ab -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/ab -j"$(nproc)" --target mcfx_ab_bench >/dev/null

bench=build/ab/bench/mcfx_ab_bench
rust_lib=$PWD/target/release/libmooncake_flagcx.so
peer_bin=$PWD/target/release/flagcx-sw-peer
out=target/ab
mkdir -p "$out"
runs=$out/runs.jsonl
: >"$runs"

run_impl() {
  local impl=$1 round=$2
  case $impl in
    cpp) "$bench" --impl cpp --round "$round" --peer-bin "$peer_bin" "${quick[@]}" ;;
    rust) LD_PRELOAD=$rust_lib "$bench" --impl rust --round "$round" --peer-bin "$peer_bin" "${quick[@]}" ;;
    raw) "$bench" --impl raw --round "$round" --peer-bin "$peer_bin" "${quick[@]}" ;;
  esac
}

order=(cpp rust raw)
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r/$rounds: ${order[*]}"
  for impl in "${order[@]}"; do
    run_impl "$impl" "$r" >>"$runs"
  done
  order=("${order[@]:1}" "${order[0]}") # rotate: no implementation always runs first
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
/usr/bin/python3 bench/report/ab_report.py "$runs" --commit "$commit" --out "$out"
