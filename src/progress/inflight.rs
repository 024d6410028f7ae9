//! In flight: the progress thread's FlagCX vector calls. Groups become calls
//! (`flush_groups`), a drain's only op becomes one without a group
//! (`issue_alone`), both through the one issue path (`InFlight::issue`);
//! every live call is polled once per pass; a finished one completes its
//! ops, a failed one has them judged (`peers::state`), a timed-out one
//! completes them and its id is kept polling as a zombie.
//!
//! Owns [`InFlight`]: the call records (live, then spare), the entry list of
//! the call being built, and the timed-out ids.
//!
//! Invariants:
//! - the first `live` records are in flight: each has an id and at least
//!   one member; the rest are spare (no id, no members, their `members`
//!   capacity kept), the first of which collects the call being built;
//! - an op is a member of at most one call, and its pieces are never split
//!   between calls; a call closes at [`IOVS_PER_CALL`] entries (so a call's
//!   member list never grows past it);
//! - a transfer id is polled only here and never after it reported
//!   finished (`Conn::poll` moves it out and back), also as a zombie;
//! - a record keeps its connection after it finished, so the next call on
//!   the same connection takes no new reference; a refresh that replaces a
//!   connection clears it from every spare (`forget_spare_conns`);
//! - records grow fallibly, at most one per op the transport may hold
//!   (`max_in_flight`); zombies are at most [`MAX_ZOMBIES`].

use flagcx_sys::{IovList, Poll, TransferId};

use crate::clock::MonoTime;
use crate::error::Status;
use crate::group::pieces;
use crate::op::Opcode;
use crate::peers::connector::{Connection, SharedConn};
use crate::peers::state::{judge, AfterFailure, Judged};
use crate::stats::Stats;

use super::{Progress, Slot};

/// Entries per FlagCX vector call (a call closes once it has this many; an
/// op's pieces are never split between calls). Small on purpose: the first
/// call of a batch of 64 goes out (and the link starts) after an eighth of
/// its descriptors, later calls follow while it moves, and the early
/// calls' completions are handled while the last ones are still on the link;
/// with one call per batch, posting, the link and completing ran one after
/// another. Equal to `transport::SUBMIT_CHUNK`, so each peer's share of a
/// chunk a submit call publishes becomes one call. (FlagCX also applies backpressure at about
/// 1024 outstanding slices per connection.)
pub(super) const IOVS_PER_CALL: usize = 8;
const _: () = assert!(IOVS_PER_CALL == crate::transport::SUBMIT_CHUNK);

/// Timed-out transfers are still polled (so FlagCX can recycle their ids) up
/// to this many; beyond it they are abandoned.
pub(super) const MAX_ZOMBIES: usize = 4096;

/// One FlagCX vector call: in flight, being built, or finished and kept for
/// reuse (see [`InFlight`]).
pub(super) struct Transfer {
    /// The connection of its call; kept after it finished (see the module
    /// invariants).
    conn: Option<SharedConn>,
    /// `Some` exactly while in flight.
    id: Option<TransferId>,
    /// Its ops (slot indices): at least one while in flight; the ops of the
    /// call being built in the first spare record; empty otherwise.
    members: Vec<u32>,
    /// The earliest deadline of its members (while in flight).
    deadline: Option<MonoTime>,
}

/// The calls, in place: a finished call is swapped behind the live ones
/// instead of moved between lists.
pub(super) struct InFlight {
    transfers: Vec<Transfer>,
    /// How many of `transfers`, from the first, are in flight.
    live: usize,
    /// Where the next pass with a poll budget starts polling (see
    /// `poll_inflight`).
    cursor: usize,
    /// The most records ever made (`max_in_flight`: every live call has an
    /// op).
    max: usize,
    /// Entries of the call being built; empty between calls (`issue`
    /// empties it), `IOVS_PER_CALL` plus the pieces of its last op at most.
    /// Its ops are the members of `next()`.
    iovs: IovList,
    /// Timed-out transfers whose ops already completed, still polled; an
    /// entry whose id reported finished (`None`) is dropped at the end of
    /// the poll.
    zombies: Vec<(SharedConn, Option<TransferId>)>,
}

