//! Drain: ops from the queue into slots, and from slots into groups (their
//! peer has a connection) or their peer's waiting list (it has none yet, or
//! a connect is under way); and back out of the waiting lists when the
//! connection lands (connector results).
//!
//! Owns the slot bookkeeping (`take_slot`, `new_slot`: an op's slot index is
//! what every list holds) and routing. Which way an op goes, and what a
//! connect result means for the ops that waited, is decided by
//! `peers::state`; this part carries it out.
//!
//! Invariants: an op gets its slot (or completes `MCFX_E_NO_MEMORY`) as it
//! leaves the queue, and the slot records the peer table's request count
//! then (its `OpMark`); a drain takes at most `max_batch` ops, so the groups
//! hold at most that many; waiting ops routed after a connection landed go
//! out in rounds of `max_batch` (up to `max_in_flight` may have waited);
//! every path through `apply_connect` hands the list it emptied to
//! `keep_larger`, so steady state allocates nothing.

use crate::error::Status;
use crate::fallible::NoMemory;
use crate::op::{Op, Opcode};
use crate::peers::state::Landing;

use super::inflight::IOVS_PER_CALL;
use super::{Progress, Slot};

/// How far past its budget a drain may go while its ops only fill the
/// calls it already has (at most `max_batch`). A caller's pass drains 16
/// ops: spread over 16 peers that was 16 calls of one op each, one FlagCX
/// call per op (a batch of 64 x 4 KiB over 16 peers: 1.0 calls per op,
/// 520 ns/op against 290 for one peer, Intel Xeon). Widened, the same 16
/// calls carry 4 ops each (318 ns/op). A widened drain stops at the first
/// op that opens a call (so it makes at most its budget of calls plus
/// one), and a drain of one peer's ops (a full call every 8) is not
/// widened.
const WIDEN: usize = 4;

impl Progress {
    /// An idle pass ends at the first, empty, pop; the work is out of line.
    #[inline]
    pub(super) fn drain_queue(&mut self) -> bool {
        let Some(op) = self.shared.queue.pop() else { return false };
        self.drain(op);
        true
    }

    /// Files `first` and up to `budget.drain - 1` more ops from the queue
    /// (more, up to `WIDEN` times that and at most `max_batch`, while they
    /// only fill the drain's calls). A drain of one op goes straight to
    /// FlagCX when it can (`issue_alone`).
    #[inline(never)]
    fn drain(&mut self, first: Op) {
        let max = self.budget.drain;
        let second = if max > 1 { self.shared.queue.pop() } else { None };
        let Some(second) = second else {
            if let Some(idx) = self.take_slot(first) {
                if !self.issue_alone(idx) {
                    self.route(idx);
                }
            }
            return;
        };
        let (peer, opcode) = (first.peer, first.opcode);
        let mut last = match self.take_slot(first) {
            Some(idx) => self.route_to(idx, peer, opcode).map(|g| (peer, opcode, g)),
            None => None,
        };
        let (mut op, mut n) = (second, 2);
        let wide = (max * WIDEN).min(self.shared.config.max_batch).max(max);
        // `last`: the group of the op before. The ops of a batch usually
        // share peer and opcode, and nothing changes a peer's state during
        // the drain, so the next op with that key goes straight to that group
        // (no peer lookup, no group search).
        loop {
            let (peer, opcode) = (op.peer, op.opcode);
            // The group this op joined, if any.
            let mut group = None;
            if let Some(idx) = self.take_slot(op) {
                group = match last {
                    Some((p, o, g)) if p == peer && o == opcode => {
                        let filed = self.groups.push(g, idx).map(|()| g);
                        self.grouped(idx, filed)
                    }
                    _ => {
                        last = self.route_to(idx, peer, opcode).map(|g| (peer, opcode, g));
                        last.map(|(_, _, g)| g)
                    }
                };
            }
            if n >= max && !self.widens(n, max, wide, group) {
                break;
            }
            let Some(next) = self.shared.queue.pop() else { break };
            (op, n) = (next, n + 1);
        }
    }

