//! Peer state: what the progress thread knows of each peer, and the rules
//! that decide what an op of that peer does next.
//!
//! Owns the [`PeerTable`] (per peer: its connection, whether a connect is
//! under way, the ops waiting for one), the count of connect requests filed,
//! and the per-op record of them ([`OpMark`], kept in the op's slot). It
//! decides; the progress thread carries the decisions out (completes ops,
//! files them into groups, issues FlagCX calls).
//!
//! The rule (README, "Limits worth knowing"): an op fails
//! `MCFX_E_REMOTE_RANGE` only if its remote range is not in the peer's
//! regions as seen by a connection made after the op was submitted. FlagCX
//! describes a peer's regions as they were when a connection was made, so:
//! - an op goes out on the peer's connection when it has one and no connect
//!   is under way ([`PeerTable::ready`]), else it waits for the connect
//!   ([`PeerTable::wait`]; a new peer's first connect is requested then);
//! - a descriptor miss on a connection that [covers](PeerTable::covers) the
//!   op (made after its submit) fails it; otherwise the op waits for a
//!   refresh: the one under way for its peer, or one it asks for; all
//!   misses of a peer while one is under way share it;
//! - when a connection lands ([`PeerTable::land`]) its waiting ops are
//!   retried on it, where a miss is judged again;
//! - an op whose transfer failed is judged ([`judge`]) on a connection that
//!   covers it other than the one it failed on ([`PeerTable::after_failure`]):
//!   its range gone there is `MCFX_E_REMOTE_RANGE`; still described, it goes
//!   out once more on it (the peer registered the base again, with a new
//!   key), and a second failure is final.
//!
//! Invariants:
//! - a peer has at most one connect under way (`connecting`), filed with the
//!   connector pool once; ops wait in its list only while one is under way;
//! - `waiting` is the number of ops in all the lists; `requested` grows by
//!   one with every request filed, and the peer's `request` is the number of
//!   its latest, which the connection it brings carries;
//! - an op's [`OpMark`] holds `requested` as it was when the op left the
//!   queue, so an op covered by order left the queue (and was submitted)
//!   before the connection was asked for;
//! - what grows with the ops grows fallibly: without memory for a new peer or
//!   a list entry, [`PeerTable::wait`] says so and the op fails
//!   (`MCFX_E_NO_MEMORY`); an emptied list keeps at most [`SPARE_WAITING`]
//!   entries of capacity.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::clock::MonoTime;
use crate::error::{Error, Status};
use crate::fallible::NoMemory;
use crate::group::pieces;
use crate::peers::connector::{ConnectKind, ConnectResult, Connection, Connects, SharedConn};

/// A peer's waiting list that emptied keeps at most this capacity (more is
/// freed): a burst for a slow peer does not leave its memory behind.
pub(crate) const SPARE_WAITING: usize = 64;

/// What the rule needs to know of an op, in its slot: set when the op leaves
/// the queue ([`PeerTable::mark`]), changed only on the cold paths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpMark {
    /// `PeerTable::requested` when the op left the queue: a connection whose
    /// request number is higher was asked for after the op was submitted.
    drained_at: u32,
    /// Its FlagCX transfer failed; it waits for a connection made after its
    /// submit to be judged on (see [`PeerTable::after_failure`]).
    failed_transfer: bool,
    /// It went out again after a failed transfer: another failure is its
    /// last (`MCFX_E_TRANSFER_FAILED`).
    retried: bool,
}

impl OpMark {
    /// Whether it waits to be judged after a failed transfer.
    #[inline]
    pub fn failed_transfer(self) -> bool {
        self.failed_transfer
    }

    /// It goes out again after a failed transfer (at most once).
    pub fn resubmitted(&mut self) {
        self.failed_transfer = false;
        self.retried = true;
    }
}

/// What a failed transfer's op does next (see [`PeerTable::after_failure`]).
pub(crate) enum AfterFailure {
    /// It already went out again once: it fails.
    Fail,
    /// Judge it on this connection (made after its submit).
    Judge(SharedConn),
    /// Wait for a refresh (it is filed with [`PeerTable::wait`]).
    Wait,
}

/// A connect result applied to its peer (see [`PeerTable::land`]).
pub(crate) enum Landing {
    /// The peer has its new connection; these ops waited for it.
    Connected { waiting: Vec<u32>, replaced: bool },
    /// The connect failed: these ops waited for it. A failed first connect
    /// forgets the peer (the next op tries again); a failed refresh keeps
    /// the old connection.
    Failed { waiting: Vec<u32>, error: Error },
}

/// A failed transfer's op judged on a connection made after its submit.
pub(crate) enum Judged {
    /// This piece of its remote range is in no region the peer registered.
    Gone { addr: u64, len: u64 },
    /// Its whole range is described (under the connection's keys).
    Described,
}

