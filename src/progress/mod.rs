//! The progress thread: the only caller of FlagCX's transfer and status calls.
//!
//! This module owns the thread's state ([`Progress`]: op slots, groups,
//! in-flight calls, the peer table, the pass's clock readings), its run loop
//! and idle policy (spin, nap while something is outstanding, park), and one
//! pass. The steps live in its parts:
//! - `drain`: queue -> slots -> groups or peers' waiting lists, and waiting
//!   ops back out when their connection lands;
//! - `inflight`: groups -> FlagCX vector calls, polling them, remote-range
//!   misses and failed transfers (judged by `peers::state`), timed-out ids;
//! - `complete`: each op's one completion, expiry of waiting ops, shutdown.
//!
//! Each pass it
//! 1. takes up to `max_batch` ops from the queue and files each under its
//!    peer: ready peers' ops are grouped by (peer, opcode), others wait for
//!    their connection;
//! 2. applies finished connects (waiting ops join the groups, or fail);
//! 3. submits each group as FlagCX vector calls of about
//!    `inflight::IOVS_PER_CALL`
//!    entries (ops longer than `max_slice_bytes` become several entries,
//!    never split between calls, so a call can have a few more);
//! 4. polls every in-flight transfer once; finished ones complete their ops;
//! 5. expires ops past their deadline.
//!
//! Deadlines: each op carries the one its submit call stamped (`op_timeout`
//! after the call, on the exact monotonic clock, see `clock::MonoTime`); this
//! thread compares them against the coarse clock (never ahead of the exact
//! one, so never early), read at most once per pass.
//! An op in FlagCX times out with its transfer, at the earliest deadline of
//! the transfer's members; an op waiting for a connection is checked every
//! `WAIT_SCAN_PERIOD`. An op still in the queue at its deadline times out at
//! its first poll in FlagCX (it is not failed unseen).
//!
//! Passes are run by the progress thread, or by a host thread waiting for
//! its completions (`mcfx_progress`), one at a time (`driver`). With nothing
//! to do the thread spins while that pays, then sleeps (`idle`; the
//! sleep/wake protocol is `wake`).
//!
//! Invariants:
//! - an op lives in exactly one slot from the moment it leaves the queue until
//!   its completion, and is a member of at most one FlagCX transfer; `complete`
//!   empties the slot, so an op cannot complete twice;
//! - every op here holds one of the transport's `max_in_flight` credits (see
//!   `queue`), given back (once per pass, `SubmitQueue::release_room`) after
//!   its completion: so at most `max_in_flight` ops are in slots, waiting
//!   lists and FlagCX calls together, however slow a peer is;
//! - a transfer id is polled only here and never after it reported finished
//!   (the id is moved out and back by `Conn::poll`);
//! - steady state allocates nothing: slots, groups, transfers, the entry list
//!   and scratch vectors are reused and only grow past their high-water marks;
//! - what grows with the ops held grows fallibly (`try_reserve`) and only up
//!   to what `max_in_flight` ops need: the op slots and their free list,
//!   peers' waiting lists and the peer table, the FlagCX call records, the
//!   scratch list. An op that finds no memory completes with
//!   `MCFX_E_NO_MEMORY` (logged); the host is never aborted. (The groups
//!   take at most a drain's worth of ops, `max_batch`, per flush.)
//!
//! Memory a transport can hold, in bytes, for `Q` = `queue_capacity`, `M` =
//! `max_in_flight`, `B` = `max_batch`, `P` = peers it knows (x86-64 sizes;
//! FlagCX's own allocations and the registry not counted):
//!
//! - the queue's ring: `64 Q` (an `Op` and its slot's stamp: a line), at
//!   creation;
//! - op slots and their free list: `84` per slot; `min(min(Q, 4096) + B,
//!   M)` slots at creation, doubling as needed up to `M`;
//! - FlagCX call records: `96` each (with room for `IOVS_PER_CALL` members),
//!   one per call in flight (a call has 1 to `IOVS_PER_CALL` ops), doubling
//!   up to `M`;
//! - waiting lists: `4` per waiting op, up to twice that from doubling
//!   (`8 M`), and at most `4 * peers::state::SPARE_WAITING` per peer once
//!   emptied; the
//!   scratch list keeps the largest list handled (up to `8 M`);
//! - groups: `4` per op of a flush, `48` per group and, past 8 groups in a
//!   pass, `64` per group in their index (`group::Index`); a flush has at
//!   most `B` ops, so at most `116 B` (plus the lists' doubling);
//! - the peer table: about `150` per peer; timed-out transfer ids: up to
//!   `24 * inflight::MAX_ZOMBIES` (about 100 KiB).
//!
//! So at most about `64 Q + 196 M + 150 P + 124 B + 100 KiB`: 14 MiB for the
//! defaults (`Q` 32768, `M` 65536) if every op is its own FlagCX call, about
//! `64 Q + 112 M` (9 MiB) when calls carry 8 ops; about 2.6 MiB at
//! creation (the ring and 4 352 slots). Before `max_in_flight`
//! bounded the ops, a dead peer let the slots and its waiting list grow
//! without limit (427 264 ops, about 50 MB, after 1.5 s, in issue 17).
//!
//! The common case, one op submitted alone and finished within a pass, takes
//! one locked instruction here outside FlagCX: the pass's credit return
//! (`release_room`; its region release and the counters are plain stores).
//! The group and the transfer slot keep the
//! connection reference of the call before and clone it only when the peer's
//! connection changed, and transfers are finished in place (no moves between
//! lists).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::MonoTime;
use crate::error::{fail, Result, Status};
use crate::failure_log::FailureLog;
use crate::group::Groups;
use crate::op::Op;
use crate::peers::connector::{ConnectResult, SharedConn};
use crate::peers::state::{OpMark, PeerTable};
use crate::transport_state::TransportState;

