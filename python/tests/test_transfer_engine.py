"""Mooncake's Python TransferEngine over protocol "flagcx" (this project's
adapter and plugin), the calls vLLM and SGLang make, between two processes.

Each test starts a target and an initiator process (conftest.Pair), with
P2PHANDSHAKE and with Mooncake's HTTP metadata server. Every byte written or
read is compared with what was sent. Every wait is bounded (PeerProcess.call
deadlines, the peers' own deadlines); nothing waits by sleeping.
"""

import os
import signal
import time

import pytest

from conftest import Pair

MiB = 1 << 20
KiB = 1 << 10


def setup_buffers(pair, size, batch=False, src_size=None):
    """A registered buffer of `size` bytes in each process (`src_size` in
    the initiator if given; the target with register_memory, the initiator
    with batch_register_memory, or the other way round with batch=True);
    returns the target's buffer address."""
    raddr = pair.target.call("alloc", name="dst", size=size)
    pair.initiator.call("alloc", name="src", size=src_size or size)
    if batch:
        assert pair.target.call("batch_register", names=["dst"]) == 0
        assert pair.initiator.call("register", name="src") == 0
    else:
        assert pair.target.call("register", name="dst") == 0
        assert pair.initiator.call("batch_register", names=["src"]) == 0
    return raddr


def test_sync_write_and_read(pair):
    """transfer_sync_write / transfer_sync_read of 4 KiB to 16 MiB, at
    unaligned offsets and lengths too."""
    raddr = setup_buffers(pair, 40 * MiB)
    seg = pair.segment
    cases = [(0, 4 * KiB), (4 * KiB, 64 * KiB), (1 * MiB + 3, 1 * MiB - 7),
             (3 * MiB, 16 * MiB), (23 * MiB + 1, 17 * MiB - 1)]
    for seed, (off, length) in enumerate(cases, start=1):
        pair.initiator.call("fill", name="src", seed=seed, offset=off, length=length)
        assert pair.initiator.call("sync", op="write", seg=seg, name="src", offset=off,
                                   raddr=raddr + off, length=length) == 0
        assert pair.target.call("check", name="dst", seed=seed, offset=off, length=length) == -1
    for seed, (off, length) in enumerate(cases, start=100):
        pair.target.call("fill", name="dst", seed=seed, offset=off, length=length)
        assert pair.initiator.call("sync", op="read", seg=seg, name="src", offset=off,
                                   raddr=raddr + off, length=length) == 0
        assert pair.initiator.call("check", name="src", seed=seed, offset=off, length=length) == -1


def page_requests(raddr, requests, pages, page):
    """`requests` requests of `pages` pages each, page j of request r at slot
    j * requests + r (a request's pages are not contiguous)."""
    out = []
    for r in range(requests):
        offs = [(j * requests + r) * page for j in range(pages)]
        out.append((offs, [raddr + o for o in offs], [page] * pages))
    return out


def test_batch_sync_from_a_thread_pool(pair):
    """batch_transfer_sync_write / _read from a pool of worker threads, each
    call a request of many pages, as vLLM's connector sends them."""
    requests, pages, page = 16, 128, 16 * KiB
    size = requests * pages * page
    raddr = setup_buffers(pair, size, batch=True)
    reqs = page_requests(raddr, requests, pages, page)
    pair.initiator.call("fill", name="src", seed=7)
    rcs = pair.initiator.call("pool_batch_sync", op="write", seg=pair.segment, name="src",
                              requests=reqs, threads=8)
    assert rcs == [0] * requests
    assert pair.target.call("check", name="dst", seed=7) == -1

    pair.target.call("fill", name="dst", seed=8)
    rcs = pair.initiator.call("pool_batch_sync", op="read", seg=pair.segment, name="src",
                              requests=reqs, threads=8)
    assert rcs == [0] * requests
    assert pair.initiator.call("check", name="src", seed=8) == -1


