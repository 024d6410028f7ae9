#!/usr/bin/env python3
"""The scaling curves of scripts/ab_scaling.sh (also run by scripts/ab.sh):
nic_batch64_4k traffic (one submit of 64 ops of 4 KiB, wait for all, next;
modeled 200 Gb/s NIC) as registered regions, peers or submitting threads
grow. One JSON line per point, implementation and round (mcfx_ab_bench
--scaling DIM:X, one process per point).

Per (dimension, x, implementation) every number is the median over rounds:
- ns_per_op: wall time per op (measured seconds / ops; 1e9 / ops_per_s);
- process_cpu_ns_per_op: CPU time of the whole process (every thread) per op;
- ops_per_s;
- resident memory (VmRSS deltas of the point's fresh process):
  rss_per_region = (after registering - before) / regions registered (both
  sides), rss_per_peer = (after the warm-up connected every peer - before)
  / peers, rss_per_target = (after creating the target transports -
  before) / peers. Per point they include fixed costs (divided by small
  counts at the small points); the marginal cost is the slope between the
  smallest and the largest point (`slopes`).

Usable alone (writes scaling.json and ab_scaling.png into --out) and as a
module of ab_report.py (targets, report.json, the same table).
"""
import argparse
import json
import os
import statistics
import sys
from collections import defaultdict

from common import fmt_ns, fmt_rate, json_lines, machine, median_of

IMPLS = ["cpp", "rust", "raw"]
DIMS = ["regions", "regions_local", "regions_remote", "peers", "threads"]
METRICS = ["ns_per_op", "process_cpu_ns_per_op", "ops_per_s", "p50_ns", "p99_ns",
           "cpu_ns_per_op", "link_utilization", "failed_requests", "register_ns",
           "flagcx_calls_per_op"]
RSS = ["rss_start", "rss_created", "rss_registered", "rss_connected"]


def load(path):
    """{(dim, x, impl): [row per round]} from a JSON-lines file."""
    rows = defaultdict(list)
    if not path or not os.path.exists(path):
        return rows
    for r in json_lines(path):
        if r.get("scaling"):
            rows[(r["scaling"], r["x"], r["impl"])].append(r)
    return rows


def loadavgs(path):
    """The host's 1-minute load average as each curve started, in order."""
    if not path or not os.path.exists(path):
        return []
    return [r["loadavg1"] for r in json_lines(path) if r.get("scenario") == "loadavg"]


def aggregate(rows):
    """{dim: {impl: [point, ...] sorted by x}} with medians over rounds."""
    out = {}
    for dim in DIMS:
        per_impl = {}
        for impl in IMPLS:
            points = []
            for x in sorted({k[1] for k in rows if k[0] == dim and k[2] == impl}):
                rs = rows[(dim, x, impl)]
                p = {"x": x, "rounds": len(rs)}
                for m in METRICS:
                    p[m] = median_of(rs, m)
                regions = statistics.median(r.get("regions", 0) for r in rs)
                peers = statistics.median(r.get("peers", 1) for r in rs)
                reg = [r["rss_registered"] - r["rss_created"] for r in rs]
                con = [r["rss_connected"] - r["rss_registered"] for r in rs]
                tgt = [r["rss_created"] - r["rss_start"] for r in rs]
                p["regions"] = regions
                p["peers"] = peers
                p["rss_registered_delta"] = statistics.median(reg)
                p["rss_connected_delta"] = statistics.median(con)
                p["rss_created_delta"] = statistics.median(tgt)
                p["rss_per_region"] = p["rss_registered_delta"] / regions if regions else None
                p["rss_per_peer"] = p["rss_connected_delta"] / peers if peers else None
                p["rss_per_target"] = p["rss_created_delta"] / peers if peers else None
                p["register_ns_per_region"] = (p["register_ns"] / regions
                                               if regions and p.get("register_ns") else None)
                points.append(p)
            if points:
                per_impl[impl] = points
        if per_impl:
            out[dim] = per_impl
    return out


