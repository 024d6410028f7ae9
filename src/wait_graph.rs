//! Who waits for whom while transports are destroyed from callbacks, so
//! that two callbacks destroying each other's transports get
//! `MCFX_E_WOULD_DEADLOCK` instead of waiting for each other for ever.
//!
//! `mcfx_destroy(B)` waits for B's threads (its progress thread finishing a
//! callback, a resolver returning). Called on a thread of transport A (a
//! callback), that is an edge A -> B: A's thread waits for B's. A destroy
//! that would close a cycle (B's thread is, through zero or more such
//! edges, already waiting for A) is refused before it changes anything.
//! Edges are added and checked under one lock, so of two destroys that race
//! to close a cycle, the second one sees the first's edge.
//!
//! Threads of no transport (the host's own) add no edge: nothing of a
//! transport's shutdown waits for them.

use std::cell::Cell;

use parking_lot::Mutex;

use crate::error::{fail, Result, Status};

thread_local! {
    /// The transport whose thread this is (0: none).
    static OWNER: Cell<u64> = const { Cell::new(0) };
}

/// `(waiter, target)`: a thread of `waiter` is destroying `target`.
static EDGES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Marks the calling thread as one of transport `id`'s (at its start).
pub(crate) fn set_owner(id: u64) {
    OWNER.with(|o| o.set(id));
}

/// Marks the calling thread as transport `id`'s until the guard drops (a
/// host thread running a pass of `id` in `mcfx_progress`, whose callbacks
/// are then `id`'s); the previous mark comes back on drop.
pub(crate) fn owner_for_now(id: u64) -> OwnerForNow {
    OwnerForNow(OWNER.with(|o| o.replace(id)))
}

pub(crate) struct OwnerForNow(u64);

impl Drop for OwnerForNow {
    fn drop(&mut self) {
        OWNER.with(|o| o.set(self.0));
    }
}

/// An edge in the graph for as long as it lives.
pub(crate) struct Waiting(Option<(u64, u64)>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(edge) = self.0 {
            let mut edges = EDGES.lock();
            if let Some(at) = edges.iter().position(|e| *e == edge) {
                edges.swap_remove(at);
            }
        }
    }
}

/// Records that the calling thread is about to wait for transport
/// `target`'s threads, or refuses when that closes a cycle.
pub(crate) fn wait_for(target: u64) -> Result<Waiting> {
    let me = OWNER.with(Cell::get);
    if me == 0 {
        return Ok(Waiting(None));
    }
    let mut edges = EDGES.lock();
    if reaches(&edges, target, me) {
        return fail(
            Status::MCFX_E_WOULD_DEADLOCK,
            "the transport to destroy is itself, through its callbacks, destroying this \
             callback's transport: nothing was changed",
        );
    }
    if edges.try_reserve(1).is_err() {
        return fail(Status::MCFX_E_NO_MEMORY, "no memory to record a destroy in progress");
    }
    edges.push((me, target));
    Ok(Waiting(Some((me, target))))
}

/// Whether `to` is reachable from `from` along the edges (or is `from`).
fn reaches(edges: &[(u64, u64)], from: u64, to: u64) -> bool {
    // The graph is tiny (one edge per destroy in progress on a transport
    // thread) and has no cycle (none is ever added): a plain walk.
    let mut stack = vec![from];
    while let Some(at) = stack.pop() {
        if at == to {
            return true;
        }
        stack.extend(edges.iter().filter(|(w, _)| *w == at).map(|&(_, t)| t));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_that_comes_back_is_a_cycle() {
        let edges = [(1, 2), (2, 3)];
        assert!(reaches(&edges, 2, 3));
        assert!(reaches(&edges, 1, 3));
        assert!(!reaches(&edges, 3, 1));
        assert!(reaches(&edges, 4, 4));
    }

    #[test]
    fn destroys_from_two_transports_threads_cannot_wait_for_each_other() {
        let (a, b) = (1_000_001, 1_000_002);
        let first = std::thread::spawn(move || {
            set_owner(a);
            wait_for(b).map(std::mem::forget).is_ok()
        })
        .join()
        .unwrap();
        assert!(first);
        let second = std::thread::spawn(move || {
            set_owner(b);
            wait_for(a).err().map(|e| e.status)
        })
        .join()
        .unwrap();
        assert_eq!(second, Some(Status::MCFX_E_WOULD_DEADLOCK));
        EDGES.lock().retain(|&(w, _)| w != a);
    }
}
