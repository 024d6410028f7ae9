"""A Mooncake TransferEngine in a process of its own, driven over a pipe.

The Python tests (python/tests/) and the Python-level A/B
(python/vllm_ab.py) run a target and an initiator as two such processes,
the way vLLM's prefill and decode instances are two processes. The driving
side uses `PeerProcess`; the process itself runs this file:

    python mooncake_peer.py        # reads one JSON request per line on stdin

Each request is {"method": name, "args": {...}}; the reply is one JSON line
{"ok": true, "result": ...} or {"ok": false, "error": text}. The protocol
uses a private copy of the original stdout: file descriptor 1 is pointed at
stderr before Mooncake is imported, so nothing Mooncake prints can corrupt it.

Buffers are anonymous mmaps named by the driver; transfers name a local
buffer and offsets in it, and remote virtual addresses (what the target
reported for its buffers), as Mooncake's calls take them.
"""

import ctypes
import json
import mmap
import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

# ---------------------------------------------------------------------------
# The driving side
# ---------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))


class PeerError(RuntimeError):
    """A request failed in the peer, or the peer died or did not answer."""


class PeerProcess:
    """A peer process: start it, call methods with a bounded wait, stop it."""

    def __init__(self, python, log_path, env=None, name="peer"):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [python, "-u", os.path.join(HERE, "mooncake_peer.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=env, start_new_session=True)
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _readline(self, deadline):
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"{self.name}: no answer in time\n{self.log_tail()}")
            if not self._sel.select(timeout=left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                rc = self.proc.wait(timeout=10)
                raise PeerError(f"{self.name}: exited (status {rc}) while a request "
                                f"was pending\n{self.log_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def send(self, method, **args):
        """Sends a request; its answer is read by `receive`."""
        try:
            self.proc.stdin.write((json.dumps({"method": method, "args": args}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise PeerError(f"{self.name}: cannot send {method}: {e}\n{self.log_tail()}")

    def receive(self, timeout):
        reply = json.loads(self._readline(time.monotonic() + timeout))
        if not reply["ok"]:
            raise PeerError(f"{self.name}: {reply['error']}")
        return reply["result"]

    def call(self, method, timeout=120, **args):
        """Calls `method` in the peer; waits at most `timeout` seconds."""
        self.send(method, **args)
        return self.receive(timeout)

    def quit(self, timeout=60):
        """Asks the peer to destroy its engine and exit; returns its exit
        status (None when it had to be killed)."""
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=timeout)
            except PeerError:
                pass
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        """SIGKILL, then reap (bounded)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        self.kill()
        self._sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self._log):
            try:
                f.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# The peer process
# ---------------------------------------------------------------------------

def pattern(seed, length):
    """Deterministic bytes for (seed, length): what a writer puts and a
    checker expects."""
    return random.Random(seed).randbytes(length)


class Buffer:
    def __init__(self, size):
        self.size = size
        self.mm = mmap.mmap(-1, size)
        self._view = (ctypes.c_char * size).from_buffer(self.mm)
        self.addr = ctypes.addressof(self._view)


class Peer:
    def __init__(self):
        self.engine = None
        self.bufs = {}
        self.segment = None
        self.traffic = None

    # ---- setup ---------------------------------------------------------
    def init(self, metadata, hostname="127.0.0.1", protocol="flagcx", device=""):
        from mooncake.engine import TransferEngine
        engine = TransferEngine()
        rc = engine.initialize(hostname, metadata, protocol, device)
        if rc != 0:
            raise RuntimeError(f"TransferEngine.initialize({hostname!r}, {metadata!r}, "
                               f"{protocol!r}) returned {rc}")
        self.engine = engine
        if metadata == "P2PHANDSHAKE":
            self.segment = f"{hostname}:{engine.get_rpc_port()}"
        else:
            self.segment = hostname
        return {"segment": self.segment, "pid": os.getpid()}

    def module_info(self):
        import mooncake
        import mooncake.engine
        info = {"engine": mooncake.engine.__file__}
        try:
            from mooncake import _flagcx_build
            info.update(_flagcx_build.BUILD)
        except ImportError:
            pass
        return info

    def alloc(self, name, size):
        self.bufs[name] = Buffer(size)
        return self.bufs[name].addr

    def alloc_many(self, names, size):
        return [self.alloc(n, size) for n in names]

    def register(self, name):
        b = self.bufs[name]
        return self.engine.register_memory(b.addr, b.size)

    def batch_register(self, names):
        bs = [self.bufs[n] for n in names]
        return self.engine.batch_register_memory([b.addr for b in bs], [b.size for b in bs])

    def unregister(self, name):
        return self.engine.unregister_memory(self.bufs[name].addr)

    def fill(self, name, seed, offset=0, length=None):
        b = self.bufs[name]
        length = b.size - offset if length is None else length
        b.mm[offset:offset + length] = pattern(seed, length)
        return True

    def check(self, name, seed, offset=0, length=None):
        """Compares every byte of the range with pattern(seed); returns the
        index of the first difference, or -1."""
        b = self.bufs[name]
        length = b.size - offset if length is None else length
        want = pattern(seed, length)
        got = b.mm[offset:offset + length]
        if got == want:
            return -1
        return next(i for i in range(length) if got[i] != want[i])

    def addr(self, name, offset=0):
        return self.bufs[name].addr + offset

    # ---- transfers -------------------------------------------------------
    def _src(self, name, offsets):
        base = self.bufs[name].addr
        return [base + o for o in offsets]

    def sync(self, op, seg, name, offset, raddr, length):
        f = self.engine.transfer_sync_write if op == "write" else self.engine.transfer_sync_read
        return f(seg, self.bufs[name].addr + offset, raddr, length)

    def batch_sync(self, op, seg, name, offsets, raddrs, lengths):
        f = (self.engine.batch_transfer_sync_write if op == "write"
             else self.engine.batch_transfer_sync_read)
        return f(seg, self._src(name, offsets), raddrs, lengths)

    def pool_batch_sync(self, op, seg, name, requests, threads):
        """Each request (offsets, raddrs, lengths) is one batch_transfer_sync_*
        call, from a pool of `threads` threads; returns their return codes."""
        with ThreadPoolExecutor(threads) as pool:
            futs = [pool.submit(self.batch_sync, op, seg, name, *r) for r in requests]
            return [f.result() for f in futs]

    def async_batches(self, op, seg, name, requests):
        """batch_transfer_async_* per request, then one
        get_batch_transfer_status over all ids."""
        f = (self.engine.batch_transfer_async_write if op == "write"
             else self.engine.batch_transfer_async_read)
        ids = [f(seg, self._src(name, r[0]), r[1], r[2]) for r in requests]
        if not all(ids):
            return {"ids": ids, "status": None}
        return {"ids": ids, "status": self.engine.get_batch_transfer_status(ids)}

    def submit_check(self, seg, name, offset, raddr, length, wait_s=60):
        """transfer_submit_write, then transfer_check_status until it is not
        pending (bounded by `wait_s`)."""
        bid = self.engine.transfer_submit_write(seg, self.bufs[name].addr + offset, raddr, length)
        if bid == 0:
            return {"id": 0, "status": None, "polls": 0}
        deadline = time.monotonic() + wait_s
        polls = 0
        while True:
            st = self.engine.transfer_check_status(bid)
            polls += 1
            if st != 0:
                return {"id": bid, "status": st, "polls": polls}
            if time.monotonic() > deadline:
                return {"id": bid, "status": "pending", "polls": polls}
            time.sleep(0.0002)  # a poll interval; the deadline bounds the wait

    # ---- traffic until a failure (the kill test) --------------------------
    def traffic_start(self, seg, name, raddr, length, kinds, limit_s=120, failures=5):
        """Starts a thread that cycles through `kinds` (sync_write,
        sync_read, batch_write, async_write, submit_write) until `failures`
        ops failed or `limit_s` passed; every op's (start, end, kind, rc) is
        kept, times from time.monotonic()."""
        t = {"events": [], "stop": False, "cond": threading.Condition(), "error": None}
        self.traffic = t
        eng = self.engine
        base = self.bufs[name].addr
        half = length // 2

        def one(kind):
            if kind == "sync_write":
                return eng.transfer_sync_write(seg, base, raddr, length)
            if kind == "sync_read":
                return eng.transfer_sync_read(seg, base, raddr, length)
            if kind == "batch_write":
                return eng.batch_transfer_sync_write(seg, [base, base + half], [raddr, raddr + half],
                                                     [half, length - half])
            if kind == "async_write":
                bid = eng.batch_transfer_async_write(seg, [base], [raddr], [length])
                return -1 if bid == 0 else eng.get_batch_transfer_status([bid])
            if kind == "submit_write":
                r = self.submit_check(seg, name, 0, raddr, length, wait_s=limit_s)
                return -1 if r["status"] in (None, "pending") or r["status"] < 0 else 0
            raise ValueError(kind)

        def run():
            end = time.monotonic() + limit_s
            i = failed = 0
            try:
                while not t["stop"] and time.monotonic() < end:
                    kind = kinds[i % len(kinds)]
                    i += 1
                    t0 = time.monotonic()
                    rc = one(kind)
                    t1 = time.monotonic()
                    with t["cond"]:
                        t["events"].append((t0, t1, kind, rc))
                        t["cond"].notify_all()
                    failed += rc != 0
                    if failed >= failures:
                        break
            except Exception:
                t["error"] = traceback.format_exc()
            with t["cond"]:
                t["done"] = True
                t["cond"].notify_all()

        t["thread"] = threading.Thread(target=run, daemon=True)
        t["thread"].start()
        return True

    def traffic_wait(self, successes, wait_s=60):
        """Waits until `successes` ops succeeded (or the traffic ended);
        reports the successes and failures so far."""
        t = self.traffic
        with t["cond"]:
            t["cond"].wait_for(lambda: t.get("done") or sum(1 for e in t["events"] if e[3] == 0)
                               >= successes, timeout=wait_s)
            return {"successes": sum(1 for e in t["events"] if e[3] == 0),
                    "failures": sum(1 for e in t["events"] if e[3] != 0),
                    "done": bool(t.get("done")), "error": t["error"]}

    def traffic_result(self, since, wait_s=60):
        """Joins the traffic thread (bounded); reports what happened after
        `since` (a time.monotonic() of the driver: the clock is the
        machine's)."""
        t = self.traffic
        t["thread"].join(wait_s)
        alive = t["thread"].is_alive()
        t["stop"] = True
        ev = list(t["events"])
        failures = [e for e in ev if e[3] != 0]
        after = [e for e in ev if e[0] >= since]
        return {
            "ops": len(ev),
            "still_running": alive,
            "error": t["error"],
            "first_failure": None if not failures else
            {"kind": failures[0][2], "rc": failures[0][3], "end_after_s": failures[0][1] - since},
            "failures": len(failures),
            "ops_started_after": len(after),
            "successes_started_after": sum(1 for e in after if e[3] == 0),
            "kinds_after": sorted({e[2] for e in after}),
        }

    # ---- vLLM-shaped load (python/vllm_ab.py) -----------------------------
    def kv_load(self, seg, regions, remote_regions, layers, pages, page_size, slot_stride,
                threads, requests_per_thread, op="write"):
        """A pool of `threads` threads, each sending `requests_per_thread`
        requests of `layers` x `pages` pages with one batch_transfer_sync_*
        per request (one entry per page and layer), as vLLM's Mooncake
        connector does. Thread k's page j sits at slot j * threads + k of a
        layer region (pages of one request are not contiguous). Returns the
        wall time and every request's (seconds, rc)."""
        local = [self.bufs[r].addr for r in regions]
        f = (self.engine.batch_transfer_sync_write if op == "write"
             else self.engine.batch_transfer_sync_read)

        def request_args(k):
            src, dst, lens = [], [], []
            for layer in range(layers):
                for j in range(pages):
                    off = (j * threads + k) * slot_stride
                    src.append(local[layer] + off)
                    dst.append(remote_regions[layer] + off)
                    lens.append(page_size)
            return src, dst, lens

        args = [request_args(k) for k in range(threads)]
        barrier = threading.Barrier(threads)

        def worker(k):
            src, dst, lens = args[k]
            out = []
            barrier.wait(timeout=60)
            for _ in range(requests_per_thread):
                t0 = time.perf_counter()
                rc = f(seg, src, dst, lens)
                out.append((time.perf_counter() - t0, rc))
            return out

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(worker, range(threads)))
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "requests": [r for rs in results for r in rs],
                "ops_per_request": layers * pages, "bytes_per_request": layers * pages * page_size}

    def single_load(self, seg, name, raddr, size, count, op="write"):
        """`count` transfer_sync_* calls of `size` bytes, one at a time."""
        f = self.engine.transfer_sync_write if op == "write" else self.engine.transfer_sync_read
        src = self.bufs[name].addr
        out = []
        t0 = time.perf_counter()
        for i in range(count):
            s = time.perf_counter()
            rc = f(seg, src, raddr, size)
            out.append((time.perf_counter() - s, rc))
        return {"wall_s": time.perf_counter() - t0, "requests": out,
                "ops_per_request": 1, "bytes_per_request": size}

    # ---- exit ---------------------------------------------------------------
    def quit(self):
        return True


def serve():
    # The protocol gets its own descriptor; fd 1 goes to stderr so output of
    # Mooncake (or glog) cannot mix into it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    peer = Peer()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        try:
            result = getattr(peer, req["method"])(**req.get("args", {}))
            reply = {"ok": True, "result": result}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
        if req["method"] == "quit":
            break
    # A clean exit: the engine is destroyed (its threads joined) while the
    # interpreter is whole, then the process exits normally.
    if peer.traffic and peer.traffic.get("thread"):
        peer.traffic["stop"] = True
        peer.traffic["thread"].join(60)
    peer.traffic = None  # its closure holds the engine too
    peer.engine = None
    import gc
    gc.collect()
    proto.close()


if __name__ == "__main__":
    serve()