mod complete;
mod drain;
mod driver;
mod idle;
mod inflight;

pub(crate) use driver::{poll_backoff, poll_next_call, poll_result, takes_own_submit, Driver};

use inflight::InFlight;

/// How often ops waiting for a connection are checked against deadlines.
const WAIT_SCAN_PERIOD: Duration = Duration::from_millis(1);
/// Op slots made at creation beyond `max_batch` (fewer if the queue is
/// smaller); more are added as ops need them.
const INITIAL_SLOTS: usize = 4096;
/// Longest sleep while transfers are in flight but not finishing.
const MAX_INFLIGHT_NAP: Duration = Duration::from_millis(1);
/// Shortest of those sleeps (shorter ones cost more in the wake-up than
/// they save).
const MIN_INFLIGHT_NAP: Duration = Duration::from_micros(2);

/// Where an op lives from the moment it leaves the queue until its
/// completion.
struct Slot {
    op: Option<Op>,
    /// What the peer rules record of it (see `peers::state::OpMark`).
    mark: OpMark,
    /// When it started waiting for a connection (for `connect_timeout`;
    /// its deadline is the op's own, `Op::deadline`).
    waiting_since: Instant,
}

/// The progress thread's state. Owned by that thread alone (no field is
/// shared except through `shared`); the invariants below hold between passes.
pub(crate) struct Progress {
    /// The transport's shared state; read here, written only through its own
    /// synchronized methods (queue pops, registry releases, counters).
    shared: Arc<TransportState>,
    /// Failed ops in the log: grouped and counted, not a line each.
    failures: FailureLog,
    /// Every op taken from the queue and not yet completed, by slot index.
    /// A slot holds an op (`Some`) exactly while its index is in one place:
    /// a group, a peer's waiting list, an in-flight call's members, or
    /// `scratch` during a step. Never shrinks.
    slots: Vec<Slot>,
    /// Indices of the empty slots (`op` is `None`); disjoint from every
    /// index held elsewhere. `complete` pushes, `take_slot` pops.
    free: Vec<u32>,
    /// Per-peer connection state, the ops waiting for a connection, and the
    /// rules for them.
    peers: PeerTable,
    /// This pass's ops of connected peers, by (peer, opcode); empty between
    /// passes (`flush_groups` turns every group into FlagCX calls).
    groups: Groups<SharedConn>,
    /// FlagCX vector calls in flight, the one being built, timed-out ids.
    inflight: InFlight,
    /// Reused buffer for ops being moved between lists (connect results,
    /// expiry); empty between uses.
    scratch: Vec<u32>,
    /// Reused buffer for connector results; empty between passes.
    results: Vec<ConnectResult>,
    /// Earliest time the next expiry scan of waiting ops may run
    /// (`WAIT_SCAN_PERIOD` apart).
    next_wait_scan: Instant,
    /// This pass's clock reading, taken on first use (see `now`); `None` at
    /// the start of every pass.
    clock: Option<Instant>,
    /// This pass's coarse clock reading for deadlines, taken on first use
    /// (see `coarse_now`); `None` at the start of every pass.
    coarse: Option<MonoTime>,
    /// Placeholder time for fields not yet stamped (never compared as a
    /// deadline: `waiting_since` is stamped before it is read).
    epoch: Instant,
    /// Ops completed so far (what a caller's pass reports).
    completions: u64,
    /// How much this pass may do (the driver sets it: all of it for the
    /// progress thread, a short pass for a caller).
    budget: Budget,
    /// Waiter slots whose ops completed in this pass (bit per slot; woken
    /// as the pass ends, `wake_waiters`).
    woken: u64,
}

/// How much one pass may do: ops taken from the queue (at least 1), calls
/// polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    pub drain: usize,
    pub poll: usize,
}

