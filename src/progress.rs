//! The progress thread: the only caller of FlagCX's transfer and status calls.
//!
//! Each pass it
//! 1. takes up to `max_batch` ops from the queue and files each under its
//!    peer: ready peers' ops are grouped by (peer, opcode), others wait for
//!    their connection;
//! 2. applies finished connects (waiting ops join the groups, or fail);
//! 3. submits each group as FlagCX vector calls of about `IOVS_PER_CALL`
//!    entries (ops longer than `max_slice_bytes` become several entries,
//!    never split between calls, so a call can have a few more);
//! 4. polls every in-flight transfer once; finished ones complete their ops;
//! 5. expires ops past their deadline.
//!
//! Deadlines: each op carries the one its submit call stamped (`op_timeout`
//! after the call, on the coarse monotonic clock, see `clock::CoarseTime`); this
//! thread compares them against the same clock, read at most once per pass.
//! An op in FlagCX times out with its transfer, at the earliest deadline of
//! the transfer's members; an op waiting for a connection is checked every
//! `WAIT_SCAN_PERIOD`. An op still in the queue at its deadline times out at
//! its first poll in FlagCX (it is not failed unseen).
//!
//! With nothing to do it spins for `spin_grace`, then parks (see `wake`).
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
//! - the queue's ring: `88 Q`, at creation;
//! - op slots and their free list: `108` per slot; `min(Q + B, M)` slots at
//!   creation, doubling as needed up to `M`;
//! - FlagCX call records: `96` each (with room for `IOVS_PER_CALL` members),
//!   one per call in flight (a call has 1 to `IOVS_PER_CALL` ops), doubling
//!   up to `M`;
//! - waiting lists: `4` per waiting op, up to twice that from doubling
//!   (`8 M`), and at most `4 * SPARE_WAITING` per peer once emptied; the
//!   scratch list keeps the largest list handled (up to `8 M`);
//! - groups: `4` per op of a flush, at most `4 B` (plus the lists' doubling);
//! - the peer table: about `150` per peer; timed-out transfer ids: up to
//!   `24 * MAX_ZOMBIES` (about 100 KiB).
//!
//! So at most about `88 Q + 220 M + 150 P + 8 B + 100 KiB`: 15 MiB for the
//! defaults (`Q` 4096, `M` 65536) if every op is its own FlagCX call, about
//! `88 Q + 136 M` (9 MiB) when calls carry 8 ops. Before `max_in_flight`
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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flagcx_sys::{IovList, Poll, TransferId};

use crate::clock::CoarseTime;
use crate::error::{fail, Result, Status};
use crate::failure_log::FailureLog;
use crate::group::{pieces, Groups};
use crate::op::{Op, Opcode};
use crate::peers::{drained_before, ConnectKind, ConnectResult, Connection, PeerTable};
use crate::registry::RegionRef;
use crate::stats::Stats;
use crate::transport_state::TransportState;

/// Entries per FlagCX vector call (a call closes once it has this many; an
/// op's pieces are never split between calls). Small on purpose: the first
/// call of a batch of 64 goes out (and the link starts) after an eighth of
/// its descriptors, later calls follow while it moves, and the early
/// calls' completions are handled while the last ones are still on the link;
/// with one call per batch, posting, the link and completing ran one after
/// another. Matches `transport::SUBMIT_CHUNK`. (FlagCX also applies
/// backpressure at about 1024 outstanding slices per connection.)
const IOVS_PER_CALL: usize = 8;
/// How often ops waiting for a connection are checked against deadlines.
const WAIT_SCAN_PERIOD: Duration = Duration::from_millis(1);
/// How long the thread keeps polling in-flight transfers without sleeping
/// (as a NIC's progress engine does): a transfer's end is noticed at once,
/// and a thread that never leaves its core is not queued behind a busy one
/// when it would be woken (on a VM whose scheduler packs woken threads onto
/// busy vCPUs that cost milliseconds). Longer transfers are polled between
/// naps (see `sleep`).
const INFLIGHT_SPIN: Duration = Duration::from_millis(1);
/// Longest sleep while transfers are in flight but not finishing.
const MAX_INFLIGHT_NAP: Duration = Duration::from_millis(1);
/// Shortest of those sleeps (shorter ones cost more in the wake-up than
/// they save).
const MIN_INFLIGHT_NAP: Duration = Duration::from_micros(2);
/// Timed-out transfers are still polled (so FlagCX can recycle their ids) up
/// to this many; beyond it they are abandoned.
const MAX_ZOMBIES: usize = 4096;
/// A peer's waiting list that emptied keeps at most this capacity (more is
/// freed): a burst for a slow peer does not leave its memory behind.
const SPARE_WAITING: usize = 64;
struct Slot {
    op: Option<Op>,
    /// `PeerTable::requested` when the op left the queue: a connection
    /// whose request number is higher was asked for after the op was
    /// submitted (see `covers`).
    drained_at: u32,
    /// Its FlagCX transfer failed; it waits for a connection made after its
    /// submit, which tells whether its remote range is still registered
    /// (resubmitted once on it) or gone (`MCFX_E_REMOTE_RANGE`).
    failed_transfer: bool,
    /// It was resubmitted after a failed transfer: another failure is its
    /// last (`MCFX_E_TRANSFER_FAILED`).
    retried: bool,
    /// When it started waiting for a connection (for `connect_timeout`;
    /// its deadline is the op's own, `Op::deadline`).
    waiting_since: Instant,
}

/// One FlagCX vector call: in flight, being built, or finished and kept for
/// reuse (see [`Transfers`]).
struct Transfer {
    /// The connection of its call; kept after it finished, so the next call
    /// on the same connection (the common case) takes no new reference. A
    /// refresh that replaces a connection clears it in every spare transfer
    /// (`forget_spare_conns`).
    conn: Option<Arc<Connection>>,
    /// `Some` exactly while in flight.
    id: Option<TransferId>,
    /// Its ops (slot indices): at least one while in flight; the ops of the
    /// call being built in the first spare transfer; empty otherwise.
    members: Vec<u32>,
    /// The earliest deadline of its members (while in flight).
    deadline: Option<CoarseTime>,
}

