//! Completion callbacks: a panicking one cannot stop the progress thread or
//! skip completions; one that submits new ops works; whoever has seen a
//! completion sees it counted in the stats.

mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::*;
use flagcx_sys::sw;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

struct Panicky {
    calls: AtomicUsize,
}

unsafe extern "C-unwind" fn panic_on_odd(ctx: *mut c_void, user_data: u64, _st: mcfx_status) {
    // SAFETY: ctx is the Panicky below, alive until destroy returned.
    let p = unsafe { &*(ctx as *const Panicky) };
    p.calls.fetch_add(1, SeqCst);
    if user_data % 2 == 1 {
        panic!("callback panics for op {user_data}");
    }
}

#[test]
fn a_panicking_callback_does_not_stop_the_progress_thread() {
    // The provider's fault knobs and the panic hook are the process's: a
    // test beside this one could hang its ops (HangOp) and have its own
    // failure messages silenced by the hook below.
    let _g = serial();
    let p = Panicky { calls: AtomicUsize::new(0) };
    let pair = Pair::with(64, |c| {
        c.on_complete = Some(panic_on_odd);
        c.complete_ctx = &p as *const Panicky as *mut c_void;
    });
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // keep the test output quiet
    for ud in 0..100 {
        pair.a.submit_ok(&[pair.write(64, ud)]);
    }
    // Both: ops need not complete in submission order, and a panic is
    // counted after its callback returned.
    let until = std::time::Instant::now() + LIMIT;
    while p.calls.load(SeqCst) < 100 || pair.a.stats().callback_panics < 50 {
        assert!(std::time::Instant::now() < until, "only {} callbacks", p.calls.load(SeqCst));
        std::thread::yield_now();
    }
    std::panic::set_hook(prev);
    let s = pair.a.stats();
    assert_eq!((s.completed, s.callback_panics), (100, 50));
    drop(pair.a);
    assert_eq!(p.calls.load(SeqCst), 100, "exactly one callback per op");
}

struct Chain {
    transport: AtomicU64,
    src: u64,
    dst: u64,
    calls: AtomicUsize,
}

/// Submits the next op of a chain from inside the callback, 100 links deep.
unsafe extern "C-unwind" fn submit_next(ctx: *mut c_void, user_data: u64, st: mcfx_status) {
    // SAFETY: ctx is the Chain below, alive until destroy returned.
    let c = unsafe { &*(ctx as *const Chain) };
    assert_eq!(st, mcfx_status::MCFX_OK);
    c.calls.fetch_add(1, SeqCst);
    if user_data < 100 {
        let next = write(c.src as usize, 64, 1, c.dst, user_data + 1);
        let t = c.transport.load(SeqCst) as *mut mcfx_transport;
        // SAFETY: the transport is live while its callbacks run.
        let st = unsafe { mcfx_submit(t, &next, 1, std::ptr::null_mut()) };
        assert_eq!(st, mcfx_status::MCFX_OK);
    }
}

#[test]
fn a_callback_can_submit_new_ops() {
    let _g = serial();
    let src = AlignedBuf::new(64);
    let dst = AlignedBuf::new(64);
    let chain = Chain {
        transport: AtomicU64::new(0),
        src: src.addr() as u64,
        dst: dst.addr() as u64,
        calls: AtomicUsize::new(0),
    };
    let a = Node::with(|c| {
        c.on_complete = Some(submit_next);
        c.complete_ctx = &chain as *const Chain as *mut c_void;
        c.submit_wait_us = 1_000_000; // must not wait on the progress thread
    });
    chain.transport.store(a.t as u64, SeqCst);
    let b = Node::new();
    a.knows(1, &b);
    a.register(&src);
    b.register(&dst);
    a.submit_ok(&[write(src.addr(), 64, 1, dst.addr() as u64, 0)]);
    let until = std::time::Instant::now() + LIMIT;
    while chain.calls.load(SeqCst) < 101 {
        assert!(std::time::Instant::now() < until, "chain stalled at {}", chain.calls.load(SeqCst));
        std::thread::yield_now();
    }
    assert_eq!(a.stats().completed, 101);
}

/// Records the completion, then keeps the progress thread inside the callback
/// for a while, so a waiter that has seen the completion reads the stats while
/// the callback still runs: counters bumped after the callback are then
/// missing. The sleep only widens that window; nothing waits on it, and the
/// assertions below hold for every schedule once counting precedes the
/// callback.
unsafe extern "C-unwind" fn record_then_linger(ctx: *mut c_void, user_data: u64, st: mcfx_status) {
    // SAFETY: ctx is the Completions below, alive until destroy returned.
    let done = unsafe { &*(ctx as *const Completions) };
    done.record_status(user_data, st);
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn a_completion_is_counted_in_the_stats_before_anyone_sees_it() {
    use mcfx_status::*;
    let _g = serial();
    let done = Completions::default();
    // Declared after `done`: dropped (destroyed) first.
    let p = Pair::with(64, |c| {
        c.on_complete = Some(record_then_linger);
        c.complete_ctx = &done as *const Completions as *mut c_void;
        c.op_timeout_ms = 300;
    });
    for ud in 0..5 {
        p.a.submit_ok(&[p.write(64, ud)]);
        assert_eq!(done.wait_one(ud, LIMIT), MCFX_OK);
        let s = p.a.stats();
        assert_eq!((s.completed, s.bytes), (ud + 1, 64 * (ud + 1)), "op {ud} seen, not counted");
    }
    // A remote address the peer never registered.
    let nowhere = p.dst.addr() as u64 + (1 << 30);
    p.a.submit_ok(&[write(p.src.addr(), 64, 1, nowhere, 10)]);
    assert_eq!(done.wait_one(10, LIMIT), MCFX_E_REMOTE_RANGE);
    assert_eq!(p.a.stats().failed, 1, "failed op seen, not counted");
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    p.a.submit_ok(&[p.write(64, 11)]);
    assert_eq!(done.wait_one(11, LIMIT), MCFX_E_TIMEOUT);
    assert_eq!(p.a.stats().timed_out, 1, "timed-out op seen, not counted");
}
