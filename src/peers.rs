//! Peers: resolving a peer id to an endpoint and connecting to it, off the
//! progress thread.
//!
//! The progress thread owns the [`PeerTable`] (no lock). When it meets a peer
//! it has no connection for, it files a [`ConnectRequest`]; a small pool of
//! connector threads calls the resolver callback and FlagCX's blocking
//! connect, and hands back a [`ConnectResult`]. A slow or dead peer occupies
//! one connector thread, never the progress thread or another peer's ops.
//!
//! Connector threads see only their [`Connector`] context, not the
//! transport's shared state.
//!
//! Invariant: the resolver callback is only called while holding a read lock
//! of `resolver_gate` and after checking that the transport is not closing
//! (the submission queue's gate, the transport's one shutdown flag); the
//! transport closes the gate before [`Connects::shutdown`], which takes the
//! write lock, so no resolver call runs after shutdown returns.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::MAX_ENDPOINT_LEN;
use crate::engine::EngineRef;
use crate::error::{Error, Status};
use crate::log::message;
use crate::queue::SubmitQueue;
use crate::stats::Stats;
use flagcx_sys::Conn;

/// Maps a peer id to its `host:port` endpoint; runs on a connector thread.
pub type ResolverFn = Box<dyn Fn(u64) -> std::result::Result<String, String> + Send + Sync>;

/// What a connector thread uses: the request/result queues, the resolver,
/// the engine to connect with, its counters, and the submission queue (to
/// wake the progress thread for a result, and whose gate says when to stop).
pub(crate) struct Connector<'a> {
    pub connects: &'a Connects,
    pub resolver: &'a ResolverFn,
    pub engine: &'a EngineRef,
    pub stats: &'a Stats,
    pub queue: &'a SubmitQueue,
}

/// How long destroy waits for a running resolver call before it logs a
/// warning (it keeps waiting).
const RESOLVER_WARN_AFTER: Duration = Duration::from_millis(100);

/// Why a connection is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectKind {
    /// The peer has no connection yet.
    First,
    /// A descriptor lookup failed: connect again so the peer's region list
    /// (FlagCX snapshots it at connect time) includes newer registrations.
    Refresh,
}

#[derive(Debug)]
pub struct ConnectRequest {
    pub peer: u64,
    pub kind: ConnectKind,
}

pub struct ConnectResult {
    pub peer: u64,
    pub kind: ConnectKind,
    pub outcome: Result<Conn, Error>,
}

/// The request and result queues between the progress thread and the
/// connector threads.
///
/// Memory (issue 17): nothing here aborts when an allocation fails. A
/// request that cannot be queued fails its connect at once; results have
/// room reserved (one slot per connector thread, at its start), and a
/// connector that finds none waits for the progress thread to take them;
/// messages are made on the stack (`log::message`).
#[derive(Default)]
pub(crate) struct Connects {
    /// Peers to connect, in order, at most one per peer; the progress
    /// thread pushes, connector threads pop. A connector checks the stop
    /// flag (the queue's gate) and waits on `requested` only while holding
    /// this lock.
    requests: Mutex<VecDeque<ConnectRequest>>,
    /// Signaled once per pushed request, and for all at shutdown (after the
    /// gate closed and the `requests` lock was taken and dropped, so no
    /// waiter misses it).
    requested: Condvar,
    /// Finished connects for the progress thread; connectors push, only the
    /// progress thread takes. Its capacity only grows.
    results: Mutex<Results>,
    /// Signaled when the progress thread took results (a connector waiting
    /// for room in a full `results` retries).
    taken: Condvar,
    /// True whenever `results` may be non-empty: set after each push,
    /// cleared under the lock just before taking everything; so a result is
    /// never left behind a false flag (at worst the progress thread takes an
    /// empty list once).
    has_results: AtomicBool,
    /// Read-held around every resolver call (taken after checking the gate);
    /// shutdown write-takes it once after the gate closed, so no resolver
    /// call runs after shutdown returns.
    resolver_gate: RwLock<()>,
    /// Connector threads counted by `thread_started` and not yet exited;
    /// shutdown waits (bounded) for it to reach 0.
    running: Mutex<usize>,
    /// Signaled when a connector thread exits (`running` decreased).
    exited: Condvar,
}

