//! Every error path: a bad op fails its submit at once, which queues the ops
//! before it and reports the bad op's index in `*accepted`; failures
//! found later complete the op with a clear status, exactly once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::sw;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

#[test]
fn a_bad_op_stops_its_submit_and_only_the_ops_before_it_are_queued() {
    let _g = serial();
    let p = Pair::new(8192);
    let (a, src, dst) = (&p.a, &p.src, &p.dst);
    let good = p.write(16, 1);
    let unregistered = AlignedBuf::new(64);
    let cases: Vec<(mcfx_op, mcfx_status, &str)> = vec![
        (write(src.addr(), 0, 1, dst.addr() as u64, 2), MCFX_E_INVALID_ARGUMENT, "zero length"),
        (write(0, 16, 1, dst.addr() as u64, 2), MCFX_E_INVALID_ARGUMENT, "NULL local"),
        (op(7, src.addr(), 16, 1, dst.addr() as u64, 2), MCFX_E_INVALID_ARGUMENT, "opcode"),
        (mcfx_op { reserved: 1, ..good }, MCFX_E_INVALID_ARGUMENT, "reserved"),
        (write(unregistered.addr(), 16, 1, 0, 2), MCFX_E_NOT_REGISTERED, "unregistered"),
        (write(src.addr() + 8000, 400, 1, 0, 2), MCFX_E_NOT_REGISTERED, "partly registered"),
        (write(usize::MAX - 8, 16, 1, 0, 2), MCFX_E_OVERFLOW, "local overflow"),
        (write(src.addr(), 16, 1, u64::MAX - 8, 2), MCFX_E_OVERFLOW, "remote overflow"),
    ];
    let mut queued = 0;
    for (bad, status, what) in cases.iter().copied() {
        // The bad op first: nothing is queued.
        let (st, accepted) = a.submit(&[bad, good]);
        assert_eq!((st, accepted), (status, 0), "{what}");
        let msg = last_error();
        assert!(msg.contains("op 0"), "{what}: message {msg:?} should name the op");
        // [good, good, bad, good]: the two before it are queued and
        // complete; the bad one and the one after it never do.
        let ud = 100 + queued as u64;
        let ops = [
            mcfx_op { user_data: ud, ..good },
            mcfx_op { user_data: ud + 1, ..good },
            mcfx_op { user_data: 9_000, ..bad },
            mcfx_op { user_data: ud + 2, ..good },
        ];
        let (st, accepted) = a.submit(&ops);
        assert_eq!((st, accepted), (status, 2), "{what}");
        let msg = last_error();
        assert!(msg.contains("op 2"), "{what}: message {msg:?} should name the op");
        assert_eq!(a.done.wait_one(ud, LIMIT), OK, "{what}");
        assert_eq!(a.done.wait_one(ud + 1, LIMIT), OK, "{what}");
        // The caller's recovery: fail ops[2] alone, resubmit the rest in
        // one call; op ud + 2 then completes once (not also from the first
        // call: `exactly_once` below).
        let (st, accepted) = a.submit(&ops[accepted + 1..]);
        assert_eq!((st, accepted), (OK, 1), "{what}");
        assert_eq!(a.done.wait_one(ud + 2, LIMIT), OK, "{what}");
        queued += 3;
    }
    // Every op that completed was queued, and once; the bad ones never.
    assert_eq!(a.done.exactly_once().get(&OK), Some(&queued));
    assert_eq!(a.done.count(), queued, "a bad op completed");
    let (st, _) = a.submit(&[]);
    assert_eq!(st, OK, "an empty submit is a no-op");
    // SAFETY: NULL ops with a non-zero count, and a NULL handle.
    unsafe {
        let mut n = 5;
        assert_eq!(mcfx_submit(a.t, std::ptr::null(), 1, &mut n), MCFX_E_INVALID_ARGUMENT);
        assert_eq!(n, 0);
        assert_eq!(mcfx_submit(std::ptr::null_mut(), &good, 1, &mut n), MCFX_E_INVALID_ARGUMENT);
    }
    assert_eq!(a.stats().submitted, queued as u64);
}

