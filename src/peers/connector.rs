//! Connector threads: resolving a peer id to an endpoint and connecting to
//! it, off the progress thread.
//!
//! Owns the connector pool ([`Connects`]: requests, results, threads), the
//! [`Connector`] context its threads see, and [`Connection`], what a
//! connect produces. The progress thread files a [`ConnectRequest`] (at
//! most one per peer; `peers::state` decides when); connector threads call
//! the resolver callback and FlagCX's blocking connect, and hand back a
//! [`ConnectResult`].
//!
//! One peer's connect cannot starve another's (issue 18). The transport
//! starts `connect_threads` connector threads: the pool. An attempt (the
//! resolver call and FlagCX's connect) that runs longer than
//! [`SLOW_CONNECT`] leaves the pool: its thread is no longer counted, and a
//! standby thread takes its place, so a resolver or handshake that blocks
//! for good holds no slot that another peer waits for. The standby exists
//! only while every slot is busy: the thread that takes the last free slot
//! starts it, and it watches the oldest attempt. At most
//! [`DETACHED_PER_THREAD`] x `connect_threads` threads may be out of the
//! pool; at that cap, while every slot is stuck too, queued requests fail at
//! once (`MCFX_E_CONNECT`, with a log line) instead of waiting for a slot.
//! Requests are served in order, one per peer, so one peer cannot fill the
//! queue.
//!
//! Connector threads see only their [`Connector`] context, not the
//! transport's shared state.
//!
//! Invariants:
//! - the resolver callback is only called while holding a read lock of
//!   `resolver_gate` and after checking that the transport is not closing
//!   (the submission queue's gate, the transport's one shutdown flag); the
//!   transport closes the gate before [`Connects::shutdown`], which takes the
//!   write lock, so no resolver call runs after shutdown returns, on any
//!   connector thread, in the pool or out of it;
//! - shutdown never waits for FlagCX's connect (it calls nothing of the
//!   caller's; the thread holds its own references and exits when it
//!   returns);
//! - the pool's own threads (the transport's) do not return before every
//!   helper thread (standbys, and the threads they become) has stopped using
//!   its context (see `spawn_helper`);
//! - a [`Connection`]'s `made` is read before its FlagCX connect starts, so
//!   the peer's regions it describes are at least that recent.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::clock::MonoTime;
use crate::config::MAX_ENDPOINT_LEN;
use crate::error::{Error, Status};
use crate::logging::message;
use crate::process_engine::EngineRef;
use crate::queue::SubmitQueue;
use crate::stats::Stats;
use flagcx_sys::Conn;

/// Maps a peer id to its `host:port` endpoint; runs on a connector thread.
pub type ResolverFn = Box<dyn Fn(u64) -> std::result::Result<String, String> + Send + Sync>;

/// What a connector thread uses: the request/result queues, the resolver,
/// the engine to connect with, its counters, and the submission queue (to
/// wake the progress thread for a result, and whose gate says when to stop).
#[derive(Clone, Copy)]
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

/// An attempt (resolver call and FlagCX connect) running longer than this
/// leaves the pool (see the module doc). Far above a connect on a working
/// network (a few ms), far below `connect_timeout_ms` (10 s by default): a
/// healthy peer queued behind stuck ones waits a few of these, not the
/// timeout.
pub(crate) const SLOW_CONNECT: Duration = Duration::from_millis(200);

/// Threads out of the pool at most, per pool thread.
pub(crate) const DETACHED_PER_THREAD: usize = 4;

/// Name of the threads the pool starts itself (the transport's are
/// `mcfx-connect-<i>`).
pub(crate) const STANDBY_NAME: &str = "mcfx-connect-x";

/// Why a connection is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectKind {
    /// The peer has no connection yet.
    First,
    /// A descriptor lookup failed on a connection older than its op, or a
    /// transfer failed: connect again so the peer's region list (FlagCX
    /// snapshots it at connect time) includes newer registrations and keys.
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
    pub outcome: Result<Connection, Error>,
}

/// A shared connection: the peer table, a pass's groups and the calls in
/// flight hold it. Allocated fallibly (`PeerTable::land`): a connect that
/// lands without memory for it fails its waiting ops `MCFX_E_NO_MEMORY`.
pub type SharedConn = crate::fallible::TryArc<Connection>;

