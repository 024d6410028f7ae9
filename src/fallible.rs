//! Allocation that fails instead of aborting: a reference-counted pointer
//! ([`TryArc`]) and vector reservations, both returning [`NoMemory`] when
//! the allocator says no (under an address-space limit, say).
//!
//! `Box::new`, `Arc::new` and a `Vec` that grows abort the process when an
//! allocation fails, and `Arc::try_new` is unstable; the region table's
//! writers allocate on the caller's behalf (a register call must fail with
//! `MCFX_E_NO_MEMORY`, not take the host down), and so do a progress pass's
//! groups (`crate::group`), a create's log sink and engine hold, so they
//! allocate here.
//!
//! [`TryArc`] is `std::sync::Arc` cut down to what its users need (make,
//! clone, read, drop), with the same counting (clone: a relaxed add; drop: a
//! release subtraction and, for the last reference, an acquire fence before
//! the free), plus `arc_swap::RefCnt`, so a table can be published with
//! `ArcSwapAny`. Its unsafe code is confined to this file.
//!
//! Tests can make the n-th fallible allocation of a thread fail
//! ([`fail_after`]) and count them ([`allocations`]).

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{
    fence, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

/// An allocation failed; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoMemory;

/// A shared, immutable value whose allocation can fail (see the module doc).
pub(crate) struct TryArc<T> {
    ptr: NonNull<ArcInner<T>>,
    /// Drop may drop an `ArcInner<T>` (so a `T`).
    _owns: PhantomData<ArcInner<T>>,
}

/// The heap block behind a [`TryArc`]: its count of references and the value.
pub(crate) struct ArcInner<T> {
    refs: AtomicUsize,
    value: T,
}

// SAFETY: as Arc<T>: the value is shared between threads (Sync needed) and
// dropped on whichever thread drops the last reference (Send needed); the
// count is atomic.
unsafe impl<T: Send + Sync> Send for TryArc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for TryArc<T> {}

impl<T> TryArc<T> {
    /// Moves `value` to the heap; `NoMemory` (and `value` dropped) when the
    /// allocator refuses.
    pub(crate) fn try_new(value: T) -> Result<TryArc<T>, NoMemory> {
        injected()?;
        let layout = Layout::new::<ArcInner<T>>();
        // SAFETY: the layout is not zero-sized (it holds the counter).
        let raw = unsafe { alloc::alloc(layout) }.cast::<ArcInner<T>>();
        let ptr = NonNull::new(raw).ok_or(NoMemory)?;
        // SAFETY: a fresh block of ArcInner<T>'s size and alignment, unaliased.
        unsafe { ptr.as_ptr().write(ArcInner { refs: AtomicUsize::new(1), value }) };
        Ok(TryArc { ptr, _owns: PhantomData })
    }

    fn inner(&self) -> &ArcInner<T> {
        // SAFETY: the block lives while this reference counts in it.
        unsafe { self.ptr.as_ref() }
    }

    /// References to the value (tests).
    #[cfg(test)]
    pub(crate) fn refs(this: &TryArc<T>) -> usize {
        this.inner().refs.load(Acquire)
    }

    /// Whether `a` and `b` point to the same value.
    pub(crate) fn ptr_eq(a: &TryArc<T>, b: &TryArc<T>) -> bool {
        a.ptr == b.ptr
    }
}

impl<T> Deref for TryArc<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Clone for TryArc<T> {
    fn clone(&self) -> TryArc<T> {
        // Relaxed, as Arc: the new reference is made from one that keeps the
        // value alive, and publishes nothing.
        let old = self.inner().refs.fetch_add(1, Relaxed);
        if old > isize::MAX as usize {
            // As Arc: billions of leaked clones; the count must not wrap.
            std::process::abort();
        }
        TryArc { ptr: self.ptr, _owns: PhantomData }
    }
}

impl<T> Drop for TryArc<T> {
    fn drop(&mut self) {
        // Release: this holder's reads of the value happen before the free
        // (the last holder's acquire fence below pairs with it).
        if self.inner().refs.fetch_sub(1, Release) != 1 {
            return;
        }
        fence(Acquire);
        // SAFETY: that was the last reference, so nothing else reaches the
        // block; it was allocated by try_new with this layout and holds an
        // initialized ArcInner<T>.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            alloc::dealloc(self.ptr.as_ptr().cast(), Layout::new::<ArcInner<T>>());
        }
    }
}