#[test]
fn an_unknown_peer_completes_with_a_resolve_error() {
    let _g = serial();
    let a = Node::new();
    let src = AlignedBuf::new(64);
    a.register(&src);
    a.submit_ok(&[write(src.addr(), 64, 99, 0x1000, 1)]);
    assert_eq!(a.done.wait_one(1, LIMIT), MCFX_E_RESOLVE);
}

#[test]
fn a_resolver_returning_garbage_gives_a_resolve_error() {
    let _g = serial();
    let a = Node::new();
    let src = AlignedBuf::new(64);
    a.register(&src);
    for (ud, garbage) in [(1, "no-port"), (2, "host:99999"), (3, "sp ace:80"), (4, "")] {
        a.dir.insert(ud, garbage);
        a.submit_ok(&[write(src.addr(), 64, ud, 0x1000, ud)]);
        assert_eq!(a.done.wait_one(ud, LIMIT), MCFX_E_RESOLVE, "{garbage:?}");
    }
}

#[test]
fn a_remote_range_the_peer_never_registered_fails_on_a_connection_newer_than_the_op() {
    let _g = serial();
    let p = Pair::new(4096);
    // The first op to the peer: its connection was made after it was
    // submitted, and judges it without a reconnect.
    p.a.submit_ok(&[write(p.src.addr(), 4096, 1, p.dst.addr() as u64 + 1, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), MCFX_E_REMOTE_RANGE);
    assert_eq!(p.a.stats().reconnects, 0);
    // A later one: that connection is older than it, so one reconnect.
    p.a.submit_ok(&[write(p.src.addr(), 4096, 1, p.dst.addr() as u64 + 1, 2)]);
    assert_eq!(p.a.done.wait_one(2, LIMIT), MCFX_E_REMOTE_RANGE);
    assert_eq!(p.a.stats().reconnects, 1);
    // The peer stays usable.
    p.a.submit_ok(&[p.write(4096, 3)]);
    assert_eq!(p.a.done.wait_one(3, LIMIT), OK);
}

#[test]
fn refused_connect_fails_waiting_ops_with_a_connect_error() {
    let _g = serial();
    let p = Pair::new(64);
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 1));
    let ops: Vec<_> = (0..10).map(|i| p.write(64, i)).collect();
    p.a.submit_ok(&ops);
    p.a.done.wait_for(10, LIMIT);
    assert_eq!(p.a.done.exactly_once().get(&MCFX_E_CONNECT), Some(&10));
    // The next op retries the connection.
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 0));
    p.a.submit_ok(&[p.write(64, 100)]);
    assert_eq!(p.a.done.wait_one(100, LIMIT), OK);
}

#[test]
fn a_slow_peer_times_out_its_ops_without_delaying_another_peer() {
    let _g = serial();
    // Peer 1 (`p.b`) is the fast one. No assertion depends on how fast this
    // machine is: the fast op must finish inside the slow peer's 1 s connect
    // window (it takes milliseconds), and FlagCX's own handshake timeout (5 s)
    // must not be what failed the slow op (the transport's 1 s deadline does,
    // seconds earlier).
    let p = Pair::with(64, |c| c.connect_timeout_ms = 1000);
    // An endpoint that accepts TCP but never answers the handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    p.a.dir.insert(2, &silent.local_addr().unwrap().to_string());
    assert!(sw::set_knob(sw::Knob::ConnectTimeoutMs, 5000));
    let start = Instant::now();
    p.a.submit_ok(&[write(p.src.addr(), 64, 2, 0x1000, 1)]);
    p.a.submit_ok(&[p.write(64, 2)]);
    assert_eq!(p.a.done.wait_one(2, LIMIT), OK);
    assert_eq!(p.a.done.count(), 1, "the fast peer's op waited for the slow peer's connect");
    assert_eq!(p.a.done.wait_one(1, LIMIT), MCFX_E_CONNECT);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(990), "failed before its deadline: {took:?}");
    assert!(took < Duration::from_millis(4000), "FlagCX's timeout, not ours: {took:?}");
}