/// A connection to a peer and what tells which ops it can judge: FlagCX
/// describes the peer's regions as they were when it was made (its
/// snapshot), so a remote range it does not describe is missing for an op
/// only when it was made after that op was submitted (see
/// `progress::Progress::covers`).
pub struct Connection {
    conn: Conn,
    /// The exact clock when its FlagCX connect began (the clock submit
    /// stamps ops with): the snapshot was taken after this reading, so
    /// after any submit call whose reading is smaller (see `MonoTime`).
    pub made: MonoTime,
    /// The number of the connect request that made it
    /// (`PeerTable::requested`, set by the progress thread when it lands):
    /// every op that left the queue before that request was filed was
    /// submitted before the connection was made.
    pub request: u32,
}

impl std::ops::Deref for Connection {
    type Target = Conn;
    #[inline]
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Connection {
    /// A connection made by hand (tests), stamped now.
    #[cfg(test)]
    pub(crate) fn for_test(conn: Conn) -> Connection {
        Connection { conn, made: MonoTime::exact(), request: 0 }
    }
}

/// The request and result queues between the progress thread and the
/// connector threads, and the pool's bookkeeping.
///
/// Memory (issue 17): nothing here aborts when an allocation fails. A
/// request that cannot be queued fails its connect at once; results have
/// room reserved (one slot per connector thread, at its start), and a
/// connector that finds none waits for the progress thread to take them;
/// messages are made on the stack (`logging::message`); a helper thread that
/// cannot be started is not (the pool goes on without it, and logs it).
#[derive(Default)]
pub(crate) struct Connects {
    /// Requests and threads. A connector checks the stop flag (the queue's
    /// gate) and waits on `changed` only while holding this lock.
    pool: Mutex<Pool>,
    /// Signaled (all waiters) when a request is queued, an attempt ends, a
    /// thread leaves, and at shutdown (after the gate closed and the `pool`
    /// lock was taken and dropped, so no waiter misses it).
    changed: Condvar,
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
    /// Helper threads that still hold a context; in an `Arc` of its own
    /// (see `spawn_helper`).
    helpers: Arc<Helpers>,
    /// Starts a standby helper thread with its own hold on the transport's
    /// shared state (set by the transport at create; see `spawn_helper`).
    standby: std::sync::OnceLock<StandbySpawner>,
}

/// Starts one standby connector thread that runs [`run_standby`] (the
/// transport builds it: only it can give the thread a hold on the shared
/// state the context borrows from).
pub(crate) type StandbySpawner =
    Box<dyn Fn() -> Result<(), crate::threads::SpawnError> + Send + Sync>;

/// The pool's bookkeeping (under `Connects::pool`).
#[derive(Default)]
struct Pool {
    /// Peers to connect, in order, at most one per peer.
    requests: VecDeque<ConnectRequest>,
    /// Threads the transport started (`thread_started`): the pool's size.
    size: usize,
    /// Pool threads waiting for a request.
    idle: usize,
    /// Attempts under way, in the pool or out of it. Room for one per
    /// thread is reserved when the thread starts.
    attempts: Vec<Attempt>,
    /// Attempts of `attempts` out of the pool.
    detached: usize,
    /// Connector threads running (the transport's and helpers; a thread
    /// of the transport that only waits for helpers to finish is not).
    alive: usize,
    /// Of `alive`: threads inside FlagCX's connect (shutdown leaves them).
    in_flagcx: usize,
    /// A standby thread is watching (or being started).
    standby: bool,
    /// Numbers the attempts.
    next_attempt: u64,
}

struct Attempt {
    id: u64,
    peer: u64,
    started: Instant,
    /// Out of the pool: it ran longer than `SLOW_CONNECT`.
    detached: bool,
}

impl Pool {
    /// Attempts in the pool.
    fn busy(&self) -> usize {
        self.attempts.len() - self.detached
    }

    /// The most threads that may be out of the pool.
    fn max_detached(&self) -> usize {
        DETACHED_PER_THREAD * self.size
    }

