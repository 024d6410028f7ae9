#!/usr/bin/env bash
# Installs the built transport into PREFIX (DESTDIR is honoured):
#
#   scripts/install.sh PREFIX [--profile release] [--libdir lib]
#
# It installs what cargo built in target/<profile>/ (run `cargo build
# --release` first; this script builds nothing):
#
#   lib/libmooncake_flagcx.so.<ABI>.<version>   the plugin (SONAME
#   lib/libmooncake_flagcx.so.<ABI>             libmooncake_flagcx.so.<ABI>)
#   lib/libmooncake_flagcx.so                     and its links
#   include/mooncake_flagcx.h
#   lib/pkgconfig/mooncake_flagcx.pc
#   lib/cmake/MooncakeFlagcx/                    find_package(MooncakeFlagcx)
#
# and, when the build used the in-tree software FlagCX provider (no
# FLAGCX_HOME), a tree Mooncake's build accepts as FLAGCX_HOME:
#
#   lib/libflagcx.so  include/flagcx_p2p.h  include/flagcx_sw.h
#   include/flagcx.h  (a placeholder: see cmake/flagcx.h)
#
# `cmake --install <build> --prefix PREFIX` runs this script; people who only
# use cargo run it directly. The installed ELF files carry no path into the
# build tree (the plugin's RUNPATH is $ORIGIN, plus $FLAGCX_HOME/lib when
# built against a real FlagCX).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

prefix=""
profile=release
libdir=lib
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    *) prefix=$1; shift ;;
  esac
done
if [ -z "$prefix" ]; then
  echo "usage: scripts/install.sh PREFIX [--profile release] [--libdir lib]" >&2
  exit 2
fi
case $prefix in
  /*) ;;
  *) prefix=$(pwd)/$prefix ;;
esac

target_dir=${CARGO_TARGET_DIR:-$root/target}
out=$target_dir/$profile
plugin=$out/libmooncake_flagcx.so
if [ ! -f "$plugin" ]; then
  echo "install.sh: $plugin is missing: run cargo build --profile $profile first" >&2
  exit 1
fi

abi=$(sed -n 's/^#define MCFX_ABI_VERSION \([0-9]*\)$/\1/p' "$root/include/mooncake_flagcx.h")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
soname=libmooncake_flagcx.so.$abi
realname=$soname.$version
if [ -z "$abi" ] || [ -z "$version" ]; then
  echo "install.sh: cannot read the ABI version or the crate version" >&2
  exit 1
fi
# The SONAME the build gave the plugin must be the one we install under.
if command -v readelf >/dev/null &&
  ! readelf -d "$plugin" | grep -q "Library soname: \[$soname\]"; then
  echo "install.sh: $plugin has no SONAME $soname (rebuild with cargo)" >&2
  exit 1
fi

dest=${DESTDIR:-}$prefix
install -d "$dest/$libdir/pkgconfig" "$dest/$libdir/cmake/MooncakeFlagcx" "$dest/include"
install -m 755 "$plugin" "$dest/$libdir/$realname"
ln -sfn "$realname" "$dest/$libdir/$soname"
ln -sfn "$soname" "$dest/$libdir/libmooncake_flagcx.so"
install -m 644 "$root/include/mooncake_flagcx.h" "$dest/include/"

# ../../.. from <libdir>/cmake/MooncakeFlagcx back to the prefix.
up=$(printf '%s/cmake/MooncakeFlagcx' "$libdir" | sed 's|[^/][^/]*|..|g')
subst() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@ABI@|$abi|g" \
    -e "s|@VERSION@|$version|g" -e "s|@SONAME@|$soname|g" \
    -e "s|@REALNAME@|$realname|g" -e "s|@UP@|$up|g" "$1" >"$2"
  chmod 644 "$2"
}
subst "$root/cmake/mooncake_flagcx.pc.in" "$dest/$libdir/pkgconfig/mooncake_flagcx.pc"
subst "$root/cmake/MooncakeFlagcxConfig.cmake.in" \
  "$dest/$libdir/cmake/MooncakeFlagcx/MooncakeFlagcxConfig.cmake"
subst "$root/cmake/MooncakeFlagcxConfigVersion.cmake.in" \
  "$dest/$libdir/cmake/MooncakeFlagcx/MooncakeFlagcxConfigVersion.cmake"

# The software provider: the build copied it next to the plugin. A plugin
# built against a real FlagCX links that one (found through FLAGCX_HOME/lib).
if readelf -d "$plugin" 2>/dev/null | grep -q 'R.*PATH.*\[\$ORIGIN\]'; then
  provider=$out/libflagcx.so
  if [ ! -f "$provider" ]; then
    echo "install.sh: $provider is missing (the software provider)" >&2
    exit 1
  fi
  install -m 755 "$provider" "$dest/$libdir/libflagcx.so"
  install -m 644 "$root/flagcx-sys/provider/include/flagcx_p2p.h" \
    "$root/flagcx-sys/provider/include/flagcx_sw.h" "$root/cmake/flagcx.h" "$dest/include/"
  echo "installed the plugin and the software FlagCX provider (FLAGCX_HOME=$prefix) in $dest"
else
  echo "installed the plugin (built against a real FlagCX) in $dest"
fi
