#!/usr/bin/env python3
"""One run of the Python-level A/B of scripts/mooncake.sh --ab: a
vLLM-shaped load through Mooncake's Python TransferEngine ("flagcx"),
with the `mooncake` package of one venv (built with this project's adapter
or with upstream's C++ transport).

    vllm_ab.py --python VENV/bin/python --out RESULT.json [--requests N]
               [--threads T] [--single N] [--shapes a,b]

A target and an initiator process (python/mooncake_peer.py), P2PHANDSHAKE
metadata, 32 layer regions registered on each side with
batch_register_memory (as vLLM registers its KV cache). Then, as vLLM's
Mooncake connector sends a finished prefill's KV cache, a pool of T threads
(default 10), each sending N requests (default 20) back to back, a request
being one batch_transfer_sync_write with one entry per page and layer:

    kv_32k: 32 layers x 16 pages of 32 KiB (512 entries, 16 MiB)
    kv_4k:  32 layers x 64 pages of 4 KiB (2 048 entries, 8 MiB)

and, as SGLang sends small transfers, `--single` (default 2000) single
4 KiB transfer_sync_write calls from one thread. Per phase it records the
wall time and every request's time and return code. The provider's mode
(copy or modeled NIC) and any busy loops are the caller's: they come with
the environment (FLAGCX_SW_NIC_GBPS, ...) and the machine.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mooncake_peer import PeerProcess  # noqa: E402

LAYERS = 32
SHAPES = {
    "kv_32k": {"layers": LAYERS, "pages": 16, "page_size": 32 << 10},
    "kv_4k": {"layers": LAYERS, "pages": 64, "page_size": 4 << 10},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", required=True, help="the Python of the venv to measure")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20, help="requests per thread and shape")
    ap.add_argument("--single", type=int, default=2000, help="single 4 KiB transfer_sync_write calls")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--logdir", default=None)
    ap.add_argument("--timeout", type=float, default=900, help="bound of each phase, seconds")
    args = ap.parse_args()

    shapes = [s for s in args.shapes.split(",") if s]
    region = max([SHAPES[s]["pages"] * args.threads * SHAPES[s]["page_size"] for s in shapes] + [1 << 20])
    logdir = args.logdir or tempfile.mkdtemp(prefix="vllm-ab-")
    os.makedirs(logdir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.out))[0]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    out = {"threads": args.threads, "requests_per_thread": args.requests, "layers": LAYERS,
           "shapes": {s: SHAPES[s] for s in shapes}, "load_start": os.getloadavg(),
           "env": {k: v for k, v in os.environ.items()
                   if k.startswith(("FLAGCX_SW_", "MC_FLAGCX_", "MC_TRANSFER"))},
           "phases": {}}
    target = PeerProcess(args.python, os.path.join(logdir, f"{stem}.target.log"), env, "target")
    initiator = PeerProcess(args.python, os.path.join(logdir, f"{stem}.initiator.log"), env,
                            "initiator")
    try:
        out["module"] = initiator.call("module_info")
        seg = target.call("init", metadata="P2PHANDSHAKE", hostname="127.0.0.1")["segment"]
        initiator.call("init", metadata="P2PHANDSHAKE", hostname="127.0.0.1")
        names = [f"layer{i}" for i in range(LAYERS)]
        remote = target.call("alloc_many", names=names, size=region)
        initiator.call("alloc_many", names=names, size=region)
        assert target.call("batch_register", names=names) == 0
        assert initiator.call("batch_register", names=names) == 0
        for i, n in enumerate(names):  # every page touched before it is timed
            initiator.call("fill", name=n, seed=i)
            target.call("fill", name=n, seed=1000 + i)
        initiator.call("alloc", name="single", size=4096)
        assert initiator.call("register", name="single") == 0
        # One warm-up request (connection set-up, first-touch of pages).
        initiator.call("kv_load", seg=seg, regions=names, remote_regions=remote, layers=LAYERS,
                       pages=1, page_size=4096, slot_stride=4096, threads=1,
                       requests_per_thread=1, timeout=args.timeout)
        for s in shapes:
            sh = SHAPES[s]
            out["phases"][s] = initiator.call(
                "kv_load", timeout=args.timeout, seg=seg, regions=names, remote_regions=remote,
                layers=sh["layers"], pages=sh["pages"], page_size=sh["page_size"],
                slot_stride=sh["page_size"], threads=args.threads,
                requests_per_thread=args.requests)
        if args.single:
            out["phases"]["single_4k"] = initiator.call(
                "single_load", timeout=args.timeout, seg=seg, name="single", raddr=remote[0],
                size=4096, count=args.single)
        out["exit"] = {"initiator": initiator.quit(), "target": target.quit()}
    finally:
        initiator.close()
        target.close()
    out["load_end"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(out, f)
    for name, ph in out["phases"].items():
        reqs = ph["requests"]
        failed = sum(1 for _, rc in reqs if rc != 0)
        gb = ph["bytes_per_request"] * (len(reqs) - failed) / ph["wall_s"] / 1e9
        times = sorted(t for t, _ in reqs)
        print(f"  {name}: {len(reqs)} requests, {failed} failed, median "
              f"{times[len(times) // 2] * 1e3:.3f} ms, {gb:.2f} GB/s")


if __name__ == "__main__":
    main()
