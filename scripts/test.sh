#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the Rust suites (flagcx-sys
# and the transport) against the in-tree software FlagCX provider, and -- once
# the C++ side exists -- the CMake/GoogleTest suites.
#
# Works on a fresh Debian 12 machine with Rust: missing system packages are
# installed with apt-get (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# ---- system packages --------------------------------------------------------
need_pkgs=()
command -v g++ >/dev/null || need_pkgs+=(g++)
command -v make >/dev/null || need_pkgs+=(make)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}"
fi

# ---- Rust -------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked

log "all tests passed"
