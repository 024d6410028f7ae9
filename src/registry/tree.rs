//! The registered regions as a persistent (copy-on-write) B+tree keyed by
//! base address.
//!
//! Readers walk a published root without locks or allocation. A writer
//! (under the registry's lock) builds a new root that shares every node off
//! the one root-to-leaf path it changed, and the registry publishes it with
//! one `ArcSwap` store; readers holding the old root keep a consistent old
//! tree. An insert or a remove copies the nodes of that path, plus at most
//! one sibling per level when a node splits, merges or borrows: O(B log_B n)
//! bytes and O(log_B n) allocations, each fallible ([`super::fallible`]).
//! When one fails nothing was published, so the tree never changes half-way.
//!
//! Invariants (checked by `check` in the tests):
//! - every leaf is at the same depth; a leaf's regions are sorted by base,
//!   strictly (the registry keeps them disjoint);
//! - a branch's `min` of a child is exactly the smallest base under it, so
//!   a search descends into one child per level;
//! - every node but the root holds `MIN..=B` entries; the root is a leaf
//!   (possibly empty) or a branch of at least two children.

use arrayvec::ArrayVec;

use crate::fallible::{NoMemory, TryArc};

/// Most entries of a node: a leaf is 32 regions (1 KiB), a branch 32
/// children (512 B); 4 levels hold a million regions.
const B: usize = 32;
/// Fewest entries of a node other than the root.
const MIN: usize = B / 2;

/// One registered region (an entry of a leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub base: usize,
    pub len: usize,
    /// Its counter slot, which also keeps its FlagCX id (`Registry::mr`).
    pub slot: u32,
    /// The registration it belongs to (see the registry's invariants).
    pub generation: u64,
}

impl Region {
    pub fn end(&self) -> usize {
        self.base + self.len
    }
}

/// A child of a branch and the smallest base under it.
#[derive(Clone)]
pub(crate) struct Child {
    min: usize,
    node: NodeRef,
}

pub(crate) type NodeRef = TryArc<Node>;

// Nodes live behind a TryArc, one allocation each: a branch (about 1 node in
// 16) takes a leaf's 1 KiB instead of its 520 B, which is not worth a
// second node type.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Node {
    Leaf(ArrayVec<Region, B>),
    Branch(ArrayVec<Child, B>),
}

/// The entries of one kind of node, so splitting and merging is written once.
trait Entry: Clone {
    fn key(&self) -> usize;
    fn node(entries: ArrayVec<Self, B>) -> Node;
}

impl Entry for Region {
    fn key(&self) -> usize {
        self.base
    }
    fn node(entries: ArrayVec<Region, B>) -> Node {
        Node::Leaf(entries)
    }
}

impl Entry for Child {
    fn key(&self) -> usize {
        self.min
    }
    fn node(entries: ArrayVec<Child, B>) -> Node {
        Node::Branch(entries)
    }
}

/// The index of the last entry whose key is at most `key`.
#[inline]
fn floor_index<E: Entry>(entries: &[E], key: usize) -> Option<usize> {
    entries.partition_point(|e| e.key() <= key).checked_sub(1)
}

impl Node {
    /// An empty tree.
    pub fn empty() -> Node {
        Node::Leaf(ArrayVec::new())
    }

    fn len(&self) -> usize {
        match self {
            Node::Leaf(rs) => rs.len(),
            Node::Branch(cs) => cs.len(),
        }
    }

    /// The smallest base under a non-empty node.
    fn min(&self) -> usize {
        match self {
            Node::Leaf(rs) => rs[0].base,
            Node::Branch(cs) => cs[0].min,
        }
    }

    /// The region with the greatest base at most `addr`.
    ///
    /// Hot path (a submit's lookup): per level a binary search of at most 32
    /// keys and one pointer to follow; no lock, no allocation, no atomic.
    #[inline]
    pub fn floor(&self, addr: usize) -> Option<&Region> {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(rs) => return floor_index(rs, addr).map(|i| &rs[i]),
                Node::Branch(cs) => node = &cs[floor_index(cs, addr)?].node,
            }
        }
    }

    /// The region starting at `base`.
    pub fn get(&self, base: usize) -> Option<&Region> {
        self.floor(base).filter(|r| r.base == base)
    }

    /// Calls `f` on every region, in order of base.
    pub fn for_each(&self, f: &mut impl FnMut(&Region)) {
        match self {
            Node::Leaf(rs) => rs.iter().for_each(f),
            Node::Branch(cs) => cs.iter().for_each(|c| c.node.for_each(f)),
        }
    }
}

/// A node rebuilt by an insert: itself, or split in two.
enum Grown {
    One(NodeRef),
    Two(NodeRef, NodeRef),
}

fn alloc<E: Entry>(entries: &[E]) -> Result<Child, NoMemory> {
    let node = E::node(entries.iter().cloned().collect());
    Ok(Child { min: entries[0].key(), node: TryArc::try_new(node)? })
}

