#!/usr/bin/env python3
"""Aggregates the A/B benchmark's JSON lines into a table, report.json and a plot.

Per (scenario, implementation) every metric is the median over rounds. Ratios
are from the same run; their spread is the min..max of the per-round ratios
(round k's rust against round k's cpp or raw). The machine's cross-core round
trip is the median over every benchmark process of the run.

Two tables: per-op scenarios (copy mode, nic_*, busy_* copy-mode rows beside
busy loops), and request scenarios (kv_*, busy_kv_*), whose p50/p99 are
request times (first submit to the moment the polling thread saw all of the
request's ops completed), with requests/s, queue-full retries and failed
requests (summed over rounds). process_cpu_ns_per_op (CPU time of the whole
process over the measured phase, per op) sits next to cpu_ns_per_op (the
transport's own threads) everywhere. With --scaling, the scaling curves of
scripts/ab_scaling.sh (scaling_report.py) join the output, report.json
("scaling") and the targets; their plot is ab_scaling.png.
"""
import argparse
import os
import statistics
import sys
from collections import defaultdict

import scaling_report
from common import (cpu_model, fmt_ns, fmt_rate, fmt_ratio, json_lines, machine, median_of,
                    summary, write_report)

IMPLS = ["cpp", "rust", "raw"]
COPY_SCENARIOS = ["single_64b", "single_4k", "single_64k", "single_1m", "single_4k_wire2us",
                  "gap200us_4k", "batch64_4k", "threads4_4k", "peers4_4k", "xproc_4k", "bw_256m"]
NIC_SCENARIOS = ["nic_single_4k", "nic_batch64_4k", "nic_batch64_64k", "nic_window4x64_4k",
                 "nic_peers16_4k", "nic_threads4_4k"]
# Copy mode with waiters that poll (calling mcfx_progress) on a quiet host
# (poll_), and beside busy loops of other processes on every core (busy_;
# busy2_: two per core); latencies per op, as their quiet namesakes.
POLL_OP_SCENARIOS = ["poll_single_4k", "poll_batch16_4k", "poll_threads4_4k"]
BUSY_OP_SCENARIOS = ["busy_single_4k", "busy_batch16_4k", "busy_threads4_4k",
                     "busy2_single_4k", "busy2_batch16_4k", "busy2_threads4_4k"]
# Request scenarios (modeled NIC): latencies are request times.
KV_QUIET = ["kv_gqa_32k", "kv_mla_72k", "kv_small_4k", "kv_peers8_32k"]
KV_BUSY = ["busy_kv_gqa_32k", "busy_kv_small_4k", "busy2_kv_gqa_32k", "busy2_kv_small_4k"]
KV_SCENARIOS = KV_QUIET + KV_BUSY
OP_SCENARIOS = COPY_SCENARIOS + NIC_SCENARIOS + POLL_OP_SCENARIOS + BUSY_OP_SCENARIOS
SCENARIOS = OP_SCENARIOS + KV_SCENARIOS + ["idle_cpu"]
METRICS = ["p50_ns", "p99_ns", "p999_ns", "ops_per_s", "bytes_per_s", "cpu_pct",
           "link_utilization", "cpu_ns_per_op", "process_cpu_ns_per_op", "nic_gbps",
           "busy_procs", "requests_per_s", "requests", "queue_full_waits"]
# Summed over rounds, not medians: every failure counts.
SUMS = ["failed_requests", "failed_ops", "requests_total", "submit_errors"]
# Copy-bound scenarios: the copy, not the transport, sets their latency.
COPY_BOUND = ("single_1m", "bw_256m")


def load(path):
    rows = defaultdict(list)  # (scenario, impl) -> [row per round]
    for r in json_lines(path):
        rows[(r["scenario"], r["impl"])].append(r)
    return rows


def per_round_ratio(rows, scen, metric, num="rust", den="cpp"):
    a = {r["round"]: r.get(metric) for r in rows.get((scen, num), [])}
    b = {r["round"]: r.get(metric) for r in rows.get((scen, den), [])}
    return [a[k] / b[k] for k in a if k in b and a[k] and b[k]]


