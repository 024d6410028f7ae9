//! The transport: holds the process's FlagCX engine, owns the registry, the
//! queue and the threads, and is what every C entry point forwards to.
//!
//! Owns the handle's side of the transport: create (the engine hold, the
//! shared `TransportState`, the progress and connector threads), register
//! and unregister, submit (the caller's hot path: check, hold, push), stats
//! and shutdown.
//!
//! Invariants: an op is pushed only after its region hold and its
//! `max_in_flight` credit were taken, and is counted submitted before it is
//! published; every op a submit accepted gets exactly one completion, and
//! `shutdown` returns only after the progress thread completed them all and
//! was joined (no callback runs after it); a failed create tears down what
//! it started.

use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use arrayvec::ArrayVec;
use parking_lot::Mutex;

use crate::clock::MonoTime;
use crate::config::Config;
use crate::error::{fail, message, Error, Result, Status};
use crate::fallible::TryArc;
use crate::gate::Admission;
use crate::op::{Op, OpRequest, OpSource};
use crate::peers::connector::{run_connector, run_standby, Connects, STANDBY_NAME};
use crate::process_engine::EngineRef;
use crate::progress::{Driver, Progress};
use crate::queue::{Limit, SubmitQueue};
use crate::registry::{not_registered, RegionRef, Registry, View};
use crate::slots::{self, Slot};
use crate::transport_state::{deadline_after_ns, Lease, TransportState};
use crate::wake::Notified;

pub use crate::peers::connector::ResolverFn;
use crate::stats::{Snapshot, Stats};
pub use crate::transport_state::CompletionFn;

/// Ops a submit call checks and publishes at a time (see `submit`): small
/// enough that the progress thread starts on a batch within a fraction of a
/// microsecond, large enough that the per-chunk CAS and fence stay a small
/// part of the per-op work. On the modeled 200 Gb/s NIC, batches of 64 x
/// 4 KiB ran at 3.3 M ops/s with chunks of 32, 3.8 M with 16 and 4.0 M with 8
/// (raw FlagCX: 4.2 M). Matches the progress thread's
/// `IOVS_PER_CALL`, so a chunk of one peer's ops becomes one FlagCX call.
pub(crate) const SUBMIT_CHUNK: usize = 8;

/// The most ops a chunk holds when its ops go to several peers: it closes at
/// `SUBMIT_CHUNK` ops per peer seen (see [`ChunkPeers`]), at most this many.
/// The progress thread groups what it drains by peer, so a chunk of 8
/// spread over 8 peers became 8 calls of one op each. With the drain's
/// widening (`progress::drain`), a batch of 64 x 4 KiB over 16 peers went
/// from one FlagCX call per op to one per peer (520 -> 318 ns/op, Intel
/// Xeon; without wide chunks 349-355, with them but no widening 515-547).
/// A submit crossing many peers starts its first call after more of it was
/// checked, and makes fewer, fuller calls.
pub(crate) const WIDE_CHUNK: usize = 64;

/// A chunk's checked ops with the regions they hold, until they are queued.
type Staged = ArrayVec<(OpRequest, RegionRef), WIDE_CHUNK>;

/// Ops a submit call publishes before it wakes a sleeping progress thread;
/// the rest are announced when the call returns (see [`Announce`]).
const WAKE_EVERY: usize = 256;

/// Wakes the progress thread, if it sleeps, for the ops a submit call
/// published: every [`WAKE_EVERY`] ops and when the call returns, however
/// it returns. Not at the first chunk: a thread woken on the submitter's
/// own CPU (both share one beside busy threads) preempts the submitter at
/// once, takes that chunk, sleeps again, and the next chunk wakes it
/// again. Mooncake's tebench, copy mode, 4 KiB batch 64 with a busy loop per
/// CPU spent nine such round trips per batch (41 000 wake-ups a second,
/// each one preempting the submitter), and a p99 twice its mean. A thread
/// that is awake (spinning) sees each chunk as it is published, wake or
/// not; a sleeping one starts later by what publishing the rest takes
/// (a microsecond or two for 64 ops, against a wake-up's several).
///
/// A call whose ops its own thread's next pass takes (the thread polls
/// with `mcfx_progress`, and they fit a caller's pass) leaves a briefly
/// napping thread asleep (`takes_own_submit`): beside busy threads such a
/// thread naps between looks at its transfers, and the wake-up for ops the
/// caller posts itself only cost the caller its CPU.
struct Announce<'a> {
    shared: &'a TransportState,
    unannounced: usize,
    /// The call woke the thread already (it published `WAKE_EVERY` ops).
    woke: bool,
}