/// The transfers, in place: the first `live` are in flight, the rest are
/// spare (no id, no members) and keep their `members` capacity. A finished
/// transfer is swapped behind the live ones instead of moved between lists.
struct Transfers {
    all: Vec<Transfer>,
    live: usize,
}

impl Transfers {
    fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Makes sure a spare transfer exists (allocating one, fallibly, only
    /// past the high-water mark); false when no memory could be had for it.
    /// A call being built always has its spare.
    /// At most `max` (the transport's `max_in_flight`: every live call has
    /// an op) are ever made.
    #[inline]
    fn ensure_spare(&mut self, max: usize) -> bool {
        self.live < self.all.len() || self.grow(max)
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, max: usize) -> bool {
        let len = self.all.len();
        debug_assert!(len < max, "more FlagCX calls than ops");
        if len == self.all.capacity() {
            let want = (len * 2).min(max).max(len + 1);
            if self.all.try_reserve_exact(want - len).is_err() {
                return false;
            }
        }
        // A call has at most IOVS_PER_CALL members (each adds an entry, and
        // a call closes at IOVS_PER_CALL entries): its list never grows.
        let mut members = Vec::new();
        if members.try_reserve_exact(IOVS_PER_CALL).is_err() {
            return false;
        }
        self.all.push(Transfer { conn: None, id: None, members, deadline: None });
        true
    }

    /// The first spare transfer (after `ensure_spare`): where the call
    /// being built collects its members.
    #[inline]
    fn next(&mut self) -> &mut Transfer {
        &mut self.all[self.live]
    }

    /// A call is being built (its members wait in the first spare).
    #[inline]
    fn building(&self) -> bool {
        self.all.get(self.live).is_some_and(|t| !t.members.is_empty())
    }
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
    /// a group, a peer's `waiting` list, a transfer's `members`, or
    /// `self.members`/`scratch` during a step. Never shrinks.
    slots: Vec<Slot>,
    /// Indices of the empty slots (`op` is `None`); disjoint from every
    /// index held elsewhere. `complete` pushes, `take_slot` pops.
    free: Vec<u32>,
    /// Per-peer connection state and the ops waiting for a connection.
    peers: PeerTable,
    /// This pass's ops of connected peers, by (peer, opcode); empty between
    /// passes (`flush_groups` turns every group into FlagCX calls).
    groups: Groups<Arc<Connection>>,
    /// FlagCX vector calls issued and not yet reported finished (the live
    /// ones; each has an id and at least one member), then spare ones, the
    /// first of which collects the call being built.
    inflight: Transfers,
    /// Timed-out transfers whose ops already completed, still polled (so
    /// FlagCX can recycle the ids); at most `MAX_ZOMBIES`; an entry whose id
    /// reported finished (`None`) is dropped at the end of the poll.
    zombies: Vec<(Arc<Connection>, Option<TransferId>)>,
    /// Entries of the FlagCX call being built; empty between calls (`submit`
    /// empties it), `IOVS_PER_CALL` plus the pieces of its last op at most.
    /// Its ops are the members of
    /// `inflight.next()`.
    iovs: IovList,
    /// Reused buffer for ops being moved between lists (connect results,
    /// expiry); empty between uses.
    scratch: Vec<u32>,
    /// Reused buffer for connector results; empty between passes.
    results: Vec<ConnectResult>,
    /// Number of ops in all peers' `waiting` lists together (so a pass skips
    /// the expiry scan without visiting the peers when it is 0).
    waiting: usize,
    /// Earliest time the next expiry scan of waiting ops may run
    /// (`WAIT_SCAN_PERIOD` apart).
    next_wait_scan: Instant,
    /// This pass's clock reading, taken on first use (see `now`); `None` at
    /// the start of every pass.
    clock: Option<Instant>,
    /// This pass's coarse clock reading for deadlines, taken on first use
    /// (see `coarse_now`); `None` at the start of every pass.
    coarse: Option<CoarseTime>,
    /// Placeholder time for fields not yet stamped (never compared as a
    /// deadline: `waiting_since` is stamped before it is read).
    epoch: Instant,
}

impl Progress {
    /// `MCFX_E_INTERNAL` when the first op slots (sized by the caller's
    /// `queue_capacity` and `max_batch`, at most `max_in_flight`) or the
    /// scratch lists cannot be allocated. More slots are added, fallibly,
    /// as ops need them (`new_slot`), up to `max_in_flight`.
    pub(crate) fn new(shared: Arc<TransportState>) -> Result<Progress> {
        let config = &shared.config;
        let cap = (config.queue_capacity + config.max_batch).min(config.max_in_flight);
        let now = Instant::now();
        let (mut slots, mut free, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        let mut all = Vec::new();
        if slots.try_reserve_exact(cap).is_err()
            || free.try_reserve_exact(cap).is_err()
            || scratch.try_reserve_exact(config.max_batch).is_err()
            || all.try_reserve_exact(config.max_in_flight.min(64)).is_err()
        {
            return fail(Status::MCFX_E_INTERNAL, format!("no memory for {cap} op slots"));
        }
        let Ok(iovs) = IovList::new() else {
            return fail(Status::MCFX_E_INTERNAL, "no memory for the FlagCX entry list");
        };
        Ok(Progress {
            slots,
            free,
            peers: PeerTable::default(),
            groups: Groups::default(),
            inflight: Transfers { all, live: 0 },
            zombies: Vec::new(),
            iovs,
            scratch,
            results: Vec::new(),
            waiting: 0,
            next_wait_scan: now,
            clock: None,
            coarse: None,
            epoch: now,
            shared,
            failures: FailureLog::default(),
        })
    }

    /// The thread body; returns after shutdown, once every op completed.
    pub(crate) fn run(mut self) {
        self.shared.queue.wake().bind_current();
        let mut idle_since: Option<Instant> = None;
        let mut idle_spins = 0u32;
        while !self.shared.queue.is_closed() {
            if self.pass() {
                idle_since = None;
                idle_spins = 0;
                continue;
            }
            // Idle: look at the clock only every 64 spins, keeping the
            // empty loop (and so the time to notice new work) short.
            idle_spins = idle_spins.wrapping_add(1);
            if idle_spins % 64 != 0 {
                // The first spins skip the pause hint (tens of cycles each):
                // in a request/response rhythm the next op usually arrives
                // within a microsecond.
                if idle_spins > 1024 {
                    std::hint::spin_loop();
                }
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let idle = since.elapsed();
            if idle < self.shared.config.spin_grace
                || (!self.inflight.is_empty() && idle < INFLIGHT_SPIN)
            {
                continue;
            }
            self.sleep(idle);
        }
        self.shut_down();
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
    fn coarse_now(&mut self) -> CoarseTime {
        *self.coarse.get_or_insert_with(CoarseTime::now)
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
        if self.waiting > 0 && self.now() >= self.next_wait_scan {
            self.expire_waiting();
            self.next_wait_scan = self.now() + WAIT_SCAN_PERIOD;
        }
        if !self.zombies.is_empty() {
            self.poll_zombies();
        }
        // The credits of this pass's completions go back, and submitters
        // waiting for room are woken if any was freed.
        self.shared.queue.release_room(popped);
        moved
    }

    /// Past the spin grace: park until woken, or nap while something is
    /// outstanding (in-flight transfers, ops waiting for connections).
    ///
    /// While transfers are in flight, a nap is a sixteenth of how long
    /// nothing has moved (`idle`), between `MIN_INFLIGHT_NAP` and
    /// `MAX_INFLIGHT_NAP`: a transfer that finishes is noticed at most about
    /// 6 % of its wait late (a long transfer on a busy link keeps its
    /// bandwidth), while a long wait costs a wake-up per nap instead of a
    /// spinning core.
    fn sleep(&mut self, idle: Duration) {
        let timeout = if !self.inflight.is_empty() {
            Some((idle / 16).clamp(MIN_INFLIGHT_NAP, MAX_INFLIGHT_NAP))
        } else if self.waiting > 0 {
            Some(WAIT_SCAN_PERIOD)
        } else if !self.zombies.is_empty() {
            Some(Duration::from_millis(10))
        } else {
            None
        };
        // Failures still counted get their summary when it is due, not at
        // the next op (which may never come).
        let now = CoarseTime::now().ns();
        self.failures.flush(now);
        let timeout = match self.failures.next_due() {
            Some(due) => {
                let until = Duration::from_nanos(due.saturating_sub(now));
                Some(timeout.map_or(until, |t| t.min(until)))
            }
            None => timeout,
        };
        let shared = &self.shared;
        let has_work = || {
            !shared.queue.is_empty() || shared.connects.has_results() || shared.queue.is_closed()
        };
        shared.queue.wake().park(has_work, timeout, shared.config.pin_asleep);
    }

    // ---- 1. queue -> slots -> groups or peer wait lists ----------------------

    /// An idle pass ends at the first, empty, pop; the work is out of line.
    #[inline]
    fn drain_queue(&mut self) -> bool {
        let Some(op) = self.shared.queue.pop() else { return false };
        self.drain(op);
        true
    }

    /// Files `first` and up to `max_batch - 1` more ops from the queue. A
    /// drain of one op goes straight to FlagCX when it can (`issue_alone`).
    #[inline(never)]
    fn drain(&mut self, first: Op) {
        let max = self.shared.config.max_batch;
        let second = if max > 1 { self.shared.queue.pop() } else { None };
        let Some(second) = second else {
            if let Some(idx) = self.take_slot(first) {
                if !self.issue_alone(idx) {
                    self.route(idx);
                }
            }
            return;
        };
        let (peer, opcode) = (first.req.peer, first.req.opcode);
        let mut last = match self.take_slot(first) {
            Some(idx) => self.route_to(idx, peer, opcode).map(|g| (peer, opcode, g)),
            None => None,
        };
        let (mut op, mut n) = (second, 2);
        // `last`: the group of the op before. The ops of a batch usually
        // share peer and opcode, and nothing changes a peer's state during
        // the drain, so the next op with that key goes straight to that group
        // (no peer lookup, no group search).
        loop {
            let (peer, opcode) = (op.req.peer, op.req.opcode);
            if let Some(idx) = self.take_slot(op) {
                match last {
                    Some((p, o, g)) if p == peer && o == opcode => self.groups.push(g, idx),
                    _ => last = self.route_to(idx, peer, opcode).map(|g| (peer, opcode, g)),
                }
            }
            if n >= max {
                break;
            }
            let Some(next) = self.shared.queue.pop() else { break };
            (op, n) = (next, n + 1);
        }
    }

    /// Files `op` in a free slot; `None` when no slot could be had (the op
    /// then completed with `MCFX_E_NO_MEMORY`).
    #[inline]
    fn take_slot(&mut self, op: Op) -> Option<u32> {
        let Some(i) = self.free.pop() else { return self.new_slot(op) };
        // Field by field: `waiting_since` is stamped before it is read
        // (`park_stamp`), so it is left as it is.
        let slot = &mut self.slots[i as usize];
        slot.op = Some(op);
        slot.drained_at = self.peers.requested;
        slot.failed_transfer = false;
        slot.retried = false;
        Some(i)
    }

    /// A slot past the high-water mark. The slots and the free list grow
    /// together and fallibly, doubling, up to `max_in_flight` (every op in a
    /// slot holds one of the transport's credits, so no more are needed);
    /// if no memory can be had, `op` completes with `MCFX_E_NO_MEMORY`.
    #[cold]
    #[inline(never)]
    fn new_slot(&mut self, op: Op) -> Option<u32> {
        let len = self.slots.len();
        debug_assert!(len < self.shared.config.max_in_flight, "more ops than credits");
        if len == self.slots.capacity() {
            let want = (len * 2).min(self.shared.config.max_in_flight).max(len + 1);
            // The free list must hold every slot: `complete` never grows it.
            if self.slots.try_reserve_exact(want - len).is_err()
                || self.free.try_reserve_exact(want - self.free.len()).is_err()
            {
                let msg = format!("no memory for {want} op slots");
                self.complete_op(op, Status::MCFX_E_NO_MEMORY, Some(&msg));
                return None;
            }
        }
        self.slots.push(Slot {
            op: Some(op),
            drained_at: self.peers.requested,
            failed_transfer: false,
            retried: false,
            waiting_since: self.epoch,
        });
        Some(len as u32)
    }

    fn op(&self, idx: u32) -> &Op {
        self.slots[idx as usize].op.as_ref().expect("live slot")
    }

    /// Files an op under its peer: into a group if connected (returns the
    /// group's index), else waiting.
    fn route(&mut self, idx: u32) -> Option<usize> {
        let op = self.op(idx);
        let (peer, opcode) = (op.req.peer, op.req.opcode);
        self.route_to(idx, peer, opcode)
    }

    /// `route` for an op whose peer and opcode the caller has at hand.
    #[inline]
    fn route_to(&mut self, idx: u32, peer_id: u64, opcode: Opcode) -> Option<usize> {
        // A known peer by lookup alone; a new one through `entry` (which
        // requests its first connect).
        let peer = self.peers.peers.get_mut(&peer_id);
        match peer.as_ref().map(|p| (&p.conn, p.connecting)) {
            Some((Some(conn), false)) => Some(self.groups.add(peer_id, opcode, conn, idx)),
            _ => {
                self.wait_for_conn(peer_id, idx, false);
                None
            }
        }
    }

    /// Files an op under its peer's waiting list (no connection yet, or one
    /// being replaced): creates the peer (requesting its first connect) if
    /// it is new; with `refresh`, requests a reconnect unless a connect is
    /// under way. The lists grow fallibly: without memory for the entry,
    /// the op completes with `MCFX_E_NO_MEMORY`.
    #[cold]
    #[inline(never)]
    fn wait_for_conn(&mut self, peer_id: u64, idx: u32, refresh: bool) {
        let peers = &mut self.peers.peers;
        if !peers.contains_key(&peer_id) && peers.try_reserve(1).is_err() {
            return self.complete(idx, Status::MCFX_E_NO_MEMORY, Some("no memory for a new peer"));
        }
        let connects = &self.shared.connects;
        let peer = self.peers.entry(peer_id, connects);
        if peer.waiting.try_reserve(1).is_err() {
            let msg = "no memory for the peer's list of waiting ops";
            return self.complete(idx, Status::MCFX_E_NO_MEMORY, Some(msg));
        }
        let ask = refresh && !peer.connecting;
        peer.waiting.push(idx);
        if ask {
            self.peers.refresh(peer_id, connects);
        }
        self.waiting += 1;
        self.park_stamp(idx);
    }

    /// Issues a drain's only op as its own FlagCX call, without a group, when
    /// its peer is connected and it is one piece: true when it went to
    /// FlagCX (issued, or refused and failed). False, with nothing changed,
    /// for the general path (`route`, then `flush_groups`), which also
    /// handles a descriptor miss.
    #[inline]
    fn issue_alone(&mut self, idx: u32) -> bool {
        let op = self.slots[idx as usize].op.as_ref().expect("live slot");
        let (peer_id, opcode, len) = (op.req.peer, op.req.opcode, op.req.len);
        if len == 0 || len > self.shared.config.max_slice_bytes {
            return false;
        }
        let Some(peer) = self.peers.peers.get(&peer_id) else { return false };
        let (Some(conn), false) = (&peer.conn, peer.connecting) else { return false };
        if !self.inflight.ensure_spare(self.shared.config.max_in_flight) {
            return false;
        }
        if self.iovs.push(conn, op.region.mr, op.req.local, len as u32, op.req.remote).is_err() {
            return false;
        }
        let deadline = op.deadline;
        let t = self.inflight.next();
        t.members.push(idx);
        let result = match opcode {
            Opcode::Write => conn.write_list(&mut self.iovs),
            Opcode::Read => conn.read_list(&mut self.iovs),
        };
        match result {
            Ok(id) => {
                Stats::bump(&self.shared.stats.progress.flagcx_transfers, 1);
                t.deadline = Some(deadline);
                if !t.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                    t.conn = Some(Arc::clone(conn));
                }
                t.id = Some(id);
                self.inflight.live += 1;
            }
            Err(e) => self.refused(opcode, e),
        }
        true
    }

    /// Stamps an op that starts waiting for a connection.
    fn park_stamp(&mut self, idx: u32) {
        self.slots[idx as usize].waiting_since = self.now();
    }

    // ---- 2. connector results ----------------------------------------------

    fn apply_connects(&mut self) -> bool {
        let mut results = std::mem::take(&mut self.results);
        self.shared.connects.take_results(&mut results);
        let moved = !results.is_empty();
        for r in results.drain(..) {
            self.apply_connect(r);
        }
        self.results = results;
        moved
    }

    /// A refresh replaced a peer's connection: spare transfers and groups
    /// drop the references they kept for reuse, so the replaced connection
    /// closes once the transfers still in flight on it finish (cold: a
    /// refresh follows a remote-range miss or a failed transfer).
    #[cold]
    fn forget_spare_conns(&mut self) {
        for t in &mut self.inflight.all[self.inflight.live..] {
            t.conn = None;
        }
        self.groups.forget_spare();
    }

    fn apply_connect(&mut self, r: ConnectResult) {
        // The peer's waiting list is taken out (no copy, no allocation) and
        // the larger of it and the scratch vector is kept as the scratch
        // vector (`keep_larger`): every path below ends there.
        let mut waiting = Vec::new();
        let refresh = r.kind == ConnectKind::Refresh;
        match r.outcome {
            Ok(mut conn) => {
                let mut replaced = false;
                if let Some(peer) = self.peers.peers.get_mut(&r.peer) {
                    conn.request = peer.request;
                    let conn = Arc::new(conn);
                    replaced = peer.conn.replace(conn).is_some();
                    peer.connecting = false;
                    waiting = std::mem::take(&mut peer.waiting);
                }
                if replaced {
                    self.forget_spare_conns();
                }
                self.waiting -= waiting.len();
                self.retry_waiting(r.peer, &waiting);
            }
            Err(e) => {
                if let Some(mut peer) = self.peers.peers.remove(&r.peer) {
                    waiting = std::mem::take(&mut peer.waiting);
                    if refresh {
                        // Keep the old connection: only the newer regions
                        // were unreachable, and the ops that needed them
                        // fail below. (Re-inserted where it was removed
                        // from: no allocation.)
                        peer.connecting = false;
                        self.peers.peers.insert(r.peer, peer);
                    }
                }
                self.waiting -= waiting.len();
                for &idx in &waiting {
                    if self.slots[idx as usize].failed_transfer {
                        let msg = format!("FlagCX reported the transfer failed ({})", e.message);
                        self.complete(idx, Status::MCFX_E_TRANSFER_FAILED, Some(&msg));
                    } else {
                        self.complete(idx, e.status, Some(&e.message));
                    }
                }
            }
        }
        self.keep_larger(waiting);
    }

    /// The ops that waited for `peer_id`'s connection, which just landed:
    /// they go to FlagCX on it (a remote-range miss there is judged by
    /// `remote_range_miss`), and those whose transfer failed are judged
    /// against it (`judge_failed`) when it was made after their submit, or
    /// wait for one that is.
    fn retry_waiting(&mut self, peer_id: u64, waiting: &[u32]) {
        let max_batch = self.shared.config.max_batch;
        for (i, &idx) in waiting.iter().enumerate() {
            if self.slots[idx as usize].failed_transfer {
                match self.current_conn(peer_id) {
                    Some(conn) if self.covers(idx, &conn) => self.judge_failed(idx, &conn),
                    _ => self.wait_for_conn(peer_id, idx, true),
                }
            } else {
                self.route(idx);
            }
            // The groups take at most a drain's worth at a time (up to
            // max_in_flight ops may have waited).
            if (i + 1) % max_batch == 0 {
                self.flush_groups();
            }
        }
    }

    /// The peer's connection when it has one and no connect is under way.
    fn current_conn(&self, peer_id: u64) -> Option<Arc<Connection>> {
        let peer = self.peers.peers.get(&peer_id)?;
        match (&peer.conn, peer.connecting) {
            (Some(conn), false) => Some(Arc::clone(conn)),
            _ => None,
        }
    }

    /// Whether `conn` was made after op `idx` was submitted, so that what it
    /// describes of the peer's regions includes everything the peer
    /// registered before that submit: when the op left the queue before the
    /// connection was asked for (exact: both happen on this thread), or when
    /// the coarse clock read before the connection's FlagCX connect is later
    /// than the op's submit call's reading (its deadline less
    /// `deadline_after_ns`; the clock is one system-wide value, so a later
    /// reading was taken later; equal ones, the same tick, do not count).
    fn covers(&self, idx: u32, conn: &Connection) -> bool {
        let slot = &self.slots[idx as usize];
        let op = slot.op.as_ref().expect("live slot");
        drained_before(slot.drained_at, conn.request)
            || conn.made > op.deadline.minus_ns(self.shared.deadline_after_ns)
    }

    /// Keeps the larger of `list` (a list of ops just handled) and the
    /// scratch vector, emptied, as the scratch vector; frees the other. So
    /// no peer keeps spare capacity after its list was handled, and the
    /// one spare list is at most as large as the largest list was.
    fn keep_larger(&mut self, mut list: Vec<u32>) {
        if list.capacity() > self.scratch.capacity() {
            list.clear();
            self.scratch = list;
        }
    }

    /// Judges an op whose transfer failed against `conn`, a connection made
    /// after its submit (see `covers`) other than the one it failed on:
    /// `MCFX_E_REMOTE_RANGE` when `conn` does not describe its remote range
    /// (the peer unregistered it: the same status its descriptor lookup
    /// gives a later op); otherwise it goes to FlagCX again, on `conn`, once
    /// (the peer registered the base again: a new key), and a second
    /// failure is `MCFX_E_TRANSFER_FAILED`.
    #[cold]
    #[inline(never)]
    fn judge_failed(&mut self, idx: u32, conn: &Connection) {
        let max = self.shared.config.max_slice_bytes;
        let op = self.op(idx);
        let (peer, remote, len) = (op.req.peer, op.req.remote, op.req.len);
        let gone = pieces(len, max)
            .find(|&(off, piece)| conn.make_desc(remote + off, piece as u32).is_err());
        if let Some((off, piece)) = gone {
            let msg = format!(
                "peer {peer}: remote range [{:#x}, +{piece}) is no longer in any region the \
                 peer registered (the transfer failed)",
                remote + off
            );
            return self.complete(idx, Status::MCFX_E_REMOTE_RANGE, Some(&msg));
        }
        let slot = &mut self.slots[idx as usize];
        slot.failed_transfer = false;
        slot.retried = true;
        // Into a group on the peer's connection (`conn`, unless a miss of
        // another op asked for a refresh since; then it waits for that).
        self.route(idx);
    }

    // ---- 3. groups -> FlagCX vector calls ------------------------------------

    #[inline(never)]
    fn flush_groups(&mut self) {
        for g in 0..self.groups.len() {
            // The group's connection reference is moved out and back (no
            // reference count traffic).
            let (peer, opcode, conn, members) = self.groups.take(g);
            for &idx in &members {
                if !self.inflight.ensure_spare(self.shared.config.max_in_flight) {
                    let msg = "no memory for a FlagCX call's record";
                    self.complete(idx, Status::MCFX_E_NO_MEMORY, Some(msg));
                    continue;
                }
                if !self.add_iovs(&conn, peer, idx) {
                    continue;
                }
                self.inflight.next().members.push(idx);
                if self.iovs.len() >= IOVS_PER_CALL {
                    self.submit(&conn, opcode);
                }
            }
            if self.inflight.building() {
                self.submit(&conn, opcode);
            }
            self.groups.restore(g, conn, members);
        }
        self.groups.clear();
    }

    /// Appends the op's entries (one per `max_slice_bytes` piece). On a
    /// descriptor failure (`remote_range_miss`) the op waits for a refresh
    /// or fails; returns false then.
    fn add_iovs(&mut self, conn: &Connection, peer: u64, idx: u32) -> bool {
        let max = self.shared.config.max_slice_bytes;
        let op = self.slots[idx as usize].op.as_ref().expect("live slot");
        let (mr, local, len, remote) = (op.region.mr, op.req.local, op.req.len, op.req.remote);
        // One piece (the common case) without the piece iterator.
        if len <= max && len > 0 {
            if self.iovs.push(conn, mr, local, len as u32, remote).is_ok() {
                return true;
            }
            self.remote_range_miss(conn, peer, idx, remote, len);
            return false;
        }
        let first = self.iovs.len();
        for (off, piece) in pieces(len, max) {
            if self.iovs.push(conn, mr, local + off as usize, piece as u32, remote + off).is_err() {
                self.iovs.truncate(first);
                self.remote_range_miss(conn, peer, idx, remote + off, piece);
                return false;
            }
        }
        true
    }

    /// FlagCX knows the peer's regions as they were when `conn` was made.
    /// A range it does not describe is missing for the op only if `conn`
    /// was made after the op's submit (`covers`): then the op fails at
    /// once. Otherwise the op waits for a refresh, the one under way (misses
    /// of a peer share it) or one it asks for, and is retried on it.
    #[cold]
    #[inline(never)]
    fn remote_range_miss(
        &mut self,
        conn: &Connection,
        peer_id: u64,
        idx: u32,
        addr: u64,
        len: u64,
    ) {
        if self.covers(idx, conn) {
            let msg = format!(
                "peer {peer_id}: remote range [{addr:#x}, +{len}) is not in any region the peer \
                 registered (as of a connection made after the op was submitted)"
            );
            self.complete(idx, Status::MCFX_E_REMOTE_RANGE, Some(&msg));
            return;
        }
        self.wait_for_conn(peer_id, idx, true);
    }

    /// Issues the call being built (`iovs`, members in `inflight.next()`):
    /// on success that transfer becomes live; otherwise its ops fail.
    fn submit(&mut self, conn: &Arc<Connection>, opcode: Opcode) {
        let result = match opcode {
            Opcode::Write => conn.write_list(&mut self.iovs),
            Opcode::Read => conn.read_list(&mut self.iovs),
        };
        let live = self.inflight.live;
        let t = &mut self.inflight.all[live];
        match result {
            Ok(id) => {
                Stats::bump(&self.shared.stats.progress.flagcx_transfers, 1);
                let slots = &self.slots;
                let deadline = |m: u32| slots[m as usize].op.as_ref().expect("live slot").deadline;
                let (&first, rest) = t.members.split_first().expect("a call has members");
                t.deadline = Some(rest.iter().fold(deadline(first), |d, &m| d.min(deadline(m))));
                if !t.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                    t.conn = Some(Arc::clone(conn));
                }
                t.id = Some(id);
                self.inflight.live = live + 1;
            }
            Err(e) => self.refused(opcode, e),
        }
    }

    /// FlagCX refused the call being built: its ops fail.
    #[cold]
    #[inline(never)]
    fn refused(&mut self, opcode: Opcode, e: flagcx_sys::Error) {
        let live = self.inflight.live;
        let mut members = std::mem::take(&mut self.inflight.all[live].members);
        let msg = format!("FlagCX refused the {opcode:?} of {} ops: {e}", members.len());
        for &m in &members {
            self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(&msg));
        }
        members.clear();
        self.inflight.all[live].members = members;
    }