def thread_names(rows):
    """Kinds of threads counted in cpu_ns_per_op, over every row."""
    names = set()
    for rs in rows:
        for r in rs:
            for t in r.get("cpu_threads") or []:
                names.add(t["name"])
    return sorted(names)


def sum_rounds(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return sum(vals) if vals else None


def fmt_pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def ratio_summaries(e, vs_raw_metric):
    """A scenario's ratios entry as {metric: summary()} of its Rust/C++
    ratios, and the table cell of its Rust/raw ratio of `vs_raw_metric`."""
    sp = {m: ({"median": e[m], "min": e["spread"][m][0], "max": e["spread"][m][1]}
              if e.get(m) is not None else None) for m in e["spread"]}
    rr = e["rust_over_raw"].get(vs_raw_metric)
    rrs = e["rust_over_raw_spread"].get(vs_raw_metric)
    return sp, fmt_ratio({"median": rr, "min": rrs[0], "max": rrs[1]} if rr else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", default="target/ab")
    ap.add_argument("--scaling", default=None,
                    help="JSON lines of scripts/ab_scaling.sh (scaling curves), if run")
    args = ap.parse_args()
    rows = load(args.runs)
    scaling_rows = scaling_report.load(args.scaling)
    if not rows and not scaling_rows:
        sys.exit("ab_report: no results in " + args.runs)
    scenarios = [s for s in SCENARIOS if any((s, i) in rows for i in IMPLS)]
    op_scen = [s for s in scenarios if s in OP_SCENARIOS]
    kv_scen = [s for s in scenarios if s in KV_SCENARIOS]
    rt_vals = [r["round_trip_ns"] for i in IMPLS for r in rows.get(("round_trip", i), [])
               if r.get("round_trip_ns")]
    round_trip = statistics.median(rt_vals) if rt_vals else None
    loadavg = [r["loadavg1"] for r in sorted(rows.get(("loadavg", "host"), []),
                                                key=lambda r: r["round"])]
    results = []
    n_rounds = max([len(v) for k, v in rows.items() if k[0] not in ("round_trip", "loadavg")]
                   or [0])

    def result(s, i, rs):
        m = {k: median_of(rs, k) for k in METRICS}
        res = {"scenario": s, "impl": i, "rounds": len(rs),
               **{k: v for k, v in m.items() if v is not None}}
        if s != "idle_cpu":
            # Present in every result; null where they do not apply (copy
            # mode for the link, raw for the transport threads' CPU).
            res["link_utilization"] = m["link_utilization"]
            res["cpu_ns_per_op"] = m["cpu_ns_per_op"]
            res["process_cpu_ns_per_op"] = m["process_cpu_ns_per_op"]
        if s in KV_SCENARIOS:
            res["latency_of"] = "request"
            for k in SUMS:
                res[k] = sum_rounds(rs, k)
        results.append(res)
        return m

    # ---- the per-op table: medians over rounds --------------------------------------
    print()
    print(f"A/B benchmark, commit {args.commit}, CPU {cpu_model()}: medians over {n_rounds} "
          f"rounds (software FlagCX provider; nic_*: modeled NIC, 200 Gb/s, 2 us; busy*: "
          f"copy mode beside busy loops)")
    if loadavg:
        print("host load average (1 min) as each round started: "
              + ", ".join(f"{v:.1f}" for v in loadavg) + f" (on {os.cpu_count()} CPUs)")
    hdr = (f"{'scenario':<18} {'impl':<5} {'p50':>9} {'p99':>9} {'p99.9':>9} {'ops/s':>9} "
           f"{'GB/s':>7} {'cpu/op':>8} {'proc/op':>8} {'link':>6}")
    print(hdr)
    print("-" * len(hdr))
    for s in op_scen + (["idle_cpu"] if "idle_cpu" in scenarios else []):
        for i in IMPLS:
            rs = rows.get((s, i))
            if not rs:
                continue
            m = result(s, i, rs)
            if s == "idle_cpu":
                print(f"{s:<18} {i:<5} {'cpu ' + format(m['cpu_pct'], '.2f') + '% of a core':>39}")
                continue
            gbs = f"{m['bytes_per_s'] / 1e9:.2f}" if m["bytes_per_s"] else "-"
            link = fmt_pct(m["link_utilization"])
            print(f"{s:<18} {i:<5} {fmt_ns(m['p50_ns']):>9} {fmt_ns(m['p99_ns']):>9} "
                  f"{fmt_ns(m['p999_ns']):>9} {fmt_rate(m['ops_per_s']):>9} {gbs:>7} "
                  f"{fmt_ns(m['cpu_ns_per_op']):>8} {fmt_ns(m['process_cpu_ns_per_op']):>8} "
                  f"{link:>6}")
    names = thread_names(v for k, v in rows.items() if k[1] != "raw")
    print("cpu/op: CPU time of the transport's threads per op (counted: "
          + (", ".join(names) if names else "none") + "); proc/op: CPU time of the whole "
          "process per op (every thread, the bench's submitting and waiting threads too); "
          "link: achieved / modeled bandwidth")

    # ---- the request table (kv_*) ---------------------------------------------------
    if kv_scen:
        print()
        print("Requests (kv_*: a KV cache per request, one submit, the thread polls until all "
              "its ops completed; modeled NIC; raw: one thread)")
        hdr = (f"{'scenario':<18} {'impl':<5} {'req p50':>9} {'req p99':>9} {'req/s':>8} "
               f"{'ops/s':>8} {'link':>6} {'cpu/op':>8} {'proc/op':>8} {'qfull':>7} {'failed':>6}")
        print(hdr)
        print("-" * len(hdr))
        for s in kv_scen:
            for i in IMPLS:
                rs = rows.get((s, i))
                if not rs:
                    continue
                m = result(s, i, rs)
                failed = sum_rounds(rs, "failed_requests") or 0
                qf = m["queue_full_waits"]
                print(f"{s:<18} {i:<5} {fmt_ns(m['p50_ns']):>9} {fmt_ns(m['p99_ns']):>9} "
                      f"{fmt_rate(m['requests_per_s']):>8} {fmt_rate(m['ops_per_s']):>8} "
                      f"{fmt_pct(m['link_utilization']):>6} {fmt_ns(m['cpu_ns_per_op']):>8} "
                      f"{fmt_ns(m['process_cpu_ns_per_op']):>8} "
                      f"{'-' if qf is None else format(qf, '.0f'):>7} {failed:>6}")
        print("req p50/p99: request time (first submit call to the moment its thread saw every "
              "op completed); qfull: submits refused MCFX_E_QUEUE_FULL and retried (median per "
              "run); failed: requests with a failed or refused op, summed over rounds")

    # ---- ratios: Rust / C++ and Rust / raw, per round ----------------------------
    ratios = {}
    for s in op_scen + kv_scen:
        ms = ["p50_ns", "p99_ns", "p999_ns", "ops_per_s", "cpu_ns_per_op", "process_cpu_ns_per_op"]
        if s in KV_SCENARIOS:
            ms.append("requests_per_s")
        spread = {m: summary(per_round_ratio(rows, s, m)) for m in ms}
        vs_raw = {m: summary(per_round_ratio(rows, s, m, den="raw"))
                  for m in ["p50_ns", "ops_per_s", "process_cpu_ns_per_op"]
                  + (["requests_per_s"] if s in KV_SCENARIOS else [])}
        entry = {m: (v["median"] if v else None) for m, v in spread.items()}
        entry["spread"] = {m: ([v["min"], v["max"]] if v else None) for m, v in spread.items()}
        entry["rust_over_raw"] = {m: (v["median"] if v else None) for m, v in vs_raw.items()}
        entry["rust_over_raw_spread"] = {m: ([v["min"], v["max"]] if v else None)
                                         for m, v in vs_raw.items()}
        lu = {i: median_of(rows.get((s, i), []), "link_utilization") for i in IMPLS}
        entry["link_utilization"] = {i: v for i, v in lu.items() if v is not None} or None
        raw_p50 = median_of(rows.get((s, "raw"), []), "p50_ns")
        if s not in KV_SCENARIOS:
            for impl in ("rust", "cpp"):
                p50 = median_of(rows.get((s, impl), []), "p50_ns")
                if p50 and raw_p50:
                    entry[f"{impl}_minus_raw_p50_ns"] = p50 - raw_p50
                    if round_trip:
                        entry[f"{impl}_minus_raw_p50_round_trips"] = (p50 - raw_p50) / round_trip
        raw_bw = median_of(rows.get((s, "raw"), []), "bytes_per_s")
        rust_bw = median_of(rows.get((s, "rust"), []), "bytes_per_s")
        if raw_bw and rust_bw:
            entry["rust_bw_vs_raw"] = rust_bw / raw_bw
        if s in KV_SCENARIOS:
            entry["failed_requests"] = {i: sum_rounds(rows.get((s, i), []), "failed_requests")
                                        for i in IMPLS if (s, i) in rows}
        ratios[s] = entry

    print()
    print("Rust / C++ and Rust / raw (median of per-round ratios [min..max]; lower latency "
          "and cpu/op, higher ops/s are better)")
    print(f"{'scenario':<18} {'p50':>22} {'p99':>22} {'ops/s':>22} {'cpu/op':>22} "
          f"{'proc/op':>22} {'ops/s rust/raw':>22}")
    for s in op_scen:
        sp, raw_txt = ratio_summaries(ratios[s], "ops_per_s")
        print(f"{s:<18} {fmt_ratio(sp['p50_ns']):>22} {fmt_ratio(sp['p99_ns']):>22} "
              f"{fmt_ratio(sp['ops_per_s']):>22} {fmt_ratio(sp['cpu_ns_per_op']):>22} "
              f"{fmt_ratio(sp['process_cpu_ns_per_op']):>22} {raw_txt:>22}")
    if kv_scen:
        print()
        print("Requests, Rust / C++ and Rust / raw (raw: one thread)")
        print(f"{'scenario':<18} {'req p50':>22} {'req p99':>22} {'req/s':>22} "
              f"{'proc/op':>22} {'req/s rust/raw':>22}")
        for s in kv_scen:
            sp, raw_txt = ratio_summaries(ratios[s], "requests_per_s")
            print(f"{s:<18} {fmt_ratio(sp['p50_ns']):>22} {fmt_ratio(sp['p99_ns']):>22} "
                  f"{fmt_ratio(sp['requests_per_s']):>22} "
                  f"{fmt_ratio(sp['process_cpu_ns_per_op']):>22} {raw_txt:>22}")

    # ---- overhead over raw, in round trips ----------------------------------------
    print()
    rt_text = (f"{round_trip:.0f} ns (p50, median of {len(rt_vals)} processes)"
               if round_trip else "not measured (fewer than 2 CPUs)")
    print(f"Overhead over raw at p50 (medians); cross-core round trip of this machine: {rt_text}")
    print(f"{'scenario':<18} {'rust-raw':>10} {'x rt':>7} {'cpp-raw':>10} {'x rt':>7}   notes")
    for s, e in ratios.items():
        if "rust_minus_raw_p50_ns" not in e:
            continue
        note = ""
        if s in COPY_BOUND and "rust_bw_vs_raw" in e:
            note = f"bandwidth {100 * e['rust_bw_vs_raw']:.1f}% of raw"
        lu = e.get("link_utilization") or {}
        if lu:
            note = "link " + ", ".join(f"{i} {100 * v:.1f}%" for i, v in lu.items())

        def delta(impl):
            d = e.get(f"{impl}_minus_raw_p50_ns")
            x = e.get(f"{impl}_minus_raw_p50_round_trips")
            return (f"{d / 1000:+.2f}us" if d is not None else "-",
                    f"{x:.1f}x" if x is not None else "-")
        rd, rx = delta("rust")
        cd, cx = delta("cpp")
        print(f"{s:<18} {rd:>10} {rx:>7} {cd:>10} {cx:>7}   {note}")

    # ---- the scaling curves (scripts/ab_scaling.sh), if run ---------------------------
    scaling = None
    if scaling_rows:
        agg = scaling_report.aggregate(scaling_rows)
        slp = scaling_report.slopes(agg)
        loads = scaling_report.loadavgs(args.scaling)
        scaling = {"points": agg, "slopes": slp, "host_loadavg_1min": loads}
        print()
        scaling_report.print_table(agg, slp, loads)

    # ---- targets (issue 10, issue 7's that still hold, issues 19 and 22) -------------
    targets = check_targets(rows, ratios, round_trip) + check_new_targets(rows, ratios, scaling)
    print()
    print("Targets (issue 10; issue 7's still hold; issues 19 and 22), from this run:")
    for t in targets:
        status = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        print(f"  {status}  {t['target']:<66} {t['value']}")
    n_pass = sum(1 for t in targets if t["pass"] is True)
    n_fail = sum(1 for t in targets if t["pass"] is False)
    print(f"  {n_pass} pass, {n_fail} fail, {len(targets) - n_pass - n_fail} not checked here")

    os.makedirs(args.out, exist_ok=True)
    report = {
        "commit": args.commit,
        "machine": machine(),
        "round_trip_ns": round_trip,
        "round_trip_samples_ns": rt_vals,
        "host_loadavg_1min_per_round": loadavg,
        "nic_model": {"gbps": 200, "latency_ns": 2000},
        "cpu_threads_counted": names,
        "results": results,
        "ratios_rust_over_cpp": ratios,
        "scaling": scaling,
        "targets": targets,
    }
    path = write_report(args.out, report)
    png = plot(rows, scenarios, args) if rows else None
    spng = scaling_report.plot(scaling["points"], args.out, args.commit) if scaling else None
    print(f"\nreport: {path}\nplot:   {png}" + (f"\nscaling plot: {spng}" if spng else ""))


def check_targets(rows, ratios, round_trip):
    """Each target: {target, value, pass} with pass True/False, or None when
    this run cannot tell (scenario missing, or not measured by the bench)."""
    out = []

    def add(target, value, ok):
        out.append({"target": target, "value": value, "pass": ok})

    def ratio(s, key):
        e = ratios.get(s) or {}
        return e.get(key)

    def at_least(v, lim):
        return None if v is None else v >= lim

    def at_most(v, lim):
        return None if v is None else v <= lim

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    # On the model.
    lu = median_of(rows.get(("nic_batch64_64k", "rust"), []), "link_utilization")
    add("model: nic_batch64_64k Rust link utilization >= 95%",
        "-" if lu is None else f"{100 * lu:.1f}%", at_least(lu, 0.95))
    v = ratio("nic_batch64_4k", "ops_per_s")
    add("model: nic_batch64_4k Rust/C++ ops/s >= 2x", x(v), at_least(v, 2.0))
    v = (ratios.get("nic_batch64_4k") or {}).get("rust_over_raw", {}).get("ops_per_s")
    add("model: nic_batch64_4k Rust/raw ops/s >= 0.6x", x(v), at_least(v, 0.6))
    for s in NIC_SCENARIOS:
        v = ratio(s, "cpu_ns_per_op")
        add(f"model: {s} cpu/op Rust/C++ <= 0.5x", x(v), at_most(v, 0.5))

    # Copy mode.
    for s in ("single_4k", "xproc_4k"):
        d = ratio(s, "rust_minus_raw_p50_ns")
        if d is None or not round_trip:
            add(f"copy: {s} Rust-raw p50 <= 2 round trips", "-", None)
        else:
            add(f"copy: {s} Rust-raw p50 <= 2 round trips",
                f"{d:+.0f} ns = {d / round_trip:.2f} x {round_trip:.0f} ns", d <= 2 * round_trip)
    v = ratio("batch64_4k", "ops_per_s")
    add("copy: batch64_4k Rust/C++ ops/s >= 1.5x", x(v), at_least(v, 1.5))
    worst, worst_s = None, None
    for s in COPY_SCENARIOS:
        if s in COPY_BOUND:
            continue
        rs = per_round_ratio(rows, s, "p50_ns")
        if rs and (worst is None or max(rs) > worst):
            worst, worst_s = max(rs), s
    add("copy: Rust p50 <= C++ in every round (not 1m, 256m)",
        "-" if worst is None else f"worst round {worst:.2f}x ({worst_s})",
        None if worst is None else worst <= 1.0)

    # Issue 7.
    v = ratio("single_4k", "p50_ns")
    add("issue 7: single_4k p50 Rust/C++ <= 0.3x", x(v), at_most(v, 0.3))
    v = ratio("single_4k", "p99_ns")
    add("issue 7: single_4k p99 Rust/C++ <= 0.2x", x(v), at_most(v, 0.2))
    v = ratio("single_4k_wire2us", "p50_ns")
    add("issue 7: single_4k_wire2us p50 Rust/C++ <= 0.5x", x(v), at_most(v, 0.5))
    v = ratio("threads4_4k", "ops_per_s")
    add("issue 7: threads4_4k Rust/C++ ops/s >= 3x", x(v), at_least(v, 3.0))
    d = ratio("single_4k", "rust_minus_raw_p50_ns")
    add("issue 7: single_4k Rust-raw p50 <= 0.5 us",
        "-" if d is None else f"{d / 1000:+.2f}us", at_most(d, 500))
    for s in ("single_1m", "bw_256m"):
        v = ratio(s, "rust_bw_vs_raw")
        add(f"issue 7: {s} Rust bandwidth >= 95% of raw",
            "-" if v is None else f"{100 * v:.1f}%", at_least(v, 0.95))
    add("issue 7: zero heap allocations per op", "not measured by ab.sh: "
        "tests/alloc_steady_state.rs (scripts/test.sh)", None)
    v = median_of(rows.get(("idle_cpu", "rust"), []), "cpu_pct")
    add("issue 7: idle Rust transport < 1% of a core",
        "-" if v is None else f"{v:.2f}% (whole process)", at_most(v, 1.0))
    return out


def check_new_targets(rows, ratios, scaling):
    """The targets of issues 19 (requests and busy hosts) and 22 (process CPU,
    scaling), as check_targets: {target, value, pass}; pass None when this run
    does not have what a target needs."""
    out = []

    def add(target, value, ok):
        out.append({"target": target, "value": value, "pass": ok})

    def ratio(s, key):
        return (ratios.get(s) or {}).get(key)

    def vs_raw(s, key):
        return ((ratios.get(s) or {}).get("rust_over_raw") or {}).get(key)

    def x(v):
        return "-" if v is None else f"{v:.2f}x"

    def both(*checks):
        if any(c is None for c in checks):
            return None
        return all(checks)

    def le(v, lim):
        return None if v is None else v <= lim

    def ge(v, lim):
        return None if v is None else v >= lim

    def link(s):
        return median_of(rows.get((s, "rust"), []), "link_utilization")

    # ---- issue 19: requests (kv_*), busy hosts (busy_*) --------------------------------
    kv = [s for s in KV_SCENARIOS if (s, "rust") in rows]
    if kv:
        bad = {s: sum_rounds(rows[(s, "rust")], "failed_requests") or 0 for s in kv}
        cpp_bad = sum(sum_rounds(rows.get((s, "cpp"), []), "failed_requests") or 0 for s in kv)
        n_bad = sum(bad.values())
        where = ", ".join(f"{s} {v}" for s, v in bad.items() if v)
        add("issue 19: 0 failed requests in every kv_* (Rust, all rounds)",
            f"{n_bad} in {len(kv)} scenarios" + (f" ({where})" if where else "")
            + f"; C++ {cpp_bad}", n_bad == 0)
    else:
        add("issue 19: 0 failed requests in every kv_* (Rust, all rounds)", "-", None)
    for s in KV_SCENARIOS:
        rq, p99 = ratio(s, "requests_per_s"), ratio(s, "p99_ns")
        add(f"issue 19: {s} Rust/C++ req/s >= 1.0x, req p99 <= 1.0x",
            f"req/s {x(rq)}, p99 {x(p99)}", both(ge(rq, 1.0), le(p99, 1.0)))
    v = ratio("kv_small_4k", "requests_per_s")
    add("issue 19: kv_small_4k Rust/C++ req/s >= 1.5x", x(v), ge(v, 1.5))
    for s in BUSY_OP_SCENARIOS + KV_BUSY:
        p50, p99 = ratio(s, "p50_ns"), ratio(s, "p99_ns")
        add(f"issue 19: {s} Rust/C++ p50 and p99 <= 1.0x",
            f"p50 {x(p50)}, p99 {x(p99)}", both(le(p50, 1.0), le(p99, 1.0)))
    v = ratio("busy_single_4k", "p50_ns")
    add("issue 19: busy_single_4k Rust/C++ p50 <= 0.5x", x(v), le(v, 0.5))
    v = ratio("poll_single_4k", "p50_ns")
    add("issue 19: poll_single_4k (quiet, polling) Rust/C++ p50 <= 0.3x", x(v), le(v, 0.3))

    # ---- issue 22: process CPU, links, raw, scaling -----------------------------------
    scen = [s for s in NIC_SCENARIOS + KV_QUIET
            if ratio(s, "process_cpu_ns_per_op") is not None]
    if scen:
        vals = {s: ratio(s, "process_cpu_ns_per_op") for s in scen}
        worst = max(vals, key=vals.get)
        n_ok = sum(1 for v in vals.values() if v <= 0.7)
        add("issue 22: process CPU/op Rust/C++ <= 0.7x in every nic_* and kv_*",
            f"{n_ok} of {len(vals)} meet; worst {vals[worst]:.2f}x ({worst})",
            n_ok == len(vals) and len(vals) == len(NIC_SCENARIOS + KV_QUIET))
    else:
        add("issue 22: process CPU/op Rust/C++ <= 0.7x in every nic_* and kv_*", "-", None)
    for s in ("kv_gqa_32k", "kv_mla_72k", "kv_peers8_32k"):
        lu, p50, p99 = link(s), ratio(s, "p50_ns"), ratio(s, "p99_ns")
        add(f"issue 22: {s} Rust link >= 95%, req p50/p99 <= C++",
            f"link {fmt_pct(lu)}, p50 {x(p50)}, p99 {x(p99)}",
            both(ge(lu, 0.95), le(p50, 1.0), le(p99, 1.0)))
    v = ratio("kv_small_4k", "requests_per_s")
    add("issue 22: kv_small_4k Rust/C++ req/s >= 2x", x(v), ge(v, 2.0))
    v = vs_raw("kv_small_4k", "requests_per_s")
    add("issue 22: kv_small_4k Rust/raw req/s >= 0.8x (raw: 1 thread)", x(v), ge(v, 0.8))
    v = vs_raw("nic_batch64_4k", "ops_per_s")
    add("issue 22: nic_batch64_4k Rust/raw ops/s >= 0.8x", x(v), ge(v, 0.8))
    lu = link("nic_window4x64_4k")
    add("issue 22: nic_window4x64_4k Rust link utilization >= 95%", fmt_pct(lu), ge(lu, 0.95))
    out += scaling_report.targets((scaling or {}).get("slopes") or {})
    return out


def plot(rows, scenarios, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat_scen = [s for s in scenarios if s in OP_SCENARIOS]
    kv_scen = [s for s in scenarios if s in KV_SCENARIOS]
    nic_scen = [s for s in lat_scen if s in NIC_SCENARIOS] + kv_scen
    fig = plt.figure(figsize=(17, 27))
    grid = fig.add_gridspec(6, 2, height_ratios=[1, 1, 1, 1, 0.9, 0.9])
    ax_lat = fig.add_subplot(grid[0, :])
    ax_ops = fig.add_subplot(grid[1, :])
    ax_cpu = fig.add_subplot(grid[2, :])
    ax_proc = fig.add_subplot(grid[3, :])
    ax_link = fig.add_subplot(grid[4, 0])
    ax_rt = fig.add_subplot(grid[4, 1])
    ax_kv = fig.add_subplot(grid[5, 0])
    ax_kvp = fig.add_subplot(grid[5, 1])
    width = 0.27
    colors = {"cpp": "#c0504d", "rust": "#4f81bd", "raw": "#9bbb59"}

    def bars(ax, scen, metric, scale, impls, title, log):
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for j, s in enumerate(scen):
                v = median_of(rows.get((s, impl), []), metric)
                if v:
                    xs.append(j + (k - (len(impls) - 1) / 2) * width)
                    ys.append(v * scale)
            ax.bar(xs, ys, width, label=impl, color=colors[impl])
        ax.set_xticks(range(len(scen)))
        ax.set_xticklabels(scen, rotation=20, ha="right")
        if log:
            ax.set_yscale("log")
        ax.set_axisbelow(True)
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()

    bars(ax_lat, lat_scen, "p50_ns", 1e-3, IMPLS,
         "p50 latency per op (us, log scale; lower is better)", True)
    bars(ax_ops, lat_scen, "ops_per_s", 1, IMPLS,
         "throughput (ops/s, log scale; higher is better; nic_*: modeled 200 Gb/s NIC)", True)
    bars(ax_cpu, lat_scen + kv_scen, "cpu_ns_per_op", 1, ["cpp", "rust"],
         "CPU of the transport's threads per op (ns, log; lower is better)", True)
    bars(ax_proc, lat_scen + kv_scen, "process_cpu_ns_per_op", 1, IMPLS,
         "CPU of the whole process per op (every thread, waiting ones too; ns, log; "
         "lower is better)", True)
    if kv_scen:
        bars(ax_kv, kv_scen, "requests_per_s", 1, IMPLS,
             "kv_*: requests/s (log; higher is better; raw: one thread)", True)
        bars(ax_kvp, kv_scen, "p99_ns", 1e-3, IMPLS,
             "kv_*: request time p99 (us, log; lower is better)", True)
    else:
        ax_kv.set_axis_off()
        ax_kvp.set_axis_off()
    if nic_scen:
        bars(ax_link, nic_scen, "link_utilization", 100, IMPLS,
             "modeled link utilization (%; higher is better)", False)
        ax_link.set_ylim(0, 105)
        ax_link.axhline(95, color="gray", linestyle="--", linewidth=1)
    else:
        ax_link.set_axis_off()
    # p50 overhead over raw in cross-core round trips, for the one-op-in-flight
    # scenarios that have a raw row (with batches or windows in flight, the
    # difference of latencies is not a per-op overhead).
    rt_vals = [r["round_trip_ns"] for i in IMPLS for r in rows.get(("round_trip", i), [])
               if r.get("round_trip_ns")]
    rt = statistics.median(rt_vals) if rt_vals else None
    ov_scen = [s for s in lat_scen if s not in COPY_BOUND and (s, "raw") in rows
               and s.startswith(("single_", "xproc_", "nic_single_"))]
    if rt and ov_scen:
        for k, impl in enumerate(["cpp", "rust"]):
            xs, ys = [], []
            raw = {s: median_of(rows[(s, "raw")], "p50_ns") for s in ov_scen}
            for j, s in enumerate(ov_scen):
                v = median_of(rows.get((s, impl), []), "p50_ns")
                if v is not None and raw[s] is not None and v > raw[s]:
                    xs.append(j + (k - 0.5) * width)
                    ys.append((v - raw[s]) / rt)
            ax_rt.bar(xs, ys, width, label=impl, color=colors[impl])
        ax_rt.set_xticks(range(len(ov_scen)))
        ax_rt.set_xticklabels(ov_scen, rotation=20, ha="right")
        ax_rt.set_yscale("log")
        ax_rt.set_axisbelow(True)
        ax_rt.grid(axis="y", which="both", alpha=0.3)
        ax_rt.axhline(2, color="gray", linestyle="--", linewidth=1)
        ax_rt.set_title(f"p50 over raw, in round trips of {rt:.0f} ns (log; target line: 2)")
        ax_rt.legend()
    else:
        ax_rt.set_axis_off()
    fig.suptitle(f"mooncake-flagcx A/B: Rust vs C++ baseline vs raw FlagCX (commit {args.commit})")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = os.path.join(args.out, "ab.png")
    fig.savefig(path, dpi=90)
    return path


if __name__ == "__main__":
    main()
