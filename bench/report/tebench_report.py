#!/usr/bin/env python3
"""Turns the tebench runs of `scripts/mooncake.sh --ab` into a table, JSON and a plot.

Input: <abdir>/raw/<mode>-<op>-<impl>[-b<batch>]-r<round>.txt, each the
stdout of tebench initiators (one row per block and batch size: BlkSize,
Batch, BW (GB/s), [Avg Inst GB/s,] Avg Lat, Avg Tx, P99 Tx, P999 Tx, in us).
impl is `adapter` (this project's adapter and plugin) or `upstream`
(Mooncake's own C++ FlagCX transport); mode is the software provider's
`copy` mode, its modeled `nic`, or `real` FlagCX, and `busy` and `busynic`
are copy mode and the modeled NIC beside a busy loop per core. The batch size is read
from the rows' Batch column.

tebench times batches: a batch is `batch` requests of one block size given
to one submitTransfer, and "Avg Tx" / "P99 Tx" are the mean / 99th
percentile of the time from submitTransfer until getTransferStatus reports
all of them completed; "Avg Lat" is the run's wall time per batch (adds
allocateBatchID / freeBatchID and the loop); BW is bytes moved over the
run's wall time. The report's time per op is Avg Tx / batch (at batch 1:
Avg Tx, as before); p99 is per batch.

Per (mode, op, block size, batch, impl) every number is the median over
rounds; the ratio adapter/upstream of the mean batch time (= of the time
per op) is the median of the per-round ratios (round k against round k)
with their min..max.
Output: <abdir>/table.md (also printed), <abdir>/report.json, <abdir>/ab.png.
"""
import argparse
import glob
import os
import re
from collections import defaultdict

from common import fmt_ratio, machine, median_of, summary, write_report

IMPLS = ["adapter", "upstream"]
FIELDS = ["gbps", "avg_lat_us", "avg_tx_us", "p99_tx_us", "p999_tx_us"]
# copy, nic: the software provider's modes; real: FlagCX; busy, busynic:
# copy mode and the modeled NIC beside a busy loop per core.
MODE_ORDER = {"copy": 0, "nic": 1, "real": 2, "busy": 3, "busynic": 4}
NAME = re.compile(r"^(?P<mode>[a-z]+)-(?P<op>write|read)-(?P<impl>adapter|upstream)"
                  r"(?:-b\d+)?-r(?P<round>\d+)\.txt$")


def load(abdir):
    runs = defaultdict(dict)  # (mode, op, block, batch, impl) -> {round: row}
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
                batch = int(parts[1])
                row["per_op_us"] = row["avg_tx_us"] / batch
                key = (m["mode"], m["op"], int(parts[0]), batch, m["impl"])
                runs[key][int(m["round"])] = row
    return runs


def ratios(runs, point, field="avg_tx_us"):
    a = runs.get(point + ("adapter",), {})
    u = runs.get(point + ("upstream",), {})
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
    # (mode, op, block, batch): grouped by mode (quiet before busy), write
    # before read, then by batch size and block size.
    keys = sorted({k[:4] for k in runs},
                  key=lambda k: (MODE_ORDER.get(k[0], len(MODE_ORDER)), k[0], k[1] != "write",
                                 k[3], k[2]))
    nrounds = max(len(v) for v in runs.values())
    batches = sorted({k[3] for k in keys})
    batch_text = "batch " + ", ".join(map(str, batches))

    lines = [
        f"tebench A/B, mooncake-flagcx {args.commit}, Mooncake {args.mooncake}: "
        f"medians over {nrounds} rounds, {args.duration} s per block and batch size, "
        f"{batch_text}, one initiator thread, target + initiator processes on loopback; "
        "us/op = tebench's Avg Tx (submit to all completed, per batch) / batch; "
        "p99 is per batch; ratio: adapter/upstream of Avg Tx",
        "",
        "| mode | op | block | batch | adapter us/op | upstream us/op | adapter p99 us "
        "| upstream p99 us | adapter GB/s | upstream GB/s | adapter/upstream [min..max] |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    results = []
    for point in keys:
        mode, op, block, batch = point
        a = runs.get(point + ("adapter",), {})
        u = runs.get(point + ("upstream",), {})
        rs = ratios(runs, point)
        entry = {"mode": mode, "op": op, "block": block, "batch": batch}
        for impl, rounds in (("adapter", a), ("upstream", u)):
            entry[impl] = {f: median_of(rounds.values(), f) for f in FIELDS + ["per_op_us"]} if rounds else None
            if rounds:
                entry[impl]["rounds"] = len(rounds)
        if rs:
            entry["avg_tx_ratio"] = summary(rs)
        results.append(entry)

        def cell(rounds, field, fmt):
            v = median_of(rounds.values(), field) if rounds else None
            return "-" if v is None else format(v, fmt)
        ratio = fmt_ratio(summary(rs))
        per_op = ".2f" if batch > 1 else ".1f"
        lines.append(
            f"| {mode} | {op} | {size(block)} | {batch} | {cell(a, 'per_op_us', per_op)} | "
            f"{cell(u, 'per_op_us', per_op)} | {cell(a, 'p99_tx_us', '.1f')} | "
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
        "batches": batches,
        "per_op_us": "avg_tx_us / batch (tebench's Avg Tx: submitTransfer until all "
                     "requests of the batch completed)",
        "machine": machine(),
        "results": results,
    }
    path = write_report(args.abdir, report)
    png = plot(runs, keys, args)
    print(f"table:  {os.path.join(args.abdir, 'table.md')}\nreport: {path}\nplot:   {png}")


def plot(runs, keys, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(m, o) for m, o, _, _ in keys},
                    key=lambda p: (MODE_ORDER.get(p[0], len(MODE_ORDER)), p[0], p[1] != "write"))
    batches = sorted({k[3] for k in keys})
    fig, axes = plt.subplots(len(panels), len(batches), figsize=(7 * len(batches), 4 * len(panels)),
                             squeeze=False)
    colors = {"adapter": "#4f81bd", "upstream": "#c0504d"}
    width = 0.38
    for row, (mode, op) in enumerate(panels):
        for col, batch in enumerate(batches):
            ax = axes[row, col]
            blocks = sorted(b for m, o, b, n in keys if (m, o, n) == (mode, op, batch))
            for k, impl in enumerate(IMPLS):
                xs, ys = [], []
                for j, b in enumerate(blocks):
                    v = median_of(runs.get((mode, op, b, batch, impl), {}).values(), "per_op_us")
                    if v:
                        xs.append(j + (k - 0.5) * width)
                        ys.append(v)
                ax.bar(xs, ys, width, label=impl, color=colors[impl])
            ax.set_xticks(range(len(blocks)))
            ax.set_xticklabels([size(b) for b in blocks], fontsize=8)
            ax.set_yscale("log")
            ax.set_title(f"{op}, {mode} mode, batch {batch}: us per op (log; lower is better)",
                         fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Mooncake tebench: this project's adapter vs upstream's FlagCX transport "
                 f"(commit {args.commit}); us per op = Avg Tx / batch")
    fig.tight_layout()
    path = os.path.join(args.abdir, "ab.png")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