    // ---- 4. polling ------------------------------------------------------------

    #[inline(never)]
    fn poll_inflight(&mut self) -> bool {
        let mut moved = false;
        let mut i = 0;
        while i < self.inflight.live {
            let t = &mut self.inflight.all[i];
            let id = t.id.take().expect("in-flight transfer has an id");
            let poll = t.conn.as_ref().expect("in-flight transfer has a conn").poll(id);
            let status = match poll {
                Poll::Pending(id) => {
                    let now = self.coarse_now();
                    let t = &mut self.inflight.all[i];
                    if !t.deadline.is_some_and(|d| now >= d) {
                        t.id = Some(id);
                        i += 1;
                        continue;
                    }
                    let conn = Arc::clone(t.conn.as_ref().expect("in-flight transfer has a conn"));
                    self.bury(conn, id);
                    Status::MCFX_E_TIMEOUT
                }
                Poll::Done => Status::MCFX_OK,
                Poll::Failed => Status::MCFX_E_TRANSFER_FAILED,
            };
            moved = true;
            self.finish(i, status);
        }
        moved
    }

    /// Completes live transfer `i`'s ops (its id already reported finished
    /// or abandoned) and makes it spare: the last live transfer takes its
    /// place.
    fn finish(&mut self, i: usize, status: Status) {
        let mut members = std::mem::take(&mut self.inflight.all[i].members);
        if status == Status::MCFX_OK {
            for &m in &members {
                self.complete(m, status, None);
            }
        } else {
            let conn = self.inflight.all[i].conn.clone();
            self.finish_failed(conn, &mut members, status);
        }
        members.clear();
        let last = self.inflight.live - 1;
        let all = &mut self.inflight.all;
        all[i].members = members;
        if i != last {
            all.swap(i, last);
        }
        self.inflight.live = last;
    }

