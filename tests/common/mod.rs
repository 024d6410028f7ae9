//! Fixtures for the transport's integration tests. Everything goes through
//! the C ABI (`mcfx_*`), as a C or C++ caller would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

#[allow(unused_imports)]
pub use flagcx_sys::pattern;
#[allow(unused_imports)]
pub use flagcx_sys::testing::PeerProcess;

#[allow(unused_imports)]
pub use flagcx_sys::testing::{assert_no_violations, serial};

/// Every completion received, per user_data.
#[derive(Default)]
pub struct Completions {
    seen: Mutex<HashMap<u64, Vec<mcfx_status>>>,
    changed: Condvar,
}

impl Completions {
    /// Records one completion (what the C callback does).
    pub fn record_status(&self, user_data: u64, status: mcfx_status) {
        self.record(user_data, status)
    }

    fn record(&self, user_data: u64, status: mcfx_status) {
        self.seen.lock().unwrap().entry(user_data).or_default().push(status);
        self.changed.notify_all();
    }

    /// Waits until `n` distinct ops completed; panics after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        let mut seen = self.seen.lock().unwrap();
        while seen.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} of {n} ops completed within {limit:?}", seen.len());
            seen = self.changed.wait_timeout(seen, left).unwrap().0;
        }
    }

    /// The single status of `user_data`; panics if it completed 0 or 2+ times.
    pub fn status(&self, user_data: u64) -> mcfx_status {
        let seen = self.seen.lock().unwrap();
        match seen.get(&user_data).map(Vec::as_slice) {
            Some([s]) => *s,
            other => panic!("op {user_data} completed {other:?}"),
        }
    }

    /// Waits for one op and returns its status.
    pub fn wait_one(&self, user_data: u64, limit: Duration) -> mcfx_status {
        let until = Instant::now() + limit;
        let mut seen = self.seen.lock().unwrap();
        while !seen.contains_key(&user_data) {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "op {user_data} did not complete within {limit:?}");
            seen = self.changed.wait_timeout(seen, left).unwrap().0;
        }
        drop(seen);
        self.status(user_data)
    }

    /// How many times `user_data` completed so far (0 while it has not).
    pub fn count_of(&self, user_data: u64) -> usize {
        self.seen.lock().unwrap().get(&user_data).map_or(0, Vec::len)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Panics unless every op completed exactly once; returns per-status counts.
    pub fn exactly_once(&self) -> HashMap<mcfx_status, usize> {
        let seen = self.seen.lock().unwrap();
        let mut by_status = HashMap::new();
        for (ud, statuses) in seen.iter() {
            assert_eq!(statuses.len(), 1, "op {ud} completed {statuses:?}");
            *by_status.entry(statuses[0]).or_insert(0) += 1;
        }
        by_status
    }
}

/// Peer id -> endpoint, answered by the resolver callback.
#[derive(Default)]
pub struct Directory {
    endpoints: Mutex<HashMap<u64, String>>,
}

impl Directory {
    pub fn lookup(&self, peer: u64) -> Option<String> {
        self.endpoints.lock().unwrap().get(&peer).cloned()
    }

    pub fn insert(&self, peer: u64, endpoint: &str) {
        self.endpoints.lock().unwrap().insert(peer, endpoint.to_owned());
    }
}

unsafe extern "C-unwind" fn on_complete(ctx: *mut c_void, user_data: u64, status: mcfx_status) {
    // SAFETY: ctx is the Arc<Completions> a Node keeps alive past destroy.
    let done = unsafe { &*(ctx as *const Completions) };
    done.record(user_data, status);
}

/// The fixture's resolver: `ctx` is a `Directory` (a Node's), answered by
/// its endpoint for `peer`. Tests with resolvers of their own that only add
/// to it call it for the answer.
///
/// # Safety
/// `ctx` points to a live `Directory`; `buf` is writable for `cap` bytes.
pub unsafe extern "C-unwind" fn resolve(
    ctx: *mut c_void,
    peer: u64,
    buf: *mut c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the Arc<Directory> a Node keeps alive past destroy.
    let dir = unsafe { &*(ctx as *const Directory) };
    let Some(ep) = dir.endpoints.lock().unwrap().get(&peer).cloned() else { return -1 };
    // SAFETY: the transport's buffer, writable for cap bytes.
    unsafe { answer(&ep, buf, cap) }
}

/// A resolver's answer: writes `endpoint` NUL-terminated into `buf` and
/// returns 0, or -2 when it does not fit in `cap` bytes.
///
/// # Safety
/// `buf` is writable for `cap` bytes.
pub unsafe fn answer(endpoint: &str, buf: *mut c_char, cap: usize) -> i32 {
    if endpoint.len() >= cap {
        return -2;
    }
    // SAFETY: buf is writable for cap > endpoint.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(endpoint.as_ptr(), buf.cast::<u8>(), endpoint.len());
        *buf.add(endpoint.len()) = 0;
    }
    0
}

