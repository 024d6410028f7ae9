#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the generated-header
# check, the Rust suites (flagcx-sys and the transport) against the in-tree
# software FlagCX provider, the loom models (wake protocol, submission ring,
# queue admission, region holds, waiting for room, callers waiting for
# their ops), a valgrind leak check, a
# short soak, 30 s of fuzzing of the C ABI, the C++ suites (C ABI, baseline,
# Mooncake adapter) with CTest, plain and under AddressSanitizer + UBSan, the
# installed tree (scripts/install_check.sh), two simulated hosts in
# network namespaces (scripts/two_hosts.sh; skipped where they cannot be
# made) and the Python tests of Mooncake's Python module (python/tests/;
# skipped where that module is not installed).
#
# Works on a fresh Debian 12 machine with Rust: missing system packages are
# installed with apt-get (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# ---- system packages --------------------------------------------------------
. scripts/lib/need.sh
need_pkgs g++ cc:gcc git cmake make valgrind /usr/include/gtest/gtest.h:libgtest-dev

# ---- Rust -------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (the cdylib, which C tests link)"
cargo build --workspace --locked

log "the committed header is the generated one (scripts/header.sh regenerates it)"
scripts/header.sh --check

log "cargo test"
cargo test --workspace --locked

log "loom models: wake protocol, submission ring, queue admission, region holds, waiting for room, waiting callers"
RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom \
  cargo test --release --locked --test loom_wake --test loom_ring --test loom_gate --test loom_holds \
  --test inflight_loom_room --test loom_waiters

log "leak check: 1000 create/destroy rounds under valgrind"
scripts/leak_check.sh

log "soak (short; scripts/soak.sh runs 1 000 000 ops by default)"
SOAK_OPS=${SOAK_OPS:-20000} scripts/soak.sh

log "fuzz: register/unregister/submit through the C ABI (${FUZZ_SECONDS:-30} s)"
# cargo fuzz needs nightly compiler features; this machine has only stable
# Rust, so RUSTC_BOOTSTRAP=1 enables them for the fuzz build alone.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q ||
  echo "cargo-fuzz could not be installed: fuzz run skipped"
if command -v cargo-fuzz >/dev/null; then
  mkdir -p target
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none c_abi -- \
    -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=4096 >../target/fuzz.log 2>&1); then
    tail -n 80 target/fuzz.log
    echo "fuzz: the c_abi target failed (reproducer in fuzz/artifacts/c_abi/)" >&2
    exit 1
  fi
  grep -E "^Done [0-9]+ runs" target/fuzz.log
fi

jobs=$(nproc)
log "C++ suites (CTest)"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/test -j"$jobs"
ctest --test-dir build/test --output-on-failure -j"$jobs"

log "C++ suites under AddressSanitizer + UBSan"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMCFX_SANITIZE=ON >/dev/null
cmake --build build/asan -j"$jobs"
ctest --test-dir build/asan --output-on-failure -j"$jobs"

# ---- the installed tree (scripts/install_check.sh) ----------------------------
log "install check: cmake --install, pkg-config + CMake consumers, readelf -d"
scripts/install_check.sh

log "two hosts: target and initiator in two network namespaces (skips unless root)"
scripts/two_hosts.sh

log "Python tests (python/tests/: skipped without Mooncake's Python module; scripts/mooncake.sh --python runs them with it)"
need_pkgs py.pytest:python3-pytest
/usr/bin/python3 -m pytest -p no:cacheprovider -q -rs python/tests

log "all tests passed"