#[test]
fn the_nth_failed_transfer_is_resubmitted_and_no_other_op_is_touched() {
    // A failed transfer whose range a fresh connection still describes goes
    // to FlagCX once more (tests/remote_refresh.rs has the op that fails
    // twice): the injected failure costs that op one reconnect and one
    // transfer, and the others nothing.
    let _g = serial();
    let p = Pair::new(64);
    p.a.submit_ok(&[p.write(64, 0)]);
    assert_eq!(p.a.done.wait_one(0, LIMIT), OK);
    let before = p.a.stats();
    assert!(sw::set_knob(sw::Knob::FailOp, 3));
    for ud in 1..=5 {
        p.a.submit_ok(&[p.write(64, ud)]);
        assert_eq!(p.a.done.wait_one(ud, LIMIT), OK, "op {ud}");
    }
    let after = p.a.stats();
    assert_eq!(after.flagcx_transfers - before.flagcx_transfers, 6);
    assert_eq!(after.reconnects - before.reconnects, 1);
    assert_eq!(after.failed, 0);
    assert_no_violations();
}

#[test]
fn a_transfer_that_fails_while_the_transport_shuts_down_still_completes_its_op() {
    // A failed transfer normally waits for a reconnect that tells its cause;
    // during destroy none comes, so it must complete then and there.
    let _g = serial();
    let mut p = Pair::with(4096, |c| c.shutdown_timeout_ms = 10_000);
    p.a.submit_ok(&[p.write(64, 0)]);
    assert_eq!(p.a.done.wait_one(0, LIMIT), OK, "connected");
    // The next transfer fails, and only after destroy has begun (300 ms of
    // provider latency: destroy waits up to shutdown_timeout for it).
    assert!(sw::set_knob(sw::Knob::LatencyNs, 300_000_000));
    assert!(sw::set_knob(sw::Knob::FailOp, 1));
    p.a.submit_ok(&[p.write(64, 1)]);
    wait_until(|| p.a.stats().flagcx_transfers == 2, "the op in FlagCX");
    assert_eq!(p.a.destroy(), OK);
    assert_eq!(p.a.done.count(), 2, "an op never completed");
    assert_eq!(p.a.done.exactly_once().get(&MCFX_E_TRANSFER_FAILED), Some(&1));
}

#[test]
fn a_transfer_that_never_finishes_times_out_and_others_are_not_delayed() {
    let _g = serial();
    // Op 2 must finish while op 1 hangs toward its 1 s deadline (it takes
    // milliseconds): an ordering, not a wall-clock bound.
    let p = Pair::with(64, |c| c.op_timeout_ms = 1000);
    p.a.submit_ok(&[p.write(64, 0)]);
    assert_eq!(p.a.done.wait_one(0, LIMIT), OK);
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    let start = Instant::now();
    p.a.submit_ok(&[p.write(64, 1)]);
    // Op 2 goes to FlagCX as a transfer of its own: only op 1's hangs.
    wait_until(|| p.a.stats().flagcx_transfers >= 2, "op 1 never reached FlagCX");
    p.a.submit_ok(&[p.write(64, 2)]);
    assert_eq!(p.a.done.wait_one(2, LIMIT), OK);
    assert_eq!(p.a.done.count(), 2, "op 2 was delayed by the hung op 1");
    assert_eq!(p.a.done.wait_one(1, LIMIT), MCFX_E_TIMEOUT);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(990), "timed out before its deadline: {took:?}");
    assert_eq!(p.a.stats().timed_out, 1);
    assert_no_violations();
}

/// The op whose completion holds the progress thread (see `slow_complete`).
const BLOCKER: u64 = 77;
/// How long it holds it.
const QUEUE_WAIT: Duration = Duration::from_millis(1500);

/// The fixture's completion callback, except that the completion of
/// `BLOCKER` keeps the progress thread for `QUEUE_WAIT` after recording it,
/// so ops submitted meanwhile wait in the queue. (The sleep makes a delay;
/// nothing synchronizes on it.)
unsafe extern "C-unwind" fn slow_complete(ctx: *mut std::ffi::c_void, ud: u64, st: mcfx_status) {
    // SAFETY: ctx is the Node's Arc<Completions>, alive past destroy.
    let done = unsafe { &*(ctx as *const Completions) };
    done.record_status(ud, st);
    if ud == BLOCKER {
        std::thread::sleep(QUEUE_WAIT);
    }
}