/// Judges an op's remote range `[remote, +len)` (cut in `max_slice` pieces,
/// as it goes out) on `conn`.
pub(crate) fn judge(conn: &Connection, remote: u64, len: u64, max_slice: u64) -> Judged {
    let gone = pieces(len, max_slice)
        .find(|&(off, piece)| conn.make_desc(remote + off, piece as u32).is_err());
    match gone {
        Some((off, piece)) => Judged::Gone { addr: remote + off, len: piece },
        None => Judged::Described,
    }
}

/// Connection state of one peer.
struct Peer {
    conn: Option<SharedConn>,
    /// A connect (first or refresh) is under way.
    connecting: bool,
    /// Ops (slot indices) waiting for `connecting` to finish.
    waiting: Vec<u32>,
    /// The number of its latest connect request (see
    /// `PeerTable::requested`); the connection it brings carries it.
    request: u32,
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

/// The progress thread's peers (see the module doc).
pub(crate) struct PeerTable {
    peers: HashMap<u64, Peer, BuildHasherDefault<IdHasher>>,
    /// Connect requests filed so far, all peers together (wrapping).
    requested: u32,
    /// Ops in all the waiting lists (a pass skips the expiry scan at 0).
    waiting: usize,
    /// An op's deadline after its submit call's clock reading (see
    /// `TransportState::deadline_after_ns`): a deadline less this is the
    /// reading.
    deadline_after_ns: u64,
}

impl PeerTable {
    pub fn new(deadline_after_ns: u64) -> PeerTable {
        PeerTable { peers: HashMap::default(), requested: 0, waiting: 0, deadline_after_ns }
    }

    /// The record of an op leaving the queue now.
    #[inline]
    pub fn mark(&self) -> OpMark {
        OpMark { drained_at: self.requested, failed_transfer: false, retried: false }
    }

    /// Ops waiting for a connection, all peers together.
    #[inline]
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The peer's connection, when its ops may go out on it now (it has
    /// one and no connect is under way).
    #[inline]
    pub fn ready(&self, peer_id: u64) -> Option<&SharedConn> {
        match self.peers.get(&peer_id) {
            Some(Peer { conn: Some(conn), connecting: false, .. }) => Some(conn),
            _ => None,
        }
    }

    /// Files op `idx` in its peer's waiting list: creates the peer (asking
    /// for its first connect) if it is new; with `refresh`, asks for a
    /// reconnect unless a connect is under way. `Err` (what was missing)
    /// when the list or the table cannot grow: the op then fails.
    #[cold]
    #[inline(never)]
    pub fn wait(
        &mut self,
        peer_id: u64,
        idx: u32,
        refresh: bool,
        connects: &Connects,
    ) -> Result<(), &'static str> {
        if !self.peers.contains_key(&peer_id) && self.peers.try_reserve(1).is_err() {
            return Err("no memory for a new peer");
        }
        let peer = self.entry(peer_id, connects);
        if peer.waiting.try_reserve(1).is_err() {
            return Err("no memory for the peer's list of waiting ops");
        }
        let ask = refresh && !peer.connecting;
        peer.waiting.push(idx);
        if ask {
            self.refresh(peer_id, connects);
        }
        self.waiting += 1;
        Ok(())
    }

    /// Makes `peer_id` known (its first connect requested), as an op for a
    /// new peer does (tests).
    #[cfg(test)]
    pub(crate) fn know(&mut self, peer_id: u64, connects: &Connects) {
        self.entry(peer_id, connects);
    }

    /// The peer's entry, created (and its first connect requested) if new.
    fn entry(&mut self, peer_id: u64, connects: &Connects) -> &mut Peer {
        let requested = &mut self.requested;
        self.peers.entry(peer_id).or_insert_with(|| {
            *requested = requested.wrapping_add(1);
            connects.request(peer_id, ConnectKind::First);
            Peer { conn: None, connecting: true, waiting: Vec::new(), request: *requested }
        })
    }

    /// Asks for a refresh of the peer's connection (a reconnect), which must
    /// have none under way.
    pub(crate) fn refresh(&mut self, peer_id: u64, connects: &Connects) {
        let Some(peer) = self.peers.get_mut(&peer_id) else { return };
        debug_assert!(!peer.connecting, "a second connect for one peer");
        self.requested = self.requested.wrapping_add(1);
        peer.connecting = true;
        peer.request = self.requested;
        connects.request(peer_id, ConnectKind::Refresh);
    }

    /// Whether `conn` was made after the submit of the op with `mark` and
    /// `deadline`, so that it describes everything the peer registered
    /// before that submit: when the op left the queue before the connection
    /// was asked for (exact: both happen on the progress thread), or when
    /// the exact clock read before the connection's FlagCX connect is later
    /// than the op's submit call's reading (its deadline less
    /// `deadline_after_ns`; the clock is one system-wide value, so a later
    /// reading was taken later; equal ones do not count).
    pub fn covers(&self, mark: OpMark, deadline: MonoTime, conn: &Connection) -> bool {
        drained_before(mark.drained_at, conn.request)
            || conn.made > deadline.minus_ns(self.deadline_after_ns)
    }