/// Finished connects, and the requests that could not be queued for want
/// of memory (each becomes a failed connect when the progress thread takes
/// the results).
#[derive(Default)]
struct Results {
    done: Vec<ConnectResult>,
    unqueued: ArrayVec<(u64, ConnectKind), 16>,
}

impl Connects {
    /// Files a connect for `peer`, unless one is already queued for it (one
    /// peer's requests never fill the queue). When there is no memory to
    /// queue it, the connect fails at once (`MCFX_E_CONNECT`), so the
    /// peer's ops fail instead of waiting for a connect that never comes.
    pub fn request(&self, peer: u64, kind: ConnectKind) {
        let mut q = self.requests.lock();
        if q.iter().any(|r| r.peer == peer) {
            return;
        }
        if q.try_reserve(1).is_ok() {
            q.push_back(ConnectRequest { peer, kind });
            drop(q);
            self.requested.notify_one();
            return;
        }
        drop(q);
        let mut results = self.results.lock();
        if results.unqueued.try_push((peer, kind)).is_err() {
            // Sixteen peers already wait for memory to fail their connects:
            // this one's ops fail at connect_timeout instead.
            tracing::error!(peer, "no memory to queue a connect (its ops fail at the timeout)");
            return;
        }
        self.has_results.store(true, SeqCst);
    }

    /// True when results wait; a cheap check the progress thread makes every
    /// pass before taking the lock.
    pub fn has_results(&self) -> bool {
        self.has_results.load(SeqCst)
    }

    /// Moves the results into `out` (which keeps its capacity across calls).
    /// When `out` cannot grow for all of them, moves what fits and leaves
    /// the rest for the next call.
    pub fn take_results(&self, out: &mut Vec<ConnectResult>) {
        if !self.has_results() {
            return;
        }
        let mut results = self.results.lock();
        self.has_results.store(false, SeqCst);
        let want = results.done.len() + results.unqueued.len();
        if out.capacity() - out.len() < want {
            let _ = out.try_reserve(want);
        }
        let fit = (out.capacity() - out.len()).min(results.done.len());
        out.extend(results.done.drain(..fit));
        while out.len() < out.capacity() {
            let Some((peer, kind)) = results.unqueued.pop() else { break };
            let why = message(format_args!("peer {peer}: no memory to queue its connect"));
            out.push(ConnectResult {
                peer,
                kind,
                outcome: Err(Error::new(Status::MCFX_E_CONNECT, why)),
            });
        }
        if !results.done.is_empty() || !results.unqueued.is_empty() {
            self.has_results.store(true, SeqCst);
        }
        drop(results);
        self.taken.notify_all();
    }

    /// Hands a finished connect to the progress thread. Allocates only when
    /// more results wait than there are connector threads; when even that
    /// fails, waits for the progress thread to take some (or for shutdown,
    /// which drops the result).
    fn push_result(&self, result: ConnectResult, queue: &SubmitQueue) {
        let mut results = self.results.lock();
        loop {
            let done = &mut results.done;
            if done.len() < done.capacity() || done.try_reserve(1).is_ok() {
                done.push(result);
                break;
            }
            if queue.is_closed() {
                return;
            }
            // The progress thread takes results every pass once woken.
            self.has_results.store(true, SeqCst);
            queue.notify();
            self.taken.wait_for(&mut results, Duration::from_millis(10));
        }
        self.has_results.store(true, SeqCst);
    }

