//! Panics stay off stderr: the library's panic hook.
//!
//! The library catches every panic of its own (and of Rust callbacks) and
//! turns it into a status or a counter, but Rust's default hook prints each
//! one before it unwinds. [`install`] installs (once) a hook that handles
//! the panics that are the library's, on its own threads (named
//! `threads::THREAD_PREFIX*`) and inside its exported calls (the depth
//! counter [`InExport`], set by the one guard every export goes through),
//! by logging them through `tracing`, and hands every other panic to the
//! hook that was installed before (the host's, or std's default).
//!
//! Invariants: installed at most once per process; installing allocates
//! nothing (the hook captures nothing; the previous one is kept in a
//! static), so the first `mcfx_create` cannot abort here when memory is
//! short.

use std::cell::Cell;
use std::sync::{Once, OnceLock};

use crate::threads::THREAD_PREFIX;

thread_local! {
    /// Depth of exported calls on this thread (a callback may call in again).
    static IN_EXPORT: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as inside an exported call until dropped.
pub struct InExport(());

impl InExport {
    #[inline]
    pub fn enter() -> InExport {
        IN_EXPORT.with(|d| d.set(d.get() + 1));
        InExport(())
    }
}

impl Drop for InExport {
    #[inline]
    fn drop(&mut self) {
        IN_EXPORT.with(|d| d.set(d.get() - 1));
    }
}

/// Whether a panic on this thread is the library's to handle.
fn ours() -> bool {
    IN_EXPORT.with(|d| d.get() > 0)
        || std::thread::current().name().is_some_and(|n| n.starts_with(THREAD_PREFIX))
}

/// The hook that was installed before ours (the host's, or std's default),
/// to which panics that are not the library's go.
// (`PanicInfo`: the name the MSRV knows; `PanicHookInfo` since 1.81.)
#[allow(deprecated)]
type Hook = Box<dyn Fn(&std::panic::PanicInfo<'_>) + Sync + Send + 'static>;
static PREVIOUS_HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the hook (see the module doc), once per process.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = PREVIOUS_HOOK.set(std::panic::take_hook());
        std::panic::set_hook(Box::new(|info| {
            if ours() {
                let thread = std::thread::current();
                tracing::error!(thread = thread.name().unwrap_or("?"), "panic (caught): {info}");
            } else if let Some(previous) = PREVIOUS_HOOK.get() {
                previous(info);
            }
        }));
    });
}