def slopes(agg):
    """Growth and marginal memory per implementation, smallest to largest point:
    {dim: {impl: {...}}}."""
    out = {}
    for dim, per_impl in agg.items():
        out[dim] = {}
        for impl, pts in per_impl.items():
            lo, hi = pts[0], pts[-1]
            e = {"from": lo["x"], "to": hi["x"]}
            for m in ("ns_per_op", "process_cpu_ns_per_op"):
                e[m + "_growth"] = (hi[m] / lo[m]) if lo.get(m) and hi.get(m) else None
            if dim == "threads":
                # Worst ops/s of a point against the point before it.
                worst = None
                for a, b in zip(pts, pts[1:]):
                    if a.get("ops_per_s") and b.get("ops_per_s"):
                        v = b["ops_per_s"] / a["ops_per_s"]
                        if worst is None or v < worst[0]:
                            worst = (v, a["x"], b["x"])
                e["worst_step_ops_ratio"] = worst[0] if worst else None
                e["worst_step"] = [worst[1], worst[2]] if worst else None
            if dim.startswith("regions") and hi["regions"] > lo["regions"]:
                e["rss_bytes_per_region"] = ((hi["rss_registered_delta"] - lo["rss_registered_delta"])
                                             / (hi["regions"] - lo["regions"]))
            if dim == "peers" and hi["peers"] > lo["peers"]:
                d = hi["peers"] - lo["peers"]
                e["rss_bytes_per_peer"] = (hi["rss_connected_delta"] - lo["rss_connected_delta"]) / d
                e["rss_bytes_per_target"] = (hi["rss_created_delta"] - lo["rss_created_delta"]) / d
            out[dim][impl] = e
    return out


def targets(slp):
    """The scaling targets of issue 22: [{target, value, pass}] (pass None
    when the curve was not run)."""
    out = []

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    for dim in ("regions", "peers"):
        e = (slp.get(dim) or {}).get("rust")
        for m, label in (("ns_per_op", "wall ns/op"), ("process_cpu_ns_per_op", "process CPU/op")):
            g = e.get(m + "_growth") if e else None
            span = f" ({e['from']} -> {e['to']})" if e else ""
            out.append({"target": f"issue 22: scaling {dim}: Rust {label} grows <= 1.3x",
                        "value": x(g) + span, "pass": None if g is None else g <= 1.3})
    e = (slp.get("threads") or {}).get("rust")
    w = e.get("worst_step_ops_ratio") if e else None
    step = f" ({e['worst_step'][0]} -> {e['worst_step'][1]} threads)" if w is not None else ""
    out.append({"target": "issue 22: scaling threads: Rust ops/s never falls as threads are added",
                "value": ("worst step " + x(w) + step) if w is not None else "-",
                "pass": None if w is None else w >= 1.0})
    return out


def print_targets(ts):
    for t in ts:
        status = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        print(f"  {status}  {t['target']:<66} {t['value']}")


def fmt_bytes(b):
    if b is None:
        return "-"
    if abs(b) >= 1 << 20:
        return f"{b / (1 << 20):.1f}MiB"
    if abs(b) >= 1 << 10:
        return f"{b / (1 << 10):.1f}KiB"
    return f"{b:.0f}B"


