#!/usr/bin/env bash
# Target and initiator on two "hosts": two network namespaces joined by a veth
# pair, on this machine (scripts/test.sh runs it; it can run alone, as root).
#
#   scripts/two_hosts.sh
#
#   1. makes two network namespaces, mcfx2h-t-<pid> and mcfx2h-i-<pid>, and a
#      veth pair created inside them (never in the host's namespace), with
#      10.231.0.1/30 (target) and 10.231.0.2/30 (initiator): the only
#      addresses it assigns, each inside a namespace it made;
#   2. builds the release plugin (cargo), installs it with the software
#      provider into a temporary prefix (scripts/install.sh --with-sw-flagcx)
#      and builds tests/two_hosts/two_hosts.c against it (pkg-config): both
#      sides go through the C ABI;
#   3. data: a target in the first namespace with FLAGCX_SW_LISTEN_ADDR=
#      10.231.0.1 must publish 10.231.0.1:<port>; an initiator in the second
#      reads its buffer, writes it, reads it back, checking every byte;
#   4. kill: the initiator keeps writes in flight, the target is killed
#      (SIGKILL) and reaped; every op submitted after that must fail, none
#      may succeed or hang (all complete within 15 s; op timeout 5 s);
#   5. refused: a target in a PID namespace of its own (unshare --pid) is
#      refused by the provider's handshake (its pid would name another
#      process here): the initiator's write gets MCFX_E_CONNECT. Skipped,
#      with a note, where unshare --pid is not permitted.
#
# Everything it made (processes, namespaces and the veth pair with them, the
# temporary directory) is removed on exit. Every wait is bounded. Exits 0
# printing "SKIP: ..." where namespaces cannot be made (not root, no `ip`
# and iproute2 cannot be installed, not permitted).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
unset FLAGCX_HOME

log() { printf '\n== %s\n' "$*"; }
skip() { printf 'SKIP: %s\n' "$*"; exit 0; }
fail() { printf 'two_hosts: FAIL: %s\n' "$*" >&2; exit 1; }

started=$(date +%s%N)
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (uid $(id -u))"
. "$root/scripts/lib/need.sh"
if ! command -v ip >/dev/null; then
  (need_pkgs ip:iproute2) || skip "no ip command, and iproute2 could not be installed"
  command -v ip >/dev/null || skip "no ip command after installing iproute2"
fi
need_pkgs cc:gcc readelf:binutils pkg-config timeout:coreutils

ns_t=mcfx2h-t-$$
ns_i=mcfx2h-i-$$
addr_t=10.231.0.1
addr_i=10.231.0.2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcfx-two-hosts.XXXXXX")
pids=()
made_ns=()
cleanup() {
  local p n
  for p in "${pids[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  # Deleting a namespace deletes the veth end in it, and with it the pair.
  for n in "${made_ns[@]}"; do
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# reap PID: waits for a process this script started and forgets it, so the
# cleanup never signals a pid that may have been reused.
reap() {
  local p kept=()
  wait "$1" 2>/dev/null || true
  for p in "${pids[@]}"; do
    [ "$p" = "$1" ] || kept+=("$p")
  done
  pids=("${kept[@]}")
}
trap 'exit 130' INT TERM

# ---- 1. namespaces --------------------------------------------------------
log "namespaces $ns_t ($addr_t) and $ns_i ($addr_i), joined by a veth pair"
err=$(ip netns add "$ns_t" 2>&1) || skip "cannot create a network namespace: $err"
made_ns+=("$ns_t")
ip netns add "$ns_i" || fail "ip netns add $ns_i"
made_ns+=("$ns_i")
# Created inside $ns_t with its peer inside $ns_i: the host's namespace never
# holds either end.
ip -n "$ns_t" link add mcfx-t type veth peer name mcfx-i netns "$ns_i" ||
  skip "cannot create a veth pair inside the namespaces"
ip -n "$ns_t" addr add "$addr_t/30" dev mcfx-t
ip -n "$ns_i" addr add "$addr_i/30" dev mcfx-i
for n in "$ns_t" "$ns_i"; do
  ip -n "$n" link set lo up
done
ip -n "$ns_t" link set mcfx-t up
ip -n "$ns_i" link set mcfx-i up
# Both ends carry (LOWER_UP) before anything connects: up to 5 s.
for ((i = 0; i < 50; i++)); do
  ip -n "$ns_t" link show mcfx-t | grep -q LOWER_UP &&
    ip -n "$ns_i" link show mcfx-i | grep -q LOWER_UP && break
  sleep 0.1
done
ip -n "$ns_t" -brief addr show
ip -n "$ns_i" -brief addr show

# ---- 2. build -------------------------------------------------------------
log "build: cargo (release), install with the software provider, tests/two_hosts/two_hosts.c"
cargo build --release --locked -q 2>/dev/null || cargo build --release --locked
scripts/install.sh "$tmp/prefix" --with-sw-flagcx >/dev/null
export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
cc -std=c11 -O2 -Wall -Wextra -Werror tests/two_hosts/two_hosts.c -o "$tmp/two_hosts" \
  $(pkg-config --cflags --libs mooncake_flagcx) \
  -Wl,-rpath,"$(pkg-config --variable=libdir mooncake_flagcx)"
bin=$tmp/two_hosts

# in_ns NS ADDR CMD...: execs CMD in namespace NS, the provider bound to
# ADDR. Call it in a subshell: `(in_ns ...)`, or `in_ns ... &`, whose $! is
# then CMD's own pid (ip netns exec and env exec too).
in_ns() {
  local ns=$1 addr=$2
  shift 2
  exec ip netns exec "$ns" env FLAGCX_SW_LISTEN_ADDR="$addr" "$@"
}

# start_target LABEL [WRAPPER...]: starts a target (in $ns_t, 8 MiB; it exits
# by itself after 60 s), waits up to 10 s for its ready line; sets tpid (the
# pid to kill: the target's, or the wrapper's), tline, endpoint, raddr, rlen.
start_target() {
  local label=$1 line="" i
  shift
  in_ns "$ns_t" "$addr_t" "$@" "$bin" target $((8 << 20)) 60 >"$tmp/$label.out" 2>&1 &
  tpid=$!
  pids+=("$tpid")
  for ((i = 0; i < 100; i++)); do
    line=$(grep -m1 '^ready ' "$tmp/$label.out" || true)
    [ -n "$line" ] && break
    kill -0 "$tpid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$line" ] || fail "the $label target did not start: $(cat "$tmp/$label.out")"
  echo "$label target: $line"
  tline=$line
  endpoint=$(sed -n 's/.* endpoint=\([^ ]*\).*/\1/p' <<<"$line")
  raddr=$(sed -n 's/.* addr=\([^ ]*\).*/\1/p' <<<"$line")
  rlen=$(sed -n 's/.* len=\([^ ]*\).*/\1/p' <<<"$line")
}