/// `entries` (at most 2B) as one node, or two of about half each.
fn build<E: Entry>(entries: &[E]) -> Result<Grown, NoMemory> {
    if entries.len() <= B {
        return Ok(Grown::One(alloc(entries)?.node));
    }
    let (left, right) = entries.split_at(entries.len() / 2);
    Ok(Grown::Two(alloc(left)?.node, alloc(right)?.node))
}

/// A copy of the tree at `root` with `r` added; its base must not be in it.
pub(crate) fn insert(root: &Node, r: Region) -> Result<NodeRef, NoMemory> {
    match insert_under(root, r)? {
        Grown::One(node) => Ok(node),
        Grown::Two(a, b) => {
            let children = [Child { min: a.min(), node: a }, Child { min: b.min(), node: b }];
            Ok(alloc(&children)?.node)
        }
    }
}

fn insert_under(node: &Node, r: Region) -> Result<Grown, NoMemory> {
    match node {
        Node::Leaf(rs) => {
            let at = rs.partition_point(|x| x.base < r.base);
            let mut all: ArrayVec<Region, { B + 1 }> = rs.iter().copied().collect();
            all.insert(at, r);
            build(&all)
        }
        Node::Branch(cs) => {
            // The child whose range takes the base (the first for a new minimum).
            let i = floor_index(cs, r.base).unwrap_or(0);
            let grown = insert_under(&cs[i].node, r)?;
            let mut all: ArrayVec<Child, { B + 1 }> = cs[..i].iter().cloned().collect();
            match grown {
                Grown::One(n) => all.push(Child { min: n.min(), node: n }),
                Grown::Two(a, b) => {
                    all.push(Child { min: a.min(), node: a });
                    all.push(Child { min: b.min(), node: b });
                }
            }
            all.extend(cs[i + 1..].iter().cloned());
            build(&all)
        }
    }
}

/// A copy of the tree at `root` without the region starting at `base`
/// (which must be in it); None when the tree is then empty.
pub(crate) fn remove(root: &Node, base: usize) -> Result<Option<NodeRef>, NoMemory> {
    Ok(match remove_under(root, base)? {
        Node::Leaf(rs) if rs.is_empty() => None,
        // A root branch left with one child gives way to it (one level less).
        Node::Branch(cs) if cs.len() == 1 => Some(cs[0].node.clone()),
        node => Some(TryArc::try_new(node)?),
    })
}

/// `node` without `base`, not yet allocated (its parent may merge it).
fn remove_under(node: &Node, base: usize) -> Result<Node, NoMemory> {
    match node {
        Node::Leaf(rs) => {
            let mut rs = rs.clone();
            let at = rs.iter().position(|r| r.base == base).expect("the caller found it");
            rs.remove(at);
            Ok(Node::Leaf(rs))
        }
        Node::Branch(cs) => {
            let i = floor_index(cs, base).expect("the caller found it");
            let child = remove_under(&cs[i].node, base)?;
            let mut all: ArrayVec<Child, B> = ArrayVec::new();
            if child.len() >= MIN {
                all.extend(cs[..i].iter().cloned());
                all.push(Child { min: child.min(), node: TryArc::try_new(child)? });
                all.extend(cs[i + 1..].iter().cloned());
            } else {
                // Too small: merge with a sibling, or share its entries.
                let (lo, hi) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
                let merged = if lo == i {
                    combine(&child, &cs[hi].node)?
                } else {
                    combine(&cs[lo].node, &child)?
                };
                all.extend(cs[..lo].iter().cloned());
                match merged {
                    Grown::One(n) => all.push(Child { min: n.min(), node: n }),
                    Grown::Two(a, b) => {
                        all.push(Child { min: a.min(), node: a });
                        all.push(Child { min: b.min(), node: b });
                    }
                }
                all.extend(cs[hi + 1..].iter().cloned());
            }
            Ok(Node::Branch(all))
        }
    }
}

/// Two neighbours of one level (`left` before `right`) as one node, or two
/// of about half each.
fn combine(left: &Node, right: &Node) -> Result<Grown, NoMemory> {
    fn both<E: Entry>(left: &[E], right: &[E]) -> Result<Grown, NoMemory> {
        let mut all: ArrayVec<E, { 2 * B }> = left.iter().cloned().collect();
        all.extend(right.iter().cloned());
        build(&all)
    }
    match (left, right) {
        (Node::Leaf(a), Node::Leaf(b)) => both(a, b),
        (Node::Branch(a), Node::Branch(b)) => both(a, b),
        _ => unreachable!("siblings are at the same depth"),
    }
}