impl Announce<'_> {
    #[inline]
    fn published(&mut self, n: usize) {
        self.unannounced += n;
        if self.unannounced >= WAKE_EVERY {
            self.wake();
        }
    }

    #[inline]
    fn wake(&mut self) {
        self.unannounced = 0;
        self.woke = true;
        if self.shared.queue.notify() {
            Stats::add(&self.shared.stats.callers.wakeups, 1);
        }
    }
}

impl Drop for Announce<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.unannounced == 0 {
            return;
        }
        if !self.woke && crate::progress::takes_own_submit(self.shared.id(), self.unannounced) {
            match self.shared.queue.wake().notify_unless_napping_briefly() {
                Notified::Woken => Stats::add(&self.shared.stats.callers.wakeups, 1),
                Notified::LeftNapping => crate::progress::poll_next_call(),
                Notified::Awake => {}
            }
            return;
        }
        self.wake();
    }
}

/// The peers of the chunk being checked, up to `SUBMIT_CHUNK` of them
/// (past that the chunk is as wide as it gets), and where it closes.
struct ChunkPeers {
    peers: [u64; SUBMIT_CHUNK],
    seen: usize,
}

impl ChunkPeers {
    fn new() -> ChunkPeers {
        ChunkPeers { peers: [0; SUBMIT_CHUNK], seen: 0 }
    }

    /// Notes `peer`; returns how many ops the chunk may hold now. One
    /// compare per op while the chunk has a single peer.
    #[inline]
    fn note(&mut self, peer: u64) -> usize {
        if self.seen < SUBMIT_CHUNK && !self.peers[..self.seen].contains(&peer) {
            self.peers[self.seen] = peer;
            self.seen += 1;
        }
        (self.seen * SUBMIT_CHUNK).min(WIDE_CHUNK)
    }
}

pub struct Transport {
    shared: Arc<TransportState>,
    threads: Mutex<Threads>,
    /// The ids of the transport's threads: the only threads its callbacks
    /// run on (apart from `threads`, so reading them never waits for a
    /// shutdown in progress).
    thread_ids: Mutex<Vec<ThreadId>>,
    /// Runs passes: the progress thread, and callers of `progress`.
    driver: Arc<Driver>,
}

#[derive(Default)]
struct Threads {
    progress: Option<JoinHandle<()>>,
    connectors: Vec<JoinHandle<()>>,
}