#[test]
fn the_deadline_counts_from_submit_through_queue_connection_and_flagcx() {
    let _g = serial();
    // Op 1 waits in the queue (1.5 s), then for a new connection, then in
    // FlagCX, which never finishes it. Its 3 s deadline counts from its
    // submit: it times out 3 s after the call, not 3 s after it left the
    // queue (4.5 s). Bounds: never early; the upper one is generous (1.4 s
    // over the deadline, yet below what counting from the queue would
    // give).
    const TIMEOUT: Duration = Duration::from_millis(3000);
    let p = Pair::with(64, |c| {
        c.op_timeout_ms = TIMEOUT.as_millis() as u32;
        c.on_complete = Some(slow_complete);
    });
    // Peer 2 is `b` again, under an id not connected yet.
    p.a.knows(2, &p.b);
    p.a.submit_ok(&[p.write(64, BLOCKER)]);
    // Recorded before the callback sleeps: the progress thread is held now.
    assert_eq!(p.a.done.wait_one(BLOCKER, LIMIT), OK);
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    assert!(sw::set_knob(sw::Knob::ConnectDelayMs, 200));
    let start = Instant::now();
    p.a.submit_ok(&[write(p.src.addr(), 64, 2, p.dst.addr() as u64, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), MCFX_E_TIMEOUT);
    let took = start.elapsed();
    assert!(took >= TIMEOUT, "timed out before its deadline: {took:?}");
    assert!(
        took < TIMEOUT + Duration::from_millis(1400),
        "the deadline did not count from submit: {took:?}"
    );
    // It did reach FlagCX (the blocker's transfer, then its own).
    assert_eq!(p.a.stats().flagcx_transfers, 2);
    assert_eq!(p.a.stats().timed_out, 1);
    assert_no_violations();
}

#[test]
fn a_bad_op_deep_in_a_long_submit_stops_it_there_whichever_chunk_it_is_in() {
    // A submit checks and publishes its ops a few at a time: the prefix
    // rule must hold at every position, on a chunk's first op, its last and
    // in between, and for a batch that ends early or exactly on a boundary.
    let _g = serial();
    let p = Pair::new(8192);
    let bad = mcfx_op { reserved: 1, ..p.write(16, 0) };
    let mut ud = 0u64;
    let mut queued = 0usize;
    for len in [1usize, 7, 8, 9, 16, 17, 40] {
        for at in 0..len {
            let ops: Vec<mcfx_op> =
                (0..len).map(|i| if i == at { bad } else { p.write(16, ud + i as u64) }).collect();
            let (st, accepted) = p.a.submit(&ops);
            assert_eq!((st, accepted), (MCFX_E_INVALID_ARGUMENT, at), "len {len}, bad op {at}");
            let msg = last_error();
            assert!(msg.contains(&format!("op {at}")), "message {msg:?} should name op {at}");
            for i in 0..at {
                assert_eq!(p.a.done.wait_one(ud + i as u64, LIMIT), OK, "len {len}, op {i}");
            }
            queued += at;
            ud += len as u64;
        }
        // And the same length with no bad op: all of it goes.
        let ops: Vec<mcfx_op> = (0..len).map(|i| p.write(16, ud + i as u64)).collect();
        assert_eq!(p.a.submit(&ops), (OK, len), "len {len}");
        p.a.done.wait_for(queued + len, LIMIT);
        queued += len;
        ud += len as u64;
    }
    // Every queued op completed once; no op after a bad one ever did.
    assert_eq!(p.a.done.exactly_once().get(&OK), Some(&queued));
    assert_eq!(p.a.done.count(), queued, "an op after a bad one completed");
    assert_eq!(p.a.stats().submitted, queued as u64);
    assert_no_violations();
}

#[test]
fn a_full_queue_reports_how_many_ops_were_accepted() {
    let _g = serial();
    // A burst far larger than a tiny queue: the progress thread cannot drain
    // 10 000 pushes as fast as one submit call makes them.
    let mut p = Pair::with(64, |c| c.queue_capacity = 8);
    let ops: Vec<_> = (0..10_000).map(|i| p.write(64, i)).collect();
    let (st, accepted) = p.a.submit(&ops);
    assert_eq!(st, MCFX_E_QUEUE_FULL);
    assert!(accepted >= 8 && accepted < ops.len(), "accepted {accepted}");
    p.a.done.wait_for(accepted, LIMIT);
    assert!(p.a.stats().queue_full >= 1);
    // The ops checked but not queued gave their region holds back: with every
    // accepted op complete, the region is free to unregister.
    // SAFETY: a registered address of this transport.
    assert_eq!(unsafe { mcfx_unregister(p.a.t, p.src.addr() as _) }, OK, "a hold leaked");
    // Destroy delivers every completion still due: after it, none can come.
    assert_eq!(p.a.destroy(), OK);
    assert_eq!(p.a.done.count(), accepted, "only accepted ops complete");
    assert_eq!(p.a.done.exactly_once().get(&OK), Some(&accepted));
}

#[test]
fn a_bounded_submit_wait_rides_out_a_full_queue() {
    let _g = serial();
    let p = Pair::with(64, |c| {
        c.queue_capacity = 8;
        c.submit_wait_us = 2_000_000;
    });
    let ops: Vec<_> = (0..5_000).map(|i| p.write(64, i)).collect();
    p.a.submit_ok(&ops);
    p.a.done.wait_for(ops.len(), LIMIT);
    assert_eq!(p.a.done.exactly_once().get(&OK), Some(&ops.len()));
}

#[test]
fn registration_errors_are_reported() {
    let _g = serial();
    let a = Node::new();
    let (b, b2) = (AlignedBuf::new(8192), AlignedBuf::new(64));
    a.register(&b);
    let p = b.addr() as *mut std::ffi::c_void;
    // SAFETY: live handle; buffers outlive their registrations.
    unsafe {
        assert_eq!(mcfx_register(a.t, p, 8192), MCFX_E_ALREADY_REGISTERED);
        assert_eq!(mcfx_register(a.t, p.add(4096), 16), MCFX_E_ALREADY_REGISTERED);
        assert_eq!(mcfx_register(a.t, std::ptr::null_mut(), 16), MCFX_E_INVALID_ARGUMENT);
        assert_eq!(mcfx_register(a.t, b2.addr() as _, 0), MCFX_E_INVALID_ARGUMENT);
        assert_eq!(mcfx_register(a.t, usize::MAX as _, 16), MCFX_E_OVERFLOW);
        assert_eq!(mcfx_register(std::ptr::null_mut(), p, 16), MCFX_E_INVALID_ARGUMENT);
        assert_eq!(mcfx_unregister(a.t, p.add(1)), MCFX_E_NOT_FOUND);
        assert_eq!(mcfx_unregister(a.t, p), OK);
        assert_eq!(mcfx_unregister(a.t, p), MCFX_E_NOT_FOUND, "double unregister");
        let regions = [
            mcfx_region { addr: b.addr() as _, length: 4096 },
            mcfx_region { addr: b2.addr() as _, length: 64 },
        ];
        assert_eq!(mcfx_register_batch(a.t, regions.as_ptr(), 2), OK);
        let addrs = [b.addr() as *mut _, b2.addr() as *mut _];
        assert_eq!(mcfx_unregister_batch(a.t, addrs.as_ptr(), 2), OK);
        assert_eq!(mcfx_register_batch(a.t, std::ptr::null(), 2), MCFX_E_INVALID_ARGUMENT);
    }
}

#[test]
fn unregistering_memory_with_ops_in_flight_is_refused() {
    let _g = serial();
    let p = Pair::with(64, |c| c.op_timeout_ms = 500);
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    p.a.submit_ok(&[p.write(64, 1)]);
    // SAFETY: live handle.
    let st = unsafe { mcfx_unregister(p.a.t, p.src.addr() as _) };
    assert_eq!(st, MCFX_E_BUSY);
    assert!(last_error().contains("in flight"), "{}", last_error());
    assert_eq!(p.a.done.wait_one(1, LIMIT), MCFX_E_TIMEOUT);
    // SAFETY: live handle.
    assert_eq!(unsafe { mcfx_unregister(p.a.t, p.src.addr() as _) }, OK);
}