// SAFETY: into_ptr hands over one counted reference as a raw pointer and
// from_ptr takes one back (a round trip, as Arc::into_raw/from_raw);
// as_ptr neither adds nor removes one. The pointer is stable while any
// reference lives, and never null.
unsafe impl<T> arc_swap::RefCnt for TryArc<T> {
    type Base = ArcInner<T>;

    fn into_ptr(me: TryArc<T>) -> *mut ArcInner<T> {
        let ptr = me.ptr.as_ptr();
        std::mem::forget(me);
        ptr
    }

    fn as_ptr(me: &TryArc<T>) -> *mut ArcInner<T> {
        me.ptr.as_ptr()
    }

    unsafe fn from_ptr(ptr: *const ArcInner<T>) -> TryArc<T> {
        // SAFETY: the caller passes a pointer into_ptr returned (non-null).
        TryArc { ptr: unsafe { NonNull::new_unchecked(ptr.cast_mut()) }, _owns: PhantomData }
    }
}

/// Room for `additional` more elements in `v`, or `NoMemory` (`v` unchanged).
pub(crate) fn reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<(), NoMemory> {
    injected()?;
    v.try_reserve(additional).map_err(|_| NoMemory)
}

/// An empty vector with room for exactly `n` elements, or `NoMemory`.
pub(crate) fn with_capacity<T>(n: usize) -> Result<Vec<T>, NoMemory> {
    injected()?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NoMemory)?;
    Ok(v)
}

#[cfg(test)]
thread_local! {
    /// Fallible allocations on this thread until one fails (None: never).
    static FAIL_IN: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// Fallible allocations attempted on this thread.
    static COUNT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Test only: the fallible allocation `n` from now on this thread (0: the
/// next) fails; None: none does.
#[cfg(test)]
pub(crate) fn fail_after(n: Option<u64>) {
    FAIL_IN.with(|f| f.set(n));
}

/// Test only: fallible allocations attempted on this thread so far.
#[cfg(test)]
pub(crate) fn allocations() -> u64 {
    COUNT.with(|c| c.get())
}

#[inline]
fn injected() -> Result<(), NoMemory> {
    #[cfg(test)]
    {
        COUNT.with(|c| c.set(c.get() + 1));
        let fail = FAIL_IN.with(|f| match f.get() {
            Some(0) => {
                f.set(None);
                true
            }
            Some(n) => {
                f.set(Some(n - 1));
                false
            }
            None => false,
        });
        if fail {
            return Err(NoMemory);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn the_value_is_dropped_once_with_the_last_reference() {
        let drops = Arc::new(AtomicUsize::new(0));
        let a = TryArc::try_new(Counted(Arc::clone(&drops))).unwrap();
        let b = a.clone();
        let c = std::thread::spawn(move || b.clone()).join().unwrap();
        assert!(TryArc::ptr_eq(&a, &c));
        drop(a);
        assert_eq!(drops.load(Relaxed), 0);
        drop(c);
        assert_eq!(drops.load(Relaxed), 1);
    }

    #[test]
    fn an_injected_failure_hits_the_chosen_allocation_only() {
        fail_after(Some(1));
        assert!(TryArc::try_new(1u8).is_ok());
        assert_eq!(TryArc::try_new(2u8).err(), Some(NoMemory));
        assert!(TryArc::try_new(3u8).is_ok());
        let mut v: Vec<u8> = Vec::new();
        fail_after(Some(0));
        assert_eq!(reserve(&mut v, 10), Err(NoMemory));
        assert_eq!(v.capacity(), 0);
        assert!(reserve(&mut v, 10).is_ok());
    }

    #[test]
    fn arc_swap_publishes_and_frees_try_arcs() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = TryArc::try_new(Counted(Arc::clone(&drops))).unwrap();
        let swap: arc_swap::ArcSwapAny<_> = arc_swap::ArcSwapAny::new(first);
        let guard = swap.load();
        swap.store(TryArc::try_new(Counted(Arc::clone(&drops))).unwrap());
        assert_eq!(drops.load(Relaxed), 0, "a reader still holds the first");
        drop(guard);
        assert_eq!(drops.load(Relaxed), 1);
        drop(swap);
        assert_eq!(drops.load(Relaxed), 2);
    }
}