    /// The oldest attempt in the pool, if any.
    fn oldest_in_pool(&mut self) -> Option<&mut Attempt> {
        self.attempts.iter_mut().filter(|a| !a.detached).min_by_key(|a| a.started)
    }
}

/// Helper threads alive (see `spawn_helper`).
#[derive(Default)]
struct Helpers {
    alive: Mutex<usize>,
    gone: Condvar,
}

thread_local! {
    /// The `Connects` whose connector thread this is (its address; 0 on
    /// other threads): tells shutdown it was called from one of its own
    /// resolver calls.
    static OWN: Cell<usize> = const { Cell::new(0) };
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
        let mut pool = self.pool.lock();
        if pool.requests.iter().any(|r| r.peer == peer) {
            return;
        }
        if pool.requests.try_reserve(1).is_ok() {
            pool.requests.push_back(ConnectRequest { peer, kind });
            drop(pool);
            self.changed.notify_all();
            return;
        }
        drop(pool);
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
            let outcome = Err(Error::new(Status::MCFX_E_CONNECT, why));
            out.push(ConnectResult { peer, kind, outcome });
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
    /// (the caller closed the submission queue): waits for resolver calls
    /// that are running (on any connector thread, in the pool or out of it:
    /// the callback may use its context until destroy returns), so that none
    /// runs after this returns; then waits, at most `limit`, for every
    /// connector thread that is not inside FlagCX's connect to exit, and
    /// returns how many are left (all inside FlagCX's connect, which calls
    /// nothing of the caller's: they hold their own references and exit
    /// when it returns). Destroy never waits for FlagCX's connect.
    pub fn shutdown(&self, limit: Duration) -> usize {
        // Take and drop the pool lock before the wake-up: a connector that
        // checked the gate under it (before it closed) is then already
        // waiting and gets the wake-up; without the lock it could miss it
        // and sit in wait forever (destroy left it behind, with the engine it
        // held).
        drop(self.pool.lock());
        self.changed.notify_all();
        self.taken.notify_all();
        // Called from one of this transport's resolver calls on a thread the
        // transport does not know as its own (a helper: the transport's
        // IN_CALLBACK check knows only the threads it started): waiting for
        // that call would wait for ever; the call and its thread are left.
        let inside = self.on_own_thread();
        if inside {
            tracing::error!(
                "destroy called from this transport's own resolver callback (on a connector \
                 thread the transport did not start): not waiting for that call"
            );
        } else {
            // A resolver call may be running (the caller's code, which may
            // use its context until destroy returns): wait for it, without
            // limit, and say so.
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
        }
        let until = Instant::now() + limit;
        let mut pool = self.pool.lock();
        while pool.alive - usize::from(inside) > pool.in_flagcx {
            if self.changed.wait_until(&mut pool, until).timed_out() {
                break;
            }
        }
        pool.alive
    }

    /// Whether the calling thread is one of this transport's connector
    /// threads (the transport's own or a helper).
    pub(crate) fn on_own_thread(&self) -> bool {
        OWN.try_with(Cell::get).unwrap_or(0) == self as *const Connects as usize
    }

    /// Counts a connector thread of the transport about to start (before
    /// `spawn`, so `shutdown` never misses it): the pool grows by one, and
    /// room for its attempt and its result is reserved.
    pub fn thread_started(&self) {
        let mut pool = self.pool.lock();
        pool.size += 1;
        pool.alive += 1;
        let _ = pool.attempts.try_reserve(1 + DETACHED_PER_THREAD);
        drop(pool);
        let _ = self.results.lock().done.try_reserve(1);
    }

    /// Undoes `thread_started` when the spawn failed.
    pub fn thread_exited_early(&self) {
        let mut pool = self.pool.lock();
        pool.size -= 1;
        pool.alive -= 1;
    }
}

/// Body of one of the transport's connector threads: a pool thread until
/// shutdown; then it waits for the helper threads (which borrow its context)
/// to finish.
pub(crate) fn run_connector(ctx: Connector<'_>) {
    ctx.connects.pool.lock().idle += 1;
    work(ctx, Role::Pool);
    let helpers = &ctx.connects.helpers;
    let mut alive = helpers.alive.lock();
    while *alive > 0 {
        helpers.gone.wait(&mut alive);
    }
}

/// What a connector thread is doing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// In the pool: takes requests (counted in `idle` while it waits).
    Pool,
    /// Watches the pool's attempts while every slot is busy; becomes a pool
    /// thread when it takes the place of one that ran too long.
    Standby,
}