/// The tree's invariants (see the module doc); returns its regions.
#[cfg(test)]
pub(crate) fn check(root: &Node) -> Vec<Region> {
    fn walk(node: &Node, root: bool, depth: usize, leaves: &mut Vec<usize>, out: &mut Vec<Region>) {
        let n = node.len();
        assert!(n <= B, "overfull node");
        if root {
            assert!(matches!(node, Node::Leaf(_)) || n >= 2, "a root branch of one child");
        } else {
            assert!(n >= MIN, "underfull node: {n}");
        }
        match node {
            Node::Leaf(rs) => {
                leaves.push(depth);
                out.extend(rs.iter().copied());
            }
            Node::Branch(cs) => {
                for c in cs {
                    assert_eq!(c.min, c.node.min(), "a stale minimum");
                    walk(&c.node, false, depth + 1, leaves, out);
                }
            }
        }
    }
    let (mut leaves, mut out) = (Vec::new(), Vec::new());
    walk(root, true, 0, &mut leaves, &mut out);
    assert!(leaves.windows(2).all(|d| d[0] == d[1]), "leaves at different depths");
    assert!(out.windows(2).all(|w| w[0].end() <= w[1].base), "unsorted or overlapping");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fallible;

    fn region(base: usize, len: usize) -> Region {
        Region { base, len, slot: 0, generation: base as u64 }
    }

    /// xorshift64*, fixed seed: the same sequence on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn depth(node: &Node) -> usize {
        match node {
            Node::Leaf(_) => 1,
            Node::Branch(cs) => 1 + depth(&cs[0].node),
        }
    }

    /// Random inserts and removes against a BTreeMap, in phases that grow
    /// the tree to three levels and shrink it to nothing again; the
    /// invariants are checked and lookups compared after the steps,
    /// including at the edges of every region touched.
    #[test]
    fn random_inserts_and_removes_match_a_sorted_map() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut model: BTreeMap<usize, usize> = BTreeMap::new();
        let mut root = TryArc::try_new(Node::empty()).unwrap();
        let (mut deepest, mut emptied) = (0, 0);
        for step in 0..40_000 {
            // Bases on a 16-byte grid of 8192 places, lengths 1..=16.
            let base = 0x1000 + rng.below(8192) as usize * 16;
            let growing = (step / 10_000) % 2 == 0;
            let insert_now = rng.below(10) < if growing { 8 } else { 2 };
            if insert_now && !model.contains_key(&base) {
                let len = 1 + rng.below(16) as usize;
                root = insert(&root, region(base, len)).unwrap();
                model.insert(base, len);
            } else if let Some((&b, _)) = model.range(base..).next().or(model.iter().next()) {
                root = match remove(&root, b).unwrap() {
                    Some(r) => r,
                    None => {
                        emptied += 1;
                        TryArc::try_new(Node::empty()).unwrap()
                    }
                };
                model.remove(&b);
            }
            deepest = deepest.max(depth(&root));
            if step % 97 == 0 || model.len() < 40 {
                let regions = check(&root);
                let want: Vec<_> = model.iter().map(|(&b, &l)| (b, l)).collect();
                assert_eq!(regions.iter().map(|r| (r.base, r.len)).collect::<Vec<_>>(), want);
            }
            for probe in
                [base.wrapping_sub(1), base, base + 7, base + 16, rng.below(1 << 18) as usize]
            {
                let want = model.range(..=probe).next_back().map(|(&b, _)| b);
                assert_eq!(
                    root.floor(probe).map(|r| r.base),
                    want,
                    "step {step}, probe {probe:#x}"
                );
                let exact = model.contains_key(&probe).then_some(probe);
                assert_eq!(root.get(probe).map(|r| r.base), exact, "step {step}, probe {probe:#x}");
            }
        }
        assert!(deepest >= 3, "the tree grew to {deepest} levels only");
        assert!(emptied >= 1, "the tree never emptied");
    }

    #[test]
    fn an_insert_allocates_a_path_not_the_table() {
        let mut root = TryArc::try_new(Node::empty()).unwrap();
        let mut most = 0;
        for i in 0..100_000usize {
            let before = fallible::allocations();
            // Bases in a scattered order, so inserts land all over the tree.
            let base = (i.wrapping_mul(0x9e37_79b9) % 1_000_003) * 64;
            if root.get(base).is_some() {
                continue;
            }
            root = insert(&root, region(base, 64)).unwrap();
            most = most.max(fallible::allocations() - before);
        }
        // Depth 4 at most here: one node per level, one more per split.
        assert!(most <= 10, "an insert made {most} allocations");
        check(&root);
    }

    #[test]
    fn a_failed_allocation_leaves_the_tree_as_it_was() {
        let mut root = TryArc::try_new(Node::empty()).unwrap();
        for i in 0..5_000 {
            root = insert(&root, region(i * 64, 32)).unwrap();
        }
        let before = check(&root);
        for n in 0..20 {
            fallible::fail_after(Some(n));
            let ok =
                insert(&root, region(2_500 * 64 + 32, 16)).is_ok() && remove(&root, 64).is_ok();
            fallible::fail_after(None);
            assert_eq!(check(&root), before, "after failure {n} (ok: {ok})");
        }
    }
}
