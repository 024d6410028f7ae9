#!/usr/bin/env bash
# Checks the installed tree (scripts/test.sh runs it; it can run alone). The
# plugin is built on the software FlagCX provider (FLAGCX_HOME is ignored
# here), then installed into temporary prefixes:
#
#   1. default: `cmake --install` (MCFX_INSTALL_SW_FLAGCX=OFF). The tree holds
#      exactly the plugin (SONAME libmooncake_flagcx.so.<ABI>, its links), its
#      header, the pkg-config file and the CMake package: no libflagcx.so and
#      no flagcx*.h anywhere; the installed plugin finds no libflagcx.so in it;
#   2. with the provider: `cmake --install` of a build configured with
#      -DMCFX_INSTALL_SW_FLAGCX=ON. The same files plus libflagcx.so and
#      flagcx_p2p.h, flagcx_sw.h, flagcx.h (placeholder) only under
#      lib/mooncake_flagcx/sw-flagcx/{lib,include}; the plugin's RUNPATH is
#      $ORIGIN:$ORIGIN/mooncake_flagcx/sw-flagcx/lib and the loader resolves
#      its libflagcx.so there;
#   3. an upgrade: scripts/install.sh into a prefix where an older version put
#      the provider (lib/libflagcx.so, include/flagcx*.h) removes those files
#      and keeps a flagcx.h that is not ours;
#   4. `readelf -d` of every installed ELF file: no RPATH/RUNPATH entry into
#      this repository or the cargo target directory;
#   5. against each install, a C program built with `pkg-config --cflags
#      --libs mooncake_flagcx` and a CMake project using
#      find_package(MooncakeFlagcx) (tests/install/) create a transport and
#      report the FlagCX they loaded: with the provider installed, with no
#      LD_LIBRARY_PATH; against the default install, with the provider of
#      (2) on LD_LIBRARY_PATH standing for a FlagCX installed elsewhere;
#   6. the CMake configure warns that FLAGCX_HOME is unset.
#
# INSTALL_CHECK_REAL=1 adds a plugin built against a FlagCX (FLAGCX_HOME set
# to the provider tree of (2), in target/install-real: a full release build)
# and checks its default install: same files, RUNPATH $ORIGIN:<FLAGCX_HOME>/lib,
# consumers run without LD_LIBRARY_PATH, --with-sw-flagcx refused.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
unset FLAGCX_HOME

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'install check: %s\n' "$*" >&2; exit 1; }

. "$root/scripts/lib/need.sh"
need_pkgs cc:gcc cmake make readelf:binutils nm:binutils pkg-config

target_dir=${CARGO_TARGET_DIR:-$root/target}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcfx-install-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

abi=$(sed -n 's/^#define MCFX_ABI_VERSION \([0-9]*\)$/\1/p' include/mooncake_flagcx.h)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
soname=libmooncake_flagcx.so.$abi
sw=lib/mooncake_flagcx/sw-flagcx
# shellcheck disable=SC2016 # $ORIGIN is the loader's, not the shell's
sw_runpath='$ORIGIN:$ORIGIN/mooncake_flagcx/sw-flagcx/lib'
plugin_files=(include/mooncake_flagcx.h
  lib/cmake/MooncakeFlagcx/MooncakeFlagcxConfig.cmake
  lib/cmake/MooncakeFlagcx/MooncakeFlagcxConfigVersion.cmake
  lib/libmooncake_flagcx.so "lib/$soname" "lib/$soname.$version"
  lib/pkgconfig/mooncake_flagcx.pc)
sw_files=("$sw/include/flagcx.h" "$sw/include/flagcx_p2p.h" "$sw/include/flagcx_sw.h"
  "$sw/lib/libflagcx.so")

