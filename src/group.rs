//! Grouping of one progress pass's ops by (peer, opcode), and splitting of an
//! op into FlagCX-sized pieces. Pure bookkeeping, kept apart from the
//! progress loop so it can be property-tested.
//!
//! Invariants: every added op index lands in exactly one group, unless no
//! memory could be had for it (then in none, and the caller is told); a
//! group's indices keep their arrival order; groups and their vectors are
//! reused across passes (no allocation once they reached their high-water
//! marks), and grow fallibly: an out-of-memory never aborts the host.

use crate::fallible::{self, NoMemory, TryArc};
use crate::op::Opcode;

/// A reference to the connection a group's ops go out on: cloned into a
/// group only when it differs from what the group held in an earlier pass.
pub trait ConnRef: Clone {
    /// Whether both refer to the same connection.
    fn same(&self, other: &Self) -> bool;
}

/// Connection references: the same connection, no reference count traffic.
impl<T> ConnRef for TryArc<T> {
    #[inline]
    fn same(&self, other: &Self) -> bool {
        TryArc::ptr_eq(self, other)
    }
}

/// The ops of one (peer, opcode) in this pass, and the connection they go
/// out on (`P`: an `Arc` of the peer's connection in the progress loop).
pub struct Group<P> {
    pub peer: u64,
    pub opcode: Opcode,
    /// `None` while taken out ([`Groups::take`]), or in a spare group
    /// after [`Groups::forget_spare`].
    pub conn: Option<P>,
    pub members: Vec<u32>,
}

/// Reusable groups; `len` of them are live in the current pass.
pub struct Groups<P> {
    groups: Vec<Group<P>>,
    live: usize,
    /// Where each live group is, by (peer, opcode), once a pass has more
    /// than `LINEAR` of them (see [`Index`]).
    index: Index,
    /// The index holds every live group of this pass (else: linear
    /// search, also when the index could not get memory).
    indexed: bool,
}

/// Up to this many live groups a linear search finds a group; past it the
/// [`Index`] does. A batch over 64 peers (one group each) searched 32
/// groups per op on average: 280 instructions per op in the drain
/// (callgrind, scaling peers:64), most of its cost.
const LINEAR: usize = 8;

impl<P> Default for Groups<P> {
    fn default() -> Self {
        Groups { groups: Vec::new(), live: 0, index: Index::default(), indexed: false }
    }
}

impl<P: ConnRef> Groups<P> {
    /// Files op `idx` under (peer, opcode); `conn` is cloned only when the
    /// group is new in this pass and its reused slot held another one.
    /// Returns the group's index (valid until [`Groups::clear`]) for
    /// [`Groups::push`], or `NoMemory` with the op filed nowhere and the
    /// groups as they were. Groups are few per pass in the common case (a
    /// linear search), many when a batch is spread over many peers (the
    /// index).
    #[inline]
    pub fn add(
        &mut self,
        peer: u64,
        opcode: Opcode,
        conn: &P,
        idx: u32,
    ) -> Result<usize, NoMemory> {
        if let Some(g) = self.find(peer, opcode) {
            self.push(g, idx)?;
            return Ok(g);
        }
        // Memory first: a group is live only once it holds its first op,
        // and filed in the index only then (a key filed for a group that
        // never became live would send the next key's ops to it).
        if self.live == self.groups.len() {
            fallible::reserve(&mut self.groups, 1)?;
            self.groups.push(Group { peer, opcode, conn: None, members: Vec::new() });
        }
        try_push(&mut self.groups[self.live].members, idx)?;
        if self.live >= LINEAR {
            self.index_new(peer, opcode);
        }
        let g = &mut self.groups[self.live];
        g.peer = peer;
        g.opcode = opcode;
        if !g.conn.as_ref().is_some_and(|c| c.same(conn)) {
            g.conn = Some(conn.clone());
        }
        self.live += 1;
        Ok(self.live - 1)
    }
}

/// `members.push(idx)`, growing fallibly: `NoMemory` leaves it unchanged.
#[inline]
fn try_push(members: &mut Vec<u32>, idx: u32) -> Result<(), NoMemory> {
    if members.len() == members.capacity() {
        grow(members)?;
    }
    members.push(idx);
    Ok(())
}

/// Past a member list's high-water mark (rare: lists keep their capacity
/// across passes).
#[cold]
#[inline(never)]
fn grow(members: &mut Vec<u32>) -> Result<(), NoMemory> {
    // Doubling, as `push` would, at least 8 (a call's worth).
    let more = members.len().max(8);
    fallible::reserve(members, more)
}