    /// Whether a drain that took `n` ops, past its budget `max`, goes on:
    /// while its groups are short of full calls on average and the last op
    /// (filed in `group`) joined one that existed, up to `wide` ops.
    #[inline]
    fn widens(&self, n: usize, max: usize, wide: usize, group: Option<usize>) -> bool {
        let joined = || group.is_some_and(|g| self.groups.size(g) > 1);
        n < wide && n < self.groups.len() * IOVS_PER_CALL && (n == max || joined())
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
        slot.mark = self.peers.mark();
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
                let msg = crate::logging::message(format_args!("no memory for {want} op slots"));
                self.complete_op(op, Status::MCFX_E_NO_MEMORY, Some(&msg));
                return None;
            }
        }
        let mark = self.peers.mark();
        self.slots.push(Slot { op: Some(op), mark, waiting_since: self.epoch });
        Some(len as u32)
    }

    /// Files an op under its peer: into a group if its connection is ready
    /// (returns the group's index), else in the peer's waiting list.
    pub(super) fn route(&mut self, idx: u32) -> Option<usize> {
        let op = self.op(idx);
        let (peer, opcode) = (op.peer, op.opcode);
        self.route_to(idx, peer, opcode)
    }

    /// `route` for an op whose peer and opcode the caller has at hand.
    #[inline]
    fn route_to(&mut self, idx: u32, peer_id: u64, opcode: Opcode) -> Option<usize> {
        // A known peer by lookup alone; a new one through `wait` (which
        // requests its first connect).
        match self.peers.ready(peer_id) {
            Some(conn) => {
                let filed = self.groups.add(peer_id, opcode, conn, idx);
                self.grouped(idx, filed)
            }
            None => {
                self.wait_for_conn(peer_id, idx, false);
                None
            }
        }
    }

    /// The group op `idx` was filed in; without memory to file it, the op
    /// completes `MCFX_E_NO_MEMORY` (the host process stays up).
    #[inline]
    fn grouped(&mut self, idx: u32, filed: Result<usize, NoMemory>) -> Option<usize> {
        match filed {
            Ok(g) => Some(g),
            Err(NoMemory) => {
                self.no_memory_for_group(idx);
                None
            }
        }
    }

    /// `grouped`'s failure path, kept out of the drain's loop.
    #[cold]
    #[inline(never)]
    fn no_memory_for_group(&mut self, idx: u32) {
        let msg = "no memory to group the op with its peer's others";
        self.complete(idx, Status::MCFX_E_NO_MEMORY, Some(msg));
    }

    /// Files an op under its peer's waiting list (see `PeerTable::wait`;
    /// with `refresh`, a reconnect is asked for unless one is under way).
    /// Without memory for the entry, the op completes `MCFX_E_NO_MEMORY`.
    #[cold]
    #[inline(never)]
    pub(super) fn wait_for_conn(&mut self, peer_id: u64, idx: u32, refresh: bool) {
        match self.peers.wait(peer_id, idx, refresh, &self.shared.connects) {
            Ok(()) => self.slots[idx as usize].waiting_since = self.now(),
            Err(why) => self.complete(idx, Status::MCFX_E_NO_MEMORY, Some(why)),
        }
    }

    /// Applies the connector threads' results (see `apply_connect`).
    pub(super) fn apply_connects(&mut self) -> bool {
        let mut results = std::mem::take(&mut self.results);
        self.shared.connects.take_results(&mut results);
        let moved = !results.is_empty();
        for r in results.drain(..) {
            self.apply_connect(r);
        }
        self.results = results;
        moved
    }

    /// A connect result: the peer table applies it (`PeerTable::land`) and
    /// hands back the ops that waited; they are retried on the new
    /// connection, or fail with the connect's error (an op whose transfer
    /// had failed: `MCFX_E_TRANSFER_FAILED`).
    pub(super) fn apply_connect(&mut self, r: crate::peers::connector::ConnectResult) {
        let peer = r.peer;
        // The peer's waiting list comes out whole (no copy, no allocation)
        // and the larger of it and the scratch vector is kept as the
        // scratch vector (`keep_larger`).
        let waiting = match self.peers.land(r) {
            Landing::Connected { waiting, replaced } => {
                if replaced {
                    self.forget_spare_conns();
                }
                self.retry_waiting(peer, &waiting);
                waiting
            }
            Landing::Failed { waiting, error } => {
                for &idx in &waiting {
                    if self.slots[idx as usize].mark.failed_transfer() {
                        let msg = crate::logging::message(format_args!(
                            "FlagCX reported the transfer failed ({})",
                            error.message
                        ));
                        self.complete(idx, Status::MCFX_E_TRANSFER_FAILED, Some(&msg));
                    } else {
                        self.complete(idx, error.status, Some(&error.message));
                    }
                }
                waiting
            }
        };
        self.keep_larger(waiting);
    }

    /// A refresh replaced a peer's connection: spare transfers and groups
    /// drop the references they kept for reuse, so the replaced connection
    /// closes once the transfers still in flight on it finish (cold: a
    /// refresh follows a remote-range miss or a failed transfer).
    #[cold]
    fn forget_spare_conns(&mut self) {
        self.inflight.forget_spare_conns();
        self.groups.forget_spare();
    }

    /// The ops that waited for `peer_id`'s connection, which just landed:
    /// they go to FlagCX on it (a remote-range miss there is judged by
    /// `remote_range_miss`), and those whose transfer failed are judged on
    /// it (`judge_failed`) when it was made after their submit, or wait for
    /// one that is.
    fn retry_waiting(&mut self, peer_id: u64, waiting: &[u32]) {
        let max_batch = self.shared.config.max_batch;
        for (i, &idx) in waiting.iter().enumerate() {
            let mark = self.slots[idx as usize].mark;
            if mark.failed_transfer() {
                let deadline = self.op(idx).deadline;
                match self.peers.covering(peer_id, mark, deadline) {
                    Some(conn) => self.judge_failed(idx, &conn),
                    None => self.wait_for_conn(peer_id, idx, true),
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
}