def test_async_batches_and_submit_check(pair):
    """batch_transfer_async_write / _read + get_batch_transfer_status, and
    transfer_submit_write + transfer_check_status."""
    requests, pages, page = 6, 64, 4 * KiB
    size = requests * pages * page + 8 * MiB
    raddr = setup_buffers(pair, size)
    reqs = page_requests(raddr, requests, pages, page)
    paged = requests * pages * page

    pair.initiator.call("fill", name="src", seed=11, length=paged)
    r = pair.initiator.call("async_batches", op="write", seg=pair.segment, name="src",
                            requests=reqs)
    assert all(r["ids"]) and r["status"] == 0, r
    assert pair.target.call("check", name="dst", seed=11, length=paged) == -1

    pair.target.call("fill", name="dst", seed=12, length=paged)
    r = pair.initiator.call("async_batches", op="read", seg=pair.segment, name="src",
                            requests=reqs)
    assert all(r["ids"]) and r["status"] == 0, r
    assert pair.initiator.call("check", name="src", seed=12, length=paged) == -1

    for seed, (off, length) in enumerate([(paged, 4 * KiB), (paged + 4 * KiB, 8 * MiB - 4 * KiB)],
                                         start=13):
        pair.initiator.call("fill", name="src", seed=seed, offset=off, length=length)
        r = pair.initiator.call("submit_check", seg=pair.segment, name="src", offset=off,
                                raddr=raddr + off, length=length)
        assert r["id"] != 0 and r["status"] == 1, r
        assert pair.target.call("check", name="dst", seed=seed, offset=off, length=length) == -1


def failed(result):
    """A failed async or submitted transfer: no id, or a negative status."""
    if isinstance(result, dict) and "ids" in result:
        return not all(result["ids"]) or result["status"] == -1
    return result["id"] == 0 or (isinstance(result["status"], int) and result["status"] < 0)


def test_bad_remote_addresses_fail(pair):
    """Transfers to remote ranges the target never registered fail, in
    every form of call; the target's other bytes stay as they were and the
    connection stays usable."""
    size = 4 * MiB
    raddr = setup_buffers(pair, size, src_size=2 * size)
    seg = pair.segment
    good = 8 * 4 * KiB  # the good pages of the mixed batches below land here
    pair.target.call("fill", name="dst", seed=21, offset=good, length=size - good)
    pair.initiator.call("fill", name="src", seed=22)
    bad = [
        ("past the end", raddr + size, 4 * KiB),
        ("across the end", raddr + size - 2 * KiB, 4 * KiB),
        ("before the start", raddr - 4 * KiB, 4 * KiB),
        ("an unmapped address", 4096, 4 * KiB),
        ("a length past the end", raddr, size + 1),
    ]
    offs = list(range(0, good, 4 * KiB))
    for what, addr, length in bad:
        for op in ("write", "read"):
            rc = pair.initiator.call("sync", op=op, seg=seg, name="src", offset=0,
                                     raddr=addr, length=length)
            assert rc != 0, f"transfer_sync_{op} to {what} succeeded"
        # one bad page among good ones fails the whole request
        rc = pair.initiator.call("batch_sync", op="write", seg=seg, name="src",
                                 offsets=offs + [0], raddrs=[raddr + o for o in offs] + [addr],
                                 lengths=[4 * KiB] * len(offs) + [length])
        assert rc != 0, f"batch_transfer_sync_write with a page to {what} succeeded"
        r = pair.initiator.call("async_batches", op="write", seg=seg, name="src",
                                requests=[([0], [addr], [length])])
        assert failed(r), f"batch_transfer_async_write to {what}: {r}"
        r = pair.initiator.call("submit_check", seg=seg, name="src", offset=0, raddr=addr,
                                length=length)
        assert failed(r), f"transfer_submit_write to {what}: {r}"
    assert pair.target.call("check", name="dst", seed=21, offset=good, length=size - good) == -1
    # The connection still works.
    pair.initiator.call("fill", name="src", seed=23, length=64 * KiB)
    assert pair.initiator.call("sync", op="write", seg=seg, name="src", offset=0, raddr=raddr,
                               length=64 * KiB) == 0
    assert pair.target.call("check", name="dst", seed=23, length=64 * KiB) == -1