impl<P> Groups<P> {
    /// The live group of (peer, opcode), if any.
    #[inline]
    fn find(&self, peer: u64, opcode: Opcode) -> Option<usize> {
        if self.indexed {
            return self.index.find(peer, opcode);
        }
        let live = &self.groups[..self.live];
        live.iter().position(|g| g.peer == peer && g.opcode == opcode)
    }

    /// Files the group about to be made (number `live`, past `LINEAR`) in
    /// the index; the first such group of a pass files the others too.
    /// Without memory for a larger index the pass searches linearly.
    #[cold]
    #[inline(never)]
    fn index_new(&mut self, peer: u64, opcode: Opcode) {
        let live = self.live;
        if live == LINEAR || (self.indexed && self.index.full(live + 1)) {
            let keys = self.groups[..live].iter().map(|g| (g.peer, g.opcode));
            self.indexed = self.index.rebuild(live + 1, keys);
        }
        if self.indexed {
            self.index.insert(peer, opcode, live);
        }
    }

    /// Files op `idx` under live group `g` (an index [`Groups::add`] gave
    /// in this pass, for the same peer and opcode); `NoMemory` files it
    /// nowhere.
    #[inline]
    pub fn push(&mut self, g: usize, idx: u32) -> Result<(), NoMemory> {
        debug_assert!(g < self.live, "group {g} is not live");
        try_push(&mut self.groups[g].members, idx)
    }

    /// Members of live group `g` so far.
    #[inline]
    pub fn size(&self, g: usize) -> usize {
        self.groups[g].members.len()
    }

    /// Live groups in this pass.
    #[inline]
    pub fn len(&self) -> usize {
        self.live
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Takes group `i`'s connection and members out (to use while
    /// mutating the caller); hand both back with [`Groups::restore`].
    #[inline]
    pub fn take(&mut self, i: usize) -> (u64, Opcode, P, Vec<u32>) {
        let g = &mut self.groups[i];
        let conn = g.conn.take().expect("group taken twice");
        (g.peer, g.opcode, conn, std::mem::take(&mut g.members))
    }

    #[inline]
    pub fn restore(&mut self, i: usize, conn: P, mut members: Vec<u32>) {
        members.clear();
        let g = &mut self.groups[i];
        g.conn = Some(conn);
        g.members = members;
    }

    /// Drops the connections the spare (not live) groups kept for reuse.
    pub fn forget_spare(&mut self) {
        for g in &mut self.groups[self.live..] {
            g.conn = None;
        }
    }

    /// Ends the pass: every group becomes reusable (their vectors keep their
    /// capacity). Every live group must have been taken and restored (which
    /// empties its members).
    #[inline]
    pub fn clear(&mut self) {
        debug_assert!(
            self.groups[..self.live].iter().all(|g| g.members.is_empty() && g.conn.is_some()),
            "a group was not taken and restored"
        );
        // The index is rebuilt by the next pass that needs it.
        (self.live, self.indexed) = (0, false);
    }
}

/// (peer, opcode) -> live group: open addressing with linear probing, at
/// most half full. An entry is live only if it carries the current
/// `epoch`, so a pass forgets them all with one increment; the table
/// grows (doubling) only past its high-water mark.
#[derive(Default)]
struct Index {
    entries: Vec<Entry>,
    epoch: u32,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    peer: u64,
    epoch: u32,
    /// The group's index, and its opcode in the top bit.
    group: u32,
}

const WRITE_BIT: u32 = 1 << 31;

impl Index {
    #[inline]
    fn tag(opcode: Opcode) -> u32 {
        match opcode {
            Opcode::Write => WRITE_BIT,
            Opcode::Read => 0,
        }
    }