/// A default config with this module's callbacks bound to `done` / `dir`.
pub fn config(done: &Arc<Completions>, dir: &Arc<Directory>) -> mcfx_config {
    let mut c = std::mem::MaybeUninit::<mcfx_config>::uninit();
    // SAFETY: mcfx_config_init writes the whole struct.
    let mut c = unsafe {
        mcfx_config_init(c.as_mut_ptr(), std::mem::size_of::<mcfx_config>());
        c.assume_init()
    };
    c.on_complete = Some(on_complete);
    c.complete_ctx = Arc::as_ptr(done) as *mut c_void;
    c.resolve = Some(resolve);
    c.resolve_ctx = Arc::as_ptr(dir) as *mut c_void;
    c
}

/// One transport plus the state its callbacks use.
pub struct Node {
    pub t: *mut mcfx_transport,
    pub done: Arc<Completions>,
    pub dir: Arc<Directory>,
    pub endpoint: String,
}

impl Node {
    pub fn new() -> Node {
        Node::with(|_| {})
    }

    /// A node whose config `tweak` adjusts before create.
    pub fn with(tweak: impl FnOnce(&mut mcfx_config)) -> Node {
        Node::try_with(tweak).unwrap_or_else(|(st, msg)| panic!("mcfx_create: {st:?}: {msg}"))
    }

    pub fn try_with(tweak: impl FnOnce(&mut mcfx_config)) -> Result<Node, (mcfx_status, String)> {
        let done = Arc::new(Completions::default());
        let dir = Arc::new(Directory::default());
        let mut c = config(&done, &dir);
        tweak(&mut c);
        let mut t = std::ptr::null_mut();
        // SAFETY: valid config and out pointer; callbacks' contexts outlive t.
        let st = unsafe { mcfx_create(&c, &mut t) };
        if st != mcfx_status::MCFX_OK {
            return Err((st, last_error()));
        }
        let mut buf = [0u8; 128];
        let mut len = 0;
        // SAFETY: live handle, 128-byte buffer.
        let st = unsafe { mcfx_local_endpoint(t, buf.as_mut_ptr().cast(), buf.len(), &mut len) };
        // A transport made with MCFX_FLAG_NO_SERVE has no endpoint.
        let serves = c.flags & MCFX_FLAG_NO_SERVE == 0;
        let want = if serves { mcfx_status::MCFX_OK } else { mcfx_status::MCFX_E_NOT_SERVING };
        assert_eq!(st, want);
        let endpoint =
            if serves { String::from_utf8(buf[..len].to_vec()).unwrap() } else { String::new() };
        Ok(Node { t, done, dir, endpoint })
    }

    /// Lets this node reach `other` as peer id `peer`.
    pub fn knows(&self, peer: u64, other: &Node) {
        self.dir.insert(peer, &other.endpoint);
    }

    pub fn register(&self, mem: &AlignedBuf) {
        // SAFETY: the buffer outlives the registration in every test.
        let st = unsafe { mcfx_register(self.t, mem.addr() as *mut c_void, mem.len()) };
        assert_eq!(st, mcfx_status::MCFX_OK, "{}", last_error());
    }

    pub fn submit(&self, ops: &[mcfx_op]) -> (mcfx_status, usize) {
        let mut accepted = usize::MAX;
        // SAFETY: live handle, ops slice.
        let st = unsafe { mcfx_submit(self.t, ops.as_ptr(), ops.len(), &mut accepted) };
        (st, accepted)
    }

    /// Submits and asserts every op was accepted.
    pub fn submit_ok(&self, ops: &[mcfx_op]) {
        let (st, n) = self.submit(ops);
        assert_eq!((st, n), (mcfx_status::MCFX_OK, ops.len()), "{}", last_error());
    }

    pub fn stats(&self) -> mcfx_stats {
        stats_of(self.t)
    }

    /// Destroys the transport now (Drop does it otherwise).
    pub fn destroy(&mut self) -> mcfx_status {
        let t = std::mem::replace(&mut self.t, std::ptr::null_mut());
        // SAFETY: t is live or NULL.
        unsafe { mcfx_destroy(t) }
    }
}

// SAFETY: the C ABI documents every mcfx_* function as thread-safe on a live
// handle; Node only destroys it in Drop (exclusive access).
unsafe impl Send for Node {}
// SAFETY: as above.
unsafe impl Sync for Node {}

impl Drop for Node {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Two transports in this process: `a` initiates and knows `b` as peer 1;
/// `src` is registered on `a`, `dst` on `b`, both `len` bytes.
///
/// Fields drop in declaration order: the transports are destroyed before the
/// buffers they registered are freed.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub src: AlignedBuf,
    pub dst: AlignedBuf,
}

impl Pair {
    pub fn new(len: usize) -> Pair {
        Pair::with(len, |_| {})
    }

