#!/usr/bin/env bash
# Puts this project's FlagCX transport into a Mooncake checkout, builds
# Mooncake's transfer engine and tebench with it, and checks it end to end:
#
#   scripts/mooncake.sh <mooncake-checkout> [--python] [--ab] [--flagcx-home DIR]
#                       [--yalantinglibs DIR] [--rounds N] [--work DIR]
#
#   1. checks the checkout is a supported Mooncake (branch feat/flagcx-support,
#      or the layout of Mooncake PR #3522 with flagcx_transport_internal.h);
#   2. builds this project and installs it into <work>/prefix
#      (scripts/install.sh --with-sw-flagcx: the plugin, and the software
#      provider in <work>/prefix/lib/mooncake_flagcx/sw-flagcx, a tree Mooncake
#      accepts as FLAGCX_HOME); --flagcx-home DIR uses a real FlagCX instead
#      (the plugin is then built against it);
#   3. copies the adapter (mooncake/include, mooncake/src) over Mooncake's
#      FlagCX transport in the checkout (upstream's two files are kept in
#      <work>/upstream-files/ first);
#   4. configures mooncake-transfer-engine with USE_FLAGCX=ON and
#      FLAGCX_HOME, builds tebench (in <work>/build-flagcx);
#   5. runs tebench on loopback, target and initiator processes, writes and
#      reads of 4 KiB to 1 MiB with --check_consistency, once with Mooncake's
#      HTTP metadata server and once with P2PHANDSHAKE; prints a summary.
#
#   --python  also builds Mooncake's Python module (the top-level CMake,
#          WITH_TE=ON, WITH_STORE=OFF, USE_FLAGCX=ON, target `engine`, in
#          <work>/build-py-adapter) with the adapter, packs it as a wheel of
#          the `mooncake` package with the plugin and the FlagCX it was built
#          against (<work>/py/adapter/dist/; python/make_wheel.py), installs
#          it into a venv (<work>/py/adapter/venv, with pytest and aiohttp)
#          and runs this project's Python tests (python/tests/) there.
#
#   --ab   (implies --python unless AB_SUITES leaves out python) also
#          builds an untouched copy of the
#          checkout's transfer engine with upstream's own FlagCX transport
#          (<work>/build-upstream) and
#          runs tebench for both, interleaved over --rounds rounds (default
#          3), on the software provider's copy mode and, when the provider
#          has it, its modeled NIC, for each batch size of AB_BATCHES;
#          writes <work>/ab/{table.md,report.json,ab.png}
#          (bench/report/tebench_report.py). Mode `busy` is copy mode with
#          a bounded busy loop (another process) on every core, `busynic`
#          the modeled NIC with the same busy loops. Then the
#          Python-level A/B: the Python module built a second time with
#          upstream's transport (<work>/build-py-upstream, its own wheel and
#          venv), and for each, over the same rounds, a vLLM-shaped load
#          (python/vllm_ab.py: 10 threads of batch_transfer_sync_write
#          requests, 32 layers x 16 pages of 32 KiB and 32 x 64 of 4 KiB,
#          plus single 4 KiB transfer_sync_write) in copy mode and on the
#          modeled NIC, each quiet and with a busy loop per core; writes
#          <work>/ab/python/{table.md,report.json,python_ab.png}
#          (bench/report/python_ab_report.py).
#
# <work> defaults to target/mooncake in this repository. Missing build
# dependencies are installed with apt-get (as root, or through sudo).
# Environment: MOONCAKE_JOBS (build jobs, default nproc), TEBENCH_DURATION
# (seconds per block size, default 1), AB_MODES (the tebench --ab modes,
# default "copy", plus "nic" when the provider has the modeled NIC, and
# "busy", and "busynic" with "nic"), AB_SUITES (default "tebench python": which A/Bs --ab runs),
# PY_AB_MODES (default "copy nic"), PY_AB_LOADS (default "quiet busy"),
# PY_AB_REQUESTS (requests per thread and shape, default 20), PY_AB_SINGLE
# (single 4 KiB writes, default 2000), AB_BUSY_LIMIT_S (the busy loops'
# bound, default 1800),
# AB_NIC_GBPS / AB_NIC_LATENCY_NS (modeled NIC, default 200 / 2000),
# AB_BATCHES (the --ab batch sizes: ops per submitTransfer, default
# "1 16 64"; "1" is the A/B of before), AB_BLOCKS (the --ab block sizes in
# bytes, e.g. "4096 65536 1048576"; default: every power of two from 4 KiB to
# 1 MiB). Each block size of each batch size takes tebench's 1 s warm-up
# plus TEBENCH_DURATION, per mode, op, implementation and round: the
# defaults (9 block sizes, 3 batch sizes, 3 modes, 3 rounds) take about
# 40 minutes; AB_BLOCKS="4096 65536 1048576" about 18. The Python A/B takes
# 10-20 s per run (4 conditions x 2 implementations per round).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '\n== %s\n' "$*"; }
die() { printf 'mooncake.sh: %s\n' "$*" >&2; exit 1; }

