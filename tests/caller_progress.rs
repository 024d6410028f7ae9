//! `mcfx_progress`: host threads that poll for their completions run
//! progress passes themselves, one thread at a time beside the progress
//! thread. Every op still completes exactly once, callbacks run only on the
//! progress thread or inside `mcfx_progress`, FlagCX ids are never polled by
//! two threads at once, and a callback on a caller's thread is as
//! restricted as one on the progress thread.

mod common;

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};

use common::*;
use flagcx_sys::sw::{self, Knob};
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

thread_local! {
    /// Set while this thread is inside `mcfx_progress`.
    static IN_PROGRESS_CALL: Cell<bool> = const { Cell::new(false) };
}

/// A target transport that `a` knows as peer 1, and a 4 KiB buffer
/// registered on each side (`a`'s, the target's).
fn target_of(a: &Node) -> (Node, AlignedBuf, AlignedBuf) {
    let b = Node::new();
    a.knows(1, &b);
    let (src, dst) = (AlignedBuf::new(4096), AlignedBuf::new(4096));
    a.register(&src);
    b.register(&dst);
    (b, src, dst)
}

/// Submits one 4 KiB write from `src` to `dst` with user data `ud` on a
/// live handle, and checks it was accepted.
fn submit_one(t: *mut mcfx_transport, src: usize, dst: u64, ud: u64) {
    let op = write(src, 4096, 1, dst, ud);
    let mut accepted = 0;
    // SAFETY: `t` is live (the caller's promise); one op; `accepted` writable.
    let st = unsafe { mcfx_submit(t, &op, 1, &mut accepted) };
    assert_eq!((st, accepted), (MCFX_OK, 1));
}

fn progress(t: *mut mcfx_transport) -> (mcfx_status, u64) {
    let mut n = u64::MAX;
    IN_PROGRESS_CALL.with(|c| c.set(true));
    // SAFETY: `t` is a live handle; `n` is writable.
    let st = unsafe { mcfx_progress(t, &mut n) };
    IN_PROGRESS_CALL.with(|c| c.set(false));
    (st, n)
}

/// What the checking callback saw.
#[derive(Default)]
struct Seen {
    per_op: Mutex<Vec<u32>>,
    /// Callbacks that ran neither on the progress thread nor inside
    /// `mcfx_progress`.
    elsewhere: AtomicUsize,
    /// Callbacks that ran inside a caller's `mcfx_progress`.
    on_callers: AtomicUsize,
    failed: AtomicUsize,
}

unsafe extern "C-unwind" fn check_thread(ctx: *mut c_void, user_data: u64, status: mcfx_status) {
    // SAFETY: ctx is the Arc<Seen> the test keeps alive past destroy.
    let seen = unsafe { &*(ctx as *const Seen) };
    let on_progress_thread = std::thread::current().name() == Some("mcfx-progress");
    if IN_PROGRESS_CALL.with(Cell::get) {
        seen.on_callers.fetch_add(1, SeqCst);
    } else if !on_progress_thread {
        seen.elsewhere.fetch_add(1, SeqCst);
    }
    if status != MCFX_OK {
        seen.failed.fetch_add(1, SeqCst);
    }
    seen.per_op.lock().unwrap()[user_data as usize] += 1;
}

