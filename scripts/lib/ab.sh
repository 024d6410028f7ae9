# shellcheck shell=bash
# Sourced by scripts/ab.sh and scripts/ab_scaling.sh (from the repository's
# root): what both do the same way. The benchmark binary, the Rust cdylib it
# runs with under LD_PRELOAD and the output directory:
# shellcheck disable=SC2034 # used by the scripts that source this file
ab_bench=build/ab/bench/mcfx_ab_bench
ab_rust_lib=$PWD/target/release/libmooncake_flagcx.so
# shellcheck disable=SC2034 # as above
ab_out=target/ab

# ab_build: installs what is missing and builds the benchmark in release mode
# (CMake builds the Rust cdylib with cargo too).
ab_build() {
  . scripts/lib/need.sh
  need_pkgs cmake g++ make /usr/include/gtest/gtest.h:libgtest-dev \
    py.matplotlib:python3-matplotlib
  echo "== building (cargo release + CMake)"
  cmake -S . -B build/ab -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/ab -j"$(nproc)" --target mcfx_ab_bench >/dev/null
}

# ab_as IMPL COMMAND...: runs COMMAND (the benchmark, or a wrapper that runs
# it) as implementation IMPL: rust preloads the Rust cdylib, cpp and raw run
# the binary as it is.
ab_as() {
  local impl=$1
  shift
  if [ "$impl" = rust ]; then
    LD_PRELOAD=$ab_rust_lib "$@"
  else
    "$@"
  fi
}

# ab_loadavg_line ROUND [FIELDS]: the JSON line that records the host's
# 1-minute load average as a round (or a curve) starts; FIELDS, if given,
# go in before "round" (e.g. '"curve":"peers",'). The reports print them:
# the machine may be shared.
ab_loadavg_line() {
  printf '{"scenario":"loadavg","impl":"host",%s"round":%d,"loadavg1":%s}\n' \
    "${2:-}" "$1" "$(cut -d' ' -f1 /proc/loadavg)"
}

# ab_rotate: moves the first of the array `order` to its end, so that no
# implementation always runs first.
ab_rotate() {
  order=("${order[@]:1}" "${order[0]}")
}

# ab_commit: the short commit the reports name.
ab_commit() {
  git rev-parse --short HEAD 2>/dev/null || echo unknown
}