checkout=""
ab=0
python=0
flagcx_home=""
ylt=""
rounds=3
work=$root/target/mooncake
while [ $# -gt 0 ]; do
  case $1 in
    --ab) ab=1; shift ;;
    --python) python=1; shift ;;
    --flagcx-home) flagcx_home=$(cd "$2" && pwd); shift 2 ;;
    --yalantinglibs) ylt=$(cd "$2" && pwd); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --work) mkdir -p "$2"; work=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$checkout" ] || die "one checkout only"; checkout=$1; shift ;;
  esac
done
[ -n "$checkout" ] || die "usage: scripts/mooncake.sh <mooncake-checkout> [--python] [--ab] [--flagcx-home DIR]"
[ -d "$checkout" ] || die "$checkout is not a directory"
checkout=$(cd "$checkout" && pwd)
jobs=${MOONCAKE_JOBS:-$(nproc)}
# The distribution's Python: apt's python3-aiohttp / python3-matplotlib are
# installed for it (a pyenv or venv python3 earlier on PATH would not see them).
py=/usr/bin/python3
[ -x "$py" ] || py=python3
duration=${TEBENCH_DURATION:-1}
mkdir -p "$work"
read -r -a suites <<<"${AB_SUITES:-tebench python}" # the A/Bs --ab runs
suite() { [[ " ${suites[*]} " == *" $1 "* ]]; }
# --ab needs the Python module only for its Python A/B.
[ "$ab" = 1 ] && suite python && python=1

# ---- 1. a supported Mooncake? -------------------------------------------------
te=$checkout/mooncake-transfer-engine
up_h=include/transport/flagcx_transport/flagcx_transport.h
up_cpp=src/transport/flagcx_transport/flagcx_transport.cpp
unsupported() {
  die "$checkout is not a supported Mooncake checkout: $1.
Supported: branch feat/flagcx-support of kvcache-ai/Mooncake, or the layout of
Mooncake PR #3522 (refs/pull/3522/head, commit 263e0fe8). Both have
mooncake-transfer-engine/$up_h, the USE_FLAGCX option and tebench's
--xport_type=flagcx."
}
[ -f "$te/CMakeLists.txt" ] || unsupported "no mooncake-transfer-engine/CMakeLists.txt"
[ -f "$te/$up_h" ] && [ -f "$te/$up_cpp" ] ||
  unsupported "no FlagCX transport (mooncake-transfer-engine/$up_h)"
grep -q 'option(USE_FLAGCX' "$checkout/mooncake-common/common.cmake" 2>/dev/null ||
  unsupported "mooncake-common/common.cmake has no USE_FLAGCX option"
grep -q 'class FlagCxTransport' "$te/$up_h" || unsupported "$up_h declares no FlagCxTransport"
grep -q '"flagcx"' "$te/benchmark/te_backend.cpp" 2>/dev/null ||
  unsupported "tebench (benchmark/te_backend.cpp) has no --xport_type=flagcx"
if [ -f "$te/src/transport/flagcx_transport/flagcx_transport_internal.h" ]; then
  layout="PR #3522 (flagcx_transport_internal.h)"
else
  layout="feat/flagcx-support"
fi
log "Mooncake checkout $checkout: layout $layout"

# ---- build dependencies -------------------------------------------------------
need=()
have_hdr() {
  [ -f "/usr/include/$1" ] || [ -f "/usr/local/include/$1" ] ||
    [ -f "/usr/include/$(gcc -dumpmachine 2>/dev/null)/$1" ]
}
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v readelf >/dev/null || need+=(binutils)
have_hdr glog/logging.h || need+=(libgoogle-glog-dev)
have_hdr gflags/gflags.h || need+=(libgflags-dev)
have_hdr jsoncpp/json/json.h || need+=(libjsoncpp-dev)
have_hdr numa.h || need+=(libnuma-dev)
have_hdr infiniband/verbs.h || need+=(libibverbs-dev)
have_hdr yaml-cpp/yaml.h || need+=(libyaml-cpp-dev)
have_hdr curl/curl.h || need+=(libcurl4-openssl-dev)
have_hdr asio.hpp || need+=(libasio-dev)
have_hdr boost/version.hpp || need+=(libboost-dev)
have_hdr libunwind.h || need+=(libunwind-dev)
"$py" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null ||
  need+=(python3-dev)
"$py" -c 'import aiohttp' 2>/dev/null || need+=(python3-aiohttp)
[ -f "$checkout/extern/pybind11/include/pybind11/pybind11.h" ] || have_hdr pybind11/pybind11.h ||
  need+=(pybind11-dev)
if [ "$ab" = 1 ]; then
  "$py" -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
fi
if [ "$python" = 1 ]; then
  "$py" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  command -v patchelf >/dev/null || need+=(patchelf)
fi
. "$root/scripts/lib/need.sh"
apt_install "${need[@]}"

# ---- submodules: pybind11 and yalantinglibs ---------------------------------------
pinned() { # the commit the checkout pins a submodule at, when it is a git clone
  { git -C "$checkout" ls-tree HEAD "extern/$1" 2>/dev/null || true; } | awk '{print $3}'
}
if [ -f "$checkout/extern/pybind11/include/pybind11/pybind11.h" ]; then
  pybind11_inc=$checkout/extern/pybind11/include
