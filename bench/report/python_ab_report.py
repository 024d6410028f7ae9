#!/usr/bin/env python3
"""Turns the Python-level A/B of `scripts/mooncake.sh --ab` into a table,
JSON and a plot.

Input: <dir>/raw/<mode>-<load>-<impl>-r<round>.json, each the output of one
python/vllm_ab.py run: per phase (kv_32k, kv_4k: requests of
batch_transfer_sync_write from a pool of threads; single_4k: single
transfer_sync_write calls) the phase's wall time and every request's
(seconds, return code). impl is `adapter` (this project's adapter and
plugin) or `upstream` (Mooncake's C++ FlagCX transport), both through
Mooncake's Python module; mode is the software provider's `copy` mode or its
modeled `nic` (or `real` FlagCX); load is `quiet` or `busy` (a busy loop
per core).

Per run and phase: the median and p99 request time, the time per op (median
request time / ops per request), GB/s (bytes of the requests that succeeded
over the phase's wall time, all threads together) and the failed requests
(return code not 0). Across rounds every number is the median (failed
requests: the sum); the ratios adapter/upstream of the median request time
and of GB/s are the medians of the per-round ratios (round k against round
k) with their min..max.

Output: <dir>/table.md (also printed), <dir>/report.json, <dir>/python_ab.png.
"""
import argparse
import glob
import json
import os
import re
import statistics
from collections import defaultdict

from common import cpu_model, fmt_ratio, machine, median_of, summary, write_report

IMPLS = ["adapter", "upstream"]
NAME = re.compile(r"^(?P<mode>[a-z]+)-(?P<load>[a-z]+)-(?P<impl>adapter|upstream)-r(?P<round>\d+)\.json$")
PHASES = ["kv_32k", "kv_4k", "single_4k"]
PHASE_TEXT = {"kv_32k": "32 x 16 x 32 KiB", "kv_4k": "32 x 64 x 4 KiB", "single_4k": "single 4 KiB"}


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def phase_stats(ph):
    reqs = ph["requests"]
    times = sorted(t for t, _ in reqs)
    failed = sum(1 for _, rc in reqs if rc != 0)
    med = statistics.median(times) if times else None
    return {
        "requests": len(reqs),
        "failed": failed,
        "median_s": med,
        "p99_s": percentile(times, 0.99),
        "per_op_us": med / ph["ops_per_request"] * 1e6 if med else None,
        "gbps": ph["bytes_per_request"] * (len(reqs) - failed) / ph["wall_s"] / 1e9,
        "ops_per_request": ph["ops_per_request"],
        "bytes_per_request": ph["bytes_per_request"],
    }


