//! Completion callbacks: a panicking one cannot stop the progress thread or
//! skip completions; one that submits new ops works.

mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use common::*;
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
    let until = std::time::Instant::now() + LIMIT;
    while pair.a.stats().callback_panics < 50 {
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
