//! A submit that waits for room (`submit_wait_us`, issue 17 item 8) sleeps
//! instead of spinning, is woken when the progress thread frees room, and
//! gives up when the transport is destroyed.
//!
//! Every test here holds `serial()`: one of them sets a process-wide knob
//! of the software provider.

mod common;
mod inflight_common;

use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::sw::{self, Knob};
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::mcfx_status::*;
use mooncake_flagcx::ffi::*;

use inflight_common::{
    thread_id, wait_until_asleep, HeldCallback, HeldResolver, OpenCallbackOnDrop, OpenOnDrop,
};

const MAX_IN_FLIGHT: usize = 8;

/// A transport whose peer 1 never connects (until `resolver` opens), with
/// `max_in_flight` 8 and the given `submit_wait_us`, and its registered
/// source buffer.
fn held_node(resolver: &HeldResolver, wait_us: u32) -> (Node, AlignedBuf) {
    let a = Node::with(|c| {
        resolver.install(c);
        c.max_in_flight = MAX_IN_FLIGHT as u32;
        c.queue_capacity = 16;
        c.submit_wait_us = wait_us;
        c.connect_timeout_ms = 600_000;
        c.op_timeout_ms = 3_600_000;
    });
    let src = AlignedBuf::new(4096);
    a.register(&src);
    (a, src)
}

fn op(src: &AlignedBuf, user_data: u64) -> mcfx_op {
    write(src.addr(), 64, 1, 0x10000, user_data)
}

/// Submits ops until `MAX_IN_FLIGHT` are held (none can complete).
fn fill(a: &Node, src: &AlignedBuf) {
    let ops: Vec<mcfx_op> = (0..MAX_IN_FLIGHT as u64).map(|i| op(src, i)).collect();
    a.submit_ok(&ops);
    assert_eq!(a.stats().in_flight, MAX_IN_FLIGHT as u64);
}

/// Three submits that wait `wait` for room and time out: the waiting
/// thread's CPU time against the wall time it waited. Spinning on
/// yield_now cost about half a core; a loaded machine can only lower the
/// CPU time.
fn assert_waits_asleep(a: &Node, src: &AlignedBuf, wait: Duration) {
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    for i in 0..3 {
        let (cpu0, t0) = (thread_cpu_time(), Instant::now());
        let (st, n) = a.submit(&[op(src, 100 + i)]);
        let (cpu1, t1) = (thread_cpu_time(), Instant::now());
        assert_eq!((st, n), (MCFX_E_QUEUE_FULL, 0), "{}", last_error());
        assert!(t1 - t0 >= wait, "gave up after {:?}, before submit_wait", t1 - t0);
        cpu += cpu1 - cpu0;
        wall += t1 - t0;
    }
    eprintln!("waiter: {cpu:?} of CPU in {wall:?} of waiting");
    assert!(cpu * 4 < wall, "the waiter used {cpu:?} of CPU in {wall:?} of waiting");
}

#[test]
fn a_submit_waiting_for_queue_room_sleeps() {
    let _g = serial();
    // The progress thread is held in a completion callback, so the queue
    // (4 slots) stays full.
    let held = HeldCallback::new();
    let wait = Duration::from_millis(200);
    let p = Pair::with(4096, |c| {
        held.install(c);
        c.queue_capacity = 4;
        c.submit_wait_us = wait.as_micros() as u32;
    });
    let _open = OpenCallbackOnDrop(&held);
    p.a.submit_ok(&[p.write(64, 0)]);
    wait_until(|| held.entered.load(std::sync::atomic::Ordering::SeqCst), "no completion");
    let fill: Vec<mcfx_op> = (1..=4).map(|i| p.write(64, i)).collect();
    p.a.submit_ok(&fill);
    assert_waits_asleep(&p.a, &p.src, wait);
    held.open();
    wait_until(|| held.completed.load(std::sync::atomic::Ordering::SeqCst) == 5, "ops lost");
}