    /// `finish` for a transfer that failed or timed out.
    #[cold]
    #[inline(never)]
    fn finish_failed(
        &mut self,
        conn: Option<Arc<Connection>>,
        members: &mut Vec<u32>,
        status: Status,
    ) {
        let msg = match status {
            Status::MCFX_E_TIMEOUT => "FlagCX did not report the transfer done by its deadline",
            _ => "FlagCX reported the transfer failed",
        };
        if let (Status::MCFX_E_TRANSFER_FAILED, Some(conn)) = (status, conn) {
            // Parks, judges or fails every member: nothing is left to
            // complete.
            self.failed_transfer(&conn, members);
        }
        for &m in members.iter() {
            self.complete(m, status, Some(msg));
        }
    }

    /// The ops of a transfer that failed on `failed_on`: each is judged
    /// (`judge_failed`) against a connection made after its submit other
    /// than `failed_on`: the peer's current one if it is such, else a
    /// refresh (the one under way, or one it asks for), which also replaces
    /// a connection that may be dead (peer restarted or gone). An op that
    /// was already resubmitted once fails (`MCFX_E_TRANSFER_FAILED`).
    /// Empties `members`.
    #[cold]
    #[inline(never)]
    fn failed_transfer(&mut self, failed_on: &Arc<Connection>, members: &mut Vec<u32>) {
        let Some(&first) = members.first() else { return };
        let peer_id = self.op(first).req.peer;
        if self.shared.queue.is_closed() {
            // Shutting down: no reconnect will come to judge them.
            for m in members.drain(..) {
                let msg = "FlagCX reported the transfer failed (during shutdown: not retried)";
                self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
            }
            return;
        }
        let current = self.current_conn(peer_id).filter(|c| !Arc::ptr_eq(c, failed_on));
        for m in members.drain(..) {
            if self.slots[m as usize].retried {
                let msg = "FlagCX reported the transfer failed, again after a resubmit on a \
                           connection made after the op was submitted";
                self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
                continue;
            }
            self.slots[m as usize].failed_transfer = true;
            match &current {
                Some(conn) if self.covers(m, conn) => self.judge_failed(m, conn),
                _ => self.wait_for_conn(peer_id, m, true),
            }
        }
    }