def test_buffer_registered_after_the_connection(pair):
    """A buffer registered on both sides after the peers have talked is
    usable at once, for writes and reads."""
    raddr = setup_buffers(pair, 1 * MiB)
    seg = pair.segment
    pair.initiator.call("fill", name="src", seed=31)
    assert pair.initiator.call("sync", op="write", seg=seg, name="src", offset=0, raddr=raddr,
                               length=1 * MiB) == 0
    assert pair.target.call("check", name="dst", seed=31) == -1

    late = pair.target.call("alloc", name="late", size=8 * MiB)
    assert pair.target.call("register", name="late") == 0
    pair.initiator.call("alloc", name="late_src", size=8 * MiB)
    assert pair.initiator.call("register", name="late_src") == 0
    pair.initiator.call("fill", name="late_src", seed=32)
    assert pair.initiator.call("sync", op="write", seg=seg, name="late_src", offset=0,
                               raddr=late, length=8 * MiB) == 0
    assert pair.target.call("check", name="late", seed=32) == -1
    pair.target.call("fill", name="late", seed=33)
    reqs = page_requests(late, 4, 16, 128 * KiB)
    rcs = pair.initiator.call("pool_batch_sync", op="read", seg=seg, name="late_src",
                              requests=reqs, threads=4)
    assert rcs == [0] * 4
    assert pair.initiator.call("check", name="late_src", seed=33) == -1


@pytest.mark.parametrize("kinds", [["sync_write", "batch_write", "sync_read"],
                                   ["async_write", "submit_write"]],
                         ids=["sync", "async"])
def test_target_killed_mid_traffic(metadata, tmp_path, kinds):
    """SIGKILL the target while the initiator transfers 1 MiB ops in a loop:
    the initiator sees an error within seconds, no op it starts after the
    target is gone succeeds (the loop runs until 5 failed, and then sync,
    batch and async calls are made once more), nothing hangs, and the
    initiator still exits cleanly."""
    p = Pair(tmp_path, metadata)
    try:
        raddr = setup_buffers(p, 1 * MiB)
        p.initiator.call("fill", name="src", seed=41)
        p.initiator.call("traffic_start", seg=p.segment, name="src", raddr=raddr,
                         length=1 * MiB, kinds=kinds, limit_s=120)
        state = p.initiator.call("traffic_wait", successes=20, wait_s=60, timeout=90)
        assert state["successes"] >= 20 and state["failures"] == 0 and not state["done"], state
        os.kill(p.target.proc.pid, signal.SIGKILL)
        p.target.proc.wait(timeout=30)  # reaped: its memory is gone
        killed = time.monotonic()
        r = p.initiator.call("traffic_result", since=killed, wait_s=60, timeout=90)
        print(f"after the kill: {r}")  # shown with pytest -s / -rA
        assert r["error"] is None, r["error"]
        assert not r["still_running"], f"no error within 60 s of the kill: {r}"
        assert r["first_failure"] is not None, r
        assert r["first_failure"]["end_after_s"] < 15, r
        assert r["failures"] == 5 and r["successes_started_after"] == 0, r
        # And any call made now, with the target gone for sure, fails.
        assert p.initiator.call("sync", op="write", seg=p.segment, name="src", offset=0,
                                raddr=raddr, length=1 * MiB) != 0
        assert p.initiator.call("batch_sync", op="write", seg=p.segment, name="src",
                                offsets=[0, 4 * KiB], raddrs=[raddr, raddr + 4 * KiB],
                                lengths=[4 * KiB, 4 * KiB]) != 0
        assert failed(p.initiator.call("async_batches", op="write", seg=p.segment, name="src",
                                       requests=[([0], [raddr], [4 * KiB])]))
        assert p.initiator.quit() == 0, p.initiator.log_tail()
    finally:
        p.close()
