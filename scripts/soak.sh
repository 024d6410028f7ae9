#!/usr/bin/env bash
# Soak: SOAK_OPS random transfers (default 1 000 000; 1 B to 4 MiB, reads and
# writes, two in-process peers and one cross-process peer) with checksums.
# Ends with exactly one line: soak: ops=N corrupt=C lost=L duplicated=D
# and exits non-zero unless all three are 0 (and no op failed).
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_OPS=${SOAK_OPS:-1000000}
cargo build --release --locked -q -p flagcx-sys --features test-support --bin flagcx-sw-peer
cargo build --release --locked -q --example soak
exec target/release/examples/soak "$@"