/// Four threads submit and poll with `mcfx_progress` while the progress
/// thread runs too: each op completes once, with its bytes, on an allowed
/// thread, and the provider sees no id polled twice or by two threads.
#[test]
fn polling_callers_and_the_progress_thread_complete_every_op_exactly_once() {
    let _g = serial();
    const THREADS: usize = 4;
    const OPS: usize = 2000;
    const LEN: usize = 256;
    let seen = Arc::new(Seen::default());
    *seen.per_op.lock().unwrap() = vec![0; THREADS * OPS];
    let a = Node::with(|c| {
        c.on_complete = Some(check_thread);
        c.complete_ctx = Arc::as_ptr(&seen) as *mut c_void;
    });
    let b = Node::new();
    a.knows(1, &b);
    let mut src = AlignedBuf::new(THREADS * OPS * LEN);
    let mut dst = AlignedBuf::new(THREADS * OPS * LEN);
    pattern::fill(src.bytes(), 7);
    a.register(&src);
    b.register(&dst);
    let by_callers = AtomicU64::new(0);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (a, seen, by_callers) = (&a, &seen, &by_callers);
            let (src, dst) = (src.addr(), dst.addr());
            s.spawn(move || {
                for i in 0..OPS {
                    let ud = th * OPS + i;
                    let off = ud * LEN;
                    let op = write(src + off, LEN as u64, 1, (dst + off) as u64, ud as u64);
                    loop {
                        match a.submit(&[op]) {
                            (MCFX_OK, 1) => break,
                            (MCFX_E_QUEUE_FULL, 0) => {
                                let (st, n) = progress(a.t);
                                assert_eq!(st, MCFX_OK);
                                by_callers.fetch_add(n, SeqCst);
                            }
                            other => panic!("submit: {other:?}: {}", last_error()),
                        }
                    }
                    // Every few ops, poll until this one completed.
                    if i % 8 == 7 {
                        let done = || seen.per_op.lock().unwrap()[ud] == 1;
                        let until = std::time::Instant::now() + LIMIT;
                        while !done() {
                            assert!(std::time::Instant::now() < until, "op {ud} never completed");
                            let (st, n) = progress(a.t);
                            assert_eq!(st, MCFX_OK);
                            by_callers.fetch_add(n, SeqCst);
                        }
                    }
                }
            });
        }
    });
    wait_until(|| seen.per_op.lock().unwrap().iter().all(|&n| n >= 1), "every op completes");
    let per_op = seen.per_op.lock().unwrap().clone();
    assert!(per_op.iter().all(|&n| n == 1), "an op completed twice");
    assert_eq!(seen.failed.load(SeqCst), 0);
    assert_eq!(seen.elsewhere.load(SeqCst), 0, "a callback ran outside the allowed threads");
    assert_eq!(
        by_callers.load(SeqCst),
        seen.on_callers.load(SeqCst) as u64,
        "mcfx_progress's count is not the callbacks it ran"
    );
    assert!(src.bytes() == dst.bytes(), "bytes differ");
    assert_eq!(a.stats().completed, (THREADS * OPS) as u64);
    assert_no_violations();
}

/// What the re-entrant callback does and saw.
struct Reentry {
    t: AtomicU64,
    destroy: Mutex<Vec<mcfx_status>>,
    progress: Mutex<Vec<(mcfx_status, u64)>>,
    completions: AtomicUsize,
}

unsafe extern "C-unwind" fn reenter(ctx: *mut c_void, _ud: u64, _st: mcfx_status) {
    // SAFETY: ctx is the Arc<Reentry> the test keeps alive past destroy.
    let r = unsafe { &*(ctx as *const Reentry) };
    let t = r.t.load(SeqCst) as *mut mcfx_transport;
    let mut n = u64::MAX;
    // SAFETY: `t` is the live handle this callback belongs to.
    let st = unsafe { mcfx_progress(t, &mut n) };
    r.progress.lock().unwrap().push((st, n));
    // SAFETY: as above; destroy must refuse (it would wait for this call).
    let st = unsafe { mcfx_destroy(t) };
    r.destroy.lock().unwrap().push(st);
    r.completions.fetch_add(1, SeqCst);
}

/// From a callback, on the progress thread or inside a caller's
/// `mcfx_progress`: `mcfx_progress` of the same transport runs nothing and
/// says so, and `mcfx_destroy` is refused (`MCFX_E_IN_CALLBACK`) instead of
/// waiting for the call it is inside.
#[test]
fn a_callback_inside_a_pass_can_neither_run_another_nor_destroy_its_transport() {
    let _g = serial();
    const OPS: usize = 200;
    let r = Arc::new(Reentry {
        t: AtomicU64::new(0),
        destroy: Mutex::new(Vec::new()),
        progress: Mutex::new(Vec::new()),
        completions: AtomicUsize::new(0),
    });
    let mut a = Node::with(|c| {
        c.on_complete = Some(reenter);
        c.complete_ctx = Arc::as_ptr(&r) as *mut c_void;
    });
    r.t.store(a.t as u64, SeqCst);
    let (_b, src, dst) = target_of(&a);
    for i in 0..OPS {
        a.submit_ok(&[write(src.addr(), 64, 1, dst.addr() as u64, i as u64)]);
        // Poll: some of these callbacks run inside this call.
        let until = std::time::Instant::now() + LIMIT;
        while r.completions.load(SeqCst) <= i {
            assert!(std::time::Instant::now() < until, "op {i} never completed");
            let (st, _) = progress(a.t);
            assert_eq!(st, MCFX_OK);
        }
    }
    assert!(r.destroy.lock().unwrap().iter().all(|&s| s == MCFX_E_IN_CALLBACK));
    assert!(r.progress.lock().unwrap().iter().all(|&p| p == (MCFX_OK, 0)));
    assert_eq!(a.destroy(), MCFX_OK);
}