def load(d):
    runs = defaultdict(dict)  # (mode, load, phase, impl) -> {round: stats}
    meta = {"loadavg": [], "threads": None, "requests_per_thread": None, "modules": {},
            "exits": []}
    for path in sorted(glob.glob(os.path.join(d, "raw", "*.json"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            out = json.load(f)
        meta["loadavg"] += [out.get("load_start", [None])[0], out.get("load_end", [None])[0]]
        meta["threads"] = out.get("threads")
        meta["requests_per_thread"] = out.get("requests_per_thread")
        meta["modules"][m["impl"]] = out.get("module")
        if out.get("exit") != {"initiator": 0, "target": 0}:
            meta["exits"].append((os.path.basename(path), out.get("exit")))
        for phase, ph in out["phases"].items():
            runs[(m["mode"], m["load"], phase, m["impl"])][int(m["round"])] = phase_stats(ph)
    return runs, meta


def ratios(a, u, field):
    return [a[k][field] / u[k][field] for k in a
            if k in u and a[k][field] is not None and u[k][field]]


def fmt_s(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def cell(v, fmt):
    return "-" if v is None else format(v, fmt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--mooncake", default="unknown")
    args = ap.parse_args()
    runs, meta = load(args.dir)
    if not runs:
        raise SystemExit("python_ab_report: no results in " + os.path.join(args.dir, "raw"))
    keys = sorted({k[:3] for k in runs},
                  key=lambda k: (k[0] != "copy", k[1] != "quiet",
                                 PHASES.index(k[2]) if k[2] in PHASES else 99))
    nrounds = max(len(v) for v in runs.values())
    loads = [x for x in meta["loadavg"] if x is not None]
    load_text = f"{min(loads):.1f}..{max(loads):.1f}" if loads else "?"
    lines = [
        f"Python A/B (Mooncake's Python TransferEngine, protocol \"flagcx\"), mooncake-flagcx "
        f"{args.commit}, Mooncake {args.mooncake}; {cpu_model()}, {os.cpu_count()} vCPUs, "
        f"1-min load average {load_text} (at the runs' starts and ends); medians over {nrounds} "
        f"rounds; target + initiator processes, P2PHANDSHAKE; kv_*: a pool of "
        f"{meta['threads']} threads, {meta['requests_per_thread']} requests each, a request = one "
        "batch_transfer_sync_write of layers x pages x page size; single_4k: transfer_sync_write "
        "from one thread; us/op = median request time / ops per request; GB/s = bytes of the "
        "succeeded requests / the phase's wall time; failed: requests that returned an error "
        "(all rounds); ratio: adapter/upstream",
        "",
        "| mode | load | shape | adapter request p50 | upstream request p50 | adapter p99 "
        "| upstream p99 | adapter us/op | upstream us/op | adapter GB/s | upstream GB/s "
        "| failed adapter / upstream | request time ratio [min..max] | GB/s ratio [min..max] |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    results = []
    for point in keys:
        mode, ld, phase = point
        a = runs.get(point + ("adapter",), {})
        u = runs.get(point + ("upstream",), {})
        entry = {"mode": mode, "load": ld, "shape": phase}
        for impl, rounds in (("adapter", a), ("upstream", u)):
            if not rounds:
                entry[impl] = None
                continue
            entry[impl] = {f: median_of(rounds.values(), f) for f in ("median_s", "p99_s", "per_op_us", "gbps")}
            entry[impl]["failed"] = sum(r["failed"] for r in rounds.values())
            entry[impl]["requests"] = sum(r["requests"] for r in rounds.values())
            entry[impl]["rounds"] = len(rounds)
        rt, gb = ratios(a, u, "median_s"), ratios(a, u, "gbps")
        entry["request_time_ratio"] = summary(rt)
        entry["gbps_ratio"] = summary(gb)
        results.append(entry)

        def f(impl, field, fmt=None):
            e = entry[impl]
            if e is None:
                return "-"
            return fmt_s(e[field]) if fmt is None else cell(e[field], fmt)

        def failed(impl):
            e = entry[impl]
            return "-" if e is None else f"{e['failed']}/{e['requests']}"
        per_op = ".3f" if phase.startswith("kv") else ".1f"
        lines.append(
            f"| {mode} | {ld} | {PHASE_TEXT.get(phase, phase)} | {f('adapter', 'median_s')} | "
            f"{f('upstream', 'median_s')} | {f('adapter', 'p99_s')} | {f('upstream', 'p99_s')} | "
            f"{f('adapter', 'per_op_us', per_op)} | {f('upstream', 'per_op_us', per_op)} | "
            f"{f('adapter', 'gbps', '.2f')} | {f('upstream', 'gbps', '.2f')} | "
            f"{failed('adapter')} / {failed('upstream')} | {fmt_ratio(summary(rt))} | {fmt_ratio(summary(gb))} |")
    if meta["exits"]:
        lines += ["", "Runs whose peers did not both exit with status 0: " +
                  ", ".join(f"{n} {e}" for n, e in meta["exits"])]
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    with open(os.path.join(args.dir, "table.md"), "w") as fh:
        fh.write(table)
    report = {
        "commit": args.commit,
        "mooncake": args.mooncake,
        "rounds": nrounds,
        "threads": meta["threads"],
        "requests_per_thread": meta["requests_per_thread"],
        "loadavg_1min": loads,
        "modules": meta["modules"],
        "peer_exits_not_clean": meta["exits"],
        "machine": machine(),
        "results": results,
    }
    path = write_report(args.dir, report)
    png = plot(runs, keys, args)
    print(f"table:  {os.path.join(args.dir, 'table.md')}\nreport: {path}\nplot:   {png}")


def plot(runs, keys, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in PHASES if any(k[2] == p for k in keys)]
    conds = sorted({k[:2] for k in keys}, key=lambda c: (c[0] != "copy", c[1] != "quiet"))
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.5), squeeze=False)
    colors = {"adapter": "#4f81bd", "upstream": "#c0504d"}
    width = 0.38
    for col, phase in enumerate(phases):
        ax = axes[0, col]
        for k, impl in enumerate(IMPLS):
            xs, ys = [], []
            for j, (mode, ld) in enumerate(conds):
                v = median_of(runs.get((mode, ld, phase, impl), {}).values(), "per_op_us") \
                    if runs.get((mode, ld, phase, impl)) else None
                if v:
                    xs.append(j + (k - 0.5) * width)
                    ys.append(v)
            ax.bar(xs, ys, width, label=impl, color=colors[impl])
        ax.set_xticks(range(len(conds)))
        ax.set_xticklabels([f"{m}\n{ld}" for m, ld in conds], fontsize=9)
        ax.set_yscale("log")
        ax.set_title(f"{PHASE_TEXT.get(phase, phase)}: us per op (log; lower is better)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Mooncake Python module, vLLM-shaped load: this project's adapter vs upstream's "
                 f"FlagCX transport (commit {args.commit})")
    fig.tight_layout()
    path = os.path.join(args.dir, "python_ab.png")
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