impl InFlight {
    /// Room for the first 64 records (fewer if `max` is smaller); `None`
    /// without memory for them or for the entry list.
    pub(super) fn new(max: usize) -> Option<InFlight> {
        let mut transfers = Vec::new();
        transfers.try_reserve_exact(max.min(64)).ok()?;
        let iovs = IovList::new().ok()?;
        Some(InFlight { transfers, live: 0, cursor: 0, max, iovs, zombies: Vec::new() })
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    #[inline]
    pub(super) fn has_zombies(&self) -> bool {
        !self.zombies.is_empty()
    }

    /// Makes sure a spare record exists (allocating one, fallibly, only
    /// past the high-water mark); false when no memory could be had for it.
    /// A call being built always has its spare.
    #[inline]
    fn ensure_spare(&mut self) -> bool {
        self.live < self.transfers.len() || self.grow()
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) -> bool {
        let (len, max) = (self.transfers.len(), self.max);
        debug_assert!(len < max, "more FlagCX calls than ops");
        if len == self.transfers.capacity() {
            let want = (len * 2).min(max).max(len + 1);
            if self.transfers.try_reserve_exact(want - len).is_err() {
                return false;
            }
        }
        // A call has at most IOVS_PER_CALL members (each adds an entry, and
        // a call closes at IOVS_PER_CALL entries): its list never grows.
        let mut members = Vec::new();
        if members.try_reserve_exact(IOVS_PER_CALL).is_err() {
            return false;
        }
        self.transfers.push(Transfer { conn: None, id: None, members, deadline: None });
        true
    }

    /// The first spare record (after `ensure_spare`): where the call being
    /// built collects its members.
    #[inline]
    fn next(&mut self) -> &mut Transfer {
        &mut self.transfers[self.live]
    }

    /// A call is being built (its members wait in the first spare).
    #[inline]
    fn building(&self) -> bool {
        self.transfers.get(self.live).is_some_and(|t| !t.members.is_empty())
    }

    /// Issues the call being built (`iovs`, members in `next()`) on `conn`:
    /// the one path by which ops go to FlagCX. On success the record becomes
    /// live with `deadline` (the earliest of its members'); on a refusal the
    /// members stay in `next()` for the caller to fail (`refused`).
    /// Inlined into its two callers (`submit`, `issue_alone`), as it was
    /// written out in each before.
    #[inline(always)]
    fn issue(
        &mut self,
        conn: &SharedConn,
        opcode: Opcode,
        deadline: MonoTime,
        stats: &Stats,
    ) -> Result<(), flagcx_sys::Error> {
        let result = match opcode {
            Opcode::Write => conn.write_list(&mut self.iovs),
            Opcode::Read => conn.read_list(&mut self.iovs),
        };
        let id = result?;
        Stats::bump(&stats.progress.flagcx_transfers, 1);
        let t = &mut self.transfers[self.live];
        t.deadline = Some(deadline);
        if !t.conn.as_ref().is_some_and(|c| SharedConn::ptr_eq(c, conn)) {
            t.conn = Some(conn.clone());
        }
        t.id = Some(id);
        self.live += 1;
        Ok(())
    }

    /// The earliest deadline of the members of the call being built.
    #[inline]
    fn next_deadline(&self, slots: &[Slot]) -> MonoTime {
        let members = &self.transfers[self.live].members;
        let deadline = |m: u32| slots[m as usize].op.as_ref().expect("live slot").deadline;
        let (&first, rest) = members.split_first().expect("a call has members");
        rest.iter().fold(deadline(first), |d, &m| d.min(deadline(m)))
    }

    /// Drops the connections the spare records kept for reuse (a refresh
    /// replaced one).
    pub(super) fn forget_spare_conns(&mut self) {
        for t in &mut self.transfers[self.live..] {
            t.conn = None;
        }
    }

    /// Keeps polling a timed-out transfer (its ops already completed) so
    /// FlagCX can recycle its id if it ever finishes.
    #[cold]
    #[inline(never)]
    fn bury(&mut self, conn: SharedConn, id: TransferId) {
        if self.zombies.len() < MAX_ZOMBIES && self.zombies.try_reserve(1).is_ok() {
            self.zombies.push((conn, Some(id)));
        } else {
            tracing::warn!(id = id.raw(), "abandoning a timed-out FlagCX transfer id");
        }
    }

    pub(super) fn poll_zombies(&mut self) {
        for (conn, slot) in &mut self.zombies {
            if let Some(id) = slot.take() {
                if let Poll::Pending(id) = conn.poll(id) {
                    *slot = Some(id);
                }
            }
        }
        self.zombies.retain(|(_, id)| id.is_some());
    }

    /// Shutdown: abandons the last live call (FlagCX has no cancel) and
    /// hands back its ops; `None` once none is live.
    pub(super) fn abandon_one(&mut self) -> Option<Vec<u32>> {
        let last = self.live.checked_sub(1)?;
        let t = &mut self.transfers[last];
        t.id = None;
        self.live = last;
        Some(std::mem::take(&mut t.members))
    }

    /// Shutdown: forgets the timed-out ids.
    pub(super) fn drop_zombies(&mut self) {
        self.zombies.clear();
    }

    /// A spare record that last served `conn` (tests).
    #[cfg(test)]
    pub(super) fn add_spare_for_test(&mut self, conn: SharedConn) {
        let members = Vec::new();
        self.transfers.push(Transfer { conn: Some(conn), id: None, members, deadline: None });
    }
}

impl Progress {
    /// Turns every group of this pass into FlagCX calls of up to
    /// `IOVS_PER_CALL` entries, and empties the groups.
    #[inline(never)]
    pub(super) fn flush_groups(&mut self) {
        for g in 0..self.groups.len() {
            // The group's connection reference is moved out and back (no
            // reference count traffic).
            let (peer, opcode, conn, members) = self.groups.take(g);
            for &idx in &members {
                if !self.inflight.ensure_spare() {
                    let msg = "no memory for a FlagCX call's record";
                    self.complete(idx, Status::MCFX_E_NO_MEMORY, Some(msg));
                    continue;
                }
                if !self.add_iovs(&conn, peer, idx) {
                    continue;
                }
                self.inflight.next().members.push(idx);
                if self.inflight.iovs.len() >= IOVS_PER_CALL {
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
        let (region, local, len, remote) = (op.region, op.local, op.len, op.remote);
        let mr = self.shared.registry.mr(region);
        let iovs = &mut self.inflight.iovs;
        // One piece (the common case) without the piece iterator.
        if len <= max && len > 0 {
            if iovs.push(conn, mr, local, len as u32, remote).is_ok() {
                return true;
            }
            self.remote_range_miss(conn, peer, idx, remote, len);
            return false;
        }
        let first = iovs.len();
        for (off, piece) in pieces(len, max) {
            if iovs.push(conn, mr, local + off as usize, piece as u32, remote + off).is_err() {
                iovs.truncate(first);
                self.remote_range_miss(conn, peer, idx, remote + off, piece);
                return false;
            }
        }
        true
    }

    /// Issues a drain's only op as its own FlagCX call, without a group, when
    /// its peer's connection is ready and the op is one piece: true when it
    /// went to FlagCX (issued, or refused and failed). False, with nothing
    /// changed, for the general path (`route`, then `flush_groups`), which
    /// also handles a descriptor miss.
    #[inline]
    pub(super) fn issue_alone(&mut self, idx: u32) -> bool {
        let op = self.slots[idx as usize].op.as_ref().expect("live slot");
        let (peer_id, opcode, len) = (op.peer, op.opcode, op.len);
        if len == 0 || len > self.shared.config.max_slice_bytes {
            return not_alone();
        }
        let Some(conn) = self.peers.ready(peer_id) else { return not_alone() };
        let inflight = &mut self.inflight;
        if !inflight.ensure_spare() {
            return not_alone();
        }
        let mr = self.shared.registry.mr(op.region);
        if inflight.iovs.push(conn, mr, op.local, len as u32, op.remote).is_err() {
            return not_alone();
        }
        let deadline = op.deadline;
        inflight.next().members.push(idx);
        if let Err(e) = inflight.issue(conn, opcode, deadline, &self.shared.stats) {
            self.refused(opcode, e);
        }
        true
    }

    /// Issues the call being built on `conn` (see `InFlight::issue`); if
    /// FlagCX refuses it, its ops fail.
    fn submit(&mut self, conn: &SharedConn, opcode: Opcode) {
        let deadline = self.inflight.next_deadline(&self.slots);
        if let Err(e) = self.inflight.issue(conn, opcode, deadline, &self.shared.stats) {
            self.refused(opcode, e);
        }
    }

    /// FlagCX refused the call being built: its ops fail.
    #[cold]
    #[inline(never)]
    fn refused(&mut self, opcode: Opcode, e: flagcx_sys::Error) {
        let mut members = std::mem::take(&mut self.inflight.next().members);
        let msg = crate::logging::message(format_args!(
            "FlagCX refused the {opcode:?} of {} ops: {e}",
            members.len()
        ));
        for &m in &members {
            self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(&msg));
        }
        members.clear();
        self.inflight.next().members = members;
    }

    /// FlagCX knows the peer's regions as they were when `conn` was made.
    /// A range it does not describe is missing for the op only if `conn`
    /// was made after the op's submit (`PeerTable::covers`): then the op
    /// fails at once. Otherwise the op waits for a refresh, the one under
    /// way (misses of a peer share it) or one it asks for, and is retried on
    /// it.
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
        let (mark, deadline) = (self.slots[idx as usize].mark, self.op(idx).deadline);
        if self.peers.covers(mark, deadline, conn) {
            let msg = crate::logging::message(format_args!(
                "peer {peer_id}: remote range [{addr:#x}, +{len}) is not in any region the peer \
                 registered (as of a connection made after the op was submitted)"
            ));
            self.complete(idx, Status::MCFX_E_REMOTE_RANGE, Some(&msg));
            return;
        }
        self.wait_for_conn(peer_id, idx, true);
    }

    /// Polls every live call once, or `budget.poll` of them from where the
    /// last such pass stopped (a caller's pass: short, so it is rarely
    /// preempted holding the passes); finished ones complete (or have
    /// judged) their ops, and one past its deadline times them out. True
    /// when any finished.
    #[inline(never)]
    pub(super) fn poll_inflight(&mut self) -> bool {
        let mut moved = false;
        let budget = self.budget.poll;
        let (mut i, mut left) = if budget >= self.inflight.live {
            (0, self.inflight.live)
        } else {
            (self.inflight.cursor, budget)
        };
        while left > 0 && self.inflight.live > 0 {
            left -= 1;
            if i >= self.inflight.live {
                i = 0;
            }
            let t = &mut self.inflight.transfers[i];
            let id = t.id.take().expect("in-flight transfer has an id");
            let poll = t.conn.as_ref().expect("in-flight transfer has a conn").poll(id);
            let status = match poll {
                Poll::Pending(id) => {
                    let now = self.coarse_now();
                    let t = &mut self.inflight.transfers[i];
                    if !t.deadline.is_some_and(|d| now >= d) {
                        t.id = Some(id);
                        i += 1;
                        continue;
                    }
                    let conn = t.conn.clone().expect("in-flight transfer has a conn");
                    self.inflight.bury(conn, id);
                    Status::MCFX_E_TIMEOUT
                }
                Poll::Done => Status::MCFX_OK,
                Poll::Failed => Status::MCFX_E_TRANSFER_FAILED,
            };
            moved = true;
            // The last live call takes slot `i`: it is polled next.
            self.finish(i, status);
        }
        self.inflight.cursor = i;
        moved
    }

    /// Completes live call `i`'s ops (its id already reported finished or
    /// abandoned) and makes it spare: the last live call takes its place.
    fn finish(&mut self, i: usize, status: Status) {
        let mut members = std::mem::take(&mut self.inflight.transfers[i].members);
        if status == Status::MCFX_OK {
            for &m in &members {
                self.complete(m, status, None);
            }
        } else {
            let conn = self.inflight.transfers[i].conn.clone();
            self.finish_failed(conn, &mut members, status);
        }
        members.clear();
        let inflight = &mut self.inflight;
        let last = inflight.live - 1;
        inflight.transfers[i].members = members;
        if i != last {
            inflight.transfers.swap(i, last);
        }
        inflight.live = last;
    }

    /// `finish` for a call that failed or timed out.
    #[cold]
    #[inline(never)]
    fn finish_failed(&mut self, conn: Option<SharedConn>, members: &mut Vec<u32>, status: Status) {
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

    /// The ops of a call that failed on `failed_on`, each as the peer table
    /// decides (`PeerTable::after_failure`): judged on a connection made
    /// after its submit, waiting for a refresh (which also replaces a
    /// connection that may be dead: peer restarted or gone), or failed (it
    /// already went out again once). During shutdown they fail: no refresh
    /// will come. Empties `members`.
    #[cold]
    #[inline(never)]
    fn failed_transfer(&mut self, failed_on: &SharedConn, members: &mut Vec<u32>) {
        let Some(&first) = members.first() else { return };
        let peer_id = self.op(first).peer;
        if self.shared.queue.is_closed() {
            for m in members.drain(..) {
                let msg = "FlagCX reported the transfer failed (during shutdown: not retried)";
                self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
            }
            return;
        }
        for m in members.drain(..) {
            let deadline = self.op(m).deadline;
            let mark = &mut self.slots[m as usize].mark;
            match self.peers.after_failure(peer_id, failed_on, mark, deadline) {
                AfterFailure::Fail => {
                    let msg = "FlagCX reported the transfer failed, again after a resubmit on \
                               a connection made after the op was submitted";
                    self.complete(m, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
                }
                AfterFailure::Judge(conn) => self.judge_failed(m, &conn),
                AfterFailure::Wait => self.wait_for_conn(peer_id, m, true),
            }
        }
    }

    /// Judges an op whose transfer failed on `conn`, a connection made
    /// after its submit other than the one it failed on: its range gone
    /// there is `MCFX_E_REMOTE_RANGE` (the status its descriptor lookup
    /// gives a later op); still described, it goes to FlagCX again, once
    /// (into a group on the peer's connection: `conn`, unless a miss of
    /// another op asked for a refresh since; then it waits for that).
    #[cold]
    #[inline(never)]
    pub(super) fn judge_failed(&mut self, idx: u32, conn: &Connection) {
        let op = self.op(idx);
        let (peer, remote, len) = (op.peer, op.remote, op.len);
        match judge(conn, remote, len, self.shared.config.max_slice_bytes) {
            Judged::Gone { addr, len } => {
                let msg = crate::logging::message(format_args!(
                    "peer {peer}: remote range [{addr:#x}, +{len}) is no longer in any region \
                     the peer registered (the transfer failed)"
                ));
                self.complete(idx, Status::MCFX_E_REMOTE_RANGE, Some(&msg));
            }
            Judged::Described => {
                self.slots[idx as usize].mark.resubmitted();
                self.route(idx);
            }
        }
    }
}

/// `issue_alone`'s "not this way" (a new peer, a long op, a descriptor
/// miss: the general path takes the op). Out of line and cold, so the
/// compiler lays the common path out straight and keeps FlagCX's call
/// wrapper inline on it (it had left it out of line: 24 instructions per
/// single op).
#[cold]
#[inline(never)]
fn not_alone() -> bool {
    false
}
