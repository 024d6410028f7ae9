#!/usr/bin/env bash
# Create/destroy transports in a loop under valgrind: no memory definitely or
# indirectly lost, and nothing still reachable grows with the round count:
# 100 rounds and LEAK_ROUNDS rounds (default 1000) must end with "still
# reachable" totals less than one byte per extra round apart. (A one-time
# difference of a couple of hundred bytes was seen under load: parking_lot's
# global hash table keeps its old tables and is sized by the most threads
# ever alive at once, a matter of timing; a leak of even one byte per round
# shows as 900 bytes or more.)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${LEAK_ROUNDS:-1000}
. scripts/lib/need.sh
need_pkgs valgrind
cargo build --locked -q --example create_destroy
reachable() {
  local log
  log=$(mktemp)
  valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=9 \
    target/debug/examples/create_destroy "$1" >"$log" 2>&1 || { cat "$log"; echo "leak_check: valgrind reported a leak or an error" >&2; exit 1; }
  grep -E "definitely lost|indirectly lost" "$log" >&2
  grep -oE "still reachable: [0-9,]+ bytes" "$log" | tr -dc '0-9' || echo 0
  rm -f "$log"
}
small=$(reachable 100)
large=$(reachable "$rounds")
echo "leak_check: still reachable after 100 rounds: $small bytes; after $rounds rounds: $large bytes"
extra_rounds=$((rounds - 100))
if [ "$large" -ge $((small + extra_rounds)) ]; then
  echo "leak_check: memory grows with create/destroy rounds" >&2
  exit 1
fi
echo "leak_check: $rounds create/destroy rounds, no leak"