def print_table(agg, slp, loads=None):
    rounds = max((p["rounds"] for per in agg.values() for pts in per.values() for p in pts),
                 default=0)
    print(f"Scaling: nic_batch64_4k traffic (64 x 4 KiB per submit, one in flight per thread; "
          f"modeled NIC) as one dimension grows; medians over {rounds} round(s)")
    if loads:
        print("host load average (1 min) as each curve started: "
              + ", ".join(f"{v:.1f}" for v in loads) + f" (on {os.cpu_count()} CPUs)")
    print("ns/op: wall time per op; proc/op: CPU of the whole process per op; p99/req: p99 of a "
          "batch of 64; calls/op: FlagCX vector calls per op as the transport counts them (rust: "
          "one peer and at most 8 entries per call, so 0.125 is its floor up to 8 peers, x/64 "
          "from 8 to 64 peers; cpp: one call per peer and submit); mem: VmRSS delta per region registered and registration time per "
          "region (regions), per peer connected and per target transport (peers)")
    hdr = (f"{'curve':<14} {'x':>6} {'impl':<5} {'ns/op':>8} {'proc/op':>9} {'ops/s':>8} "
           f"{'p99/req':>9} {'calls/op':>8} {'mem':>28}")
    print(hdr)
    print("-" * len(hdr))
    for dim, per_impl in agg.items():
        xs = sorted({p["x"] for pts in per_impl.values() for p in pts})
        for x in xs:
            for impl in IMPLS:
                p = next((q for q in per_impl.get(impl, []) if q["x"] == x), None)
                if p is None:
                    continue
                if dim.startswith("regions"):
                    mem = (f"{fmt_bytes(p['rss_per_region'])}/region "
                           f"reg {fmt_ns(p['register_ns_per_region'])}")
                elif dim == "peers":
                    mem = (f"{fmt_bytes(p['rss_per_peer'])}/peer "
                           f"{fmt_bytes(p['rss_per_target'])}/tgt")
                else:
                    mem = ""
                calls = p.get("flagcx_calls_per_op")
                calls = f"{calls:.3f}" if calls is not None else "-"
                print(f"{dim:<14} {x:>6} {impl:<5} {fmt_ns(p['ns_per_op']):>8} "
                      f"{fmt_ns(p['process_cpu_ns_per_op']):>9} {fmt_rate(p['ops_per_s']):>8} "
                      f"{fmt_ns(p['p99_ns']):>9} {calls:>8} {mem:>28}")
    print()
    print("Smallest to largest point (growth = largest / smallest; memory: marginal bytes, "
          "the slope between them)")
    for dim, per_impl in slp.items():
        for impl, e in per_impl.items():
            parts = [f"ns/op x{e['ns_per_op_growth']:.2f}" if e.get("ns_per_op_growth") else "ns/op -",
                     (f"proc/op x{e['process_cpu_ns_per_op_growth']:.2f}"
                      if e.get("process_cpu_ns_per_op_growth") else "proc/op -")]
            if "worst_step_ops_ratio" in e and e["worst_step_ops_ratio"] is not None:
                a, b = e["worst_step"]
                parts.append(f"worst step ops/s x{e['worst_step_ops_ratio']:.2f} ({a}->{b} threads)")
            if "rss_bytes_per_region" in e:
                parts.append(f"{fmt_bytes(e['rss_bytes_per_region'])} per region")
            if "rss_bytes_per_peer" in e:
                parts.append(f"{fmt_bytes(e['rss_bytes_per_peer'])} per connected peer, "
                             f"{fmt_bytes(e['rss_bytes_per_target'])} per target transport")
            print(f"  {dim:<14} {impl:<5} {e['from']}->{e['to']}: " + ", ".join(parts))


def plot(agg, out, commit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"cpp": "#c0504d", "rust": "#4f81bd", "raw": "#9bbb59"}
    dims = [d for d in DIMS if d in agg]
    if not dims:
        return None
    fig, axes = plt.subplots(2, len(dims), figsize=(5.5 * len(dims), 9), squeeze=False)
    for j, dim in enumerate(dims):
        for impl, pts in agg[dim].items():
            xs = [p["x"] for p in pts]
            top = [p["ops_per_s"] if dim == "threads" else p["ns_per_op"] for p in pts]
            bottom = [p["process_cpu_ns_per_op"] for p in pts]
            axes[0][j].plot(xs, top, marker="o", label=impl, color=colors[impl])
            axes[1][j].plot(xs, bottom, marker="o", label=impl, color=colors[impl])
        for i in range(2):
            ax = axes[i][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(which="both", alpha=0.3)
            ax.set_xlabel(dim)
            ax.legend()
        axes[0][j].set_title(("ops/s (higher is better)" if dim == "threads"
                              else "wall ns per op (lower is better)") + f" vs {dim}")
        axes[1][j].set_title(f"process CPU ns per op vs {dim}")
    fig.suptitle(f"mooncake-flagcx scaling, nic_batch64_4k traffic (commit {commit})")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = os.path.join(out, "ab_scaling.png")
    fig.savefig(path, dpi=90)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", default="target/ab")
    args = ap.parse_args()
    rows = load(args.runs)
    if not rows:
        sys.exit("scaling_report: no scaling results in " + args.runs)
    agg = aggregate(rows)
    slp = slopes(agg)
    ts = targets(slp)
    print()
    print_table(agg, slp, loadavgs(args.runs))
    print()
    print("Targets (issue 22, scaling), from this run:")
    print_targets(ts)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "scaling.json")
    with open(path, "w") as f:
        json.dump({"commit": args.commit, "machine": machine(), "points": agg, "slopes": slp,
                   "targets": ts, "host_loadavg_1min": loadavgs(args.runs)}, f, indent=1)
    png = plot(agg, args.out, args.commit)
    print(f"\nscaling: {path}\nplot:    {png}")


if __name__ == "__main__":
    main()
