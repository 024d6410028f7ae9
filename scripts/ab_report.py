#!/usr/bin/env python3
"""Aggregates the A/B benchmark's JSON lines into a table, report.json and a plot.

Per (scenario, implementation) every metric is the median over rounds. Ratios
are Rust / C++ from the same run; their spread is the min..max of the per-round
ratios (round k's rust against round k's cpp).
"""
import argparse
import json
import os
import platform
import statistics
import sys
from collections import defaultdict

IMPLS = ["cpp", "rust", "raw"]
SCENARIOS = ["single_64b", "single_4k", "single_64k", "single_1m", "single_4k_wire2us",
             "batch64_4k", "threads4_4k", "peers4_4k", "xproc_4k", "bw_256m", "idle_cpu"]
METRICS = ["p50_ns", "p99_ns", "p999_ns", "ops_per_s", "bytes_per_s", "cpu_pct"]


def load(path):
    rows = defaultdict(list)  # (scenario, impl) -> [row per round]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows[(r["scenario"], r["impl"])].append(r)
    return rows


def median(rows, metric):
    vals = [r[metric] for r in rows if metric in r]
    return statistics.median(vals) if vals else None


def per_round_ratio(rows, scen, metric, num="rust", den="cpp"):
    a = {r["round"]: r.get(metric) for r in rows.get((scen, num), [])}
    b = {r["round"]: r.get(metric) for r in rows.get((scen, den), [])}
    ratios = [a[k] / b[k] for k in a if k in b and a[k] and b[k]]
    return ratios


def fmt_ns(ns):
    if ns is None:
        return "-"
    return f"{ns / 1000:.1f}us" if ns >= 1000 else f"{ns:.0f}ns"


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.1f}"


def ratio_text(rows, scen, metric):
    rs = per_round_ratio(rows, scen, metric)
    if not rs:
        return "-"
    return f"{statistics.median(rs):.2f}x [{min(rs):.2f}..{max(rs):.2f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", default="target/ab")
    args = ap.parse_args()
    rows = load(args.runs)
    if not rows:
        sys.exit("ab_report: no results in " + args.runs)
    scenarios = [s for s in SCENARIOS if any((s, i) in rows for i in IMPLS)]

    results = []
    print()
    print(f"A/B benchmark, commit {args.commit}: medians over "
          f"{max(len(v) for v in rows.values())} rounds (software FlagCX provider)")
    hdr = f"{'scenario':<18} {'impl':<5} {'p50':>9} {'p99':>9} {'p99.9':>9} {'ops/s':>9} {'GB/s':>7}"
    print(hdr)
    print("-" * len(hdr))
    for s in scenarios:
        for i in IMPLS:
            rs = rows.get((s, i))
            if not rs:
                continue
            m = {k: median(rs, k) for k in METRICS}
            results.append({"scenario": s, "impl": i, "rounds": len(rs),
                            **{k: v for k, v in m.items() if v is not None}})
            if s == "idle_cpu":
                print(f"{s:<18} {i:<5} {'cpu ' + format(m['cpu_pct'], '.2f') + '% of a core':>39}")
                continue
            gbs = f"{m['bytes_per_s'] / 1e9:.2f}" if m["bytes_per_s"] else "-"
            print(f"{s:<18} {i:<5} {fmt_ns(m['p50_ns']):>9} {fmt_ns(m['p99_ns']):>9} "
                  f"{fmt_ns(m['p999_ns']):>9} {fmt_rate(m['ops_per_s']):>9} {gbs:>7}")

    print()
    print("Rust / C++ (median of per-round ratios [min..max]; lower latency and higher ops/s are better)")
    print(f"{'scenario':<18} {'p50':>22} {'p99':>22} {'ops/s':>22}   rust-raw p50")
    ratios = {}
    for s in scenarios:
        if s == "idle_cpu":
            continue
        rust_p50 = median(rows.get((s, "rust"), []), "p50_ns")
        raw_p50 = median(rows.get((s, "raw"), []), "p50_ns")
        delta = f"{(rust_p50 - raw_p50) / 1000:+.2f}us" if rust_p50 and raw_p50 else "-"
        ratios[s] = {m: statistics.median(per_round_ratio(rows, s, m)) if per_round_ratio(rows, s, m) else None
                     for m in ["p50_ns", "p99_ns", "p999_ns", "ops_per_s"]}
        if rust_p50 and raw_p50:
            ratios[s]["rust_minus_raw_p50_ns"] = rust_p50 - raw_p50
            raw_bw = median(rows.get((s, "raw"), []), "bytes_per_s")
            rust_bw = median(rows.get((s, "rust"), []), "bytes_per_s")
            if raw_bw:
                ratios[s]["rust_bw_vs_raw"] = rust_bw / raw_bw
                if s in ("bw_256m", "single_1m"):
                    delta += f"  (bandwidth {100 * rust_bw / raw_bw:.1f}% of raw)"
        print(f"{s:<18} {ratio_text(rows, s, 'p50_ns'):>22} {ratio_text(rows, s, 'p99_ns'):>22} "
              f"{ratio_text(rows, s, 'ops_per_s'):>22}   {delta}")

    os.makedirs(args.out, exist_ok=True)
    report = {
        "commit": args.commit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "results": results,
        "ratios_rust_over_cpp": ratios,
    }
    path = os.path.join(args.out, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    png = plot(rows, scenarios, args)
    print(f"\nreport: {path}\nplot:   {png}")


def plot(rows, scenarios, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat_scen = [s for s in scenarios if s != "idle_cpu"]
    fig, axes = plt.subplots(2, 1, figsize=(12, 9))
    width = 0.27
    colors = {"cpp": "#c0504d", "rust": "#4f81bd", "raw": "#9bbb59"}
    for ax, metric, title in [(axes[0], "p50_ns", "p50 latency per op (us, log scale; lower is better)"),
                              (axes[1], "ops_per_s", "throughput (ops/s, log scale; higher is better)")]:
        for k, impl in enumerate(IMPLS):
            xs, ys = [], []
            for j, s in enumerate(lat_scen):
                v = median(rows.get((s, impl), []), metric)
                if v:
                    xs.append(j + (k - 1) * width)
                    ys.append(v / 1000 if metric == "p50_ns" else v)
            ax.bar(xs, ys, width, label=impl, color=colors[impl])
        ax.set_xticks(range(len(lat_scen)))
        ax.set_xticklabels(lat_scen, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"mooncake-flagcx A/B: Rust vs C++ baseline vs raw FlagCX (commit {args.commit})")
    fig.tight_layout()
    path = os.path.join(args.out, "ab.png")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