    /// Stops the connector threads, once the transport's gate is closing
    /// (the caller closed the submission queue): no resolver call starts
    /// after this returns; waits up to `limit` for threads still inside
    /// FlagCX's blocking connect and reports how many were left running
    /// (they hold their own references and exit when the connect returns).
    pub fn shutdown(&self, limit: Duration) -> usize {
        // Take and drop the requests lock before the wake-up: a connector
        // that checked the gate under it (before it closed) is then already
        // waiting and gets the wake-up; without the lock it could miss it
        // and sit in wait forever (destroy detached it after
        // connect_timeout, with the engine it held).
        drop(self.requests.lock());
        self.requested.notify_all();
        self.taken.notify_all();
        // A resolver call may be running (the caller's code, which may use
        // its context until destroy returns): wait for it, without limit,
        // and say so.
        let gate = match self.resolver_gate.try_write_for(RESOLVER_WARN_AFTER) {
            Some(gate) => gate,
            None => {
                tracing::warn!(
                    "destroy is waiting for a resolver call to return (it may block; \
                     destroy cannot return while the caller's callback runs)"
                );
                self.resolver_gate.write()
            }
        };
        drop(gate);
        let until = Instant::now() + limit;
        let mut running = self.running.lock();
        while *running > 0 {
            if self.exited.wait_until(&mut running, until).timed_out() {
                break;
            }
        }
        *running
    }

    /// Counts a connector thread about to start (before `spawn`, so
    /// `shutdown` never misses it), and reserves a result slot for it.
    pub fn thread_started(&self) {
        *self.running.lock() += 1;
        let _ = self.results.lock().done.try_reserve(1);
    }

    /// Undoes `thread_started` when the spawn failed.
    pub fn thread_exited_early(&self) {
        *self.running.lock() -= 1;
    }
}

/// Body of one connector thread. Allocates nothing of its own after the
/// resolver returned (messages on the stack, results in reserved room), so
/// failed allocations fail a connect but never abort the host.
pub(crate) fn run_connector(ctx: Connector<'_>) {
    let connects = ctx.connects;
    loop {
        let request = {
            let mut q = connects.requests.lock();
            loop {
                if ctx.queue.is_closing() {
                    break None;
                }
                if let Some(r) = q.pop_front() {
                    break Some(r);
                }
                connects.requested.wait(&mut q);
            }
        };
        let Some(request) = request else { break };
        let outcome = connect(&ctx, request.peer);
        match &outcome {
            Ok(_) => Stats::add(&ctx.stats.connectors.connects, 1),
            Err(e) => {
                Stats::add(&ctx.stats.connectors.connect_failures, 1);
                tracing::warn!(peer = request.peer, error = %e, "peer connection failed");
            }
        }
        if request.kind == ConnectKind::Refresh && outcome.is_ok() {
            Stats::add(&ctx.stats.connectors.reconnects, 1);
        }
        let result = ConnectResult { peer: request.peer, kind: request.kind, outcome };
        connects.push_result(result, ctx.queue);
        ctx.queue.notify();
    }
    *connects.running.lock() -= 1;
    connects.exited.notify_all();
}

fn connect(ctx: &Connector<'_>, peer: u64) -> Result<Conn, Error> {
    let endpoint = {
        let _gate = ctx.connects.resolver_gate.read();
        if ctx.queue.is_closing() {
            let why = message(format_args!("peer {peer}: the transport is shutting down"));
            return Err(Error::new(Status::MCFX_E_CANCELED, why));
        }
        (ctx.resolver)(peer).map_err(|why| {
            Error::new(Status::MCFX_E_RESOLVE, message(format_args!("peer {peer}: {why}")))
        })?
    };
    let (host, port) = parse_endpoint(&endpoint).map_err(|why| {
        let status = match why {
            BadEndpoint::NoMemory => Status::MCFX_E_CONNECT,
            _ => Status::MCFX_E_RESOLVE,
        };
        Error::new(status, message(format_args!("peer {peer}: endpoint {endpoint:?} {why}")))
    })?;
    tracing::debug!(peer, %endpoint, "connecting");
    ctx.engine.engine.connect(&host, 0, port).map_err(|e| {
        let why = message(format_args!("peer {peer} at {endpoint}: FlagCX connect: {e}"));
        Error::new(Status::MCFX_E_CONNECT, why)
    })
}

/// What is wrong with an endpoint (see [`parse_endpoint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadEndpoint {
    Length,
    Characters,
    NoPort,
    UnclosedBracket,
    UnbracketedIpv6,
    EmptyHost,
    BadPort,
    /// Not the endpoint's fault: no memory for the host's C string.
    NoMemory,
}