impl Transport {
    /// Takes the process's FlagCX engine (creating it for the first
    /// transport), starts its RPC server (unless `serve_peers` is off and no
    /// other transport started it), the progress thread and the connector
    /// threads.
    pub fn create(
        config: Config,
        on_complete: CompletionFn,
        resolver: ResolverFn,
    ) -> Result<Transport> {
        if crate::process_engine::inherited_through_fork() {
            return fail(
                Status::MCFX_E_FORKED,
                "this process was forked while its parent had transports: their threads and \
                 locks do not exist here, so no transport can be made (exec first, as a spawned \
                 worker does)",
            );
        }
        crate::logging::init();
        config.validate()?;
        let (engine, endpoint) = engine_and_endpoint(&config)?;
        let slot = Lease(slots::lease()?);
        let shared = Arc::new(TransportState {
            registry: Registry::new(engine.clone(), config.max_regions)?,
            queue: SubmitQueue::new(config.queue_capacity, &slot.0.gate)?,
            slot,
            stats: Stats::default(),
            connects: Connects::default(),
            on_complete,
            resolver,
            endpoint,
            engine,
            deadline_after_ns: deadline_after_ns(config.op_timeout),
            config,
        });
        let driver = Arc::new(Driver::new(Progress::new(Arc::clone(&shared))?));
        let transport = Transport {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Threads::default()),
            thread_ids: Mutex::new(Vec::new()),
            driver: Arc::clone(&driver),
        };
        let id = shared.id();
        let h = spawn("mcfx-progress", move || {
            crate::wait_graph::set_owner(id);
            driver.run()
        })?;
        transport.thread_ids.lock().push(h.thread().id());
        transport.threads.lock().progress = Some(h);
        // On failure, dropping `transport` shuts the started threads down.
        transport.start_connectors(id)?;
        warn_capabilities();
        tracing::info!(endpoint = ?shared.endpoint, "transport created");
        Ok(transport)
    }

    /// Starts the connector pool's threads, and gives the pool the way to
    /// start standby threads (a stuck connect leaves the pool): each holds
    /// the shared state itself; the spawner holds a weak reference, so being
    /// stored inside the state does not keep it alive. `id`: the handle
    /// slot's, which tags the threads (see `wait_graph`).
    fn start_connectors(&self, id: u64) -> Result<()> {
        let shared = &self.shared;
        let weak = Arc::downgrade(shared);
        shared.connects.set_standby_spawner(Box::new(move || {
            let Some(s) = weak.upgrade() else {
                return Err(crate::threads::SpawnError::NoMemory);
            };
            let run = move || {
                crate::wait_graph::set_owner(id);
                run_standby(s.connector())
            };
            crate::threads::spawn(STANDBY_NAME, run).map(drop)
        }));
        for i in 0..shared.config.connect_threads {
            let s = Arc::clone(shared);
            shared.connects.thread_started();
            let run = move || {
                crate::wait_graph::set_owner(id);
                run_connector(s.connector())
            };
            match spawn(&message(format_args!("mcfx-connect-{i}")), run) {
                Ok(h) => {
                    self.thread_ids.lock().push(h.thread().id());
                    self.threads.lock().connectors.push(h);
                }
                Err(e) => {
                    shared.connects.thread_exited_early();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The endpoint (`host:port`) peers use to reach this transport; None
    /// when it does not serve peers.
    pub fn endpoint(&self) -> Option<&str> {
        self.shared.endpoint.as_deref()
    }

    /// The transport's handle slot (its gate; the C handle's address).
    pub(crate) fn slot(&self) -> &'static Slot {
        self.shared.slot.0
    }

    /// Whether the calling thread is one of this transport's own, or runs
    /// one of its passes (so the caller is inside one of its callbacks).
    pub fn on_own_thread(&self) -> bool {
        if self.shared.queue.wake().is_driven_here() {
            return true;
        }
        let me = std::thread::current().id();
        self.thread_ids.lock().contains(&me) || self.shared.connects.on_own_thread()
    }

    /// Runs one progress pass on the calling thread unless another thread
    /// is running one: queued ops go to FlagCX, in-flight transfers are
    /// polled, and finished ops complete here (their callbacks run on this
    /// thread before it returns). Returns how many ops it completed, `None`
    /// when it ran no pass (nothing to do yet, or another thread was running
    /// one). For a thread that waits for its completions anyway: see
    /// `progress::driver`.
    pub fn progress(&self) -> Result<Option<u64>> {
        if self.shared.queue.is_closing() {
            return fail(Status::MCFX_E_SHUTTING_DOWN, "progress: transport is shutting down");
        }
        Ok(self.driver.progress(self as *const Transport as usize))
    }

    /// Registers local memory for transfers.
    ///
    /// # Safety
    /// `[addr, addr + len)` must stay valid memory until unregistered, and
    /// may be read and written by transfers at any time until then.
    pub unsafe fn register(&self, addr: usize, len: usize) -> Result<()> {
        if self.shared.queue.is_closing() {
            return fail(Status::MCFX_E_SHUTTING_DOWN, "register: transport is shutting down");
        }
        // SAFETY: this function's contract, passed on.
        unsafe { self.shared.registry.register(addr, len) }
    }

    /// Unregisters the region starting at `addr` (`MCFX_E_BUSY` while ops on
    /// it are in flight).
    pub fn unregister(&self, addr: usize) -> Result<()> {
        self.shared.registry.unregister(addr)
    }

    /// Queues `reqs` for transfer, in order, stopping at the first op it
    /// cannot accept: the ops before it were queued (each completes exactly
    /// once) and `*accepted` says how many. On a per-op error (bad opcode or
    /// reserved field, zero length, NULL, overflow, local range not
    /// registered) `reqs[*accepted]` is the bad op and the ops after it were
    /// not queued; on `MCFX_E_QUEUE_FULL` (no room in the queue or within
    /// `max_in_flight`) `reqs[*accepted..]` were not queued; on
    /// `MCFX_E_SHUTTING_DOWN` nothing was. Every queued op's
    /// deadline is `op_timeout` after this call (one exact clock read per
    /// call, see `MonoTime`).
    ///
    /// The ops go out in chunks of [`SUBMIT_CHUNK`] ops per peer (up to
    /// [`WIDE_CHUNK`]): each chunk is checked, then reserved and published
    /// with one CAS, so an awake progress thread starts on the first chunk
    /// (and FlagCX, on the link) while this call is still checking the next
    /// one; a sleeping one is woken as the call returns ([`Announce`]).
    ///
    /// Hot path: per op a range check against the region of the op before (a
    /// binary search only when it differs) and a slot write; one atomic add
    /// per run of ops on one region in a chunk; per chunk one credit
    /// reservation and one queue reservation (a CAS each) and one counter
    /// update; per call one lock-free table load, one exact clock read and
    /// one wake check (a fence and a load; see [`Announce`]).
    ///
    /// The transport holds at most `max_in_flight` ops (queued, waiting for
    /// a connection, in FlagCX: from acceptance to completion); an op beyond
    /// that, like one that finds the queue full, waits up to `submit_wait`
    /// for room (asleep: the progress thread wakes it when it frees some) and
    /// then ends the call with `MCFX_E_QUEUE_FULL`.
    pub fn submit<T: OpSource>(&self, reqs: &[T], accepted: &mut usize) -> Result<()> {
        *accepted = 0;
        let Some(admission) = self.shared.queue.enter() else {
            return fail(Status::MCFX_E_SHUTTING_DOWN, "submit: transport is shutting down");
        };
        self.submit_admitted(&admission, reqs, accepted)
    }

    /// [`Transport::submit`] for a caller already admitted by the
    /// transport's gate (the C exports admit every call on a handle).
    pub(crate) fn submit_admitted<T: OpSource>(
        &self,
        admission: &Admission<'static>,
        reqs: &[T],
        accepted: &mut usize,
    ) -> Result<()> {
        *accepted = 0;
        let mut view = self.shared.registry.view();
        let deadline = MonoTime::exact().plus_ns(self.shared.deadline_after_ns);
        let wait = self.shared.config.submit_wait;
        let max_in_flight = self.shared.config.max_in_flight;
        let waiter = crate::waiters::my_slot();
        let waiters = self.shared.queue.waiters();
        // The checked ops of the current chunk, decoded once.
        let mut staged = Staged::new();
        let mut announce = Announce { shared: &self.shared, unannounced: 0, woke: false };
        let mut done = 0;
        while done < reqs.len() {
            let chunk = &reqs[done..reqs.len().min(done + WIDE_CHUNK)];
            let (n, bad) = self.check_chunk(&mut view, chunk, done, &mut staged);
            if n > 0 {
                let stats = &self.shared.stats.callers;
                let mut ops = staged.drain(..);
                let (pushed, limit) = self.shared.queue.push_batch(
                    admission,
                    n,
                    wait,
                    max_in_flight,
                    // Counted once the queue's slots are reserved and before
                    // the ops are published (the progress thread may complete
                    // them at once): only accepted ops, never taken back.
                    |k| {
                        Stats::add(&stats.submitted, k as u64);
                        waiters.submitted(waiter, k as u64);
                    },
                    |_| {
                        let (req, region) = ops.next().expect("staged above");
                        Op::new(req, region.slot(), deadline, waiter)
                    },
                );
                done += pushed;
                *accepted = done;
                announce.published(pushed);
                if pushed < n {
                    self.unhold_staged(ops);
                    Stats::add(&stats.queue_full, 1);
                    return Err(self.full(limit, done, reqs.len()));
                }
            }
            if let Some(e) = bad {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Checks `chunk` (ops `base..` of the call) up to its first bad op or
    /// where the chunk closes (`ChunkPeers`: `SUBMIT_CHUNK` ops per peer,
    /// at most `WIDE_CHUNK`), stages those ops in `staged` and takes their
    /// holds, one atomic add per run of consecutive ops on one region. Holds
    /// precede the pushes: an op in the queue always holds its region.
    /// Returns how many were staged and the first bad op's error, if any.
    fn check_chunk<T: OpSource>(
        &self,
        view: &mut View,
        chunk: &[T],
        base: usize,
        staged: &mut Staged,
    ) -> (usize, Option<Error>) {
        let registry = &self.shared.registry;
        let at = |i: usize| {
            move |e: Error| {
                Error::new(e.status, message(format_args!("op {}: {}", base + i, e.message)))
            }
        };
        // The current run: (its region, its first op).
        let mut run: Option<(RegionRef, usize)> = None;
        let mut n = chunk.len();
        let mut bad = None;
        let mut peers = ChunkPeers::new();
        for (i, r) in chunk.iter().enumerate() {
            let checked = r.request().and_then(|r| {
                validate(&r)?;
                view.find(r.local, r.len as usize)
                    .map(|region| (r, region))
                    .ok_or_else(|| not_registered(r.local, r.len as usize))
            });
            let (region, room) = match checked {
                Ok((r, region)) => {
                    staged.push((r, region));
                    (region, peers.note(r.peer))
                }
                Err(e) => {
                    (n, bad) = (i, Some(at(i)(e)));
                    break;
                }
            };
            match run {
                Some((r, _)) if r == region => {}
                _ => {
                    if let Some((r, first)) = run {
                        if !registry.hold(r, (i - first) as u64) {
                            // Unregistered meanwhile: the run's first op is
                            // the bad one.
                            (n, bad, run) =
                                (first, Some(at(first)(self.unregistered(&staged[first]))), None);
                            break;
                        }
                    }
                    run = Some((region, i));
                }
            }
            // The chunk closes here (the rest of the call is the next one).
            if i + 1 >= room {
                n = i + 1;
                break;
            }
        }
        if let Some((r, first)) = run {
            if !registry.hold(r, (n - first) as u64) {
                (n, bad) = (first, Some(at(first)(self.unregistered(&staged[first]))));
            }
        }
        // Staged ops past the prefix (checked, but behind a run that lost its
        // region) took no hold and are not queued.
        staged.truncate(n);
        (n, bad)
    }

    /// Gives back the holds `check_chunk` took for staged ops that were not
    /// queued. Cold: a partly queued submit.
    #[cold]
    fn unhold_staged(&self, ops: impl Iterator<Item = (OpRequest, RegionRef)>) {
        for (_, region) in ops {
            self.shared.registry.unhold(region, 1);
        }
    }

    /// The `MCFX_E_QUEUE_FULL` of a submit that queued `done` of `total`
    /// ops before `limit` stopped it. Cold.
    #[cold]
    #[inline(never)]
    fn full(&self, limit: Limit, done: usize, total: usize) -> Error {
        let config = &self.shared.config;
        let why = match limit {
            Limit::Queue => message(format_args!("queue of {} is full", config.queue_capacity)),
            Limit::InFlight => {
                message(format_args!("{} ops are in flight (max_in_flight)", config.max_in_flight))
            }
        };
        Error::new(
            Status::MCFX_E_QUEUE_FULL,
            message(format_args!("submit: {why}; {done} of {total} ops queued")),
        )
    }

    #[cold]
    fn unregistered(&self, (r, _): &(OpRequest, RegionRef)) -> Error {
        not_registered(r.local, r.len as usize)
    }

    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Stops accepting work, completes every accepted op exactly once
    /// (`MCFX_E_CANCELED` for those that never ran), joins the progress
    /// thread and stops the connectors. No callback runs after it returns.
    /// Idempotent and callable while other threads still submit (they get
    /// `MCFX_E_SHUTTING_DOWN`); `Drop` calls it.
    pub fn shutdown(&self) {
        let mut threads = self.threads.lock();
        if self.is_forked() {
            // The threads did not survive the fork: nothing to join, and
            // FlagCX's state belongs to the parent. Leak it all.
            std::mem::forget(std::mem::take(&mut *threads));
            return;
        }
        let Some(progress) = threads.progress.take() else { return };
        let shared = &self.shared;
        // The one shutdown flag: closing stops admissions and the connectors;
        // closed (once every admitted submitter left) stops the progress
        // thread (see `gate`).
        shared.queue.close();
        shared.queue.notify();
        if progress.join().is_err() {
            tracing::error!("progress thread panicked");
        }
        let left = shared.connects.shutdown(shared.config.connect_timeout);
        if left > 0 {
            tracing::warn!(left, "connector threads still inside FlagCX connect; detaching them");
        }
        for h in threads.connectors.drain(..) {
            if left == 0 {
                let _ = h.join();
            }
        }
        shared.registry.clear();
        tracing::info!(stats = ?shared.stats.snapshot(), "transport destroyed");
    }
}

impl Transport {
    /// Whether this is a forked child's copy of a transport of its parent
    /// (its slot's page was wiped by the fork; see `crate::slots`).
    pub(crate) fn is_forked(&self) -> bool {
        self.shared.slot.0.gate.is_forked()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
        if self.is_forked() {
            // Keeps the shared state (its engine hold, registry, queue)
            // from being torn down in the child: see `shutdown`.
            std::mem::forget(Arc::clone(&self.shared));
        }
    }
}

/// The process's FlagCX engine (created for the first transport) and, if
/// the transport serves peers, its endpoint (starting the engine's RPC
/// server unless another transport did).
fn engine_and_endpoint(config: &Config) -> Result<(TryArc<EngineRef>, Option<String>)> {
    let engine = EngineRef::acquire().map_err(|e| {
        let why = match crate::error::descriptor_note() {
            "" => ": no usable FlagCX device?",
            note => note,
        };
        Error::new(
            Status::MCFX_E_FLAGCX,
            message(format_args!("flagcxP2pEngineCreate failed ({e}){why}")),
        )
    })?;
    let engine = TryArc::try_new(engine)
        .map_err(|_| Error::new(Status::MCFX_E_NO_MEMORY, "create: out of memory"))?;
    if !config.serve_peers {
        return Ok((engine, None));
    }
    engine.serve().map_err(|e| {
        Error::new(Status::MCFX_E_FLAGCX, message(format_args!("FlagCX RPC server: {e}")))
    })?;
    let endpoint = engine.engine.endpoint().map_err(|e| match e {
        flagcx_sys::Error::NoMemory => {
            Error::new(Status::MCFX_E_NO_MEMORY, "create: out of memory")
        }
        e => Error::new(Status::MCFX_E_FLAGCX, message(format_args!("FlagCX metadata: {e}"))),
    })?;
    Ok((engine, Some(endpoint)))
}

/// `MCFX_CAP_*` bits of the loaded FlagCX (see `mcfx_capabilities`).
pub(crate) fn capabilities() -> u64 {
    use crate::ffi::{MCFX_CAP_REPORTS_TRANSFER_FAILURES, MCFX_CAP_SOFTWARE_PROVIDER};
    let mut caps = 0;
    if flagcx_sys::reports_failures() {
        caps |= MCFX_CAP_REPORTS_TRANSFER_FAILURES;
    }
    if flagcx_sys::is_software_provider() {
        caps |= MCFX_CAP_SOFTWARE_PROVIDER;
    }
    caps
}

/// Says at every create what a production host must know about the loaded
/// FlagCX (to the transport's log callback and `MCFX_LOG`, at WARN: what a
/// default setup shows).
fn warn_capabilities() {
    use crate::ffi::{MCFX_CAP_REPORTS_TRANSFER_FAILURES, MCFX_CAP_SOFTWARE_PROVIDER};
    let caps = capabilities();
    if caps & MCFX_CAP_SOFTWARE_PROVIDER != 0 {
        tracing::warn!(
            "running on the software FlagCX provider, a test double (no RDMA): not for production"
        );
    } else if caps & MCFX_CAP_REPORTS_TRANSFER_FAILURES == 0 {
        tracing::warn!(
            "this FlagCX cannot report failed transfers: an op whose transfer fails completes \
             MCFX_OK (verify data end to end where that matters; see mcfx_capabilities)"
        );
    }
}

fn validate(r: &OpRequest) -> Result<()> {
    if r.len == 0 {
        return fail(Status::MCFX_E_INVALID_ARGUMENT, "zero length");
    }
    if r.local == 0 {
        return fail(Status::MCFX_E_INVALID_ARGUMENT, "NULL local address");
    }
    if usize::try_from(r.len).ok().and_then(|l| r.local.checked_add(l)).is_none() {
        return fail(
            Status::MCFX_E_OVERFLOW,
            message(format_args!("local {:#x} + length {} overflows", r.local, r.len)),
        );
    }
    if r.remote.checked_add(r.len).is_none() {
        return fail(
            Status::MCFX_E_OVERFLOW,
            message(format_args!("remote {:#x} + length {} overflows", r.remote, r.len)),
        );
    }
    Ok(())
}

/// Starts a thread of this transport; its log events take the route of the
/// creating thread (the transport's log callback, see `logging`).
/// `MCFX_E_NO_MEMORY` when there is no room for the thread (its stack and
/// what std and glibc need to start it: see `threads::spawn`), so that
/// `mcfx_create` fails with a status (and tears down what it started)
/// rather than the new thread aborting the host; `MCFX_E_INTERNAL` when the
/// system refuses for another reason. The message is made without
/// allocating when memory is short.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    use crate::logging::message;
    use crate::threads::SpawnError;
    crate::threads::spawn(name, f).map_err(|e| {
        let status = match e {
            SpawnError::NoMemory => Status::MCFX_E_NO_MEMORY,
            SpawnError::Os(_) => Status::MCFX_E_INTERNAL,
        };
        Error::new(status, message(format_args!("cannot start thread {name}: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagcx_sys::testing::AlignedBuf;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    /// Where a chunk of `peers` (op i to peer `i % peers`) closes.
    fn closes_at(peers: u64) -> usize {
        let mut seen = ChunkPeers::new();
        (0..WIDE_CHUNK as u64).position(|i| i as usize + 1 >= seen.note(i % peers)).unwrap() + 1
    }

    /// A chunk holds `SUBMIT_CHUNK` ops per peer it has seen, up to
    /// `WIDE_CHUNK`: one peer's ops go out 8 at a time (a FlagCX call
    /// each), a batch spread over many peers in one piece.
    #[test]
    fn a_chunk_closes_at_eight_ops_per_peer_up_to_the_wide_limit() {
        assert_eq!(closes_at(1), SUBMIT_CHUNK);
        assert_eq!(closes_at(2), 2 * SUBMIT_CHUNK);
        assert_eq!(closes_at(4), 4 * SUBMIT_CHUNK);
        assert_eq!(closes_at(16), WIDE_CHUNK);
        assert_eq!(closes_at(1000), WIDE_CHUNK);
    }

    /// An op that reports, as the submit call checks it, how many times
    /// submit calls had woken the progress thread so far.
    struct Probe<'a> {
        op: OpRequest,
        transport: &'a Transport,
        seen: &'a std::cell::RefCell<Vec<u64>>,
    }

    impl OpSource for Probe<'_> {
        fn request(&self) -> Result<OpRequest> {
            self.seen.borrow_mut().push(self.transport.stats().wakeups);
            Ok(self.op)
        }
    }

    /// A transport whose ops fail to resolve (peer 1 is nobody), its
    /// completions counted, and a registered page.
    fn unresolving(config: Config) -> (Transport, Arc<AtomicU64>, AlignedBuf, OpRequest) {
        let completed = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&completed);
        let t = Transport::create(
            Config { serve_peers: false, spin_grace: Duration::from_micros(10), ..config },
            Box::new(move |_, _| {
                c.fetch_add(1, SeqCst);
            }),
            Box::new(|_| Err("no peers here".into())),
        )
        .expect("create");
        let buf = AlignedBuf::new(4096);
        // SAFETY: the callers drop `buf` after the transport.
        unsafe { t.register(buf.addr(), buf.len()).expect("register") };
        let op = OpRequest {
            opcode: crate::op::Opcode::Write,
            local: buf.addr(),
            len: 64,
            peer: 1,
            remote: 0x1000,
            user_data: 0,
        };
        (t, completed, buf, op)
    }

    /// Polls `cond` (a counter or a state no callback reports) until it
    /// holds, for at most a minute.
    fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < until, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A submit that finds the queue full wakes the sleeping progress
    /// thread before it waits for room, even when it published its
    /// earlier chunks without a wake: else nobody frees room, and the
    /// call gives up after `submit_wait`.
    #[test]
    fn a_submit_that_waits_for_room_wakes_the_progress_thread_first() {
        let config = Config {
            queue_capacity: 16,
            submit_wait: Duration::from_secs(10),
            ..Config::default()
        };
        let (t, completed, buf, op) = unresolving(config);
        eventually(|| t.shared.queue.wake().parked_for_test(), "the progress thread never slept");
        // 64 ops, 16 fit: the call publishes two chunks, then waits.
        let ops = vec![op; 64];
        let mut accepted = 0;
        let result = t.submit(&ops, &mut accepted);
        assert!(result.is_ok(), "{result:?} after {accepted} ops");
        eventually(|| completed.load(SeqCst) == 64, "ops not completed");
        drop(t);
        drop(buf);
    }

    /// A submit call of several chunks wakes a sleeping progress thread
    /// once, as it returns, never after its first chunk (see `Announce`).
    /// Each round submits 64 ops (8 chunks) while the thread may be asleep;
    /// the test ends at the first round whose call woke it (and fails if
    /// that wake came before the last op was checked).
    #[test]
    fn a_submit_call_wakes_a_sleeping_progress_thread_only_as_it_returns() {
        let (t, completed, buf, op) = unresolving(Config::default());
        let seen = std::cell::RefCell::new(Vec::new());
        let probes: Vec<Probe> =
            (0..64).map(|_| Probe { op, transport: &t, seen: &seen }).collect();
        let until = Instant::now() + Duration::from_secs(60);
        let mut submitted = 0;
        loop {
            seen.borrow_mut().clear();
            let before = t.stats().wakeups;
            let mut accepted = 0;
            t.submit(&probes, &mut accepted).expect("submit");
            submitted += 64;
            let after = t.stats().wakeups;
            let seen = seen.borrow();
            assert_eq!(seen.len(), 64);
            assert!(
                seen.iter().all(|&w| w == before),
                "the call woke the thread before it returned: {seen:?}"
            );
            if after == before + 1 {
                break;
            }
            assert_eq!(after, before, "more than one wake-up for one call");
            // The thread was awake; give it a chance to sleep (the ops
            // fail to resolve, and it idles after 10 us).
            assert!(Instant::now() < until, "the progress thread never slept");
            std::thread::sleep(Duration::from_millis(2));
        }
        eventually(|| completed.load(SeqCst) == submitted, "ops not completed");
        drop(t);
        drop(buf);
    }
}