# check_files PREFIX FILE...: the tree holds exactly these files and links.
check_files() {
  local prefix=$1
  shift
  local want have
  want=$(printf '%s\n' "$@" | sort)
  have=$(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
  printf '%s\n' "$have"
  [ "$want" = "$have" ] ||
    fail "$prefix holds other files than expected:$(diff <(echo "$want") <(echo "$have") || true)"
  if [ ! -L "$prefix/lib/$soname" ] || [ ! -L "$prefix/lib/libmooncake_flagcx.so" ]; then
    fail "lib/$soname and lib/libmooncake_flagcx.so must be links to the real file"
  fi
  readelf -d "$prefix/lib/$soname" | grep -q "Library soname: \[$soname\]" ||
    fail "the installed plugin's SONAME is not $soname"
}

# flagcx_files PREFIX: every libflagcx* and flagcx*.h under PREFIX.
flagcx_files() {
  (cd "$1" && find . \( -name 'libflagcx*' -o -name 'flagcx*.h' \) | sed 's|^\./||' | sort)
}

# runpath FILE: its RUNPATH/RPATH, empty if none.
runpath() { readelf -d "$1" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]$/\1/p'; }

# loaded_flagcx FILE: the libflagcx.so the loader picks for FILE (no
# LD_LIBRARY_PATH), or "not found".
loaded_flagcx() {
  env -u LD_LIBRARY_PATH ldd "$1" |
    awk '$1 == "libflagcx.so" { print ($3 == "not" ? "not found" : $3) }'
}

# check_elfs PREFIX MIN: no RPATH/RUNPATH into the build tree, MIN+ ELF files.
check_elfs() {
  local prefix=$1 min=$2 elfs=0 f paths e
  while IFS= read -r -d '' f; do
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    elfs=$((elfs + 1))
    paths=$(runpath "$f")
    printf '%s: %s\n' "${f#"$prefix"/}" "${paths:-(no RPATH/RUNPATH)}"
    IFS=: read -r -a entries <<<"$paths"
    for e in "${entries[@]}"; do
      # shellcheck disable=SC2016 # $ORIGIN is the loader's, not the shell's
      case $e in
        '$ORIGIN' | '$ORIGIN/'*) ;;
        "$root" | "$root"/* | "$target_dir" | "$target_dir"/*)
          fail "${f#"$prefix"/} has a RUNPATH/RPATH into the build tree: $e" ;;
        /*) ;; # outside the build tree, e.g. a real FlagCX's lib/
        *) fail "${f#"$prefix"/} has a relative RUNPATH/RPATH entry: $e" ;;
      esac
    done
  done < <(find "$prefix" -type f -print0)
  [ "$elfs" -ge "$min" ] || fail "found $elfs ELF files in $prefix, expected $min"
}

# consumers PREFIX WANT [FLAGCX_LIB]: builds tests/install/ with pkg-config
# and with CMake against PREFIX and runs both; their output must name WANT
# (the FlagCX loaded). FLAGCX_LIB: a libflagcx.so directory outside PREFIX,
# for link (-rpath-link) and run (LD_LIBRARY_PATH); without it, none is given.
consumers() {
  local prefix=$1 want=$2 flagcx_lib=${3:-} name=${1##*/} libdir out
  local run=(env -u LD_LIBRARY_PATH) ldflags=()
  if [ -n "$flagcx_lib" ]; then
    run=(env LD_LIBRARY_PATH="$flagcx_lib")
    ldflags=("-Wl,-rpath-link,$flagcx_lib")
  fi
  echo "-- pkg-config consumer (${run[*]})"
  libdir=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --variable=libdir mooncake_flagcx)
  # shellcheck disable=SC2046 # pkg-config's output is a list of flags
  cc -std=c11 -Wall -Wextra -Werror tests/install/consumer.c -o "$tmp/consumer-pc-$name" \
    $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs mooncake_flagcx) \
    -Wl,-rpath,"$libdir" "${ldflags[@]}"
  readelf -d "$tmp/consumer-pc-$name" | grep -q "Shared library: \[$soname\]" ||
    fail "the pkg-config consumer does not record $soname"
  out=$("${run[@]}" "$tmp/consumer-pc-$name") || fail "the pkg-config consumer of $prefix failed"
  echo "$out"
  [[ $out == *"FlagCX: $want"* ]] || fail "the pkg-config consumer did not load $want"

  echo "-- CMake consumer, find_package(MooncakeFlagcx) (${run[*]})"
  cmake -S tests/install -B "$tmp/consumer-cmake-$name" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_EXE_LINKER_FLAGS="${ldflags[*]}" >/dev/null
  cmake --build "$tmp/consumer-cmake-$name" >/dev/null
  out=$("${run[@]}" "$tmp/consumer-cmake-$name/consumer") ||
    fail "the CMake consumer of $prefix failed"
  echo "$out"
  [[ $out == *"FlagCX: $want"* ]] || fail "the CMake consumer did not load $want"
}

# ---- build -------------------------------------------------------------------
log "cmake configure + build (MCFX_INSTALL_SW_FLAGCX=OFF and ON)"
cmake -S . -B build/install -DMCFX_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DMCFX_INSTALL_SW_FLAGCX=OFF >"$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log"; fail "cmake configure failed"; }
grep -q 'FLAGCX_HOME is not set' "$tmp/configure.log" ||
  fail "cmake configure without FLAGCX_HOME does not warn about the software provider"
grep -A1 'CMake Warning' "$tmp/configure.log" | head -n 2 || true
cmake --build build/install
cmake -S . -B build/install-sw -DMCFX_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DMCFX_INSTALL_SW_FLAGCX=ON >/dev/null 2>&1
cmake --build build/install-sw >/dev/null

