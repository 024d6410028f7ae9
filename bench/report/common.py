"""Helpers shared by the A/B reports (ab_report.py for scripts/ab.sh,
tebench_report.py for scripts/mooncake.sh --ab): the machine a table came
from, and the median/spread of per-round ratios."""

import json
import os
import platform
import statistics


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Intel and AMD vCPUs differ:
    every table names its CPU), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """The report.json "machine" record."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model()}


def summary(ratios):
    """{median, min, max} of per-round ratios, or None when there are none."""
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def write_report(directory, report):
    """Writes report.json into `directory`; returns its path."""
    path = os.path.join(directory, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return path


def fmt_ns(ns):
    """Nanoseconds for a table cell ("-" when missing)."""
    if ns is None:
        return "-"
    return f"{ns / 1000:.1f}us" if ns >= 1000 else f"{ns:.0f}ns"


def fmt_rate(x):
    """A rate for a table cell, in k or M ("-" when missing)."""
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.1f}"