/// A connector thread's loop, from `role` until shutdown (or until it is
/// not needed: a standby once no attempt is under way, a thread back from a
/// long attempt when the pool is full). Allocates nothing of its own after
/// the resolver returned (messages on the stack, results in reserved room),
/// so failed allocations fail a connect but never abort the host.
fn work(ctx: Connector<'_>, mut role: Role) {
    let c = ctx.connects;
    OWN.with(|o| o.set(c as *const Connects as usize));
    let mut pool = c.pool.lock();
    loop {
        if ctx.queue.is_closing() {
            if role == Role::Pool {
                pool.idle -= 1;
            }
            break;
        }
        if role == Role::Standby {
            match watch(&ctx, &mut pool) {
                Watch::Wait(until) => {
                    c.changed.wait_until(&mut pool, until);
                }
                Watch::Join => {
                    role = Role::Pool;
                    pool.idle += 1;
                }
                Watch::Leave => break,
            }
            continue;
        }
        let Some(request) = pool.requests.pop_front() else {
            c.changed.wait(&mut pool);
            continue;
        };
        pool.idle -= 1;
        let id = pool.next_attempt;
        pool.next_attempt += 1;
        // Room was reserved when the thread started; a failure to grow is
        // harmless (the attempt is then not watched).
        if pool.attempts.len() < pool.attempts.capacity() || pool.attempts.try_reserve(1).is_ok() {
            let peer = request.peer;
            pool.attempts.push(Attempt { id, peer, started: Instant::now(), detached: false });
        }
        // Taking the last free slot: start a standby, unless one is there.
        let standby = pool.busy() >= pool.size
            && !pool.standby
            && pool.alive < pool.size + pool.max_detached() + 1;
        if standby {
            pool.standby = true;
            pool.alive += 1;
        }
        drop(pool);
        if standby {
            spawn_helper(&ctx);
        }
        attempt(&ctx, request);
        pool = c.pool.lock();
        let detached = match pool.attempts.iter().position(|a| a.id == id) {
            Some(at) => pool.attempts.swap_remove(at).detached,
            None => false,
        };
        if detached {
            pool.detached -= 1;
            if pool.idle + pool.busy() >= pool.size {
                // The pool is whole without this thread: it leaves.
                break;
            }
        }
        pool.idle += 1;
        c.changed.notify_all();
    }
    pool.alive -= 1;
    drop(pool);
    c.changed.notify_all();
}

/// What a standby does next.
enum Watch {
    /// Sleep until then (or a change).
    Wait(Instant),
    /// Join the pool (an attempt left it).
    Join,
    /// Exit (no attempt is under way in the pool).
    Leave,
}

/// The standby's look at the pool: an attempt in the pool for longer than
/// `SLOW_CONNECT` leaves it (the standby takes its place), unless
/// `max_detached` threads are out already; then, while every slot is
/// stuck, the queued requests fail at once.
fn watch(ctx: &Connector<'_>, pool: &mut MutexGuard<'_, Pool>) -> Watch {
    let now = Instant::now();
    let (detached, max, size) = (pool.detached, pool.max_detached(), pool.size);
    let Some(oldest) = pool.oldest_in_pool() else {
        pool.standby = false;
        return Watch::Leave;
    };
    let slow_at = oldest.started + SLOW_CONNECT;
    if now < slow_at {
        return Watch::Wait(slow_at);
    }
    if detached < max {
        oldest.detached = true;
        let (peer, ms) = (oldest.peer, now.duration_since(oldest.started).as_millis());
        pool.detached += 1;
        pool.standby = false;
        tracing::warn!(
            peer,
            ms,
            detached = detached + 1,
            "a connect is slow: its thread leaves the connector pool and another takes its place"
        );
        return Watch::Join;
    }
    // At the cap. Requests wait while some slot may still free up soon.
    let now_stuck = |a: &Attempt| a.detached || a.started + SLOW_CONNECT <= now;
    if pool.attempts.iter().all(now_stuck) && pool.busy() >= size && pool.idle == 0 {
        let mut failing = ArrayVec::<ConnectRequest, 64>::new();
        while !failing.is_full() {
            let Some(r) = pool.requests.pop_front() else { break };
            failing.push(r);
        }
        // Results may wait for the progress thread: not under the pool lock.
        MutexGuard::unlocked(pool, || {
            for r in failing {
                tracing::warn!(
                    peer = r.peer,
                    detached,
                    "every connector thread is stuck in a connect (as many as allowed out of \
                     the pool): failing this connect at once"
                );
                let why = message(format_args!(
                    "peer {}: no connector thread free ({detached} connects stuck longer than \
                     {} ms, the most allowed)",
                    r.peer,
                    SLOW_CONNECT.as_millis()
                ));
                let outcome = Err(Error::new(Status::MCFX_E_CONNECT, why));
                let result = ConnectResult { peer: r.peer, kind: r.kind, outcome };
                ctx.connects.push_result(result, ctx.queue);
                ctx.queue.notify();
            }
        });
    }
    // Look again when an attempt ends (a change) or, at the latest, soon.
    Watch::Wait(Instant::now() + SLOW_CONNECT)
}