    /// Keeps polling a timed-out transfer (its ops already completed) so
    /// FlagCX can recycle its id if it ever finishes.
    #[cold]
    #[inline(never)]
    fn bury(&mut self, conn: Arc<Connection>, id: TransferId) {
        if self.zombies.len() < MAX_ZOMBIES && self.zombies.try_reserve(1).is_ok() {
            self.zombies.push((conn, Some(id)));
        } else {
            tracing::warn!(id = id.raw(), "abandoning a timed-out FlagCX transfer id");
        }
    }

    fn poll_zombies(&mut self) {
        for (conn, slot) in &mut self.zombies {
            if let Some(id) = slot.take() {
                if let Poll::Pending(id) = conn.poll(id) {
                    *slot = Some(id);
                }
            }
        }
        self.zombies.retain(|(_, id)| id.is_some());
    }

    // ---- 5. deadlines of waiting ops ---------------------------------------

    /// Completes the waiting ops past their deadline or connect timeout.
    /// They are collected in the scratch vector, room for every waiting op
    /// if that can be had, else in rounds of what it holds (at least
    /// `max_batch`, reserved at creation).
    fn expire_waiting(&mut self) {
        let connect_timeout = self.shared.config.connect_timeout;
        let (now, coarse) = (self.now(), self.coarse_now());
        let mut expired = std::mem::take(&mut self.scratch);
        let _ = expired.try_reserve(self.waiting);
        loop {
            let room = expired.capacity();
            for peer in self.peers.peers.values_mut() {
                let slots = &self.slots;
                peer.waiting.retain(|&idx| {
                    let s = &slots[idx as usize];
                    let deadline = s.op.as_ref().expect("live slot").deadline;
                    let late = coarse >= deadline || now >= s.waiting_since + connect_timeout;
                    if late && expired.len() < room {
                        expired.push(idx);
                        return false;
                    }
                    true
                });
                if peer.waiting.is_empty() && peer.waiting.capacity() > SPARE_WAITING {
                    // Its ops left: give back what a burst made it grow to.
                    peer.waiting = Vec::new();
                }
            }
            self.waiting -= expired.len();
            let full = expired.len() == room;
            for &idx in &expired {
                let (peer, deadline) = (self.op(idx).req.peer, self.op(idx).deadline);
                if coarse >= deadline {
                    self.complete(
                        idx,
                        Status::MCFX_E_TIMEOUT,
                        Some("op deadline passed while connecting"),
                    );
                } else {
                    let msg = format!(
                        "peer {peer}: no connection within the connect timeout ({} ms)",
                        connect_timeout.as_millis()
                    );
                    self.complete(idx, Status::MCFX_E_CONNECT, Some(&msg));
                }
            }
            expired.clear();
            if !full {
                break;
            }
        }
        self.scratch = expired;
    }

