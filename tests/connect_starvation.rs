//! Stuck peers do not starve the others' connections (issue 18 item 1).
//!
//! With `connect_threads` = 4 and N peers whose resolver blocks (on a
//! condvar the test releases at the end) or whose FlagCX handshake hangs (a
//! listener that accepts and never answers), a write to a fifth, healthy
//! peer completes OK while all of them are still stuck, for N = 4 and N =
//! 16; past the cap on threads out of the pool, a new peer's connect fails
//! at once with a log line; destroy does not wait for a hung handshake.
//!
//! `connect_timeout_ms` is 60 s and no wait here is longer than 30 s
//! (`LIMIT`): what completes, completes because the stuck attempts left the
//! pool, not because a timeout freed their threads (before, the healthy op
//! waited for the timeout and failed `MCFX_E_CONNECT`, its resolver never
//! called). Nothing is timed: each assertion is about what happened while
//! the stuck peers were still stuck.

mod common;

use std::ffi::{c_char, c_void};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};

use common::*;
use flagcx_sys::sw::{self, Knob};
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::mcfx_status::*;
use mooncake_flagcx::ffi::*;

/// The transport's pool.
const THREADS: usize = 4;
/// Threads out of the pool at most (4 per pool thread), plus the standby.
const MOST_THREADS: usize = THREADS + 4 * THREADS + 1;
/// Peer ids of the stuck peers start here; the healthy peer is 1.
const STUCK: u64 = 1000;
/// The healthy op's user_data.
const HEALTHY: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stuck {
    /// The resolver call blocks until released.
    Resolver,
    /// The resolver answers a listener that accepts the connection and never
    /// says hello: FlagCX's handshake hangs until the listener goes.
    Handshake,
}

/// A TCP listener on loopback that accepts connections and holds them,
/// silent, until `release`.
struct Silent {
    endpoint: String,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (Arc::clone(&held), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(SeqCst) {
                    break;
                }
                h.lock().unwrap().push(stream.unwrap());
            }
        });
        Silent { endpoint, held, stop, thread: Some(thread) }
    }

    /// Handshakes hanging on it now.
    fn holding(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Closes every held connection (the handshakes fail) and the listener.
    fn release(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.store(true, SeqCst);
        // Wakes the accept loop, which sees `stop`.
        drop(TcpStream::connect(&self.endpoint));
        thread.join().unwrap();
        self.held.lock().unwrap().clear();
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.release();
    }
}

/// The resolver's context: answers the healthy peer, blocks the stuck ones
/// (or answers them the silent listener).
struct Resolver {
    healthy: String,
    /// For `Stuck::Handshake`: the silent listener's endpoint.
    silent: Option<String>,
    released: Mutex<bool>,
    wake: Condvar,
    /// Stuck resolver calls that started / returned.
    entered: AtomicUsize,
    returned: AtomicUsize,
}

