//! A handle's life against every call sequence a host can make: calls
//! racing destroy, calls after destroy, destroys from callbacks that wait
//! for each other, and calls in a forked child.

mod common;

use std::ffi::{c_char, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

/// Every export that takes a handle, called once with plausible arguments;
/// returns the statuses. `regions` are addresses registered on the handle.
fn call_everything(t: *mut mcfx_transport, mem: &AlignedBuf) -> Vec<mcfx_status> {
    let addr = mem.addr() as *mut c_void;
    let half = (mem.addr() + mem.len() / 2) as *mut c_void;
    let mut out = Vec::new();
    let mut buf = [0 as c_char; 300];
    let mut len = 0;
    let mut stats =
        mcfx_stats { struct_size: std::mem::size_of::<mcfx_stats>() as u32, ..Default::default() };
    let ops = [write(mem.addr(), 64, 1, 0x1000, 7)];
    let mut accepted = 0;
    let regions = [mcfx_region { addr: half, length: 4096 }];
    // SAFETY: the handle is live or destroyed (the behaviour under test);
    // every other pointer is valid.
    unsafe {
        out.push(mcfx_register(t, addr, 4096));
        out.push(mcfx_submit(t, ops.as_ptr(), 1, &mut accepted));
        out.push(mcfx_get_stats(t, &mut stats));
        out.push(mcfx_local_endpoint(t, buf.as_mut_ptr(), buf.len(), &mut len));
        out.push(mcfx_register_batch(t, regions.as_ptr(), 1));
        out.push(mcfx_unregister_batch(t, [half].as_ptr(), 1));
        out.push(mcfx_unregister(t, addr));
        let mut completed = 0;
        out.push(mcfx_progress(t, &mut completed));
    }
    out
}

/// Threads call every export in a loop while the handle is destroyed; the
/// destroy waits for calls already inside, later calls are refused, and
/// after destroy returned every call answers MCFX_E_INVALID_ARGUMENT (it
/// used to read the freed transport: SIGSEGV in Registry::unregister).
#[test]
fn calls_racing_destroy_finish_safely_and_later_calls_are_refused() {
    let _g = serial();
    for round in 0..40 {
        // A small queue: destroy then cancels at most a few thousand ops
        // (with the default 32768 it could take long enough for a caller's
        // loop bound below to run out first).
        let a = Node::with(|c| {
            c.op_timeout_ms = 50;
            c.queue_capacity = 4096;
            c.max_in_flight = 4096;
        });
        let mem = Arc::new(AlignedBuf::new(1 << 16));
        let t = AtomicPtr::new(a.t);
        let destroyed = Arc::new(AtomicBool::new(false));
        let calls_after = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..3 {
                let (mem, destroyed, calls_after) = (&mem, &destroyed, &calls_after);
                let t = &t;
                s.spawn(move || {
                    let t = t.load(SeqCst);
                    // Bounded: until destroy returned, then 20 more rounds.
                    let mut after = 0;
                    for _ in 0..1_000_000 {
                        let was_destroyed = destroyed.load(SeqCst);
                        let got = call_everything(t, mem);
                        for st in &got {
                            assert!(
                                matches!(
                                    *st,
                                    OK | MCFX_E_SHUTTING_DOWN
                                        | MCFX_E_INVALID_ARGUMENT
                                        | MCFX_E_NOT_FOUND
                                        | MCFX_E_ALREADY_REGISTERED
                                        // Another thread unregistered the
                                        // region between this one's
                                        // register and submit.
                                        | MCFX_E_NOT_REGISTERED
                                        | MCFX_E_BUSY
                                        | MCFX_E_QUEUE_FULL
                                ),
                                "round {round}: {st:?}"
                            );
                        }
                        if was_destroyed {
                            assert!(
                                got.iter().all(|st| *st == MCFX_E_INVALID_ARGUMENT),
                                "round {round}: a call after destroy returned gave {got:?}"
                            );
                            after += 1;
                            if after == 20 {
                                break;
                            }
                        }
                    }
                    calls_after.fetch_add(after, SeqCst);
                });
            }
            std::thread::sleep(Duration::from_micros(200 * (round % 5)));
            let mut a = a;
            assert_eq!(a.destroy(), OK);
            destroyed.store(true, SeqCst);
        });
        assert_eq!(calls_after.load(SeqCst), 60, "round {round}");
    }
}

