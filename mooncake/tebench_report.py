#!/usr/bin/env python3
"""Turns the tebench runs of `scripts/mooncake.sh --ab` into a table, JSON and a plot.

Input: <abdir>/raw/<mode>-<op>-<impl>-r<round>.txt, each the stdout of one
tebench initiator (one row per block size: BlkSize, Batch, BW (GB/s), [Avg
Inst GB/s,] Avg Lat, Avg Tx, P99 Tx, P999 Tx, in us). impl is `adapter` (this project's adapter and
plugin) or `upstream` (Mooncake's own C++ FlagCX transport); mode is the
software provider's `copy` mode, its modeled `nic`, or `real` FlagCX.

Per (mode, op, block size, impl) every number is the median over rounds; the
ratio adapter/upstream of the mean op time is the median of the per-round
ratios (round k against round k) with their min..max.
Output: <abdir>/table.md (also printed), <abdir>/report.json, <abdir>/ab.png.
"""
import argparse
import glob
import json
import os
import platform
import re
import statistics
from collections import defaultdict

IMPLS = ["adapter", "upstream"]
FIELDS = ["gbps", "avg_lat_us", "avg_tx_us", "p99_tx_us", "p999_tx_us"]
NAME = re.compile(r"^(?P<mode>[a-z]+)-(?P<op>write|read)-(?P<impl>adapter|upstream)-r(?P<round>\d+)\.txt$")


def load(abdir):
    runs = defaultdict(dict)  # (mode, op, block, impl) -> {round: row}
    for path in sorted(glob.glob(os.path.join(abdir, "raw", "*.txt"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 7 or not parts[0].isdigit():
                    continue
                # BW is the 3rd column; newer tebench builds (PR #3522) add
                # an "Avg Inst GB/s" column after it, so the rest is read
                # from the end: Avg Lat, Avg Tx, P99 Tx, P999 Tx.
                row = dict(zip(FIELDS, map(float, [parts[2]] + parts[-4:])))
                key = (m["mode"], m["op"], int(parts[0]), m["impl"])
                runs[key][int(m["round"])] = row
    return runs


def med(rounds, field):
    vals = [r[field] for r in rounds.values()]
    return statistics.median(vals) if vals else None


def ratios(runs, mode, op, block, field="avg_tx_us"):
    a = runs.get((mode, op, block, "adapter"), {})
    u = runs.get((mode, op, block, "upstream"), {})
    return [a[k][field] / u[k][field] for k in a if k in u and u[k][field] > 0]


def size(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("abdir")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--mooncake", default="unknown")
    ap.add_argument("--duration", default="1")
    args = ap.parse_args()
    runs = load(args.abdir)
    if not runs:
        raise SystemExit("tebench_report: no tebench results in " + args.abdir + "/raw")
    keys = sorted({k[:3] for k in runs}, key=lambda k: (k[0] != "copy", k[1] != "write", k[2]))
    nrounds = max(len(v) for v in runs.values())

    lines = [
        f"tebench A/B, mooncake-flagcx {args.commit}, Mooncake {args.mooncake}: "
        f"medians over {nrounds} rounds, {args.duration} s per block size, batch 1, "
        "one initiator thread, target + initiator processes on loopback",
        "",
        "| mode | op | block | adapter avg us | upstream avg us | adapter p99 us "
        "| upstream p99 us | adapter GB/s | upstream GB/s | adapter/upstream avg [min..max] |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    results = []
    for mode, op, block in keys:
        a = runs.get((mode, op, block, "adapter"), {})
        u = runs.get((mode, op, block, "upstream"), {})
        rs = ratios(runs, mode, op, block)
        entry = {"mode": mode, "op": op, "block": block}
        for impl, rounds in (("adapter", a), ("upstream", u)):
            entry[impl] = {f: med(rounds, f) for f in FIELDS} if rounds else None
            if rounds:
                entry[impl]["rounds"] = len(rounds)
        if rs:
            entry["avg_tx_ratio"] = {"median": statistics.median(rs), "min": min(rs), "max": max(rs)}
        results.append(entry)

        def cell(rounds, field, fmt):
            v = med(rounds, field) if rounds else None
            return "-" if v is None else format(v, fmt)
        ratio = f"{statistics.median(rs):.2f}x [{min(rs):.2f}..{max(rs):.2f}]" if rs else "-"
        lines.append(
            f"| {mode} | {op} | {size(block)} | {cell(a, 'avg_tx_us', '.1f')} | "
            f"{cell(u, 'avg_tx_us', '.1f')} | {cell(a, 'p99_tx_us', '.1f')} | "
            f"{cell(u, 'p99_tx_us', '.1f')} | {cell(a, 'gbps', '.3f')} | "
            f"{cell(u, 'gbps', '.3f')} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    with open(os.path.join(args.abdir, "table.md"), "w") as f:
        f.write(table)
    report = {
        "commit": args.commit,
        "mooncake": args.mooncake,
        "seconds_per_block_size": args.duration,
        "rounds": nrounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": cpu_model()},
        "results": results,
    }
    path = os.path.join(args.abdir, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    png = plot(runs, keys, args)
    print(f"table:  {os.path.join(args.abdir, 'table.md')}\nreport: {path}\nplot:   {png}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plot(runs, keys, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(m, o) for m, o, _ in keys}, key=lambda p: (p[0] != "copy", p[1] != "write"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4 * len(panels)), squeeze=False)
    colors = {"adapter": "#4f81bd", "upstream": "#c0504d"}
    width = 0.38
    for ax, (mode, op) in zip(axes[:, 0], panels):
        blocks = sorted(b for m, o, b in keys if (m, o) == (mode, op))
        for k, impl in enumerate(IMPLS):
            xs, ys = [], []
            for j, b in enumerate(blocks):
                v = med(runs.get((mode, op, b, impl), {}), "avg_tx_us")
                if v:
                    xs.append(j + (k - 0.5) * width)
                    ys.append(v)
            ax.bar(xs, ys, width, label=impl, color=colors[impl])
        ax.set_xticks(range(len(blocks)))
        ax.set_xticklabels([size(b) for b in blocks])
        ax.set_yscale("log")
        ax.set_title(f"{op}, {mode} mode: mean time per op (us, log scale; lower is better)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Mooncake tebench: this project's adapter vs upstream's FlagCX transport "
                 f"(commit {args.commit})")
    fig.tight_layout()
    path = os.path.join(args.abdir, "ab.png")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