/// A caller's pass that leaves a transfer in FlagCX, from a caller that
/// never calls again: the progress thread finishes it (it must not sleep
/// for good past it).
#[test]
fn a_transfer_a_callers_pass_left_in_flight_completes_without_more_calls() {
    let _g = serial();
    // Transfers take 300 us: a caller's pass issues them and returns.
    assert!(sw::set_knob(Knob::LatencyNs, 300_000));
    let p = Pair::new(1 << 16);
    for ud in 0..200u64 {
        p.a.submit_ok(&[p.write(4096, ud)]);
        let (st, _) = progress(p.a.t);
        assert_eq!(st, MCFX_OK);
        assert_eq!(p.a.done.wait_one(ud, LIMIT), MCFX_OK, "op {ud}");
    }
    assert_no_violations();
}

/// Bad handles: NULL is `MCFX_E_INVALID_ARGUMENT` with 0 completed; a
/// destroyed handle is refused the same way; `completed` may be NULL.
#[test]
fn progress_on_bad_handles_is_refused_and_null_completed_is_fine() {
    let _g = serial();
    let mut n = u64::MAX;
    // SAFETY: NULL is a documented bad input; `n` is writable.
    assert_eq!(unsafe { mcfx_progress(std::ptr::null_mut(), &mut n) }, MCFX_E_INVALID_ARGUMENT);
    assert_eq!(n, 0);
    assert!(!last_error().is_empty());
    let mut a = Node::new();
    // Fruitless calls: the thread backs off (skips calls without looking).
    for _ in 0..200 {
        // SAFETY: a live handle; NULL `completed` is allowed.
        assert_eq!(unsafe { mcfx_progress(a.t, std::ptr::null_mut()) }, MCFX_OK);
    }
    let t = a.t;
    assert_eq!(a.destroy(), MCFX_OK);
    // Backing off or not, a destroyed handle is refused at once.
    // SAFETY: a destroyed handle is a documented bad input.
    assert_eq!(unsafe { mcfx_progress(t, &mut n) }, MCFX_E_INVALID_ARGUMENT);
    assert_eq!(n, 0);
}

/// What the submitting callback uses and saw.
struct Resubmit {
    t: AtomicU64,
    /// Where the ops it submits write from and to.
    src: AtomicU64,
    dst: AtomicU64,
    statuses: Mutex<Vec<mcfx_status>>,
    completions: AtomicUsize,
}

unsafe extern "C-unwind" fn submit_more(ctx: *mut c_void, ud: u64, _st: mcfx_status) {
    // SAFETY: ctx is the Arc<Resubmit> the test keeps alive past destroy.
    let r = unsafe { &*(ctx as *const Resubmit) };
    r.completions.fetch_add(1, SeqCst);
    if ud >= 1000 {
        return; // ops submitted from here do not submit again
    }
    let t = r.t.load(SeqCst) as *mut mcfx_transport;
    let (src, dst) = (r.src.load(SeqCst) as usize, r.dst.load(SeqCst));
    for i in 0..8u64 {
        let op = write(src, 64, 1, dst, 1000 + ud * 8 + i);
        let mut accepted = 0;
        // SAFETY: the live handle of this callback; one op.
        let st = unsafe { mcfx_submit(t, &op, 1, &mut accepted) };
        r.statuses.lock().unwrap().push(st);
    }
}