    #[inline]
    fn home(&self, peer: u64, opcode: Opcode) -> usize {
        // Fibonacci hashing; the opcode flips the top bit of the key.
        let key = peer ^ u64::from(Self::tag(opcode)) << 32;
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - self.entries.len().trailing_zeros())) as usize
    }

    #[inline]
    fn find(&self, peer: u64, opcode: Opcode) -> Option<usize> {
        let mask = self.entries.len() - 1;
        let tag = Self::tag(opcode);
        let mut i = self.home(peer, opcode);
        loop {
            let e = self.entries[i];
            if e.epoch != self.epoch {
                return None;
            }
            if e.peer == peer && e.group & WRITE_BIT == tag {
                return Some((e.group & !WRITE_BIT) as usize);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `groups` groups would fill it past half.
    fn full(&self, groups: usize) -> bool {
        groups * 2 > self.entries.len()
    }

    /// Empties it for a pass with `groups` groups (growing it if they
    /// would fill it past half) and files `keys` (groups 0, 1, ...); false,
    /// with the index unusable, when it could not get the memory.
    fn rebuild(&mut self, groups: usize, keys: impl Iterator<Item = (u64, Opcode)>) -> bool {
        let len = (groups * 2).next_power_of_two().max(2 * LINEAR);
        if len > self.entries.len() {
            let Ok(mut entries) = fallible::with_capacity(len) else { return false };
            entries.resize(len, Entry::default());
            (self.entries, self.epoch) = (entries, 1);
        } else {
            self.forget();
        }
        for (g, (peer, opcode)) in keys.enumerate() {
            self.insert(peer, opcode, g);
        }
        true
    }

    fn insert(&mut self, peer: u64, opcode: Opcode, group: usize) {
        debug_assert!((group as u32) < WRITE_BIT);
        let mask = self.entries.len() - 1;
        let mut i = self.home(peer, opcode);
        while self.entries[i].epoch == self.epoch {
            i = (i + 1) & mask;
        }
        self.entries[i] =
            Entry { peer, epoch: self.epoch, group: group as u32 | Self::tag(opcode) };
    }

    /// Forgets every entry; after 2^32 passes the table is wiped, so an
    /// entry of an old pass can never carry the current epoch.
    fn forget(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.entries.fill(Entry::default());
            self.epoch = 1;
        }
    }
}

/// Cuts `[0, len)` into consecutive pieces of at most `max` bytes:
/// `(offset, length)` pairs covering the range exactly once.
pub fn pieces(len: u64, max: u64) -> impl Iterator<Item = (u64, u64)> {
    debug_assert!(max > 0, "max piece length must be positive");
    let max = max.max(1);
    (0..len.div_ceil(max)).map(move |i| {
        let off = i * max;
        (off, (len - off).min(max))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    impl ConnRef for u64 {
        fn same(&self, other: &Self) -> bool {
            self == other
        }
    }

    fn opcode(b: bool) -> Opcode {
        if b {
            Opcode::Write
        } else {
            Opcode::Read
        }
    }

    proptest! {
        #[test]
        fn every_op_lands_in_exactly_one_group_in_arrival_order(
            passes in prop::collection::vec(
                prop::collection::vec((0u64..40, any::<bool>()), 0..200), 1..6)
        ) {
            let mut groups: Groups<u64> = Groups::default();
            for ops in passes {
                // Like the progress loop: an op with the key of the op before
                // goes straight to that op's group.
                let mut last = None;
                for (i, (peer, w)) in ops.iter().enumerate() {
                    match last {
                        Some((key, g)) if key == (*peer, *w) => groups.push(g, i as u32).unwrap(),
                        _ => {
                            let g = groups.add(*peer, opcode(*w), &(*peer * 10), i as u32).unwrap();
                            last = Some(((*peer, *w), g));
                        }
                    }
                }
                let mut seen = vec![0u32; ops.len()];
                let mut keys = HashMap::new();
                for g in 0..groups.len() {
                    let (peer, op, conn, members) = groups.take(g);
                    prop_assert_eq!(conn, peer * 10);
                    prop_assert!(keys.insert((peer, op), ()).is_none(), "two groups for one key");
                    prop_assert!(members.windows(2).all(|w| w[0] < w[1]), "order lost");
                    for &m in &members {
                        let (p, w) = ops[m as usize];
                        prop_assert_eq!((p, opcode(w)), (peer, op));
                        seen[m as usize] += 1;
                    }
                    groups.restore(g, conn, members);
                }
                prop_assert!(seen.iter().all(|&n| n == 1));
                groups.clear();
                prop_assert!(groups.is_empty());
            }
        }

        /// Passes with more groups than `LINEAR` use the index; its
        /// entries of earlier passes never answer, across the epoch's wrap.
        #[test]
        fn the_index_answers_for_its_own_pass_only(
            passes in prop::collection::vec(prop::collection::vec(0u64..64, 9..100), 1..8)
        ) {
            let mut groups: Groups<u64> = Groups::default();
            groups.index.epoch = u32::MAX - 3;
            for peers in passes {
                let mut want: HashMap<u64, usize> = HashMap::new();
                for (i, &peer) in peers.iter().enumerate() {
                    let g = groups.add(peer, Opcode::Write, &peer, i as u32).unwrap();
                    prop_assert_eq!(*want.entry(peer).or_insert(g), g);
                    prop_assert_eq!(groups.find(peer, Opcode::Read), None);
                }
                prop_assert_eq!(groups.len(), want.len());
                for g in 0..groups.len() {
                    let (_, _, conn, members) = groups.take(g);
                    groups.restore(g, conn, members);
                }
                groups.clear();
            }
        }

        /// An index that could not grow (no memory) leaves the pass to the
        /// linear search: still one group per key.
        #[test]
        fn a_pass_whose_index_could_not_grow_searches_linearly(
            peers in prop::collection::vec(0u64..64, 30..100), fail_at in 9usize..20
        ) {
            let mut groups: Groups<u64> = Groups::default();
            let mut want: HashMap<u64, usize> = HashMap::new();
            for (i, &peer) in peers.iter().enumerate() {
                if groups.len() == fail_at {
                    // What `index_new` does when `rebuild` finds no memory.
                    groups.indexed = false;
                }
                let g = groups.add(peer, Opcode::Write, &peer, i as u32).unwrap();
                prop_assert_eq!(*want.entry(peer).or_insert(g), g);
            }
            prop_assert_eq!(groups.len(), want.len());
        }

        /// Allocations that fail at chosen points (the next fallible one
        /// after op `k`, for each `k` in `fail`): the op that needed it is
        /// filed nowhere and told so, every other op lands in exactly one
        /// group of its key in arrival order, the index stays right (many
        /// peers) and a later pass reuses the groups.
        #[test]
        fn an_op_that_finds_no_memory_is_filed_nowhere_and_the_rest_stay_grouped(
            passes in prop::collection::vec(
                (prop::collection::vec(0u64..40, 0..120),
                 prop::collection::hash_set(0usize..120, 0..12)), 1..4)
        ) {
            let mut groups: Groups<u64> = Groups::default();
            for (ops, fail) in passes {
                let mut refused = vec![false; ops.len()];
                for (i, &peer) in ops.iter().enumerate() {
                    crate::fallible::fail_after(fail.contains(&i).then_some(0));
                    let (before, find) = (groups.len(), groups.find(peer, Opcode::Write));
                    match groups.add(peer, Opcode::Write, &peer, i as u32) {
                        Ok(g) => prop_assert!(find.is_none_or(|f| f == g)),
                        Err(NoMemory) => {
                            refused[i] = true;
                            prop_assert_eq!(groups.len(), before, "a refused op made a group");
                        }
                    }
                }
                crate::fallible::fail_after(None);
                let mut seen = vec![0u32; ops.len()];
                let mut keys = HashMap::new();
                for g in 0..groups.len() {
                    let (peer, _, conn, members) = groups.take(g);
                    prop_assert_eq!(conn, peer);
                    prop_assert!(keys.insert(peer, ()).is_none(), "two groups for one key");
                    prop_assert!(members.windows(2).all(|w| w[0] < w[1]), "order lost");
                    for &m in &members {
                        prop_assert_eq!(ops[m as usize], peer);
                        seen[m as usize] += 1;
                    }
                    groups.restore(g, conn, members);
                }
                for (i, &n) in seen.iter().enumerate() {
                    prop_assert_eq!(n, u32::from(!refused[i]), "op {} filed {} times", i, n);
                }
                groups.clear();
            }
        }

        /// Without the injection, a fresh pass's groups grow past their
        /// first capacity through the fallible path (so the test above
        /// reaches it).
        #[test]
        fn groups_grow_through_the_fallible_allocator(n in 9usize..64) {
            let mut groups: Groups<u64> = Groups::default();
            let before = crate::fallible::allocations();
            for i in 0..n {
                groups.add(0, Opcode::Write, &0, i as u32).unwrap();
            }
            prop_assert!(crate::fallible::allocations() > before);
        }

        #[test]
        fn pieces_cover_the_range_exactly_within_the_limit(
            len in 0u64..(1 << 40), max in 1u64..(1 << 33)
        ) {
            let mut next = 0;
            let mut count = 0u64;
            for (off, piece) in pieces(len, max) {
                prop_assert_eq!(off, next);
                prop_assert!(piece > 0 && piece <= max);
                next += piece;
                count += 1;
            }
            prop_assert_eq!(next, len);
            prop_assert_eq!(count, len.div_ceil(max));
        }
    }
}
