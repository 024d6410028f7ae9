#!/usr/bin/env bash
# The A/B comparison inside a CPU quota, as in a container started with
# `--cpus`: scripts/ab.sh runs in a cgroup whose CPU bandwidth is AB_CPUS
# CPUs (default 1), so every implementation is throttled alike. Then the
# report is in target/ab-quota/ (table.md, report.json, ab.png).
#
#   AB_CPUS=1.5 AB_SCENARIOS=busy_single_4k,kv_small_4k scripts/ab_quota.sh
#
# Other AB_* settings pass through (the scaling curves are off unless
# AB_SCALING=1). Needs root and the cgroup CPU controller (v2 `cpu.max` or v1
# `cpu.cfs_quota_us`); without them it says so and exits 0 without running.
set -euo pipefail
cd "$(dirname "$0")/.."

cpus=${AB_CPUS:-1}
period=100000
quota=$(awk -v c="$cpus" -v p="$period" 'BEGIN { q = int(c * p); if (q < 1000) q = 1000; print q }')
name=mcfx-ab-quota-$$

skip() { echo "ab_quota.sh: $* (skipped)"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root to make a cgroup"

dir=""
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  grep -qw cpu /sys/fs/cgroup/cgroup.controllers || skip "cgroup v2 without the cpu controller"
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || skip "cannot enable the cpu controller"
  dir=/sys/fs/cgroup/$name
  mkdir "$dir" 2>/dev/null || skip "cannot create $dir"
  echo "$quota $period" >"$dir/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ]; then
  dir=/sys/fs/cgroup/cpu/$name
  mkdir "$dir" 2>/dev/null || skip "cannot create $dir"
  echo "$period" >"$dir/cpu.cfs_period_us"
  echo "$quota" >"$dir/cpu.cfs_quota_us"
else
  skip "no cgroup CPU controller found"
fi

cleanup() {
  # Move anything left back to the root group, then remove ours.
  if [ -n "$dir" ] && [ -d "$dir" ]; then
    local root=${dir%/*}
    while read -r pid; do echo "$pid" >"$root/cgroup.procs" 2>/dev/null || true; done <"$dir/cgroup.procs"
    rmdir "$dir" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "== A/B inside a CPU quota of $cpus CPUs ($quota us per $period us), cgroup $dir"
# A child shell joins the cgroup, then becomes the A/B run: everything it
# starts (the bench, its busy loops, peer processes) inherits the quota.
AB_SCALING=${AB_SCALING:-0} bash -c 'echo $$ >"$1/cgroup.procs" && exec scripts/ab.sh' _ "$dir"
rm -rf target/ab-quota
cp -r target/ab target/ab-quota
if [ -f "$dir/cpu.stat" ]; then
  echo "== throttling while it ran ($dir/cpu.stat)"
  grep -E "nr_periods|nr_throttled|throttled_(time|usec)" "$dir/cpu.stat" || true
fi
echo "report: target/ab-quota/"