/// Starts a helper thread as the standby (`Pool::standby` and `alive`
/// already count it; undone if it cannot start).
fn spawn_helper(ctx: &Connector<'_>) {
    let c = ctx.connects;
    *c.helpers.alive.lock() += 1;
    let started = match c.standby.get() {
        Some(spawn) => spawn(),
        None => Err(crate::threads::SpawnError::NoMemory),
    };
    if let Err(e) = started {
        // The thread did not start: undo what it would have.
        *c.helpers.alive.lock() -= 1;
        let mut pool = c.pool.lock();
        pool.standby = false;
        pool.alive -= 1;
        drop(pool);
        c.changed.notify_all();
        tracing::warn!(error = %e, "cannot start a standby connector thread; the pool goes on without");
    }
}

/// Body of a standby helper thread (started through the transport's
/// [`StandbySpawner`], which gives it its own hold on the shared state).
pub(crate) fn run_standby(ctx: Connector<'_>) {
    work(ctx, Role::Standby);
    let helpers = &ctx.connects.helpers;
    let mut alive = helpers.alive.lock();
    *alive -= 1;
    helpers.gone.notify_all();
}

impl Connects {
    /// Gives the pool the way to start standby threads (once, at create).
    pub(crate) fn set_standby_spawner(&self, spawn: StandbySpawner) {
        let _ = self.standby.set(spawn);
    }
}

/// One request: resolve, connect, hand the result to the progress thread.
fn attempt(ctx: &Connector<'_>, request: ConnectRequest) {
    let outcome = connect(ctx, request.peer);
    match &outcome {
        Ok(_) => Stats::add(&ctx.stats.connectors.connects, 1),
        Err(e) => {
            Stats::add(&ctx.stats.connectors.connect_failures, 1);
            // DEBUG: the ops that waited for it fail with this message, and
            // the progress thread's failure log reports those (grouped per
            // peer and status, not a line per attempt against a dead peer).
            tracing::debug!(peer = request.peer, error = %e, "peer connection failed");
        }
    }
    if request.kind == ConnectKind::Refresh && outcome.is_ok() {
        Stats::add(&ctx.stats.connectors.reconnects, 1);
    }
    let result = ConnectResult { peer: request.peer, kind: request.kind, outcome };
    ctx.connects.push_result(result, ctx.queue);
    ctx.queue.notify();
}

fn connect(ctx: &Connector<'_>, peer: u64) -> Result<Connection, Error> {
    let closing = || {
        let why = message(format_args!("peer {peer}: the transport is shutting down"));
        Err(Error::new(Status::MCFX_E_CANCELED, why))
    };
    let endpoint = {
        let _gate = ctx.connects.resolver_gate.read();
        if ctx.queue.is_closing() {
            return closing();
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
    {
        let mut pool = ctx.connects.pool.lock();
        if ctx.queue.is_closing() {
            return closing();
        }
        pool.in_flagcx += 1;
    }
    // Before the handshake, in which the peer sends its regions; exact, as
    // the submit stamps it is compared with.
    let made = MonoTime::exact();
    let conn = ctx.engine.engine.connect(&host, 0, port);
    {
        let mut pool = ctx.connects.pool.lock();
        pool.in_flagcx -= 1;
    }
    ctx.connects.changed.notify_all();
    let conn = conn.map_err(|e| {
        let note = crate::error::descriptor_note();
        let why = message(format_args!("peer {peer} at {endpoint}: FlagCX connect: {e}{note}"));
        Error::new(Status::MCFX_E_CONNECT, why)
    })?;
    Ok(Connection { conn, made, request: 0 })
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
