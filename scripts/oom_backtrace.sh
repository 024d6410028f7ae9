#!/usr/bin/env bash
# Finds where allocation failure still aborts: runs children of
# tests/oom_address_limit.rs as plain processes with core dumps on, and for
# each one that dies prints the message and the backtrace frames outside the
# allocator, the panic machinery and libc (from the core, with gdb).
#
#   scripts/oom_backtrace.sh [-n RUNS] SPEC ...
#
# SPEC is a child as the tests name it: a scenario (create-warm-16m, sweep-warm-64m,
# inject-connect) or scenario@budget (squeeze-connect@64,
# squeeze-create-as@2097152); `all` runs every spec of the three tests.
# Sweep children differ by thread timing, so several runs find more sites.
# RUST_BACKTRACE cannot help: a failed allocation aborts without unwinding.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/need.sh
source scripts/lib/need.sh
need_pkgs gdb python3
runs=1
if [ "${1:-}" = -n ]; then runs=$2; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,14p' "$0"; exit 2; }
cargo build -q -p flagcx-sys --features test-support --bin flagcx-sw-peer
bin=$(cargo test -q --no-run --test oom_address_limit --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "oom_address_limit" and m.get("executable"):
        print(m["executable"])')
specs=("$@")
if [ "$1" = all ]; then
  specs=(create-warm-64m create-warm-16m create-warm-1m create-cold-64m create-cold-8m
    sweep-warm-64m sweep-warm-16m sweep-cold-64m inject-connect)
  for b in 0 16384 262144 1048576 2097152 2113536 2359296 3145728 4259840 5242880 6324224 \
    7340032 8454144 9437184 10551296 11534336 12582912 16777216; do
    specs+=("squeeze-create-as@$b")
  done
  for s in squeeze-create-heap squeeze-connect squeeze-register squeeze-submit; do
    for b in 0 16 32 48 64 96 128 192 256 384 512 768 1024 1536 2048 4096 8192 16384 65536; do
      specs+=("$s@$b")
    done
  done
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for spec in "${specs[@]}"; do
  case $spec in
    create-* | squeeze-create-as@[1-9][0-9][0-9][0-9][0-9][0-9]*) test=create_under_an_address_space_limit_never_aborts_the_host ;;
    inject-*) test=a_connector_thread_survives_failing_allocations_at_every_step ;;
    *) test=every_caller_path_under_an_exhausted_heap_never_aborts_the_host ;;
  esac
  env=(MCFX_OOM_CHILD="$spec")
  case $spec in
    squeeze-*) env+=(MALLOC_ARENA_MAX=1 GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0) ;;
  esac
  for i in $(seq "$runs"); do
    rm -f "$work"/core*
    rc=0
    (cd "$work" && ulimit -c unlimited &&
      env "${env[@]}" timeout 300 "$bin" --exact "$test" --include-ignored --nocapture \
        --test-threads=1 >"$work/out" 2>&1) 2>/dev/null || rc=$?
    if [ "$rc" = 0 ]; then
      echo "== $spec #$i: exited normally"
      continue
    fi
    echo "== $spec #$i: exit $rc: $(grep -m1 'memory allocation of\|Fatal glibc\|panicked' "$work/out" || true)"
    core=$(find "$work" -maxdepth 1 -name 'core*' | head -1)
    if [ -z "$core" ]; then
      tail -5 "$work/out"
      continue
    fi
    # The frames below the outermost failure (an allocation error, a glibc
    # fatal error, std's failed signal stack), without the runtime's own.
    gdb -q -batch -ex 'set pagination off' -ex 'bt 200' "$bin" "$core" 2>/dev/null |
      grep -E '^#[0-9]+ ' |
      awk '/handle_alloc_error|__libc_fatal|stack_overflow::imp::get_stack|core::panicking::panic/ { n = 0; delete kept; next }
           { kept[n++] = $0 } END { for (i = 0; i < n; i++) print kept[i] }' |
      grep -vE " (std::alloc|alloc::|core::|std::sys::backtrace|std::panicking|std::thread::lifecycle|start_thread|clone3|test::|__rust_|std::panic::catch_unwind|<alloc)" |
      sed -E 's/ \([^()]*\) at / at /; s/0x[0-9a-f]+ in //; s/\/rustc\/[0-9a-f]+\///' |
      head -"${FRAMES:-10}" | cut -c1-200
  done
done
