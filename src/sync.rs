//! The primitives the lock-free protocols are built on (`gate`, `ring`,
//! `wake`, `holds`): std's, or loom's when the crate is built with
//! `--cfg mcfx_loom` for the models in `tests/loom_*.rs` and
//! `tests/inflight_loom_room.rs` (scripts/test.sh), which then check the
//! code that ships through the crate itself.
//!
//! Owns: the choice between the two, and the few operations std and loom
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

/// Waits on `cv` (paired with `lock`) until `check`, called under the lock
/// before each wait, gives an answer, or until `timeout` has passed since
/// the call (`None`). A poisoned lock is taken over: the waits guard no
/// data, only the sleep.
pub(crate) fn wait_for<T>(
    lock: &Mutex<()>,
    cv: &Condvar,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let until = std::time::Instant::now().checked_add(timeout);
    let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(answer) = check() {
            return Some(answer);
        }
        let left = match until {
            Some(until) => until.saturating_duration_since(std::time::Instant::now()),
            None => timeout,
        };
        if left.is_zero() {
            return None;
        }
        guard = match cv.wait_timeout(guard, left) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
    }
}