impl fmt::Display for BadEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadEndpoint::Length => write!(f, "must be 1..={MAX_ENDPOINT_LEN} bytes of host:port"),
            BadEndpoint::Characters => f.write_str("has spaces or non-printable characters"),
            BadEndpoint::NoPort => f.write_str("has no :port"),
            BadEndpoint::UnclosedBracket => f.write_str("has an unclosed [ in its host"),
            BadEndpoint::UnbracketedIpv6 => f.write_str("has an IPv6 host without brackets"),
            BadEndpoint::EmptyHost => f.write_str("has an empty host"),
            BadEndpoint::BadPort => f.write_str("has no valid port (1..=65535)"),
            BadEndpoint::NoMemory => f.write_str("could not be copied (no memory)"),
        }
    }
}

/// Splits `host:port` (IPv6 as `[addr]:port`) into FlagCX's connect
/// arguments, rejecting anything malformed. The host's C string is the one
/// allocation, made fallibly.
pub fn parse_endpoint(endpoint: &str) -> Result<(CString, u16), BadEndpoint> {
    if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(BadEndpoint::Length);
    }
    if !endpoint.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadEndpoint::Characters);
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(BadEndpoint::NoPort);
    };
    let host = match host.strip_prefix('[') {
        Some(v6) => match v6.strip_suffix(']') {
            Some(inner) => inner,
            None => return Err(BadEndpoint::UnclosedBracket),
        },
        None if host.contains(':') => return Err(BadEndpoint::UnbracketedIpv6),
        None => host,
    };
    if host.is_empty() {
        return Err(BadEndpoint::EmptyHost);
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(BadEndpoint::BadPort),
    };
    // With room for the NUL reserved, CString::new allocates nothing more.
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(host.len() + 1).map_err(|_| BadEndpoint::NoMemory)?;
    bytes.extend_from_slice(host.as_bytes());
    let host = CString::new(bytes).map_err(|_| BadEndpoint::Characters)?;
    Ok((host, port))
}

/// Connection state of one peer (progress thread only).
pub struct Peer {
    pub conn: Option<Arc<Conn>>,
    /// A connect (first or refresh) is under way.
    pub connecting: bool,
    /// Ops (slot indices) waiting for `connecting` to finish.
    pub waiting: Vec<u32>,
    /// When the last refresh reconnect finished (see `REFRESH_INTERVAL` in
    /// `progress`).
    pub refreshed_at: Option<std::time::Instant>,
}

/// Hashes a peer id with one multiply: ids are chosen by the caller, not by
/// an adversary, and this lookup is on every op's path (SipHash costs ~20 ns).
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits
        // hashbrown uses.
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The progress thread's peers.
#[derive(Default)]
pub struct PeerTable {
    pub peers: HashMap<u64, Peer, BuildHasherDefault<IdHasher>>,
}

impl PeerTable {
    /// The peer's entry, created (and its first connect requested) if new.
    pub fn entry(&mut self, peer: u64, connects: &Connects) -> &mut Peer {
        self.peers.entry(peer).or_insert_with(|| {
            connects.request(peer, ConnectKind::First);
            Peer { conn: None, connecting: true, waiting: Vec::new(), refreshed_at: None }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint;

    #[test]
    fn endpoints_parse_with_ipv4_ipv6_and_names() {
        let p = |s| parse_endpoint(s).map(|(h, port)| (h.into_string().unwrap(), port));
        assert_eq!(p("127.0.0.1:4000"), Ok(("127.0.0.1".into(), 4000)));
        assert_eq!(p("[::1]:65535"), Ok(("::1".into(), 65535)));
        assert_eq!(p("node-7.local:1"), Ok(("node-7.local".into(), 1)));
    }

    #[test]
    fn garbage_endpoints_are_rejected() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            ":80",
            "::1:80",
            "[::1:80",
            "host name:80",
            "h\u{7}:80",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_endpoint(&"a".repeat(300)).is_err());
    }
}
