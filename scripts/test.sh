#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the generated-header
# check, the Rust suites (flagcx-sys and the transport) against the in-tree
# software FlagCX provider, and the loom model of the wake protocol.
#
# Works on a fresh Debian 12 machine with Rust: missing system packages are
# installed with apt-get (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# ---- system packages --------------------------------------------------------
need_pkgs=()
command -v g++ >/dev/null || need_pkgs+=(g++)
command -v cc >/dev/null || need_pkgs+=(gcc)
command -v git >/dev/null || need_pkgs+=(git)
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

log "cargo build (the cdylib, which C tests link, and the header)"
cargo build --workspace --locked

log "generated header is current"
# The builds above regenerated include/ with cbindgen.
if [ -d .git ] && ! git diff --exit-code -- include/; then
  echo "include/mooncake_flagcx.h is out of date: commit the regenerated header" >&2
  exit 1
fi

log "cargo test"
cargo test --workspace --locked

log "loom model of the wake protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test --release --locked --test loom_wake

log "all tests passed"