else
  echo "note: extern/pybind11 is empty (a snapshot, not 'git clone --recursive');" \
    "using the distribution's pybind11-dev headers instead"
  pybind11_inc=/usr/include
fi

ylt_prefix=""
install_ylt() { # $1: a yalantinglibs source tree; installs its headers into <work>/ylt
  log "installing yalantinglibs from $1 into $work/ylt"
  cmake -S "$1" -B "$work/ylt-build" -DBUILD_EXAMPLES=OFF -DBUILD_BENCHMARK=OFF \
    -DBUILD_UNIT_TESTS=OFF -DCMAKE_INSTALL_PREFIX="$work/ylt" >"$work/ylt.log" 2>&1 ||
    { tail -n 30 "$work/ylt.log"; die "configuring yalantinglibs failed"; }
  cmake --install "$work/ylt-build" >>"$work/ylt.log" 2>&1 || die "installing yalantinglibs failed"
  ylt_prefix=$work/ylt
}
if [ -n "$ylt" ]; then
  if [ -f "$ylt/lib/cmake/yalantinglibs/yalantinglibsConfig.cmake" ]; then
    ylt_prefix=$ylt
  elif [ -f "$ylt/CMakeLists.txt" ]; then
    install_ylt "$ylt"
  else
    die "--yalantinglibs $ylt is neither a yalantinglibs source tree nor an install prefix"
  fi
elif [ -f "$checkout/extern/yalantinglibs/CMakeLists.txt" ]; then
  install_ylt "$checkout/extern/yalantinglibs"
else
  for p in /usr/local /usr; do
    if [ -f "$p/lib/cmake/yalantinglibs/yalantinglibsConfig.cmake" ]; then
      ylt_prefix=$p
      echo "note: extern/yalantinglibs is empty; using the yalantinglibs installed in $p"
    fi
  done
  if [ -z "$ylt_prefix" ]; then
    pin=$(pinned yalantinglibs)
    die "extern/yalantinglibs in $checkout is empty (a snapshot, not 'git clone --recursive')
and no yalantinglibs is installed. Get it with one of:
  git -C $checkout submodule update --init extern/yalantinglibs
  git clone https://github.com/alibaba/yalantinglibs <dir>${pin:+ && git -C <dir> checkout $pin}
    then: scripts/mooncake.sh $checkout --yalantinglibs <dir>
