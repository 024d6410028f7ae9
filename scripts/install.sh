#!/usr/bin/env bash
# Installs the built transport into PREFIX (DESTDIR is honoured):
#
#   scripts/install.sh PREFIX [--profile release] [--libdir lib] [--with-sw-flagcx]
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
# and nothing else. --with-sw-flagcx (for a plugin built on the in-tree
# software FlagCX provider, i.e. without FLAGCX_HOME) adds that provider, a
# test double, as a FLAGCX_HOME of its own that Mooncake's build accepts:
#
#   lib/mooncake_flagcx/sw-flagcx/lib/libflagcx.so
#   lib/mooncake_flagcx/sw-flagcx/include/flagcx_p2p.h, flagcx_sw.h,
#     flagcx.h (a placeholder: see cmake/flagcx.h)
#
# Never PREFIX/lib/libflagcx.so or PREFIX/include/flagcx*.h: there, a test
# double would stand where a real FlagCX is looked for. A software provider
# that an older version of this script installed there (recognised by its
# flagcxSw* symbols and its headers' text) is removed.
#
# `cmake --install <build> --prefix PREFIX` runs this script (with
# --with-sw-flagcx when configured with -DMCFX_INSTALL_SW_FLAGCX=ON); people
# who only use cargo run it directly. The installed ELF files carry no path
# into the build tree. The plugin's RUNPATH is
# $ORIGIN:$ORIGIN/mooncake_flagcx/sw-flagcx/lib when built on the software
# provider (without --with-sw-flagcx it then loads only where the loader
# finds another libflagcx.so), $ORIGIN:$FLAGCX_HOME/lib when built against a
# real FlagCX.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage="usage: scripts/install.sh PREFIX [--profile release] [--libdir lib] [--with-sw-flagcx]"
prefix=""
profile=release
libdir=lib
with_sw=0
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --with-sw-flagcx) with_sw=1; shift ;;
    -h | --help) sed -n '2,36p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
    *) prefix=$1; shift ;;
  esac
done
if [ -z "$prefix" ]; then
  echo "$usage" >&2
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
command -v readelf >/dev/null || {
  echo "install.sh: readelf (binutils) is needed to check the plugin" >&2
  exit 1
}

abi=$(sed -n 's/^#define MCFX_ABI_VERSION \([0-9]*\)$/\1/p' "$root/include/mooncake_flagcx.h")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
soname=libmooncake_flagcx.so.$abi
realname=$soname.$version
if [ -z "$abi" ] || [ -z "$version" ]; then
  echo "install.sh: cannot read the ABI version or the crate version" >&2
  exit 1
fi
# The SONAME the build gave the plugin must be the one we install under.
if ! readelf -d "$plugin" | grep -q "Library soname: \[$soname\]"; then
  echo "install.sh: $plugin has no SONAME $soname (rebuild with cargo)" >&2
  exit 1
fi

# Which FlagCX the plugin links: build.rs gives a plugin built on the
# software provider the RUNPATH entry of the provider's own directory.
sw_subdir=mooncake_flagcx/sw-flagcx
# shellcheck disable=SC2016 # $ORIGIN is the loader's, not the shell's
sw_runpath='$ORIGIN/'$sw_subdir/lib
runpath=$(readelf -d "$plugin" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]$/\1/p')
on_sw=0
case :$runpath: in
  *:"$sw_runpath":*) on_sw=1 ;;
esac
if [ "$with_sw" = 1 ] && [ "$on_sw" = 0 ]; then
  echo "install.sh: --with-sw-flagcx: $plugin was built against a real FlagCX" \
    "(RUNPATH $runpath), not on the software provider; nothing installed" >&2
  exit 2
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

# The software provider an older version of this script put beside the
# plugin: removed, so no test double stays where FlagCX is looked for. Only
# files that are recognisably ours go; a real FlagCX's are kept.
removed=()
old_lib=$dest/$libdir/libflagcx.so
if [ -f "$old_lib" ] && command -v nm >/dev/null &&
  nm -D --defined-only "$old_lib" 2>/dev/null | grep -q ' flagcxSwSetKnob$'; then
  rm -f "$old_lib"
  removed+=("$libdir/libflagcx.so")
fi
for h in flagcx.h:MOONCAKE_FLAGCX_PLACEHOLDER_FLAGCX_H flagcx_sw.h:FLAGCX_SW_H_ \
  flagcx_p2p.h:flagcx-sys/provider; do
  f=$dest/include/${h%%:*}
  if [ -f "$f" ] && grep -q "${h#*:}" "$f"; then
    rm -f "$f"
    removed+=("include/${h%%:*}")
  fi
done
if [ ${#removed[@]} -gt 0 ]; then
  echo "install.sh: removed the software FlagCX provider an older install left in $dest:" \
    "${removed[*]} (--with-sw-flagcx installs it in $libdir/$sw_subdir)" >&2
fi

if [ "$with_sw" = 1 ]; then
  provider=$out/libflagcx.so
  if [ ! -f "$provider" ]; then
    echo "install.sh: $provider is missing (the software provider)" >&2
    exit 1
  fi
  sw_home=$dest/$libdir/$sw_subdir
  install -d "$sw_home/lib" "$sw_home/include"
  install -m 755 "$provider" "$sw_home/lib/libflagcx.so"
  install -m 644 "$root/flagcx-sys/provider/include/flagcx_p2p.h" \
    "$root/flagcx-sys/provider/include/flagcx_sw.h" "$root/cmake/flagcx.h" \
    "$sw_home/include/"
  echo "installed the plugin in $dest, and the software FlagCX provider (a test double)" \
    "as FLAGCX_HOME=$prefix/$libdir/$sw_subdir"
elif [ "$on_sw" = 1 ]; then
  echo "installed the plugin in $dest"
  echo "install.sh: warning: the plugin was built on the software FlagCX provider (no" \
    "FLAGCX_HOME), which is not installed: it loads only where the loader finds a" \
    "libflagcx.so. Build with FLAGCX_HOME=<FlagCX build> for production, or install" \
    "the test double with --with-sw-flagcx." >&2
else
  echo "installed the plugin (built against a real FlagCX) in $dest"
fi
