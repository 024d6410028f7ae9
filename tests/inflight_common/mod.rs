//! Fixtures shared by the `inflight_*` tests (the bound on the ops a
//! transport holds, and waiting for room under it).
#![allow(dead_code)]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use mooncake_flagcx::ffi::*;

use crate::common::{answer, LIMIT};

/// A resolver that holds every call until `open`, then answers an endpoint
/// nobody listens on: the peer's connection is pending for as long as the
/// test wants, then fails (`MCFX_E_CONNECT`).
pub struct HeldResolver {
    open: Mutex<bool>,
    opened: Condvar,
    endpoint: String,
}

impl HeldResolver {
    pub fn new() -> HeldResolver {
        // A port that was free a moment ago: connecting to it is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        HeldResolver {
            open: Mutex::new(false),
            opened: Condvar::new(),
            endpoint: format!("127.0.0.1:{port}"),
        }
    }

    /// Lets every held and later resolver call answer.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Points `c` at this resolver (which must outlive the transport).
    pub fn install(&self, c: &mut mcfx_config) {
        c.resolve = Some(held_resolve);
        c.resolve_ctx = self as *const HeldResolver as *mut c_void;
    }
}

/// Opens the resolver when dropped: a failing test still lets destroy (which
/// waits for a running resolver call) finish.
pub struct OpenOnDrop<'a>(pub &'a HeldResolver);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

unsafe extern "C-unwind" fn held_resolve(
    ctx: *mut c_void,
    _peer: u64,
    buf: *mut c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the HeldResolver the test keeps alive past destroy.
    let r = unsafe { &*(ctx as *const HeldResolver) };
    let mut open = r.open.lock().unwrap();
    let until = Instant::now() + LIMIT;
    while !*open && Instant::now() < until {
        open = r.opened.wait_timeout(open, Duration::from_millis(100)).unwrap().0;
    }
    // SAFETY: the transport's buffer, writable for cap bytes.
    unsafe { answer(&r.endpoint, buf, cap) }
}

/// A completion callback that holds the progress thread in its first call
/// until `open` (so the queue stops draining), counting completions.
pub struct HeldCallback {
    open: Mutex<bool>,
    opened: Condvar,
    /// The progress thread is (or was) held in the callback.
    pub entered: AtomicBool,
    pub completed: AtomicUsize,
}

impl HeldCallback {
    pub fn new() -> HeldCallback {
        HeldCallback {
            open: Mutex::new(false),
            opened: Condvar::new(),
            entered: AtomicBool::new(false),
            completed: AtomicUsize::new(0),
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Points `c` at this callback (which must outlive the transport).
    pub fn install(&self, c: &mut mcfx_config) {
        c.on_complete = Some(held_complete);
        c.complete_ctx = self as *const HeldCallback as *mut c_void;
    }
}

unsafe extern "C-unwind" fn held_complete(ctx: *mut c_void, _user_data: u64, _st: mcfx_status) {
    // SAFETY: ctx is the HeldCallback the test keeps alive past destroy.
    let h = unsafe { &*(ctx as *const HeldCallback) };
    h.entered.store(true, SeqCst);
    let mut open = h.open.lock().unwrap();
    let until = Instant::now() + LIMIT;
    while !*open && Instant::now() < until {
        open = h.opened.wait_timeout(open, Duration::from_millis(100)).unwrap().0;
    }
    h.completed.fetch_add(1, SeqCst);
}

/// Opens the callback when dropped (a failing test still lets destroy,
/// which joins the progress thread, finish).
pub struct OpenCallbackOnDrop<'a>(pub &'a HeldCallback);

impl Drop for OpenCallbackOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// The calling thread's id, for `wait_until_asleep`.
pub fn thread_id() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Waits (bounded by LIMIT) until thread `tid` of this process is asleep
/// (state `S` in /proc: blocked, not runnable), or `finished()` says it
/// ended; true when it was seen asleep.
pub fn wait_until_asleep(tid: i32, finished: impl Fn() -> bool) -> bool {
    let until = Instant::now() + LIMIT;
    while Instant::now() < until && !finished() {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
        // The state follows the parenthesized name: "tid (name) S ...".
        let state = stat.ok().and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(str::to_owned)
        });
        if state.as_deref() == Some("S") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
