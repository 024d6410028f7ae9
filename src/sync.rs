//! The primitives the lock-free protocols are built on (`gate`, `ring`,
//! `wake`, `holds`): std's, or loom's when the crate is built with
//! `--cfg mcfx_loom` for the models in `tests/loom_*.rs` and
//! `tests/inflight_loom_room.rs` (scripts/test.sh), which then check the
//! code that ships through the crate itself.
//!
//! Owns: the choice between the two, the sleep/wake protocol built on them
//! ([`Sleepers`]), and the few operations std and loom
//! spell differently (a cell's raw pointer, a timed park).
//!
//! Invariants: the protocol modules take every atomic, lock, cell and
//! thread operation they synchronize through from here, and this is the
//! only module that names loom or its cfg (the others ask [`MODEL`] for
//! the OS calls loom cannot model). `mcfx_loom` is this crate's own cfg:
//! unlike `loom`, it changes no dependency's build.

#[cfg(mcfx_loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    sync::{Condvar, Mutex},
    thread::{self, Thread},
};
#[cfg(not(mcfx_loom))]
pub(crate) use std::{
    cell::UnsafeCell,
    sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    sync::{Condvar, Mutex},
    thread::{self, Thread},
};

use std::time::Duration;

/// True in a build for the loom models: OS calls with no loom counterpart
/// (timer slack, CPU pinning) are skipped there.
pub(crate) const MODEL: bool = cfg!(mcfx_loom);

/// Runs `f` on the cell's raw pointer.
#[cfg(not(mcfx_loom))]
#[inline]
pub(crate) fn with_mut<T, R>(cell: &UnsafeCell<T>, f: impl FnOnce(*mut T) -> R) -> R {
    f(cell.get())
}

/// Runs `f` on the cell's raw pointer (loom tracks the access).
#[cfg(mcfx_loom)]
pub(crate) fn with_mut<T, R>(cell: &UnsafeCell<T>, f: impl FnOnce(*mut T) -> R) -> R {
    cell.with_mut(f)
}

/// One bounded sleep of the calling thread; a spurious or early return is
/// allowed (the caller loops).
#[cfg(not(mcfx_loom))]
pub(crate) fn park_timeout(t: Duration) {
    thread::park_timeout(t);
}

/// loom has no timed park; a timed sleep never relies on a wake-up, so it
/// is modeled as an immediate return.
#[cfg(mcfx_loom)]
pub(crate) fn park_timeout(_t: Duration) {}

/// Threads asleep until a condition they check holds, and the wakers that
/// make it hold: the sleep/wake protocol of `wake::RoomWait` and of the
/// waiter slots (`waiters`), written once.
///
/// No lost wake-up: a sleeper counts itself (SeqCst), fences, and checks
/// under the lock before every wait; a waker makes the condition true,
/// fences, and notifies under the lock if it sees a sleeper. Either the
/// waker sees the sleeper (and its notify, under the lock the sleeper holds
/// from its check to its wait, reaches it), or the sleeper's check sees the
/// condition. A poisoned lock is taken over: it guards no data.
pub(crate) struct Sleepers {
    count: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Sleepers {
    pub(crate) fn new() -> Sleepers {
        Sleepers { count: AtomicUsize::new(0), lock: Mutex::new(()), cv: Condvar::new() }
    }

    /// Sleeps until `check` (called under the lock, first before any wait)
    /// gives an answer, or until `timeout` has passed since the call
    /// (`None`).
    pub(crate) fn sleep<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let until = std::time::Instant::now().checked_add(timeout);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let answer = loop {
            if let Some(answer) = check() {
                break Some(answer);
            }
            let left = match until {
                Some(until) => until.saturating_duration_since(std::time::Instant::now()),
                None => timeout,
            };
            if left.is_zero() {
                break None;
            }
            guard = match self.cv.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        };
        drop(guard);
        self.count.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    /// Waker side, after it made the condition true and then
    /// `fence(SeqCst)` (one fence may serve several `Sleepers`): whether
    /// anyone may be asleep. Relaxed: the waker's fence orders it.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) != 0
    }

    /// Wakes every sleeper (each checks again).
    pub(crate) fn wake_all(&self) {
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }

    /// Wakes every sleeper, from inside a sleeper's `check` (which holds the
    /// lock: a sleeper either sleeps already, or checks after this one).
    pub(crate) fn wake_all_from_check(&self) {
        self.cv.notify_all();
    }
}
