//! Grouping of one progress pass's ops by (peer, opcode), and splitting of an
//! op into FlagCX-sized pieces. Pure bookkeeping, kept apart from the
//! progress loop so it can be property-tested.
//!
//! Invariants: every added op index lands in exactly one group; a group's
//! indices keep their arrival order; groups and their vectors are reused
//! across passes (no allocation once they reached their high-water marks).

use std::sync::Arc;

use crate::op::Opcode;

/// A reference to the connection a group's ops go out on: cloned into a
/// group only when it differs from what the group held in an earlier pass.
pub trait ConnRef: Clone {
    /// Whether both refer to the same connection.
    fn same(&self, other: &Self) -> bool;
}

/// Connection references: the same connection, no reference count traffic.
impl<T> ConnRef for Arc<T> {
    #[inline]
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
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
}

impl<P> Default for Groups<P> {
    fn default() -> Self {
        Groups { groups: Vec::new(), live: 0 }
    }
}

impl<P: ConnRef> Groups<P> {
    /// Files op `idx` under (peer, opcode); `conn` is cloned only when the
    /// group is new in this pass and its reused slot held another one.
    /// Returns the group's index (valid until [`Groups::clear`]) for
    /// [`Groups::push`]. Groups are few per pass (peers x 2), so a linear
    /// search beats hashing.
    #[inline]
    pub fn add(&mut self, peer: u64, opcode: Opcode, conn: &P, idx: u32) -> usize {
        let live = &mut self.groups[..self.live];
        if let Some(g) = live.iter().position(|g| g.peer == peer && g.opcode == opcode) {
            self.groups[g].members.push(idx);
            return g;
        }
        if self.live == self.groups.len() {
            self.groups.push(Group { peer, opcode, conn: Some(conn.clone()), members: Vec::new() });
        } else {
            let g = &mut self.groups[self.live];
            g.peer = peer;
            g.opcode = opcode;
            if !g.conn.as_ref().is_some_and(|c| c.same(conn)) {
                g.conn = Some(conn.clone());
            }
        }
        self.groups[self.live].members.push(idx);
        self.live += 1;
        self.live - 1
    }
}

impl<P> Groups<P> {
    /// Files op `idx` under live group `g` (an index [`Groups::add`] gave
    /// in this pass, for the same peer and opcode).
    #[inline]
    pub fn push(&mut self, g: usize, idx: u32) {
        debug_assert!(g < self.live, "group {g} is not live");
        self.groups[g].members.push(idx);
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
        self.live = 0;
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
                prop::collection::vec((0u64..6, any::<bool>()), 0..200), 1..4)
        ) {
            let mut groups: Groups<u64> = Groups::default();
            for ops in passes {
                // Like the progress loop: an op with the key of the op before
                // goes straight to that op's group.
                let mut last = None;
                for (i, (peer, w)) in ops.iter().enumerate() {
                    match last {
                        Some((key, g)) if key == (*peer, *w) => groups.push(g, i as u32),
                        _ => last = Some(((*peer, *w), groups.add(*peer, opcode(*w), &(*peer * 10), i as u32))),
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