(pybind11 needs nothing: the distribution's pybind11-dev serves.)"
  fi
fi

# ---- 2. this project, installed ---------------------------------------------
prefix=$work/prefix
if [ -z "$flagcx_home" ]; then
  log "building and installing mooncake-flagcx (software FlagCX provider) into $prefix"
  (cd "$root" && cargo build --release --locked -q)
  rm -rf "$prefix"
  "$root/scripts/install.sh" "$prefix" --with-sw-flagcx >/dev/null
  mc_flagcx_home=$prefix/lib/mooncake_flagcx/sw-flagcx
else
  [ -f "$flagcx_home/include/flagcx_p2p.h" ] && [ -f "$flagcx_home/lib/libflagcx.so" ] ||
    die "--flagcx-home $flagcx_home needs include/flagcx_p2p.h and lib/libflagcx.so"
  log "building mooncake-flagcx against the FlagCX in $flagcx_home"
  (cd "$root" && FLAGCX_HOME=$flagcx_home CARGO_TARGET_DIR=$work/cargo-target \
    cargo build --release --locked -q)
  rm -rf "$prefix"
  CARGO_TARGET_DIR=$work/cargo-target "$root/scripts/install.sh" "$prefix" >/dev/null
  mc_flagcx_home=$flagcx_home
fi
plugin=$prefix/lib/libmooncake_flagcx.so.1

# ---- 3. the adapter into the checkout -----------------------------------------------
ours() { grep -q 'mooncake_flagcx' "$1"; } # both adapter files name the plugin
mkdir -p "$work/upstream-files"
for f in "$up_h" "$up_cpp"; do
  saved=$work/upstream-files/$(basename "$f")
  if ! ours "$te/$f"; then
    cp "$te/$f" "$saved" # upstream's file, kept for --ab and for undoing
  fi
  # Copied only when different, so a rerun does not rebuild what is current.
  cmp -s "$root/mooncake/$f" "$te/$f" || cp "$root/mooncake/$f" "$te/$f"
done
echo "adapter copied into $te (upstream's files kept in $work/upstream-files/)"

# ---- 4. configure and build --------------------------------------------------------
configure_and_build() { # $1: transfer-engine source dir, $2: build dir, $3: label
  log "building Mooncake's transfer engine + tebench ($3) in $2"
  # mooncake_flagcx.h is in the prefix's include/, which is not FLAGCX_HOME
  # (the software provider has its own lib/mooncake_flagcx/sw-flagcx/);
  # yalantinglibs' headers are not put on the path by Mooncake's standalone
  # transfer-engine build.
  local cxxflags=""
  [ "$prefix" = "$mc_flagcx_home" ] || cxxflags="-I$prefix/include"
  [ -n "$ylt_prefix" ] && cxxflags="${cxxflags:+$cxxflags }-I$ylt_prefix/include"
  # PR #3522's own transport (at 263e0fe8) does not build as it is: its .cpp
  # includes "transport/flagcx_transport/flagcx_transport_internal.h", which
  # lives under src/, a directory no include path names; and its header
  # includes flagcx_p2p.h, which only the `transport` target gets
  # (multi_transport.cpp includes the header too). Both paths are added for
  # that transport only; the adapter needs neither.
  if grep -qs 'flagcx_transport/flagcx_transport_internal.h' "$1/$up_cpp"; then
    cxxflags="${cxxflags:+$cxxflags }-I$1/src -I$mc_flagcx_home/include"
  fi
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DUSE_FLAGCX=ON \
    -DFLAGCX_HOME="$mc_flagcx_home" -DBUILD_UNIT_TESTS=OFF -DBUILD_EXAMPLES=OFF \
    -DBUILD_BENCHMARK=ON -Dpybind11_INCLUDE_DIR="$pybind11_inc" \
    ${ylt_prefix:+-DCMAKE_PREFIX_PATH="$ylt_prefix"} -DCMAKE_CXX_FLAGS="$cxxflags" \
    >"$2.configure.log" 2>&1 ||
    { tail -n 40 "$2.configure.log"; die "configuring Mooncake failed (log: $2.configure.log)"; }
  if ! cmake --build "$2" --target tebench -j"$jobs" >"$2.build.log" 2>&1; then
    grep -E 'error|Error' "$2.build.log" | head -n 30
    die "building Mooncake failed (log: $2.build.log)"
  fi
  local warnings
  warnings=$(grep -c 'flagcx_transport.*warning' "$2.build.log" || true)
  echo "built $2/benchmark/tebench ($warnings compiler warnings in flagcx_transport)"
}
configure_and_build "$te" "$work/build-flagcx" "with this project's adapter"

upstream_te=$work/upstream-src/mooncake-transfer-engine
if [ "$ab" = 1 ]; then
  for f in "$up_h" "$up_cpp"; do
    saved=$work/upstream-files/$(basename "$f")
    if [ ! -f "$saved" ] || ours "$saved"; then
      git -C "$checkout" show "HEAD:mooncake-transfer-engine/$f" >"$saved" 2>/dev/null ||
        die "--ab needs upstream's $f, but the checkout already holds the adapter and no copy was kept
(restore it, e.g. git -C $checkout checkout -- mooncake-transfer-engine/$f, and rerun)"
    fi
  done
  rm -rf "$work/upstream-src"
  mkdir -p "$work/upstream-src"
  cp -a "$te" "$checkout/mooncake-common" "$work/upstream-src/"
  for f in "$up_h" "$up_cpp"; do
    cp -p "$work/upstream-files/$(basename "$f")" "$upstream_te/$f"
  done
  suite tebench && configure_and_build "$upstream_te" "$work/build-upstream" "upstream's FlagCX transport"
fi

# ---- 5. tebench on loopback ------------------------------------------------
pids=()
busy_pids=()
# busy_start / busy_stop: one busy loop (another process) per core, each
# bounded by AB_BUSY_LIMIT_S (default 1800 s) should this script not live to
# stop it; the --ab `busy` conditions run under them.
busy_start() {
  local _
  for _ in $(seq "$(nproc)"); do
    timeout "${AB_BUSY_LIMIT_S:-1800}" sh -c 'while :; do :; done' &
    busy_pids+=($!)
  done
}
busy_stop() {
  local p
  for p in "${busy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${busy_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  busy_pids=()
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  busy_stop
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Mooncake's HTTP metadata server (its Python bootstrap server), on a free port.
start_http_metadata() {
  local port
  port=$(free_port)
  "$py" -u -c "
import sys, threading
sys.path.insert(0, '$te/example/http-metadata-server-python')
from bootstrap_server import KVBootstrapServer
KVBootstrapServer(port=$port).run()
threading.Event().wait()" >"$logs/http-metadata.log" 2>&1 &
  pids+=($!)
  "$py" - "$port" <<'PY' || die "the HTTP metadata server did not start ($logs/http-metadata.log)"
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
  metadata_url="http://127.0.0.1:$port/metadata"
}

tb_env=() # extra environment of both tebench processes (VAR=value ...)
tb_blocks=(4096 $((1 << 20))) # tebench's block sizes: first and last (doubling)
tb_batch=1                    # ops per submitTransfer (tebench's batch size)
# run_tebench <tebench> <label> <p2p|http> <op> <extra initiator flags...>
# Starts a target process, runs an initiator against it; the initiator's
# stdout is in $logs/<label>.out. Returns the initiator's exit status.
run_tebench() {
  local bin=$1 label=$2 meta=$3 op=$4
  shift 4
  # 64 MiB buffers, more when a batch of the largest blocks needs it (tebench
  # skips a block and batch size that does not fit).
  local buffer=$((64 << 20))
  [ $((tb_blocks[1] * tb_batch)) -le $buffer ] || buffer=$((tb_blocks[1] * tb_batch))
  local common=(--backend=classic --xport_type=flagcx --total_buffer_size="$buffer"
    --start_block_size="${tb_blocks[0]}" --max_block_size="${tb_blocks[1]}"
    --start_batch_size="$tb_batch" --max_batch_size="$tb_batch" --duration="$duration")
  # Mooncake's standalone transfer-engine build leaves libasio.so in
  # <build>/mooncake-common, which tebench's RPATH misses. Upstream's
  # transport links libflagcx.so itself and finds it only through the
  # loader's path; the adapter's engine does not link it (the plugin finds it
  # through its own $ORIGIN RUNPATH).
  local ldpath
  ldpath=$(cd "$(dirname "$bin")/.." && pwd)/mooncake-common
  case $bin in
    "$work/build-upstream"/*) ldpath=$mc_flagcx_home/lib:$ldpath ;;
  esac
  local tflags=() iflags=()
  if [ "$meta" = http ]; then
    tflags=(--metadata_type=http --metadata_url_list="$metadata_url" --seg_name="tgt-$label")
    iflags=(--metadata_type=http --metadata_url_list="$metadata_url" --seg_name="ini-$label")
  else
    tflags=(--metadata_type=p2p)
    iflags=(--metadata_type=p2p)
  fi
  env "${tb_env[@]}" LD_LIBRARY_PATH="$ldpath" MC_FLAGCX_PLUGIN="$plugin" "$bin" "${common[@]}" "${tflags[@]}" \
    >"$logs/$label.target.out" 2>"$logs/$label.target.err" &
  local tpid=$!
  pids+=("$tpid")
  local seg=""
  for _ in $(seq 600); do
    seg=$(sed -n 's/.*--target_seg_name=\([^ ]*\).*/\1/p' "$logs/$label.target.out" 2>/dev/null | head -n 1)
    [ -n "$seg" ] && break
    kill -0 "$tpid" 2>/dev/null || break
    sleep 0.1
  done
  # With a metadata server the segment is the name given to the target
  # (tebench prints the engine's ip:port then).
  [ -n "$seg" ] && [ "$meta" = http ] && seg=tgt-$label
  local rc=0
  if [ -z "$seg" ]; then
    echo "target did not start (log: $logs/$label.target.err)" >"$logs/$label.out"
    rc=1
  else
    env "${tb_env[@]}" LD_LIBRARY_PATH="$ldpath" MC_FLAGCX_PLUGIN="$plugin" timeout 600 "$bin" "${common[@]}" "${iflags[@]}" \
      --target_seg_name="$seg" --op_type="$op" "$@" \
      >"$logs/$label.out" 2>"$logs/$label.err" || rc=$?
  fi
  kill "$tpid" 2>/dev/null || true
  wait "$tpid" 2>/dev/null || true
  return $rc
}

# Rows of a tebench table: "<block> <batch> <GB/s> [<inst GB/s>] <avg lat>
# <avg tx> <p99> <p999>".
rows() { awk '$1 ~ /^[0-9]+$/ && NF >= 7 {print}' "$1"; }

logs=$work/logs
rm -rf "$logs"
mkdir -p "$logs"
tebench=$work/build-flagcx/benchmark/tebench
log "loopback check: tebench, target + initiator, writes and reads 4 KiB..1 MiB, --check_consistency"
start_http_metadata
summary=()
failed=0
for meta in http p2p; do
  label=check-$meta
  if run_tebench "$tebench" "$label" "$meta" mix --check_consistency; then
    n=$(rows "$logs/$label.out" | wc -l)
    if [ "$n" -eq 9 ]; then
      summary+=("PASS  $meta metadata: 9 block sizes (4 KiB..1 MiB), writes + reads, data consistent")
    else
      summary+=("FAIL  $meta metadata: $n of 9 block sizes reported (log: $logs/$label.out)")
      failed=1
    fi
  else
    summary+=("FAIL  $meta metadata: tebench failed (logs: $logs/$label.*)")
    tail -n 5 "$logs/$label.err" 2>/dev/null || true
    failed=1
  fi
done
log "summary (Mooncake $layout, FLAGCX_HOME=$mc_flagcx_home)"
printf '%s\n' "${summary[@]}" | sed 's/ p2p metadata/ P2PHANDSHAKE metadata/; s/ http metadata/ HTTP metadata/'
if [ "$failed" != 0 ]; then
  echo "the loopback check FAILED" >&2
  exit 1
fi
# (Avg Tx is the third column from the end in both tebench versions.)
rows "$logs/check-p2p.out" | awk 'BEGIN{print "block      GB/s   avg tx us  (write+read pairs, P2PHANDSHAKE)"} {printf "%-9s %7.3f %9s\n", $1, $3, $(NF-2)}'
cleanup

# ---- --python: Mooncake's Python module, a wheel, a venv, the Python tests ---------
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
mc_commit=$(git -C "$checkout" rev-parse --short HEAD 2>/dev/null || echo "snapshot")
# make_py_src <dest> <transfer-engine tree>: the part of Mooncake's top-level
# tree the `engine` target needs, with that transfer engine (the checkout's,
# which holds the adapter, or the copy with upstream's transport). cp -a
# keeps the files' times, so a rerun rebuilds nothing that did not change.
make_py_src() {
  rm -rf "$1"
  mkdir -p "$1/extern"
  cp -a "$checkout/CMakeLists.txt" "$checkout/mooncake-common" "$checkout/mooncake-integration" "$1/"
  cp -a "$2" "$1/mooncake-transfer-engine"
  if [ -f "$checkout/extern/pybind11/CMakeLists.txt" ]; then
    cp -a "$checkout/extern/pybind11" "$1/extern/"
  else
    # A snapshot: extern/pybind11 is empty. The top-level CMake only
    # add_subdirectory()s it for pybind11's CMake functions and targets;
    # the distribution's pybind11-dev provides both (GLOBAL: visible to
    # mooncake-integration, a sibling directory).
    mkdir -p "$1/extern/pybind11"
    printf '%s\n' "# Written by mooncake-flagcx's scripts/mooncake.sh: the checkout's" \
      "# extern/pybind11 is empty; this uses the installed pybind11 (pybind11-dev)." \
      "find_package(pybind11 CONFIG REQUIRED GLOBAL)" >"$1/extern/pybind11/CMakeLists.txt"
  fi
}
# build_py_module <source tree> <build dir> <label>
build_py_module() {
  log "building Mooncake's Python module (target engine; $3) in $2"
  local cxxflags=""
  [ "$prefix" = "$mc_flagcx_home" ] || cxxflags="-I$prefix/include"
  [ -n "$ylt_prefix" ] && cxxflags="${cxxflags:+$cxxflags }-I$ylt_prefix/include"
  if grep -qs 'flagcx_transport/flagcx_transport_internal.h' "$1/mooncake-transfer-engine/$up_cpp"; then
    cxxflags="${cxxflags:+$cxxflags }-I$1/mooncake-transfer-engine/src -I$mc_flagcx_home/include"
  fi
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DWITH_TE=ON -DWITH_STORE=OFF \
    -DWITH_STORE_RUST=OFF -DUSE_FLAGCX=ON -DFLAGCX_HOME="$mc_flagcx_home" -DUSE_CUDA=OFF \
    -DBUILD_UNIT_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_BENCHMARK=OFF \
    -DPython3_EXECUTABLE="$py" ${ylt_prefix:+-DCMAKE_PREFIX_PATH="$ylt_prefix"} \
    -DCMAKE_CXX_FLAGS="$cxxflags" >"$2.configure.log" 2>&1 ||
    { tail -n 40 "$2.configure.log"; die "configuring Mooncake's Python module failed (log: $2.configure.log)"; }
  if ! cmake --build "$2" --target engine -j"$jobs" >"$2.build.log" 2>&1; then
    grep -E 'error|Error' "$2.build.log" | head -n 30
    die "building Mooncake's Python module failed (log: $2.build.log)"
  fi
}
# package_py <build dir> <impl: adapter|upstream>: stages the `mooncake`
# package, packs the wheel and installs it into <work>/py/<impl>/venv.
# Layout of the package (the same relative paths as an install prefix, so
# the plugin's own $ORIGIN RUNPATH finds the software provider unchanged):
#   mooncake/engine.<abi>.so, libasio.so      the module, RUNPATH $ORIGIN:<flagcx lib>
#   mooncake/libmooncake_flagcx.so            the plugin (adapter builds), which the
#                                             adapter loads from next to the module
#   mooncake/mooncake_flagcx/sw-flagcx/lib/   the software provider (a test double), or
#   mooncake/flagcx/lib/                      the real FlagCX of --flagcx-home
#   mooncake/http_metadata_server.py          Mooncake's, from the checkout
#   mooncake/__init__.py, _flagcx_build.py    written here
package_py() {
  local bdir=$1 impl=$2 pdir=$work/py/$2
  local stage=$pdir/stage pkg=$pdir/stage/mooncake
  { [ -n "$impl" ] && [ -n "$work" ]; } || die "package_py: no implementation or work dir"
  log "packaging the Python module ($impl) as a wheel, installing it into $pdir/venv"
  rm -rf "$stage" "$pdir/dist"
  mkdir -p "$pkg"
  local engine_so asio_so lib
  engine_so=$(find "$bdir/mooncake-integration" -maxdepth 1 -name 'engine*.so' | head -n 1)
  [ -n "$engine_so" ] || die "no engine*.so in $bdir/mooncake-integration"
  cp "$engine_so" "$pkg/"
  for lib in $(readelf -d "$engine_so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $lib in
      libasio*)
        asio_so=$(find "$bdir" -name "$lib" -print -quit)
        [ -n "$asio_so" ] || die "$lib (needed by the module) is not in $bdir"
        cp -L "$asio_so" "$pkg/$lib" ;;
    esac
  done
  local fx_rel
  if [ -z "$flagcx_home" ]; then
    fx_rel=mooncake_flagcx/sw-flagcx/lib
  else
    fx_rel=flagcx/lib
  fi
  mkdir -p "$pkg/$fx_rel"
  cp -L "$mc_flagcx_home"/lib/libflagcx*.so* "$pkg/$fx_rel/"
  if [ "$impl" = adapter ]; then
    cp -L "$plugin" "$pkg/libmooncake_flagcx.so"
    # shellcheck disable=SC2016 # $ORIGIN is the loader's
    [ -z "$flagcx_home" ] || patchelf --set-rpath '$ORIGIN:$ORIGIN/'"$fx_rel" "$pkg/libmooncake_flagcx.so"
  fi
  local f
  for f in "$pkg"/engine*.so "$pkg"/libasio*.so*; do
    [ -e "$f" ] || continue
    # shellcheck disable=SC2016 # $ORIGIN is the loader's
    patchelf --set-rpath '$ORIGIN:$ORIGIN/'"$fx_rel" "$f"
  done
  cp "$checkout/mooncake-wheel/mooncake/http_metadata_server.py" "$pkg/"
  local transport="this project's adapter + plugin (mooncake-flagcx $commit)"
  [ "$impl" = upstream ] && transport="upstream's C++ FlagCX transport"
  local provider="the software FlagCX provider (a test double, not RDMA)"
  [ -n "$flagcx_home" ] && provider="FlagCX from $flagcx_home"
  printf '%s\n' '"""Mooncake'"'"'s transfer engine (from mooncake.engine import TransferEngine),' \
    "built by mooncake-flagcx's scripts/mooncake.sh --python with protocol" \
    "\"flagcx\": $transport, on $provider.\"\"\"" >"$pkg/__init__.py"
  printf '%s\n' '"""What this package was built from (written by scripts/mooncake.sh)."""' \
    "BUILD = {\"transport\": \"$impl\", \"mooncake_flagcx\": \"$commit\"," \
    "         \"mooncake\": \"$layout ($mc_commit)\", \"flagcx\": \"${flagcx_home:-software provider}\"}" \
    >"$pkg/_flagcx_build.py"
  local version
  version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$checkout/mooncake-wheel/pyproject.toml" | head -n 1)
  version="${version:-0}+flagcx.$impl.${commit//[^a-z0-9]/}"
  wheel=$("$py" "$root/python/make_wheel.py" "$stage" "$pdir/dist" --name mooncake-transfer-engine \
    --version "$version" --requires-extra http:aiohttp) || die "packing the wheel failed"
  echo "wheel: $wheel"
  [ -x "$pdir/venv/bin/python" ] || "$py" -m venv "$pdir/venv" || die "creating $pdir/venv failed"
  "$pdir/venv/bin/python" -c 'import pytest, aiohttp' 2>/dev/null ||
    "$pdir/venv/bin/pip" install -q pytest aiohttp ||
    die "pip could not install pytest and aiohttp into $pdir/venv"
  "$pdir/venv/bin/pip" install -q --force-reinstall --no-deps "$wheel" || die "pip install $wheel failed"
  # The installed module must load with nothing but its own RUNPATHs.
  (cd / && env -u LD_LIBRARY_PATH -u MC_FLAGCX_PLUGIN "$pdir/venv/bin/python" -c \
    'import mooncake.engine as e; print("installed:", e.__file__)') ||
    die "the installed module does not import (ldd $pdir/venv/lib/python3*/site-packages/mooncake/engine*.so)"
}

if [ "$python" = 1 ]; then
  make_py_src "$work/py-src/adapter" "$te"
  build_py_module "$work/py-src/adapter" "$work/build-py-adapter" "with this project's adapter"
  package_py "$work/build-py-adapter" adapter
  log "the Python tests (python/tests/) against the installed module"
  pyt_log=$work/py/pytest.log
  rm -rf "$work/py/pytest-tmp"
  if (cd "$root" && env -u LD_LIBRARY_PATH -u MC_FLAGCX_PLUGIN timeout 1800 \
    "$work/py/adapter/venv/bin/python" -m pytest -p no:cacheprovider -rs -q python/tests \
    --basetemp="$work/py/pytest-tmp") >"$pyt_log" 2>&1; then
    tail -n 3 "$pyt_log"
    if grep -qE ' (skipped|deselected)' "$pyt_log"; then
      die "Python tests were skipped (log: $pyt_log)"
    fi
    echo "PASS  Python tests (log: $pyt_log)"
  else
    tail -n 60 "$pyt_log"
    die "the Python tests FAILED (log: $pyt_log)"
  fi
fi

# ---- --ab: the adapter vs upstream's transport ------------------------------------
[ "$ab" = 1 ] || exit 0
abdir=$work/ab
rm -rf "$abdir"
mkdir -p "$abdir/raw"
modes=(copy)
if grep -rqs FLAGCX_SW_NIC_GBPS "$root/flagcx-sys/provider/src"; then
  modes+=(nic)
else
  echo "note: this provider has no modeled NIC (FLAGCX_SW_NIC_GBPS): copy mode only"
fi
[ -n "$flagcx_home" ] && modes=(real)
py_modes=("${modes[@]}")
modes+=(busy) # the provider's first mode (copy, or real FlagCX) + a busy loop per core
# busynic: the modeled NIC + a busy loop per core, where the transport only
# posts (busy copy mode also measures which thread does the memcpy).
[[ " ${modes[*]} " == *" nic "* ]] && modes+=(busynic)
# AB_MODES="copy nic busy" chooses the modes (e.g. for a provider built elsewhere).
[ -n "${AB_MODES:-}" ] && read -r -a modes <<<"$AB_MODES"
read -r -a batches <<<"${AB_BATCHES:-1 16 64}"
# One tebench run covers a doubling range of block sizes; AB_BLOCKS picks
# single sizes instead (one run each, their rows appended to one raw file).
read -r -a blocks <<<"${AB_BLOCKS:-}"
for b in "${batches[@]}" "${blocks[@]}"; do
  [[ $b =~ ^[1-9][0-9]*$ ]] || die "AB_BATCHES / AB_BLOCKS take positive integers, not '$b'"
done
[ ${#blocks[@]} -gt 0 ] || blocks=("4096:$((1 << 20))")
suite tebench &&
  log "A/B: adapter vs upstream, ${modes[*]} mode, batch ${batches[*]}, $rounds rounds, interleaved"
suite tebench && for r in $(seq "$rounds"); do
  for mode in "${modes[@]}"; do
    for op in write read; do
      for batch in "${batches[@]}"; do
        for impl in adapter upstream; do
          bin=$work/build-flagcx/benchmark/tebench
          [ "$impl" = upstream ] && bin=$work/build-upstream/benchmark/tebench
          label=$mode-$op-$impl-b$batch-r$r
          tb_env=()
          case $mode in nic | busynic) tb_env=(FLAGCX_SW_NIC_GBPS="${AB_NIC_GBPS:-200}"
            FLAGCX_SW_NIC_LATENCY_NS="${AB_NIC_LATENCY_NS:-2000}") ;; esac
          tb_batch=$batch
          case $mode in busy | busynic) busy_start ;; esac
          status=ok
          : >"$abdir/raw/$label.txt"
          for range in "${blocks[@]}"; do
            tb_blocks=("${range%:*}" "${range#*:}") # "first:last", or one size
            run=$label${AB_BLOCKS:+-k${tb_blocks[0]}}
            if run_tebench "$bin" "$run" p2p "$op"; then
              cat "$logs/$run.out" >>"$abdir/raw/$label.txt"
            else
              status="FAILED (logs: $logs/$run.*)"
            fi
          done
          busy_stop
          echo "round $r $mode $op batch $batch $impl: $status"
        done
      done
    done
  done
done
suite tebench && "$py" "$root/bench/report/tebench_report.py" "$abdir" --commit "$commit" \
  --mooncake "$layout ($mc_commit)" --duration "$duration"

# ---- --ab: the Python-level A/B ---------------------------------------------------
suite python || exit 0
make_py_src "$work/py-src/upstream" "$upstream_te"
build_py_module "$work/py-src/upstream" "$work/build-py-upstream" "upstream's FlagCX transport"
package_py "$work/build-py-upstream" upstream
pyab=$abdir/python
mkdir -p "$pyab/raw" "$pyab/logs"
[ -n "${PY_AB_MODES:-}" ] && read -r -a py_modes <<<"$PY_AB_MODES"
read -r -a py_loads <<<"${PY_AB_LOADS:-quiet busy}"
log "Python A/B: adapter vs upstream through Mooncake's Python module, vLLM-shaped load," \
  "${py_modes[*]} mode, ${py_loads[*]}, $rounds rounds, interleaved"
for r in $(seq "$rounds"); do
  for mode in "${py_modes[@]}"; do
    for load in "${py_loads[@]}"; do
      for impl in adapter upstream; do
        label=$mode-$load-$impl-r$r
        py_env=()
        [ "$mode" = nic ] && py_env=(FLAGCX_SW_NIC_GBPS="${AB_NIC_GBPS:-200}"
          FLAGCX_SW_NIC_LATENCY_NS="${AB_NIC_LATENCY_NS:-2000}")
        [ "$load" = busy ] && busy_start
        status=ok
        env -u LD_LIBRARY_PATH -u MC_FLAGCX_PLUGIN "${py_env[@]}" timeout 3600 \
          "$py" "$root/python/vllm_ab.py" --python "$work/py/$impl/venv/bin/python" \
          --out "$pyab/raw/$label.json" --logdir "$pyab/logs" \
          --requests "${PY_AB_REQUESTS:-20}" --single "${PY_AB_SINGLE:-2000}" \
          >"$pyab/logs/$label.out" 2>&1 || status="FAILED (log: $pyab/logs/$label.out)"
        busy_stop
        echo "round $r $mode $load $impl: $status"
        grep '^  ' "$pyab/logs/$label.out" || true
      done
    done
  done
done
"$py" "$root/bench/report/python_ab_report.py" "$pyab" --commit "$commit" \
  --mooncake "$layout ($mc_commit)"