#[test]
fn a_submit_waiting_for_in_flight_room_sleeps() {
    let _g = serial();
    let resolver = HeldResolver::new();
    let wait = Duration::from_millis(200);
    let (a, src) = held_node(&resolver, wait.as_micros() as u32);
    let _open = OpenOnDrop(&resolver);
    fill(&a, &src);
    assert_waits_asleep(&a, &src, wait);
    assert_eq!(a.done.count(), 0);
}

#[test]
fn a_waiting_submit_is_woken_when_ops_complete() {
    let _g = serial();
    let resolver = HeldResolver::new();
    let wait = Duration::from_secs(10);
    let (a, src) = held_node(&resolver, wait.as_micros() as u32);
    let _open = OpenOnDrop(&resolver);
    fill(&a, &src);
    std::thread::scope(|s| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (a, src) = (&a, &src);
        let waiter = s.spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            let t0 = Instant::now();
            let result = a.submit(&[op(src, 100)]);
            (result, t0.elapsed(), last_error())
        });
        // Once it sleeps (no room: 8 ops held), the held ops fail; their
        // credits come back, and the waiter must be woken to take one.
        let tid = tid_rx.recv().unwrap();
        assert!(wait_until_asleep(tid, || waiter.is_finished()), "the waiter never slept");
        resolver.open();
        let ((st, n), waited, msg) = waiter.join().unwrap();
        assert_eq!((st, n), (OK, 1), "{msg}");
        // A lost wake-up would show as the whole submit_wait.
        assert!(waited < wait, "woken only by the end of its wait ({waited:?})");
    });
    a.done.wait_for(MAX_IN_FLIGHT + 1, LIMIT);
    let by_status = a.done.exactly_once();
    assert_eq!(by_status.get(&MCFX_E_CONNECT), Some(&(MAX_IN_FLIGHT + 1)), "{by_status:?}");
}

#[test]
fn destroy_does_not_wait_for_a_waiting_submit() {
    let _g = serial();
    // Ops held inside FlagCX: transfers that take an hour.
    assert!(sw::set_knob(Knob::LatencyNs, 3_600_000_000_000));
    let wait = Duration::from_secs(10);
    let mut p = Pair::with(4096, |c| {
        c.max_in_flight = MAX_IN_FLIGHT as u32;
        c.submit_wait_us = wait.as_micros() as u32;
        c.shutdown_timeout_ms = 100;
    });
    let ops: Vec<mcfx_op> = (0..MAX_IN_FLIGHT as u64).map(|i| p.write(64, i)).collect();
    p.a.submit_ok(&ops);
    // The handle as an address (raw pointers do not cross threads).
    let t = p.a.t as usize;
    let (src, dst) = (p.src.addr(), p.dst.addr() as u64);
    let (status, destroy_took) = std::thread::scope(|s| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = s.spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            let mut accepted = 0;
            let one = [write(src, 64, 1, dst, 100)];
            // SAFETY: a live handle until the destroy below, which waits for
            // this call to leave.
            let st = unsafe { mcfx_submit(t as *mut _, one.as_ptr(), 1, &mut accepted) };
            (st, accepted)
        });
        // Once it sleeps in its submit (no room: 8 ops held), destroy must
        // not wait out its 10 s.
        let tid = tid_rx.recv().unwrap();
        assert!(wait_until_asleep(tid, || waiter.is_finished()), "the waiter never slept");
        let t0 = Instant::now();
        assert_eq!(p.a.destroy(), OK);
        let took = t0.elapsed();
        (waiter.join().unwrap(), took)
    });
    assert!(sw::set_knob(Knob::LatencyNs, 0));
    assert_eq!(status, (MCFX_E_QUEUE_FULL, 0), "the waiting submit");
    assert!(destroy_took < wait / 2, "destroy took {destroy_took:?}");
    // The held ops were canceled at destroy, each once; the waiter's op was
    // never accepted.
    let by_status = p.a.done.exactly_once();
    assert_eq!(p.a.done.count(), MAX_IN_FLIGHT, "{by_status:?}");
}
