//! [`TransportState`]: what a transport's handle and its threads share.
//!
//! Owns the transport's config, queue, counters, connector pool, callbacks,
//! registry, engine hold and handle slot. The handle ([`crate::transport`])
//! creates it; the progress thread ([`crate::progress`]) reads all of it;
//! the connector threads see only their narrow [`Connector`] context.
//!
//! Invariants: the one shutdown flag is the submission queue's gate
//! (`crate::gate`); fields drop in the order that keeps the process engine
//! alive as long as anything holds a FlagCX connection (see
//! [`TransportState`]); the slot goes back last.

#[cfg(test)]
use std::sync::Arc;

use crate::config::Config;
use crate::error::Status;
use crate::fallible::TryArc;
use crate::peers::connector::{Connector, Connects, ResolverFn};
use crate::process_engine::EngineRef;
use crate::queue::SubmitQueue;
use crate::registry::Registry;
use crate::slots::{self, Slot};
use crate::stats::Stats;

/// Called once per accepted op, on the progress thread: `(user_data, status)`.
pub type CompletionFn = Box<dyn Fn(u64, Status) + Send + Sync>;

/// State shared by the caller-facing handle and the transport's threads.
///
/// Fields drop in declaration order: `connects` (which may hold FlagCX
/// connections) before `registry` and `engine` (the holds on the process
/// engine), so the FlagCX engine is destroyed under the engine lock when
/// this is the last transport (see `process_engine`).
pub(crate) struct TransportState {
    pub config: Config,
    pub queue: SubmitQueue,
    pub stats: Stats,
    pub connects: Connects,
    pub on_complete: CompletionFn,
    pub resolver: ResolverFn,
    /// None when the transport does not serve peers.
    pub endpoint: Option<String>,
    pub registry: Registry,
    /// The process's FlagCX engine (shared with the process's other
    /// transports).
    pub engine: TryArc<EngineRef>,
    /// The transport's handle slot (its gate): given back last, when no
    /// thread of the transport (a detached connector included) is left.
    pub slot: Lease,
    /// An op's deadline after its submit call's exact clock reading, in ns
    /// (`op_timeout`; compared with coarse readings, which are never ahead,
    /// so an op never times out early: see `clock`). The progress thread
    /// takes it off a deadline to get the reading back.
    pub deadline_after_ns: u64,
}

impl TransportState {
    /// The transport's process-unique id (its handle slot's).
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.slot.0.id.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `deadline_after_ns` for `op_timeout`.
pub(crate) fn deadline_after_ns(op_timeout: std::time::Duration) -> u64 {
    u64::try_from(op_timeout.as_nanos()).unwrap_or(u64::MAX)
}

/// A leased handle slot, given back on drop.
pub(crate) struct Lease(pub &'static Slot);

impl Drop for Lease {
    fn drop(&mut self) {
        slots::give_back(self.0);
    }
}

impl TransportState {
    /// The connector threads' view: what resolving and connecting a peer
    /// needs, and nothing of the ops.
    pub(crate) fn connector(&self) -> Connector<'_> {
        Connector {
            connects: &self.connects,
            resolver: &self.resolver,
            engine: &self.engine,
            stats: &self.stats,
            queue: &self.queue,
        }
    }
}

#[cfg(test)]
impl TransportState {
    pub(crate) fn endpoint_for_test(&self) -> &str {
        self.endpoint.as_deref().expect("serving")
    }
}

/// A transport's shared state without its threads, for unit tests of the
/// progress loop.
#[cfg(test)]
pub(crate) fn test_state(config: Config) -> Arc<TransportState> {
    let engine = TryArc::try_new(EngineRef::acquire().expect("FlagCX engine")).unwrap();
    engine.serve().expect("RPC server");
    let slot = slots::lease().unwrap();
    Arc::new(TransportState {
        registry: Registry::new(engine.clone(), config.max_regions).unwrap(),
        queue: SubmitQueue::new(config.queue_capacity, &slot.gate).unwrap(),
        slot: Lease(slot),
        stats: Stats::default(),
        connects: Connects::default(),
        on_complete: Box::new(|_, _| {}),
        resolver: Box::new(|_| Err("no peers".into())),
        endpoint: Some(engine.engine.endpoint().unwrap()),
        engine,
        deadline_after_ns: deadline_after_ns(config.op_timeout),
        config,
    })
}