/// A callback running inside a caller's `mcfx_progress` that submits into
/// a full transport gets `MCFX_E_QUEUE_FULL` at once: waiting for room
/// (`submit_wait_us`, 10 s here) would wait for the pass it runs in.
#[test]
fn a_callback_inside_a_callers_pass_never_waits_for_room() {
    let _g = serial();
    let r = Arc::new(Resubmit {
        t: AtomicU64::new(0),
        src: AtomicU64::new(0),
        dst: AtomicU64::new(0),
        statuses: Mutex::new(Vec::new()),
        completions: AtomicUsize::new(0),
    });
    let a = Node::with(|c| {
        c.on_complete = Some(submit_more);
        c.complete_ctx = Arc::as_ptr(&r) as *mut c_void;
        c.queue_capacity = 4;
        c.max_in_flight = 4;
        c.submit_wait_us = 10_000_000;
    });
    r.t.store(a.t as u64, SeqCst);
    let (_b, src, dst) = target_of(&a);
    r.src.store(src.addr() as u64, SeqCst);
    r.dst.store(dst.addr() as u64, SeqCst);
    for ud in 0..20u64 {
        a.submit_ok(&[write(src.addr(), 64, 1, dst.addr() as u64, ud)]);
        // Poll until this op's callback ran (it may run here or on the
        // progress thread) and everything it submitted completed.
        let until = std::time::Instant::now() + LIMIT;
        loop {
            let (st, _) = progress(a.t);
            assert_eq!(st, MCFX_OK);
            let submitted = r.statuses.lock().unwrap().iter().filter(|&&s| s == MCFX_OK).count();
            if r.completions.load(SeqCst) == ud as usize + 1 + submitted
                && r.statuses.lock().unwrap().len() == 8 * (ud as usize + 1)
            {
                break;
            }
            assert!(std::time::Instant::now() < until, "op {ud}: callbacks never finished");
        }
    }
    let statuses = r.statuses.lock().unwrap();
    assert!(statuses.iter().all(|&s| s == MCFX_OK || s == MCFX_E_QUEUE_FULL), "{statuses:?}");
    assert!(statuses.contains(&MCFX_E_QUEUE_FULL), "the transport was never full");
}