    // ---- completion --------------------------------------------------------

    /// Delivers the op's one completion and frees its slot.
    fn complete(&mut self, idx: u32, status: Status, msg: Option<&str>) {
        // The fields it needs, then the slot is emptied (no move of the op).
        let slot = &mut self.slots[idx as usize];
        let op = slot.op.as_ref().expect("op completed twice");
        let (region, user_data, len, peer) = (op.region, op.req.user_data, op.req.len, op.req.peer);
        slot.op = None;
        // Never allocates: the free list has room for every slot.
        self.free.push(idx);
        self.deliver(region, user_data, len, peer, status, msg);
    }

    /// Delivers the one completion of an op that has no slot (it never got
    /// one, or shutdown took it from the queue).
    #[cold]
    #[inline(never)]
    fn complete_op(&mut self, op: Op, status: Status, msg: Option<&str>) {
        self.deliver(op.region, op.req.user_data, op.req.len, op.req.peer, status, msg);
    }

    /// An op's completion: its region hold, its counters, its credit, its
    /// callback.
    #[inline]
    fn deliver(
        &mut self,
        region: RegionRef,
        user_data: u64,
        len: u64,
        peer: u64,
        status: Status,
        msg: Option<&str>,
    ) {
        // Released before the callback, so the callback may unregister.
        self.shared.registry.release(region);
        if let Some(msg) = msg {
            let now = self.coarse_now().ns();
            self.failures.failed(now, peer, status, user_data, msg);
        }
        // Counted before the callback, so whoever has seen the completion sees
        // it counted: these stores are sequenced before the callback, the
        // callback hands the completion to a waiting thread through some
        // synchronization of its own (a Release store it Acquires, a mutex, a
        // condvar), and by coherence the reader's load then returns this store
        // or a later one (happens-before carries over to the counter line).
        // Only `callback_panics` depends on the callback's outcome.
        let stats = &self.shared.stats;
        match status {
            Status::MCFX_OK => {
                Stats::bump(&stats.progress.completed, 1);
                Stats::bump(&stats.progress.bytes, len);
            }
            Status::MCFX_E_TIMEOUT => Stats::bump(&stats.progress.timed_out, 1),
            Status::MCFX_E_CANCELED => Stats::bump(&stats.progress.canceled, 1),
            _ => Stats::bump(&stats.progress.failed, 1),
        }
        // Its credit goes back at the end of the pass (or at once, to a
        // callback below that submits and finds none).
        self.shared.queue.completed(1);
        let on_complete = &self.shared.on_complete;
        let panicked = catch_unwind(AssertUnwindSafe(|| on_complete(user_data, status))).is_err();
        if panicked {
            Stats::bump(&stats.progress.callback_panics, 1);
            tracing::error!(user_data, "completion callback panicked; continuing");
        }
    }

