//! The transport: holds the process's FlagCX engine, owns the registry, the
//! queue and the threads, and is what every C entry point forwards to.

use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;

use crate::config::Config;
use crate::engine::EngineRef;
use crate::error::{fail, Error, Result, Status};
use crate::op::{CoarseTime, Op, OpRequest, OpSource};
use crate::peers::{run_connector, Connects};
use crate::progress::Progress;
use crate::queue::SubmitQueue;
use crate::registry::{not_registered, RegionRef, Registry, View};
use crate::shared::Shared;

pub use crate::peers::ResolverFn;
pub use crate::shared::CompletionFn;
use crate::stats::{Snapshot, Stats};

pub struct Transport {
    shared: Arc<Shared>,
    threads: Mutex<Threads>,
    /// The ids of the transport's threads: the only threads its callbacks
    /// run on (apart from `threads`, so reading them never waits for a
    /// shutdown in progress).
    thread_ids: Mutex<Vec<ThreadId>>,
    /// An op's deadline after its submit, in ns: `op_timeout` plus the
    /// coarse clock's resolution, so that an op never times out early
    /// (a reading lags the true time by up to one tick).
    deadline_after_ns: u64,
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
        crate::log::init();
        config.validate()?;
        let engine = Arc::new(EngineRef::acquire().map_err(|e| {
            Error::new(
                Status::MCFX_E_FLAGCX,
                format!("flagcxP2pEngineCreate failed ({e}): no usable FlagCX device?"),
            )
        })?);
        let endpoint =
            if config.serve_peers {
                engine.serve().map_err(|e| {
                    Error::new(Status::MCFX_E_FLAGCX, format!("FlagCX RPC server: {e}"))
                })?;
                Some(engine.engine.endpoint().map_err(|e| {
                    Error::new(Status::MCFX_E_FLAGCX, format!("FlagCX metadata: {e}"))
                })?)
            } else {
                None
            };
        let shared = Arc::new(Shared {
            registry: Registry::new(Arc::clone(&engine)),
            queue: SubmitQueue::new(config.queue_capacity)?,
            stats: Stats::default(),
            connects: Connects::default(),
            on_complete,
            resolver,
            endpoint,
            engine,
            config,
        });
        let after = shared.config.op_timeout + CoarseTime::resolution();
        let transport = Transport {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Threads::default()),
            thread_ids: Mutex::new(Vec::new()),
            deadline_after_ns: u64::try_from(after.as_nanos()).unwrap_or(u64::MAX),
        };
        let progress = Progress::new(Arc::clone(&shared))?;
        let h = spawn("mcfx-progress", move || progress.run())?;
        transport.thread_ids.lock().push(h.thread().id());
        transport.threads.lock().progress = Some(h);
        for i in 0..shared.config.connect_threads {
            let s = Arc::clone(&shared);
            shared.connects.thread_started();
            match spawn(&format!("mcfx-connect-{i}"), move || run_connector(s.connector())) {
                Ok(h) => {
                    transport.thread_ids.lock().push(h.thread().id());
                    transport.threads.lock().connectors.push(h);
                }
                Err(e) => {
                    shared.connects.thread_exited_early();
                    return Err(e); // Drop shuts the started threads down.
                }
            }
        }
        tracing::info!(endpoint = ?shared.endpoint, "transport created");
        Ok(transport)
    }

    /// The endpoint (`host:port`) peers use to reach this transport; None
    /// when it does not serve peers.
    pub fn endpoint(&self) -> Option<&str> {
        self.shared.endpoint.as_deref()
    }

    /// Whether the calling thread is one of this transport's own (so the
    /// caller is inside one of its callbacks).
    pub fn on_own_thread(&self) -> bool {
        let me = std::thread::current().id();
        self.thread_ids.lock().contains(&me)
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
    /// not queued; on `MCFX_E_QUEUE_FULL` `reqs[*accepted..]` were not
    /// queued; on `MCFX_E_SHUTTING_DOWN` nothing was. Every queued op's
    /// deadline is `op_timeout` after this call (one coarse clock read per
    /// call, see `CoarseTime`).
    ///
    /// Hot path: per op a range check against the region of the op before (a
    /// binary search only when it differs) and a slot write; one atomic add
    /// per run of ops on one region; per call one lock-free table load, one
    /// coarse clock read, one queue reservation (a CAS), one wake check (a
    /// fence and a load) and one counter update.
    pub fn submit<T: OpSource>(&self, reqs: &[T], accepted: &mut usize) -> Result<()> {
        *accepted = 0;
        let Some(admission) = self.shared.queue.enter() else {
            return fail(Status::MCFX_E_SHUTTING_DOWN, "submit: transport is shutting down");
        };
        let registry = &self.shared.registry;
        let mut view = registry.view();
        let at = |i: usize| move |e: Error| Error::new(e.status, format!("op {i}: {}", e.message));
        // Pass 1: check the ops up to the first bad one and take the holds of
        // the good prefix before it, one atomic add per run of consecutive
        // ops on one region. Holds precede the pushes: an op in the queue
        // always holds its region.
        // The current run: (its region, its first op).
        let mut run: Option<(RegionRef, usize)> = None;
        // Op 0 as decoded here: pass 2 need not decode it again (a single-op
        // submit decodes once).
        let mut op0 = None;
        // The first bad op and its error; `reqs[..n]` is the good prefix.
        let mut bad: Option<Error> = None;
        let mut n = reqs.len();
        for (i, r) in reqs.iter().enumerate() {
            let checked = r.request().and_then(|r| {
                validate(&r)?;
                view.find(r.local, r.len as usize)
                    .map(|region| (r, region))
                    .ok_or_else(|| not_registered(r.local, r.len as usize))
            });
            let region = match checked {
                Ok((r, region)) => {
                    if i == 0 {
                        op0 = Some((r, region));
                    }
                    region
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
                            let e = at(first)(self.not_registered_op(&reqs[first]));
                            (n, bad, run) = (first, Some(e), None);
                            break;
                        }
                    }
                    run = Some((region, i));
                }
            }
        }
        if let Some((r, first)) = run {
            if !registry.hold(r, (n - first) as u64) {
                (n, bad) = (first, Some(at(first)(self.not_registered_op(&reqs[first]))));
            }
        }
        let result = bad.map_or(Ok(()), Err);
        if n == 0 {
            return result;
        }
        // Pass 2: queue the prefix (one reservation, published together). The
        // view is the same snapshot, so every op finds the region it holds.
        let wait = self.shared.config.submit_wait;
        let deadline = CoarseTime::now().plus_ns(self.deadline_after_ns);
        // Counted before any op is published (the progress thread may
        // complete it at once); the ops not queued are taken back below.
        Stats::add(&self.shared.stats.callers.submitted, n as u64);
        let pushed = self.shared.queue.push_batch(&admission, n, wait, |i| {
            if i == 0 {
                if let Some((req, region)) = op0.take() {
                    return Op { req, region, deadline };
                }
            }
            let req = reqs[i].request().expect("decoded above");
            let region = view.find(req.local, req.len as usize).expect("found above");
            Op { req, region, deadline }
        });
        *accepted = pushed;
        if pushed > 0 && self.shared.queue.notify() {
            Stats::add(&self.shared.stats.callers.wakeups, 1);
        }
        if pushed < n {
            self.unhold_ops(&mut view, &reqs[pushed..n]);
            Stats::sub(&self.shared.stats.callers.submitted, (n - pushed) as u64);
            Stats::add(&self.shared.stats.callers.queue_full, 1);
            return fail(
                Status::MCFX_E_QUEUE_FULL,
                format!(
                    "submit: queue of {} is full; {pushed} of {} ops queued",
                    self.shared.config.queue_capacity,
                    reqs.len()
                ),
            );
        }
        result
    }

    /// Gives back the holds pass 1 took for `ops` (which all decoded and
    /// were found in `view`). Cold: a partly queued submit.
    #[cold]
    fn unhold_ops<T: OpSource>(&self, view: &mut View, ops: &[T]) {
        for r in ops {
            let r = r.request().expect("decoded above");
            let region = view.find(r.local, r.len as usize).expect("found above");
            self.shared.registry.unhold(region, 1);
        }
    }

    #[cold]
    fn not_registered_op<T: OpSource>(&self, op: &T) -> Error {
        let r = op.request().expect("decoded above");
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

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
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
            format!("local {:#x} + length {} overflows", r.local, r.len),
        );
    }
    if r.remote.checked_add(r.len).is_none() {
        return fail(
            Status::MCFX_E_OVERFLOW,
            format!("remote {:#x} + length {} overflows", r.remote, r.len),
        );
    }
    Ok(())
}

/// Starts a thread of this transport; its log events take the route of the
/// creating thread (the transport's log callback, see `host_log`).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    let log = crate::host_log::inherit();
    let f = move || {
        log.enter();
        f()
    };
    std::thread::Builder::new().name(name.to_owned()).spawn(f).map_err(|e| {
        Error::new(Status::MCFX_E_INTERNAL, format!("cannot start thread {name}: {e}"))
    })
}