#[test]
fn a_destroyed_handle_answers_invalid_argument_for_every_call() {
    let _g = serial();
    let mut a = Node::new();
    let t = a.t;
    assert_eq!(a.destroy(), OK);
    let mem = AlignedBuf::new(1 << 16);
    let got = call_everything(t, &mem);
    assert!(got.iter().all(|st| *st == MCFX_E_INVALID_ARGUMENT), "{got:?}");
    // SAFETY: a destroyed handle: the call under test.
    assert_eq!(unsafe { mcfx_destroy(t) }, MCFX_E_INVALID_ARGUMENT);
    assert!(last_error().contains("not a live transport"), "{}", last_error());
}

// ---- destroys from callbacks that would wait for each other ---------------

/// Two parties meet (bounded: a party that never comes fails the test).
struct Meet {
    count: Mutex<usize>,
    all: Condvar,
}

impl Meet {
    fn new() -> Meet {
        Meet { count: Mutex::new(0), all: Condvar::new() }
    }

    fn arrive(&self) {
        let mut n = self.count.lock().unwrap();
        *n += 1;
        self.all.notify_all();
        let (n, timeout) = self.all.wait_timeout_while(n, LIMIT, |n| *n < 2).expect("meet lock");
        assert!(!timeout.timed_out(), "the other callback never came ({} of 2)", *n);
    }
}

/// What one transport's callback does: meet the other's callback, then
/// destroy the other transport and record the status.
struct Destroyer {
    other: AtomicPtr<mcfx_transport>,
    meet: Arc<Meet>,
    got: Mutex<Vec<mcfx_status>>,
    once: AtomicBool,
}

impl Destroyer {
    fn run(&self) {
        if self.once.swap(true, SeqCst) {
            return;
        }
        self.meet.arrive();
        // SAFETY: the other handle is live until one of the two destroys
        // wins (this is the call under test).
        let st = unsafe { mcfx_destroy(self.other.load(SeqCst)) };
        self.got.lock().unwrap().push(st);
    }
}

unsafe extern "C-unwind" fn destroy_on_complete(ctx: *mut c_void, _: u64, _: mcfx_status) {
    // SAFETY: ctx is a Destroyer the test keeps alive past both destroys.
    unsafe { &*(ctx as *const Destroyer) }.run();
}

unsafe extern "C-unwind" fn destroy_in_resolver(
    ctx: *mut c_void,
    _: u64,
    _: *mut c_char,
    _: usize,
) -> i32 {
    // SAFETY: as above.
    unsafe { &*(ctx as *const Destroyer) }.run();
    -1
}