    // ---- shutdown ------------------------------------------------------------

    /// Completes everything: queued and waiting ops never ran (CANCELED);
    /// in-flight ones get until `shutdown_timeout` to finish.
    fn shut_down(&mut self) {
        (self.clock, self.coarse) = (None, None);
        // The queue is closed: this drains it for good.
        while let Some(op) = self.shared.queue.pop() {
            self.complete_op(op, Status::MCFX_E_CANCELED, None);
        }
        let mut results = std::mem::take(&mut self.results);
        self.shared.connects.take_results(&mut results);
        drop(results);
        self.cancel_waiting();
        let until = self.now() + self.shared.config.shutdown_timeout;
        while !self.inflight.is_empty() && Instant::now() < until {
            (self.clock, self.coarse) = (None, None);
            if !self.poll_inflight() {
                std::thread::yield_now();
            }
        }
        while self.inflight.live > 0 {
            let t = &mut self.inflight.all[self.inflight.live - 1];
            // The id is abandoned: FlagCX has no cancel.
            t.id = None;
            let members = std::mem::take(&mut t.members);
            self.inflight.live -= 1;
            for idx in members {
                self.complete(idx, Status::MCFX_E_CANCELED, None);
            }
        }
        // Nothing parks an op for a reconnect once the queue is closed (see
        // `failed_transfer`); this sweep keeps "every op completes" true even
        // if a path is added that does.
        self.cancel_waiting();
        self.zombies.clear();
        self.failures.finish(CoarseTime::now().ns());
        debug_assert!(self.slots.iter().all(|s| s.op.is_none()), "an op never completed");
    }