# ---- 3. data --------------------------------------------------------------
log "data: initiator in $ns_i reads, writes and reads back the target's 8 MiB in $ns_t"
start_target data
case $endpoint in
  "$addr_t":*) ;;
  *) fail "the target published $endpoint, not $addr_t:<port> (FLAGCX_SW_LISTEN_ADDR=$addr_t)" ;;
esac
(in_ns "$ns_i" "$addr_i" timeout 30 "$bin" data "$endpoint" "$raddr" "$rlen") ||
  fail "data between the namespaces"

# ---- 4. kill --------------------------------------------------------------
log "kill: the target is killed mid-traffic; the initiator's later ops must fail, not hang"
mkfifo "$tmp/notice"
exec 3<>"$tmp/notice" # read-write: neither side's open blocks
# No `timeout` here: $! must be the initiator itself (the cleanup kills it);
# it bounds its own waits (45 s for the notice, 15 s after it).
in_ns "$ns_i" "$addr_i" "$bin" traffic "$endpoint" "$raddr" "$rlen" \
  <"$tmp/notice" >"$tmp/traffic.out" 2>&1 &
ipid=$!
pids+=("$ipid")
for ((i = 0; i < 200; i++)); do
  grep -q '^traffic ok' "$tmp/traffic.out" && break
  kill -0 "$ipid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^traffic ok' "$tmp/traffic.out" ||
  fail "no traffic within 20 s: $(cat "$tmp/traffic.out")"
[[ $tline == *" pid=$tpid" ]] || fail "the target's pid is not $tpid: $tline"
kill -KILL "$tpid"
reap "$tpid"
echo "target (pid $tpid) killed mid-traffic and reaped"
echo killed >&3
rc=0
wait "$ipid" || rc=$?
reap "$ipid"
exec 3>&-
cat "$tmp/traffic.out"
[ "$rc" = 0 ] || fail "the kill case (initiator exit status $rc)"

# ---- 5. another PID namespace ---------------------------------------------
log "refused: a target in a PID namespace of its own"
if ip netns exec "$ns_t" unshare --pid --fork --kill-child true 2>/dev/null; then
  start_target pidns unshare --pid --fork --kill-child
  (in_ns "$ns_i" "$addr_i" timeout 30 "$bin" refused "$endpoint" "$raddr" "$rlen") 2>&1 ||
    fail "a target in another PID namespace was not refused"
  # Refused for that reason, by the handshake: the target saw the
  # initiator's hello first.
  grep -m1 'refusing a peer' "$tmp/pidns.out" ||
    fail "the target did not refuse the handshake: $(cat "$tmp/pidns.out")"
else
  echo "note: unshare --pid is not permitted here; case skipped"
fi

elapsed=$((($(date +%s%N) - started) / 1000000))
log "two hosts passed in $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000))) s"