/// A's callback destroys B while B's destroys A: one destroy wins, the other
/// returns MCFX_E_WOULD_DEADLOCK (both used to block for ever).
fn mutual_destroy(in_resolver: bool) {
    let _g = serial();
    let meet = Arc::new(Meet::new());
    let new = || {
        Box::new(Destroyer {
            other: AtomicPtr::new(null_mut()),
            meet: Arc::clone(&meet),
            got: Mutex::new(Vec::new()),
            once: AtomicBool::new(false),
        })
    };
    let (da, db) = (new(), new());
    let make = |d: &Destroyer| {
        let ctx = d as *const Destroyer as *mut c_void;
        let done = Arc::new(Completions::default());
        let dir = Arc::new(Directory::default());
        let mut c = config(&done, &dir);
        if in_resolver {
            c.resolve = Some(destroy_in_resolver);
            c.resolve_ctx = ctx;
        } else {
            c.on_complete = Some(destroy_on_complete);
            c.complete_ctx = ctx;
        }
        c.op_timeout_ms = 200;
        let mut t = null_mut();
        // SAFETY: valid config; the contexts outlive both transports.
        assert_eq!(unsafe { mcfx_create(&c, &mut t) }, OK, "{}", last_error());
        (t, done, dir)
    };
    let (ta, _done_a, _dir_a) = make(&da);
    let (tb, _done_b, _dir_b) = make(&db);
    da.other.store(tb, SeqCst);
    db.other.store(ta, SeqCst);
    let (mem_a, mem_b) = (AlignedBuf::new(4096), AlignedBuf::new(4096));
    // An op to an unknown peer: the resolver runs (and fails), the op
    // completes with an error; either way a callback of each runs.
    let (tx, rx) = mpsc::channel();
    for (t, mem) in [(ta, &mem_a), (tb, &mem_b)] {
        // SAFETY: live handles; the buffers outlive the transports.
        unsafe {
            assert_eq!(mcfx_register(t, mem.addr() as *mut c_void, 4096), OK);
            let op = write(mem.addr(), 64, 9, 0x1000, 1);
            assert_eq!(mcfx_submit(t, &op, 1, null_mut()), OK);
        }
    }
    // The test's watchdog: both callbacks must return (bounded, generous).
    let watch = {
        let (da, db) = (&*da as *const Destroyer as usize, &*db as *const Destroyer as usize);
        std::thread::spawn(move || {
            for _ in 0..6000 {
                // SAFETY: the Destroyers outlive this thread (joined below).
                let done = unsafe {
                    !(*(da as *const Destroyer)).got.lock().unwrap().is_empty()
                        && !(*(db as *const Destroyer)).got.lock().unwrap().is_empty()
                };
                if done {
                    tx.send(()).unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let finished = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    watch.join().unwrap();
    assert!(finished, "the two destroys are still waiting for each other after 60 s");
    let mut got = da.got.lock().unwrap().clone();
    got.extend(db.got.lock().unwrap().iter());
    got.sort_by_key(|s| *s as i32);
    assert_eq!(got, vec![OK, MCFX_E_WOULD_DEADLOCK], "one destroy wins, the other is refused");
    // The survivor is destroyed from here.
    let survivor = if da.got.lock().unwrap()[0] == OK { ta } else { tb };
    // SAFETY: the transport whose destroy was refused is still live.
    assert_eq!(unsafe { mcfx_destroy(survivor) }, OK, "{}", last_error());
}

#[test]
fn completions_destroying_each_others_transports_do_not_deadlock() {
    mutual_destroy(false);
}

#[test]
fn resolvers_destroying_each_others_transports_do_not_deadlock() {
    mutual_destroy(true);
}

// ---- fork ------------------------------------------------------------------

/// In a forked child a parent's handle answers MCFX_E_FORKED to every call
/// but destroy, which returns OK, and a new transport is MCFX_E_FORKED too
/// (a child that made one used to hang in parking_lot's global table, which
/// a parent's thread could hold at the fork). (destroy used to answer
/// MCFX_E_PANIC, submit OK for an op that never completed.)
#[test]
fn a_forked_child_may_only_destroy_inherited_handles() {
    let _g = serial();
    let pair = Pair::new(4096);
    pair.a.submit_ok(&[pair.write(64, 1)]);
    assert_eq!(pair.a.done.wait_one(1, LIMIT), OK);
    let (ta, src) = (pair.a.t, &pair.src);
    // SAFETY: fork; the child runs only the code below and leaves with
    // _exit (no destructors, no return into the test harness).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let got = call_everything(ta, src);
            assert!(got.iter().all(|st| *st == MCFX_E_FORKED), "child: {got:?}");
            // SAFETY: the inherited handle: the call under test.
            assert_eq!(unsafe { mcfx_destroy(ta) }, OK, "child destroy: {}", last_error());
            // No transport can be made on what the parent's threads left
            // (their locks among it): a status, not a hang.
            let made = Node::try_with(|_| {});
            assert_eq!(made.err().map(|(st, _)| st), Some(MCFX_E_FORKED), "child create");
        }))
        .map_or(1, |()| 0);
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed (status {status:#x}); its panic message is above"
    );
    // The parent's transport is untouched.
    pair.a.submit_ok(&[pair.write(64, 3)]);
    assert_eq!(pair.a.done.wait_one(3, LIMIT), OK);
}