    /// A pair whose initiator's config `tweak_a` adjusts before create.
    pub fn with(len: usize, tweak_a: impl FnOnce(&mut mcfx_config)) -> Pair {
        let a = Node::with(tweak_a);
        let b = Node::new();
        a.knows(1, &b);
        let src = AlignedBuf::new(len);
        let dst = AlignedBuf::new(len);
        a.register(&src);
        b.register(&dst);
        Pair { a, b, src, dst }
    }

    /// A write of the first `len` bytes of `src` to the start of `dst`.
    pub fn write(&self, len: u64, user_data: u64) -> mcfx_op {
        write(self.src.addr(), len, 1, self.dst.addr() as u64, user_data)
    }
}

/// This thread's last error message.
pub fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    // SAFETY: buf is writable for its length.
    let n = unsafe { mcfx_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.min(1023));
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn op(opcode: u32, local: usize, len: u64, peer: u64, remote: u64, user_data: u64) -> mcfx_op {
    mcfx_op {
        opcode,
        reserved: 0,
        local_addr: local as *mut c_void,
        length: len,
        peer_id: peer,
        remote_addr: remote,
        user_data,
    }
}

/// The stats of live handle `t`.
pub fn stats_of(t: *mut mcfx_transport) -> mcfx_stats {
    let mut s =
        mcfx_stats { struct_size: std::mem::size_of::<mcfx_stats>() as u32, ..Default::default() };
    // SAFETY: live handle (the caller's promise), sized struct.
    assert_eq!(unsafe { mcfx_get_stats(t, &mut s) }, mcfx_status::MCFX_OK);
    s
}

pub fn write(local: usize, len: u64, peer: u64, remote: u64, user_data: u64) -> mcfx_op {
    op(MCFX_OP_WRITE, local, len, peer, remote, user_data)
}

pub fn read(local: usize, len: u64, peer: u64, remote: u64, user_data: u64) -> mcfx_op {
    op(MCFX_OP_READ, local, len, peer, remote, user_data)
}

/// This thread's CPU time (user + system): what a piece of work cost,
/// without the time the thread waited for a core.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) the thread `tid` of this process has run, from
/// `/proc` (clock ticks: 10 ms apiece on Linux).
pub fn task_cpu_time(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The progress thread `tid` sleeps between its looks: over half a second
/// it runs under a quarter of the time. (Spinning, it ran all of it on an
/// idle machine; a busy machine only lowers the share, so this cannot fail
/// for load.)
pub fn assert_napping(tid: i32, what: &str) {
    let (cpu0, t0) = (task_cpu_time(tid), Instant::now());
    // A measurement window, not a synchronization.
    std::thread::sleep(Duration::from_millis(500));
    let (cpu1, t1) = (task_cpu_time(tid), Instant::now());
    let share = (cpu1 - cpu0).as_secs_f64() / (t1 - t0).as_secs_f64();
    assert!(share < 0.25, "{what}: the progress thread ran {:.0} % of the time", share * 100.0);
}

pub const LIMIT: Duration = Duration::from_secs(30);
pub const OK: mcfx_status = mcfx_status::MCFX_OK;

/// Polls `cond` until it holds; panics with `what` after [`LIMIT`]. For
/// conditions no callback reports (counters, thread counts), instead of a
/// sleep.
pub fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < until, "{what} (waited {LIMIT:?})");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---- the host log callback ----------------------------------------------------

/// Every message a transport's log callback received, with its level.
#[derive(Default)]
pub struct LogLines {
    pub lines: Mutex<Vec<(mcfx_log_level, String)>>,
    changed: Condvar,
}

impl LogLines {
    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits (bounded by [`LIMIT`]) for a line containing `word`; returns
    /// its level, `None` if none came.
    pub fn wait_for(&self, word: &str) -> Option<mcfx_log_level> {
        let deadline = Instant::now() + LIMIT;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some((level, _)) = lines.iter().find(|(_, l)| l.contains(word)) {
                return Some(*level);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn contains(&self, word: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|(_, l)| l.contains(word))
    }
}

unsafe extern "C-unwind" fn log_line(
    ctx: *mut c_void,
    level: mcfx_log_level,
    message: *const c_char,
) {
    // SAFETY: ctx is the test's LogLines (it outlives the transport);
    // message is NUL-terminated during the call.
    let (log, text) = unsafe { (&*(ctx as *const LogLines), std::ffi::CStr::from_ptr(message)) };
    log.lines.lock().unwrap().push((level, text.to_string_lossy().into_owned()));
    log.changed.notify_all();
}

/// A config tweak that sends the transport's log lines at `level` and more
/// severe to `log`, which must outlive the transport.
pub fn with_log(log: &Arc<LogLines>, level: mcfx_log_level) -> impl FnOnce(&mut mcfx_config) {
    let ctx = Arc::as_ptr(log) as *mut c_void;
    move |c| {
        c.log = Some(log_line);
        c.log_ctx = ctx;
        c.log_level = level as u32;
    }
}
