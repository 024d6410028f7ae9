# shellcheck shell=bash
# Sourced by the scripts in scripts/: installs missing system packages.
#
#   need_pkgs CHECK[:PACKAGE] ...
#
# CHECK is a command (`command -v`), an absolute path (a file that must
# exist) or `py.MODULE` (importable by /usr/bin/python3); PACKAGE is the
# Debian package that provides it (default: CHECK itself). Every missing one
# is installed with one apt-get call, as root or through sudo.
need_pkgs() {
  local spec check pkg missing=()
  for spec in "$@"; do
    check=${spec%%:*}
    pkg=${spec#*:}
    case $check in
      /*) [ -e "$check" ] && continue ;;
      py.*) /usr/bin/python3 -c "import ${check#py.}" 2>/dev/null && continue ;;
      *) command -v "$check" >/dev/null && continue ;;
    esac
    missing+=("$pkg")
  done
  apt_install "${missing[@]}"
}

# apt_install PACKAGE ...: installs the packages (none: does nothing) with
# one apt-get call, as root or through sudo. For scripts whose checks
# need_pkgs cannot express (scripts/mooncake.sh).
apt_install() {
  [ $# -gt 0 ] || return 0
  printf '== installing %s\n' "$*"
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}