    /// The peer's ready connection if it covers the op (see `covers`).
    pub fn covering(&self, peer_id: u64, mark: OpMark, deadline: MonoTime) -> Option<SharedConn> {
        self.ready(peer_id).filter(|c| self.covers(mark, deadline, c)).cloned()
    }

    /// What an op whose transfer failed on `failed_on` does next: it fails
    /// if it already went out again once; it is judged on the peer's
    /// connection if that one is another and covers it; otherwise it waits
    /// for a refresh. Marks it as waiting to be judged.
    pub fn after_failure(
        &self,
        peer_id: u64,
        failed_on: &SharedConn,
        mark: &mut OpMark,
        deadline: MonoTime,
    ) -> AfterFailure {
        if mark.retried {
            return AfterFailure::Fail;
        }
        mark.failed_transfer = true;
        match self.covering(peer_id, *mark, deadline) {
            Some(conn) if !SharedConn::ptr_eq(&conn, failed_on) => AfterFailure::Judge(conn),
            _ => AfterFailure::Wait,
        }
    }

    /// Applies a connect result to its peer and hands back the ops that
    /// waited for it (see [`Landing`]). A result for a peer the table no
    /// longer has (or never had) hands back none.
    pub fn land(&mut self, r: ConnectResult) -> Landing {
        let outcome = r.outcome.and_then(|mut conn| {
            if let Some(peer) = self.peers.get(&r.peer) {
                conn.request = peer.request;
            }
            SharedConn::try_new(conn).map_err(|NoMemory| {
                Error::new(Status::MCFX_E_NO_MEMORY, "no memory for the peer's new connection")
            })
        });
        let landing = match outcome {
            Ok(conn) => match self.peers.get_mut(&r.peer) {
                Some(peer) => {
                    let replaced = peer.conn.replace(conn).is_some();
                    peer.connecting = false;
                    Landing::Connected { waiting: std::mem::take(&mut peer.waiting), replaced }
                }
                None => Landing::Connected { waiting: Vec::new(), replaced: false },
            },
            Err(error) => {
                let mut waiting = Vec::new();
                if let Some(mut peer) = self.peers.remove(&r.peer) {
                    waiting = std::mem::take(&mut peer.waiting);
                    if r.kind == ConnectKind::Refresh {
                        // Keep the old connection: only the newer regions
                        // were unreachable, and the ops that needed them
                        // fail. (Re-inserted where it was removed from: no
                        // allocation.)
                        peer.connecting = false;
                        self.peers.insert(r.peer, peer);
                    }
                }
                Landing::Failed { waiting, error }
            }
        };
        let (Landing::Connected { waiting, .. } | Landing::Failed { waiting, .. }) = &landing;
        self.waiting -= waiting.len();
        landing
    }

    /// Moves the waiting ops that `late` picks into `out` (empty, and filled
    /// up to its capacity at most); true when it filled up (more may be
    /// late). Lists that emptied give back what a burst made them grow to.
    pub fn take_late(&mut self, out: &mut Vec<u32>, mut late: impl FnMut(u32) -> bool) -> bool {
        debug_assert!(out.is_empty());
        let room = out.capacity();
        for peer in self.peers.values_mut() {
            peer.waiting.retain(|&idx| {
                if late(idx) && out.len() < room {
                    out.push(idx);
                    return false;
                }
                true
            });
            if peer.waiting.is_empty() && peer.waiting.capacity() > SPARE_WAITING {
                peer.waiting = Vec::new();
            }
        }
        self.waiting -= out.len();
        out.len() == room
    }

    /// Shutdown: every waiting op; the peers go with their lists (the
    /// transfers in flight hold their own connections).
    pub fn take_all_waiting(&mut self) -> impl Iterator<Item = u32> {
        self.waiting = 0;
        std::mem::take(&mut self.peers).into_values().flat_map(|peer| peer.waiting)
    }
}

/// Whether an op that left the queue when `drained_at` requests were filed
/// did so before request number `request` was filed (wrapping: the two are
/// less than 2^31 requests apart, which an op's life never sees).
#[inline]
fn drained_before(drained_at: u32, request: u32) -> bool {
    (request.wrapping_sub(drained_at) as i32) > 0
}

#[cfg(test)]
mod tests {
    use super::drained_before;

    #[test]
    fn request_order_survives_the_counter_wrapping() {
        assert!(drained_before(0, 1));
        assert!(!drained_before(1, 1), "drained after request 1 was filed");
        assert!(drained_before(u32::MAX, 0), "request 0 filed after the wrap");
        assert!(!drained_before(5, 3));
    }
}