impl Budget {
    /// A whole pass: `max_batch` ops, every call polled.
    pub(crate) fn full(max_batch: usize) -> Budget {
        Budget { drain: max_batch.max(1), poll: usize::MAX }
    }
}

impl Progress {
    /// `MCFX_E_INTERNAL` when the first op slots (sized by the caller's
    /// `queue_capacity` and `max_batch`, at most `max_in_flight`), the
    /// scratch lists or the call records cannot be allocated. More slots are
    /// added, fallibly, as ops need them (`new_slot`), up to
    /// `max_in_flight`.
    pub(crate) fn new(shared: Arc<TransportState>) -> Result<Progress> {
        let config = &shared.config;
        let max_batch = config.max_batch;
        let cap =
            (config.queue_capacity.min(INITIAL_SLOTS) + config.max_batch).min(config.max_in_flight);
        let now = Instant::now();
        let (mut slots, mut free, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        if slots.try_reserve_exact(cap).is_err()
            || free.try_reserve_exact(cap).is_err()
            || scratch.try_reserve_exact(config.max_batch).is_err()
        {
            return fail(
                Status::MCFX_E_INTERNAL,
                crate::error::message(format_args!("no memory for {cap} op slots")),
            );
        }
        let Some(inflight) = InFlight::new(config.max_in_flight) else {
            return fail(Status::MCFX_E_INTERNAL, "no memory for the FlagCX call records");
        };
        Ok(Progress {
            slots,
            free,
            peers: PeerTable::new(shared.deadline_after_ns),
            groups: Groups::default(),
            inflight,
            scratch,
            results: Vec::new(),
            next_wait_scan: now,
            clock: None,
            coarse: None,
            epoch: now,
            shared,
            failures: FailureLog::default(),
            completions: 0,
            budget: Budget::full(max_batch),
            woken: 0,
        })
    }

    /// The time, read at most once per pass and only when something needs
    /// it (a deadline, a wait): the common op, submitted and finished within
    /// one pass, costs no clock read.
    fn now(&mut self) -> Instant {
        *self.clock.get_or_insert_with(Instant::now)
    }

    /// The coarse time deadlines are compared with (the clock submit stamps
    /// them on), read at most once per pass and only when a deadline is
    /// checked.
    fn coarse_now(&mut self) -> MonoTime {
        *self.coarse.get_or_insert_with(MonoTime::coarse)
    }

    /// One pass; true when anything moved.
    fn pass(&mut self) -> bool {
        (self.clock, self.coarse) = (None, None);
        // Each step is skipped when it has nothing to do: an idle pass is a
        // handful of loads, so new work is noticed within nanoseconds.
        let popped = self.drain_queue();
        let mut moved = popped;
        if self.shared.connects.has_results() {
            moved |= self.apply_connects();
        }
        if !self.groups.is_empty() {
            self.flush_groups();
        }
        if !self.inflight.is_empty() {
            moved |= self.poll_inflight();
            // Ops resubmitted after a failed transfer (`judge_failed`).
            if !self.groups.is_empty() {
                self.flush_groups();
            }
        }
        if self.peers.waiting() > 0 && self.now() >= self.next_wait_scan {
            self.expire_waiting();
            self.next_wait_scan = self.now() + WAIT_SCAN_PERIOD;
        }
        if self.inflight.has_zombies() {
            self.inflight.poll_zombies();
        }
        // The credits of this pass's completions go back, and submitters
        // waiting for room are woken if any was freed.
        self.shared.queue.release_room(popped);
        self.wake_waiters();
        moved
    }

    /// Wakes the host threads sleeping for ops that completed since the
    /// last call (`crate::waiters`).
    #[inline]
    fn wake_waiters(&mut self) {
        if self.woken != 0 {
            self.shared.queue.waiters().wake(std::mem::take(&mut self.woken));
        }
    }

    /// How long to sleep after `idle` without movement (`None`: until
    /// woken): while transfers are in flight, a sixteenth of `idle`, between
    /// `MIN_INFLIGHT_NAP` and `MAX_INFLIGHT_NAP`: a transfer that finishes
    /// is noticed at most about 6 % of its wait late (a long transfer on a
    /// busy link keeps its bandwidth), while a long wait costs a wake-up
    /// per nap instead of a spinning core. Flushes the failure summaries
    /// that are due (they are not left for the next op, which may never
    /// come) and wakes for the next.
    fn sleep_timeout(&mut self, idle: Duration) -> Option<Duration> {
        let timeout = if !self.inflight.is_empty() {
            Some((idle / 16).clamp(MIN_INFLIGHT_NAP, MAX_INFLIGHT_NAP))
        } else if self.peers.waiting() > 0 {
            Some(WAIT_SCAN_PERIOD)
        } else if self.inflight.has_zombies() {
            Some(Duration::from_millis(10))
        } else {
            None
        };
        let now = MonoTime::coarse().ns();
        self.failures.flush(now);
        match self.failures.next_due() {
            Some(due) => {
                let until = Duration::from_nanos(due.saturating_sub(now));
                Some(timeout.map_or(until, |t| t.min(until)))
            }
            None => timeout,
        }
    }

    /// Transfers are in flight (each pass polls them).
    fn has_inflight(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Something needs a later look even if no op arrives: transfers in
    /// flight, ops waiting for a connection, timed-out ids, failure
    /// summaries not yet logged.
    fn has_outstanding(&self) -> bool {
        !self.inflight.is_empty()
            || self.peers.waiting() > 0
            || self.inflight.has_zombies()
            || self.failures.next_due().is_some()
    }

    /// The op in live slot `idx`.
    fn op(&self, idx: u32) -> &Op {
        self.slots[idx as usize].op.as_ref().expect("live slot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::op::Opcode;
    use crate::peers::connector::{parse_endpoint, ConnectKind};

    /// A transport's shared state without threads, and its progress state.
    fn progress_for_test() -> (Arc<TransportState>, Progress) {
        let shared = crate::transport_state::test_state(crate::Config::default());
        let p = Progress::new(Arc::clone(&shared)).unwrap();
        (shared, p)
    }

    /// A new connection from the transport to its own endpoint.
    fn connection_to_itself(shared: &TransportState) -> crate::peers::connector::Connection {
        let (host, port) = parse_endpoint(shared.endpoint_for_test()).unwrap();
        let conn = shared.engine.engine.connect(&host, 0, port).unwrap();
        crate::peers::connector::Connection::for_test(conn)
    }

    /// A connect result for a peer the table no longer has (or never had),
    /// and every other path, must put the scratch vector back: otherwise
    /// the next pass allocates again.
    #[test]
    fn apply_connect_puts_its_scratch_vector_back_on_every_path() {
        let (shared, mut p) = progress_for_test();
        let failed = || Err(Error::new(Status::MCFX_E_CONNECT, "refused"));
        let connected = || Ok(connection_to_itself(&shared));
        for (peer, kind, outcome) in [
            (99, ConnectKind::First, connected()),
            (99, ConnectKind::Refresh, connected()),
            (99, ConnectKind::First, failed()),
            (99, ConnectKind::Refresh, failed()),
        ] {
            p.scratch = Vec::with_capacity(64);
            let ok = outcome.is_ok();
            p.apply_connect(ConnectResult { peer, kind, outcome });
            assert!(p.scratch.capacity() >= 64, "{kind:?} ok={ok}: scratch not put back");
        }
        // And for a known peer.
        p.peers.know(7, &shared.connects);
        p.scratch = Vec::with_capacity(64);
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome: connected() });
        assert!(p.scratch.capacity() >= 64);
    }

    /// Spare transfers and groups keep their connection for reuse; once a
    /// refresh replaced it, none may keep the old one alive.
    #[test]
    fn a_refresh_leaves_no_spare_holding_the_replaced_connection() {
        let (shared, mut p) = progress_for_test();
        let connected = || Ok(connection_to_itself(&shared));
        p.peers.know(7, &shared.connects);
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome: connected() });
        let old = p.peers.ready(7).unwrap().clone();
        // A spare transfer and a spare group that last served `old`.
        p.inflight.add_spare_for_test(old.clone());
        let g = p.groups.add(7, Opcode::Write, &old, 0).unwrap();
        let (_, _, conn, members) = p.groups.take(g);
        p.groups.restore(g, conn, members);
        p.groups.clear();
        p.peers.refresh(7, &shared.connects);
        p.apply_connect(ConnectResult {
            peer: 7,
            kind: ConnectKind::Refresh,
            outcome: connected(),
        });
        assert_eq!(SharedConn::refs(&old), 1, "the replaced connection is still referenced");
        assert!(p.peers.ready(7).is_some(), "the new connection is the peer's");
    }

    /// A connect that lands without memory for the shared connection fails
    /// like a refused connect (the peer is forgotten, its waiting ops fail
    /// `MCFX_E_NO_MEMORY`), instead of the progress thread aborting the
    /// host; the next connect lands.
    #[test]
    fn a_connection_without_memory_to_share_it_fails_like_a_refused_connect() {
        let (shared, mut p) = progress_for_test();
        let connected = || Ok(connection_to_itself(&shared));
        p.peers.know(7, &shared.connects);
        let outcome = connected();
        crate::fallible::fail_after(Some(0));
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome });
        crate::fallible::fail_after(None);
        assert!(p.peers.ready(7).is_none(), "a connection was kept without its memory");
        p.peers.know(7, &shared.connects);
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome: connected() });
        assert!(p.peers.ready(7).is_some());
    }
}