/// Callers that poll for ops that take 300 ms, more of them than the CPUs
/// (so the waiters crowd the thread running the passes), sleep between
/// their calls (after `POLL_BEFORE_SLEEP` of polling) instead of spinning,
/// and their completions wake them. A poller that spins makes millions of
/// calls in that time (2.6 M in 100 ms here), even on a loaded machine;
/// one that sleeps, a few thousand, plus what it spun before the others
/// got a CPU and started waiting too (up to ~70 k seen).
#[test]
fn callers_crowding_the_cpus_sleep_until_their_ops_complete() {
    let _g = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Waiter slots are 64: more threads than that cannot crowd by count.
    if cpus >= 64 {
        eprintln!("skipped: {cpus} CPUs, more than the 64 waiter slots");
        return;
    }
    let threads = cpus + 1;
    assert!(sw::set_knob(Knob::LatencyNs, 300_000_000));
    let p = Pair::new(threads * 4096);
    let t = p.a.t as usize;
    let done = &p.a.done;
    let calls = std::thread::scope(|s| {
        let waiters: Vec<_> = (0..threads)
            .map(|th| {
                let (src, dst) = (p.src.addr() + th * 4096, p.dst.addr() as u64 + th as u64 * 4096);
                s.spawn(move || {
                    let t = t as *mut mcfx_transport;
                    submit_one(t, src, dst, th as u64);
                    let mut calls = 0u64;
                    let until = std::time::Instant::now() + LIMIT;
                    while done.count_of(th as u64) == 0 {
                        assert!(std::time::Instant::now() < until, "op {th} never completed");
                        // SAFETY: a live handle; NULL `completed` is allowed.
                        assert_eq!(unsafe { mcfx_progress(t, std::ptr::null_mut()) }, MCFX_OK);
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        waiters.into_iter().map(|h| h.join().unwrap()).collect::<Vec<u64>>()
    });
    assert!(sw::set_knob(Knob::LatencyNs, 0));
    let by_status = p.a.done.exactly_once();
    assert_eq!(by_status.get(&MCFX_OK), Some(&threads), "{by_status:?}");
    let most = calls.iter().copied().max().unwrap();
    assert!(most < 1_000_000, "calls per thread in 300 ms {calls:?}: a caller never slept");
    assert_no_violations();
}

/// Destroy while callers sleep in `mcfx_progress` for ops that never
/// finish: destroy returns, the sleepers return (the handle is refused
/// from then on), and each op completes once (canceled).
#[test]
fn destroy_wakes_callers_asleep_for_their_ops() {
    let _g = serial();
    // Transfers that take an hour.
    assert!(sw::set_knob(Knob::LatencyNs, 3_600_000_000_000));
    let mut p = Pair::with(1 << 16, |c| c.shutdown_timeout_ms = 10);
    const THREADS: usize = 3;
    let calls = AtomicUsize::new(0);
    let t = p.a.t as usize;
    std::thread::scope(|s| {
        let pollers: Vec<_> = (0..THREADS)
            .map(|th| {
                let (src, dst, calls) = (p.src.addr(), p.dst.addr() as u64, &calls);
                s.spawn(move || {
                    let t = t as *mut mcfx_transport;
                    // A live handle: destroyed only after every submit
                    // counted below.
                    submit_one(t, src, dst, th as u64);
                    loop {
                        // SAFETY: the handle may be destroyed meanwhile: a
                        // destroyed handle is a documented bad input.
                        let st = unsafe { mcfx_progress(t, std::ptr::null_mut()) };
                        calls.fetch_add(1, SeqCst);
                        if st != MCFX_OK {
                            return st;
                        }
                    }
                })
            })
            .collect();
        // Every poller is in its wait (it submitted and called a few times).
        wait_until(|| p.a.stats().submitted == THREADS as u64, "the ops submitted");
        wait_until(|| calls.load(SeqCst) > 100 * THREADS, "the pollers polling");
        assert_eq!(p.a.destroy(), MCFX_OK);
        for h in pollers {
            let st = h.join().unwrap();
            assert!(
                st == MCFX_E_SHUTTING_DOWN || st == MCFX_E_INVALID_ARGUMENT,
                "a poller got {st:?}"
            );
        }
    });
    assert!(sw::set_knob(Knob::LatencyNs, 0));
    let by_status = p.a.done.exactly_once();
    assert_eq!(by_status.get(&MCFX_E_CANCELED), Some(&THREADS), "{by_status:?}");
}

/// What `hold_in_callers_pass` saw, and the gate it waits at.
#[derive(Default)]
struct Hold {
    /// The progress thread's id, from a callback that ran on it.
    progress_tid: AtomicI32,
    /// A callback is blocked inside a caller's pass.
    held: AtomicBool,
    released: Mutex<bool>,
    wake: Condvar,
    done: Mutex<Vec<u64>>,
}

impl Hold {
    fn release(&self) {
        *self.released.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
    fn completed(&self, user_data: u64) -> bool {
        self.done.lock().unwrap().contains(&user_data)
    }
}

/// Releases the blocked callback when dropped, also when an assertion
/// fails (destroy waits for the pass).
struct ReleaseOnDrop<'a>(&'a Hold);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

unsafe extern "C-unwind" fn hold_in_callers_pass(ctx: *mut c_void, user_data: u64, _: mcfx_status) {
    // SAFETY: ctx is the Arc<Hold> the test keeps alive past destroy.
    let h = unsafe { &*(ctx as *const Hold) };
    h.done.lock().unwrap().push(user_data);
    if IN_PROGRESS_CALL.with(Cell::get) {
        h.held.store(true, SeqCst);
        let mut released = h.released.lock().unwrap();
        while !*released {
            released = h.wake.wait(released).unwrap();
        }
    } else if std::thread::current().name() == Some("mcfx-progress") {
        // SAFETY: gettid has no preconditions.
        h.progress_tid.store(unsafe { libc::gettid() }, SeqCst);
    }
}

/// The scheduler state of thread `tid` of this process ('R', 'S', ...).
fn thread_state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    stat[stat.rfind(')').expect("comm") + 2..].chars().next().unwrap()
}

/// Runs `body` while a caller's pass on a transport is held (its callback
/// blocks until `body` returns), with the transport, the progress thread's
/// id and a 4 KiB source and destination; then checks that every op
/// completed once. `body` returns the user data of ops it submitted; each
/// must complete after the pass is released.
fn with_a_held_callers_pass(
    body: impl FnOnce(*mut mcfx_transport, i32, usize, u64, &Hold) -> Vec<u64>,
) {
    let h = Arc::new(Hold::default());
    // Buffers first: dropped after both transports, also when an assertion
    // fails with an op still queued.
    let (src, dst) = (AlignedBuf::new(4096), AlignedBuf::new(4096));
    let a = Node::with(|c| {
        c.on_complete = Some(hold_in_callers_pass);
        c.complete_ctx = Arc::as_ptr(&h) as *mut c_void;
        c.spin_grace_us = 10;
    });
    let b = Node::new();
    a.knows(1, &b);
    a.register(&src);
    b.register(&dst);
    let (s, d) = (src.addr(), dst.addr() as u64);
    // The progress thread's id, from a completion nobody polled for.
    submit_one(a.t, s, d, 0);
    wait_until(|| h.progress_tid.load(SeqCst) != 0, "a completion on the progress thread");
    let tid = h.progress_tid.load(SeqCst);
    let t = a.t as usize;
    let later = std::thread::scope(|scope| {
        // Dropped (releasing the caller) before the scope joins it, also
        // when an assertion fails.
        let _release = ReleaseOnDrop(&h);
        // A caller submits and polls until its op completed; its pass runs
        // the callback, which blocks. The progress thread may complete the
        // op first (then nothing blocks): try again with the next op, each
        // time once the thread sleeps, so the caller's call comes first.
        let mut ud = 0;
        loop {
            ud += 1;
            assert!(ud < 100, "the progress thread completed all of {ud} ops first");
            wait_until(|| thread_state(tid) == 'S', "the progress thread asleep");
            let (hold, op) = (&*h, ud);
            let caller = scope.spawn(move || {
                let t = t as *mut mcfx_transport;
                submit_one(t, s, d, op);
                while !hold.completed(op) {
                    assert_eq!(progress(t).0, MCFX_OK);
                }
            });
            wait_until(|| h.held.load(SeqCst) || caller.is_finished(), "the op completed");
            if h.held.load(SeqCst) {
                break;
            }
            caller.join().unwrap();
        }
        let later = body(a.t, tid, s, d, &h);
        h.release();
        later
    });
    for ud in later {
        wait_until(|| h.completed(ud), "an op submitted while the pass was held");
    }
    let done = h.done.lock().unwrap().clone();
    let mut sorted = done.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), done.len(), "an op completed twice: {done:?}");
    assert_no_violations();
}

/// A caller's pass that stays held (here its callback blocks; in a host,
/// its thread was preempted, often by the progress thread it had just
/// woken) does not keep the progress thread spinning beside it: after
/// `LONG_PASS` the thread naps until the pass ends, so the holder gets the
/// CPU back. Spinning beside it, it kept a preempted tebench thread off
/// its CPU for whole time slices (1 MiB batch 64 on the modeled NIC beside
/// busy loops: a p99 of 9-13 ms against 6-7 ms napping).
#[test]
fn beside_a_callers_pass_held_long_the_progress_thread_naps() {
    let _g = serial();
    with_a_held_callers_pass(|t, tid, s, d, _| {
        // Work queued behind the held pass wakes the progress thread, which
        // finds the passes held.
        submit_one(t, s, d, 1000);
        assert_napping(tid, "beside a caller's pass held for half a second");
        vec![1000]
    });
}

/// A thread that polls (`mcfx_progress`) and submits a few ops takes them
/// in its own next pass, so its submit leaves a briefly napping progress
/// thread asleep (here it naps beside the held pass); the ops complete
/// even if that thread never polls again (the nap's end finds them). Woken,
/// the thread cost the submitter its CPU beside busy threads.
#[test]
fn a_polling_callers_submit_leaves_a_brief_nap_alone_and_its_ops_still_complete() {
    let _g = serial();
    with_a_held_callers_pass(|t, tid, s, d, h| {
        // Work queued behind the held pass: the thread naps beside it (with
        // nothing to do it would sleep for good, and be woken).
        submit_one(t, s, d, 1000);
        let t = t as usize;
        wait_until(|| thread_state(tid) == 'S', "the progress thread napping");
        let (before, after) = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let t = t as *mut mcfx_transport;
                    // A poller of this transport: nothing of its own is
                    // outstanding, so the call returns at once.
                    assert_eq!(progress(t).0, MCFX_OK);
                    let before = stats_of(t).wakeups;
                    submit_one(t, s, d, 2000);
                    (before, stats_of(t).wakeups)
                })
                .join()
                .unwrap()
        });
        assert_eq!(after, before, "a poller's submit of one op woke a napping progress thread");
        assert!(!h.completed(2000));
        vec![1000, 2000]
    });
}

/// The same submit wakes a progress thread that sleeps for good: no pass
/// would take its ops otherwise if the submitter does not poll after all.
#[test]
fn a_polling_callers_submit_wakes_a_progress_thread_asleep_for_good() {
    let _g = serial();
    let p = Pair::with(1 << 16, |c| c.spin_grace_us = 10);
    for ud in 0..20u64 {
        let (a, s, d) = (p.a.t as usize, p.src.addr(), p.dst.addr() as u64);
        // Nothing outstanding: after its grace the thread sleeps for good.
        wait_until(|| p.a.stats().submitted == p.a.stats().completed, "nothing outstanding");
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let t = a as *mut mcfx_transport;
                assert_eq!(progress(t).0, MCFX_OK);
                // Time to fall asleep for good (its grace is 10 us), most
                // times; asleep or not, the op must complete.
                std::thread::sleep(std::time::Duration::from_millis(5));
                submit_one(t, s, d, ud);
            });
        });
        assert_eq!(
            p.a.done.wait_one(ud, LIMIT),
            MCFX_OK,
            "op {ud}, submitted by a poller that then left"
        );
    }
    assert_no_violations();
}
