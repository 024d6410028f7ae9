"""Helpers shared by the A/B reports (ab_report.py for scripts/ab.sh,
scaling_report.py for scripts/ab_scaling.sh, tebench_report.py for
scripts/mooncake.sh --ab): reading the benchmark's JSON lines, the machine a
table came from, medians over rounds and the median/spread of per-round
ratios, and the table cells."""

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


def json_lines(path):
    """The JSON objects of a JSON-lines file, in order: the lines that start
    with "{" (the benchmark's other output is skipped)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                yield json.loads(line)


def median_of(rows, key):
    """The median of `key` over rows (rounds) that have it, or None."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summary(ratios):
    """{median, min, max} of per-round ratios, or None when there are none."""
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def fmt_ratio(s):
    """A summary() for a table cell: "median x [min..max]" ("-" when None)."""
    if s is None:
        return "-"
    return f"{s['median']:.2f}x [{s['min']:.2f}..{s['max']:.2f}]"


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
