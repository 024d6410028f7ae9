#!/usr/bin/env bash
# Regenerates include/mooncake_flagcx.h: the build generates it with cbindgen
# (the version Cargo.lock pins) into its OUT_DIR, and this copies it into the
# source tree. `--check` only compares (exit 1 when the committed copy is out
# of date), which is what scripts/test.sh runs.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir=$(cargo build --locked --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    # This package (not flagcx-sys): its id ends with "#mooncake-flagcx@<version>".
    if m.get("reason") == "build-script-executed" and "#mooncake-flagcx@" in m["package_id"]:
        print(m["out_dir"])
' | tail -n 1)
generated=$out_dir/mooncake_flagcx.h
[ -f "$generated" ] || { echo "header.sh: the build generated no header ($generated)" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
  if ! diff -u include/mooncake_flagcx.h "$generated"; then
    echo "include/mooncake_flagcx.h is out of date: run scripts/header.sh and commit it" >&2
    exit 1
  fi
  echo "include/mooncake_flagcx.h is current"
else
  cp "$generated" include/mooncake_flagcx.h
  echo "wrote include/mooncake_flagcx.h"
fi