# ---- 2. with the software provider -------------------------------------------
sw_prefix=$tmp/with-sw-flagcx
log "cmake --install, MCFX_INSTALL_SW_FLAGCX=ON, into $sw_prefix"
cmake --install build/install-sw --prefix "$sw_prefix"
check_files "$sw_prefix" "${plugin_files[@]}" "${sw_files[@]}"
[ "$(flagcx_files "$sw_prefix")" = "$(printf '%s\n' "${sw_files[@]}" | sort)" ] ||
  fail "FlagCX files outside $sw/: $(flagcx_files "$sw_prefix")"
[ "$(runpath "$sw_prefix/lib/$soname")" = "$sw_runpath" ] ||
  fail "the plugin's RUNPATH is $(runpath "$sw_prefix/lib/$soname"), not $sw_runpath"
check_elfs "$sw_prefix" 2
resolved=$(loaded_flagcx "$sw_prefix/lib/$soname")
echo "the installed plugin's libflagcx.so: $resolved"
[ "$resolved" = "$sw_prefix/$sw/lib/libflagcx.so" ] ||
  fail "the installed plugin loads libflagcx.so from ${resolved:-nowhere}, not $sw/lib"
consumers "$sw_prefix" "the software provider"

# ---- 1. default ---------------------------------------------------------------
prefix=$tmp/default
log "cmake --install (default) into $prefix"
cmake --install build/install --prefix "$prefix"
check_files "$prefix" "${plugin_files[@]}"
[ -z "$(flagcx_files "$prefix")" ] || fail "a default install holds $(flagcx_files "$prefix")"
[ "$(runpath "$prefix/lib/$soname")" = "$sw_runpath" ] ||
  fail "the plugin's RUNPATH is $(runpath "$prefix/lib/$soname"), not $sw_runpath"
check_elfs "$prefix" 1
resolved=$(loaded_flagcx "$prefix/lib/$soname")
echo "the installed plugin's libflagcx.so: $resolved"
case $resolved in
  "$prefix"/*) fail "the default install's plugin loads libflagcx.so from the prefix: $resolved" ;;
  "not found") ;;
  *) echo "(this system has a libflagcx.so of its own)" ;;
esac
consumers "$prefix" "the software provider" "$sw_prefix/$sw/lib"

# ---- 3. an older install's provider is removed ----------------------------------
old=$tmp/upgrade
log "scripts/install.sh over an older install's provider in $old"
install -d "$old/lib" "$old/include"
cp "$target_dir/release/libflagcx.so" "$old/lib/"
cp cmake/flagcx.h flagcx-sys/provider/include/flagcx_p2p.h flagcx-sys/provider/include/flagcx_sw.h \
  "$old/include/"
printf '/* a FlagCX of somebody else */\n' >"$old/include/flagcx.h"
scripts/install.sh "$old" 2>&1
check_files "$old" "${plugin_files[@]}" include/flagcx.h
grep -q 'somebody else' "$old/include/flagcx.h" || fail "a flagcx.h that is not ours was removed"
scripts/install.sh "$old" --with-sw-flagcx >/dev/null
check_files "$old" "${plugin_files[@]}" include/flagcx.h "${sw_files[@]}" >/dev/null

# ---- a real FlagCX (INSTALL_CHECK_REAL=1) -------------------------------------
if [ "${INSTALL_CHECK_REAL:-0}" = 1 ]; then
  home=$sw_prefix/$sw
  real_target=$root/target/install-real
  log "INSTALL_CHECK_REAL: a plugin built with FLAGCX_HOME=$home"
  FLAGCX_HOME=$home CARGO_TARGET_DIR=$real_target cargo build --release --locked -q \
    -p mooncake-flagcx
  real=$tmp/real
  CARGO_TARGET_DIR=$real_target scripts/install.sh "$real"
  check_files "$real" "${plugin_files[@]}"
  [ -z "$(flagcx_files "$real")" ] || fail "the install holds $(flagcx_files "$real")"
  # shellcheck disable=SC2016 # $ORIGIN is the loader's, not the shell's
  [ "$(runpath "$real/lib/$soname")" = '$ORIGIN:'"$home/lib" ] ||
    fail "the plugin's RUNPATH is $(runpath "$real/lib/$soname"), not \$ORIGIN:$home/lib"
  check_elfs "$real" 1
  consumers "$real" "the software provider"
  if CARGO_TARGET_DIR=$real_target scripts/install.sh "$tmp/refused" --with-sw-flagcx 2>/dev/null; then
    fail "--with-sw-flagcx was accepted for a plugin built against FLAGCX_HOME"
  fi
  [ ! -e "$tmp/refused" ] || fail "a refused --with-sw-flagcx install left $tmp/refused"
fi

log "install check passed"
