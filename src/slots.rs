//! Handle slots: where each transport's gate lives, in memory that is never
//! freed and that a forked child sees zeroed.
//!
//! A C host may call into a handle while another thread destroys it, or
//! after. The handle it holds is the address of a [`Slot`], so such a call
//! reads a gate (`crate::gate`) that says closing or gone instead of memory
//! that was freed; a call admitted before destroy began is waited for by
//! destroy before anything goes.
//!
//! Invariants:
//! - slots are never unmapped; freed slots go to a free list and are reused
//!   (a handle used after its destroy returned may reach a newer transport
//!   that got its slot: documented as undefined for the caller, but never a
//!   use of freed memory);
//! - slots sit in pages marked `MADV_WIPEONFORK`: in a forked child every
//!   slot of the parent reads zero (gate `FORKED`, no body), so calls on the
//!   parent's handles are refused without touching state whose threads did
//!   not survive the fork;
//! - a slot returns to the free list only when its transport's shared state
//!   is dropped (after any detached connector thread exited), so nothing of
//!   the old transport ever sees its gate reopened;
//! - the free list is only touched under `POOL`'s lock (create and destroy).

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Acquire, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::error::{fail, Result, Status};
use crate::gate::Gate;

/// One transport's gate and, for the C ABI, what its handle owns.
pub(crate) struct Slot {
    pub gate: Gate,
    /// The C handle's body (`ffi`), published after create; null for a
    /// transport made through the Rust API and while the slot is free.
    pub body: AtomicPtr<c_void>,
    /// A process-unique id of the transport using the slot (the destroy
    /// wait-for graph, `crate::wait_graph`); 0 when free.
    pub id: AtomicU64,
    /// The next free slot (under `POOL`'s lock only).
    next: AtomicPtr<CachePadded<Slot>>,
}

/// The head of the free list (a raw address: `*mut` is not `Send`).
struct Pool {
    free: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: 0 });

const PAGE: usize = 4096;
const PER_PAGE: usize = PAGE / std::mem::size_of::<CachePadded<Slot>>();
const _: () = assert!(PER_PAGE >= 1);

/// Takes a free slot and opens its gate for a new transport.
pub(crate) fn lease() -> Result<&'static Slot> {
    static IDS: AtomicU64 = AtomicU64::new(1);
    let mut pool = POOL.lock();
    if pool.free == 0 {
        pool.free = new_page()? as usize;
    }
    // SAFETY: the free list holds only initialized slots of pages that are
    // never unmapped; we hold the lock, so nobody else pops this one.
    let slot: &'static CachePadded<Slot> = unsafe { &*(pool.free as *const CachePadded<Slot>) };
    pool.free = slot.next.load(Relaxed) as usize;
    drop(pool);
    slot.next.store(ptr::null_mut(), Relaxed);
    slot.body.store(ptr::null_mut(), Relaxed);
    // Relaxed: a unique number is all that is needed.
    slot.id.store(IDS.fetch_add(1, Relaxed), Relaxed);
    slot.gate.reopen();
    Ok(slot)
}

/// Marks the slot's gate free and puts the slot on the free list. Called
/// once per lease, when nothing of its transport uses the gate any more.
pub(crate) fn give_back(slot: &'static Slot) {
    slot.body.store(ptr::null_mut(), Relaxed);
    slot.id.store(0, Relaxed);
    slot.gate.free();
    let mut pool = POOL.lock();
    slot.next.store(pool.free as *mut CachePadded<Slot>, Relaxed);
    // A `Slot` is always the field of a `CachePadded<Slot>` at offset 0.
    pool.free = slot as *const Slot as usize;
}

/// The slot a C handle names, or None for NULL.
///
/// # Safety
/// `handle` must be NULL or an address [`lease`] returned (what
/// `mcfx_create` hands out): slots are never freed, so any such address
/// stays readable.
pub(crate) unsafe fn from_handle<T>(handle: *const T) -> Option<&'static Slot> {
    // SAFETY: this function's contract.
    unsafe { handle.cast::<Slot>().as_ref() }
}

/// The body a live slot's handle owns (null when none).
pub(crate) fn body(slot: &Slot) -> *mut c_void {
    slot.body.load(Acquire)
}

/// Maps a page of free slots, marked to be wiped in forked children, and
/// returns the first (they are chained).
fn new_page() -> Result<*mut CachePadded<Slot>> {
    // SAFETY: an anonymous private mapping; the result is checked.
    let page = unsafe {
        libc::mmap(
            ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return fail(Status::MCFX_E_NO_MEMORY, "no memory for a transport handle");
    }
    // SAFETY: our own fresh mapping. Failure (a kernel before 4.14) only
    // loses fork detection: a child's calls on inherited handles are then
    // not refused (documented).
    if unsafe { libc::madvise(page, PAGE, libc::MADV_WIPEONFORK) } != 0 {
        tracing::debug!(
            "MADV_WIPEONFORK unavailable: handles inherited through fork are not detected"
        );
    }
    let slots = page.cast::<CachePadded<Slot>>();
    for i in 0..PER_PAGE {
        let next = if i + 1 < PER_PAGE {
            // SAFETY: inside the mapping (i + 1 < PER_PAGE slots fit).
            unsafe { slots.add(i + 1) }
        } else {
            ptr::null_mut()
        };
        let slot = Slot {
            gate: Gate::new(),
            body: AtomicPtr::new(ptr::null_mut()),
            id: AtomicU64::new(0),
            next: AtomicPtr::new(next),
        };
        slot.gate.free();
        // SAFETY: slot i lies inside the mapping, suitably aligned (the
        // page is page-aligned and the slot size divides it), unused.
        unsafe { slots.add(i).write(CachePadded::new(slot)) };
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_given_back_is_free_and_is_reused() {
        let a = lease().unwrap();
        assert!(a.gate.admit().is_ok());
        give_back(a);
        assert!(a.gate.admit().is_err(), "a freed slot admits nobody");
        let b = lease().unwrap();
        assert!(std::ptr::eq(a, b), "the free list is LIFO");
        assert_ne!(b.id.load(Relaxed), 0);
        give_back(b);
    }

    #[test]
    fn many_leases_get_distinct_slots_across_pages() {
        let slots: Vec<_> = (0..3 * PER_PAGE).map(|_| lease().unwrap()).collect();
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                assert!(!std::ptr::eq(*a, *b));
            }
        }
        for s in slots {
            give_back(s);
        }
    }
}