impl Resolver {
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

/// Releases the resolver when dropped: declared after the transport, it
/// goes first, so a failing test does not leave destroy waiting for ever.
struct ReleaseOnDrop(Arc<Resolver>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

unsafe extern "C-unwind" fn resolve(
    ctx: *mut c_void,
    peer: u64,
    buf: *mut c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the Arc<Resolver> the test keeps alive past destroy.
    let r = unsafe { &*(ctx as *const Resolver) };
    let endpoint = match (peer, &r.silent) {
        (1, _) => &r.healthy,
        (_, Some(silent)) => silent,
        (_, None) => {
            r.entered.fetch_add(1, SeqCst);
            let mut released = r.released.lock().unwrap();
            while !*released {
                released = r.wake.wait(released).unwrap();
            }
            r.returned.fetch_add(1, SeqCst);
            return -1;
        }
    };
    // SAFETY: the transport's buffer, writable for cap bytes.
    unsafe { answer(endpoint, buf, cap) }
}

/// A transport with a pool of `THREADS`, a 60 s connect timeout and the
/// stuck resolver; a healthy peer (1) with `dst` registered; `src` on `a`.
struct Setup {
    // Fields drop in order: the release first, then the transports, then
    // the buffers they registered and the contexts their callbacks use.
    _release: ReleaseOnDrop,
    a: Node,
    _healthy: Node,
    src: AlignedBuf,
    dst: AlignedBuf,
    resolver: Arc<Resolver>,
    lines: Arc<LogLines>,
}

impl Setup {
    fn new(stuck: Stuck, silent: Option<&Silent>) -> Setup {
        let healthy = Node::new();
        let resolver = Arc::new(Resolver {
            healthy: healthy.endpoint.clone(),
            silent: silent.map(|s| s.endpoint.clone()),
            released: Mutex::new(false),
            wake: Condvar::new(),
            entered: AtomicUsize::new(0),
            returned: AtomicUsize::new(0),
        });
        assert_eq!(stuck == Stuck::Handshake, silent.is_some());
        let lines = Arc::new(LogLines::default());
        let log = with_log(&lines, mcfx_log_level::MCFX_LOG_WARN);
        let a = Node::with(|c| {
            c.connect_threads = THREADS as u32;
            c.connect_timeout_ms = 60_000;
            c.op_timeout_ms = 120_000;
            c.resolve = Some(resolve);
            c.resolve_ctx = Arc::as_ptr(&resolver) as *mut c_void;
            log(c);
        });
        let (src, dst) = (AlignedBuf::new(4096), AlignedBuf::new(4096));
        a.register(&src);
        healthy.register(&dst);
        let release = ReleaseOnDrop(Arc::clone(&resolver));
        Setup { _release: release, a, _healthy: healthy, src, dst, resolver, lines }
    }

    /// One write to each of `n` stuck peers (user_data 0..n).
    fn write_to_stuck_peers(&self, n: usize) {
        let ops: Vec<_> = (0..n as u64)
            .map(|i| write(self.src.addr(), 64, STUCK + i, self.dst.addr() as u64, i))
            .collect();
        self.a.submit_ok(&ops);
    }

    fn write_to_healthy_peer(&self) -> mcfx_status {
        self.a.submit_ok(&[write(self.src.addr(), 4096, 1, self.dst.addr() as u64, HEALTHY)]);
        self.a.done.wait_one(HEALTHY, LIMIT)
    }

    fn logged(&self, words: &str) -> bool {
        self.lines.contains(words)
    }
}

/// Connector threads (named `mcfx-connect-*`) of this process.
fn connector_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let comm = |t: std::fs::DirEntry| std::fs::read_to_string(t.path().join("comm")).ok();
    tasks.filter_map(|t| comm(t.ok()?)).filter(|n| n.starts_with("mcfx-connect")).count()
}

fn a_healthy_peer_connects_while_n_peers_are_stuck(n: usize, stuck: Stuck) {
    let _g = serial();
    let mut silent = (stuck == Stuck::Handshake).then(Silent::start);
    if silent.is_some() {
        // The handshake's own socket timeout, out of the way.
        assert!(sw::set_knob(Knob::ConnectTimeoutMs, 600_000));
    }
    let mut mem = Setup::new(stuck, silent.as_ref());
    let stuck_now = |s: &Setup, silent: &Option<Silent>| match silent {
        Some(silent) => silent.holding(),
        None => s.resolver.entered.load(SeqCst),
    };
    mem.src.bytes().fill(0xab);
    mem.write_to_stuck_peers(n);
    // Every pool thread is stuck (the others may still be queued).
    wait_until(|| stuck_now(&mem, &silent) >= THREADS, "the pool's threads to get stuck");

    assert_eq!(mem.write_to_healthy_peer(), OK, "the healthy peer's write");
    assert!(mem.dst.bytes().iter().all(|&b| b == 0xab), "the healthy peer's data");
    // ... while every stuck peer that started is still stuck.
    assert_eq!(mem.resolver.returned.load(SeqCst), 0, "a blocked resolver returned");
    if let Some(silent) = &silent {
        assert!(silent.holding() >= THREADS, "a hung handshake ended");
    }
    assert_eq!(mem.a.done.count(), 1, "a stuck peer's op completed before the release");
    assert!(
        connector_threads() <= MOST_THREADS + THREADS,
        "{} connector threads: more than the cap ({MOST_THREADS}) plus the healthy node's",
        connector_threads()
    );
    assert!(mem.logged("leaves the connector pool"), "no log line for a slow connect");

    // Released, every stuck op fails once: RESOLVE (the resolver then says
    // it does not know the peer) or CONNECT (the handshake failed).
    mem.resolver.release();
    if let Some(silent) = &mut silent {
        silent.release();
    }
    mem.a.done.wait_for(n + 1, LIMIT);
    let by_status = mem.a.done.exactly_once();
    let want = if stuck == Stuck::Resolver { MCFX_E_RESOLVE } else { MCFX_E_CONNECT };
    assert_eq!(by_status.get(&want), Some(&n), "{by_status:?}");
    drop(mem);
    assert_no_violations();
}

#[test]
fn a_healthy_peer_connects_while_as_many_resolvers_as_connector_threads_block() {
    a_healthy_peer_connects_while_n_peers_are_stuck(THREADS, Stuck::Resolver);
}

#[test]
fn a_healthy_peer_connects_while_four_times_as_many_resolvers_as_connector_threads_block() {
    a_healthy_peer_connects_while_n_peers_are_stuck(4 * THREADS, Stuck::Resolver);
}

#[test]
fn a_healthy_peer_connects_while_as_many_handshakes_as_connector_threads_hang() {
    a_healthy_peer_connects_while_n_peers_are_stuck(THREADS, Stuck::Handshake);
}

#[test]
fn a_healthy_peer_connects_while_four_times_as_many_handshakes_as_connector_threads_hang() {
    a_healthy_peer_connects_while_n_peers_are_stuck(4 * THREADS, Stuck::Handshake);
}

/// With every pool thread stuck and as many out of the pool as allowed, a
/// new peer's connect fails at once (with a log line) instead of waiting
/// for the timeout; the threads stay within the cap.
#[test]
fn past_the_cap_on_stuck_connects_a_new_peer_fails_at_once_with_a_log_line() {
    let _g = serial();
    let mem = Setup::new(Stuck::Resolver, None);
    let n = MOST_THREADS - 1; // the pool and every thread allowed out of it
    mem.write_to_stuck_peers(n);
    wait_until(|| mem.resolver.entered.load(SeqCst) == n, "every stuck resolver to start");

    assert_eq!(mem.write_to_healthy_peer(), MCFX_E_CONNECT, "the new peer's write");
    assert!(mem.logged("failing this connect at once"), "no log line for the refusal");
    assert_eq!(mem.resolver.returned.load(SeqCst), 0, "a blocked resolver returned");
    assert!(
        connector_threads() <= MOST_THREADS + THREADS,
        "{} connector threads: more than the cap ({MOST_THREADS}) plus the healthy node's",
        connector_threads()
    );
    mem.resolver.release();
    mem.a.done.wait_for(n + 1, LIMIT);
    mem.a.done.exactly_once();
}

/// Destroy waits for a blocked resolver (the callback may use its context
/// until destroy returns) but not for a hung FlagCX handshake, which calls
/// nothing of the caller's.
#[test]
fn destroy_does_not_wait_for_a_hung_handshake() {
    let _g = serial();
    let mut silent = Silent::start();
    assert!(sw::set_knob(Knob::ConnectTimeoutMs, 600_000));
    let mut mem = Setup::new(Stuck::Handshake, Some(&silent));
    mem.write_to_stuck_peers(1);
    wait_until(|| silent.holding() == 1, "the handshake to hang");

    let mut a = std::mem::replace(&mut mem.a, Node::new());
    let done = Arc::clone(&a.done);
    let (tx, rx) = std::sync::mpsc::channel();
    let destroyer = std::thread::spawn(move || {
        let st = a.destroy();
        let _ = tx.send(st);
    });
    let st = rx.recv_timeout(LIMIT);
    assert_eq!(st, Ok(OK), "destroy did not return while the handshake hung");
    assert_eq!(silent.holding(), 1, "the handshake ended before destroy returned");
    destroyer.join().unwrap();
    // Its op was canceled by destroy; the handshake is left to fail alone.
    assert_eq!(done.status(0), MCFX_E_CANCELED);
    silent.release();
}
