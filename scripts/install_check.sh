#!/usr/bin/env bash
# Checks the installed tree (scripts/test.sh runs it; it can run alone):
#
#   1. `cmake --install` into a temporary prefix (a CMake build with
#      MCFX_BUILD_TESTS=OFF; cargo builds the release artifacts);
#   2. the files: the plugin with SONAME libmooncake_flagcx.so.<ABI> and its
#      links, the header, the pkg-config file, the CMake package, and the
#      FLAGCX_HOME tree of the software provider (libflagcx.so, flagcx_p2p.h,
#      the flagcx.h placeholder);
#   3. `readelf -d` of every installed ELF file: no RPATH/RUNPATH entry may
#      point into this repository or the cargo target directory;
#   4. a C program built with `pkg-config --cflags --libs mooncake_flagcx`
#      and a CMake project using find_package(MooncakeFlagcx)
#      (tests/install/), both run with no LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'install check: %s\n' "$*" >&2; exit 1; }

. "$root/scripts/lib/need.sh"
need_pkgs cc:gcc cmake make readelf:binutils pkg-config

target_dir=${CARGO_TARGET_DIR:-$root/target}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcfx-install-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

log "cmake --install into $prefix"
cmake -S . -B build/install -DMCFX_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/install
cmake --install build/install --prefix "$prefix"

log "installed files"
abi=$(sed -n 's/^#define MCFX_ABI_VERSION \([0-9]*\)$/\1/p' include/mooncake_flagcx.h)
soname=libmooncake_flagcx.so.$abi
for f in "lib/$soname" lib/libmooncake_flagcx.so include/mooncake_flagcx.h \
  lib/pkgconfig/mooncake_flagcx.pc lib/cmake/MooncakeFlagcx/MooncakeFlagcxConfig.cmake \
  lib/cmake/MooncakeFlagcx/MooncakeFlagcxConfigVersion.cmake \
  lib/libflagcx.so include/flagcx_p2p.h include/flagcx.h; do
  [ -e "$prefix/$f" ] || fail "$f is not installed"
done
[ -L "$prefix/lib/$soname" ] && [ -L "$prefix/lib/libmooncake_flagcx.so" ] ||
  fail "lib/$soname and lib/libmooncake_flagcx.so must be links to the real file"
readelf -d "$prefix/lib/$soname" | grep -q "Library soname: \[$soname\]" ||
  fail "the installed plugin's SONAME is not $soname"
(cd "$prefix" && find . -type f -o -type l | sort)

log "readelf -d: no RPATH/RUNPATH into the build tree"
elfs=0
while IFS= read -r -d '' f; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
  elfs=$((elfs + 1))
  paths=$(readelf -d "$f" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]$/\1/p')
  printf '%s: %s\n' "${f#"$prefix"/}" "${paths:-(no RPATH/RUNPATH)}"
  IFS=: read -r -a entries <<<"$paths"
  for e in "${entries[@]}"; do
    case $e in
      '$ORIGIN' | '$ORIGIN/'*) ;;
      "$root" | "$root"/* | "$target_dir" | "$target_dir"/*)
        fail "${f#"$prefix"/} has a RUNPATH/RPATH into the build tree: $e" ;;
      /*) ;; # outside the build tree, e.g. a real FlagCX's lib/
      *) fail "${f#"$prefix"/} has a relative RUNPATH/RPATH entry: $e" ;;
    esac
  done
done < <(find "$prefix" -type f -print0)
[ "$elfs" -ge 2 ] || fail "found $elfs ELF files in the install tree, expected the plugin and libflagcx.so"

log "a C program built with pkg-config, run without LD_LIBRARY_PATH"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
libdir=$(pkg-config --variable=libdir mooncake_flagcx)
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
cc -std=c11 -Wall -Wextra -Werror tests/install/consumer.c -o "$tmp/consumer-pc" \
  $(pkg-config --cflags --libs mooncake_flagcx) -Wl,-rpath,"$libdir"
readelf -d "$tmp/consumer-pc" | grep -q "Shared library: \[$soname\]" ||
  fail "the pkg-config consumer does not record $soname"
env -u LD_LIBRARY_PATH "$tmp/consumer-pc"

log "a CMake project using find_package(MooncakeFlagcx), run without LD_LIBRARY_PATH"
cmake -S tests/install -B "$tmp/consumer-cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/consumer-cmake" >/dev/null
env -u LD_LIBRARY_PATH "$tmp/consumer-cmake/consumer"

log "install check passed"