    /// Shutdown: completes every op waiting for a connection, CANCELED (or
    /// TRANSFER_FAILED for one whose transfer failed before it waited).
    fn cancel_waiting(&mut self) {
        // The peers go with their lists (shutdown needs them no more; the
        // transfers in flight hold their own connections).
        for (_, peer) in std::mem::take(&mut self.peers.peers) {
            for idx in peer.waiting {
                if self.slots[idx as usize].failed_transfer {
                    let msg = "FlagCX reported the transfer failed; shut down before a reconnect";
                    self.complete(idx, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
                } else {
                    self.complete(idx, Status::MCFX_E_CANCELED, None);
                }
            }
        }
        self.waiting = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::peers::{parse_endpoint, Connection};

    /// A connect result for a peer the table no longer has (or never had),
    /// and every other path, must put the scratch vector back: otherwise
    /// the next pass allocates again.
    #[test]
    fn apply_connect_puts_its_scratch_vector_back_on_every_path() {
        let shared = crate::transport_state::test_state(crate::Config::default());
        let (host, port) = parse_endpoint(shared.endpoint_for_test()).unwrap();
        let mut p = Progress::new(Arc::clone(&shared)).unwrap();
        let failed = || Err(Error::new(Status::MCFX_E_CONNECT, "refused"));
        let connected =
            || Ok(Connection::for_test(shared.engine.engine.connect(&host, 0, port).unwrap()));
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
        p.peers.entry(7, &shared.connects);
        p.scratch = Vec::with_capacity(64);
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome: connected() });
        assert!(p.scratch.capacity() >= 64);
    }

    /// Spare transfers and groups keep their connection for reuse; once a
    /// refresh replaced it, none may keep the old one alive.
    #[test]
    fn a_refresh_leaves_no_spare_holding_the_replaced_connection() {
        let shared = crate::transport_state::test_state(crate::Config::default());
        let (host, port) = parse_endpoint(shared.endpoint_for_test()).unwrap();
        let mut p = Progress::new(Arc::clone(&shared)).unwrap();
        let connected =
            || Ok(Connection::for_test(shared.engine.engine.connect(&host, 0, port).unwrap()));
        p.peers.entry(7, &shared.connects);
        p.apply_connect(ConnectResult { peer: 7, kind: ConnectKind::First, outcome: connected() });
        let old = Arc::clone(p.peers.peers[&7].conn.as_ref().unwrap());
        let weak = Arc::downgrade(&old);
        // A spare transfer and a spare group that last served `old`.
        p.inflight.all.push(Transfer {
            conn: Some(Arc::clone(&old)),
            id: None,
            members: Vec::new(),
            deadline: None,
        });
        let g = p.groups.add(7, Opcode::Write, &old, 0);
        let (_, _, conn, members) = p.groups.take(g);
        p.groups.restore(g, conn, members);
        p.groups.clear();
        drop(old);
        p.peers.peers.get_mut(&7).unwrap().connecting = true;
        p.apply_connect(ConnectResult {
            peer: 7,
            kind: ConnectKind::Refresh,
            outcome: connected(),
        });
        assert!(weak.upgrade().is_none(), "the replaced connection is still referenced");
        assert!(p.peers.peers[&7].conn.is_some(), "the new connection is the peer's");
    }
}
