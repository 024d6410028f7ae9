//! The guard every export runs in (panics and errors become a status, the
//! message is kept for `mcfx_last_error`), the opaque handle and the set of
//! live handles (so a double destroy is reported, not a double free).

use std::cell::RefCell;
use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::error::{fail, mcfx_status, Result, Status};
use crate::host_log::{self, Scope, Sink};
use crate::transport::Transport;

/// An opaque transport handle.
pub struct mcfx_transport {
    /// Dropped by this handle's `Drop`, inside its log scope.
    pub(super) inner: ManuallyDrop<Transport>,
    /// The host's log callback, if the config had one.
    pub(super) log: Option<Arc<Sink>>,
}

impl Drop for mcfx_transport {
    fn drop(&mut self) {
        // Shutdown's events go to this transport's callback, which is closed
        // before mcfx_destroy returns (detached threads see it closed).
        let _scope = Scope::enter(self.log.as_ref());
        // SAFETY: dropped exactly once, here; `inner` is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        if let Some(sink) = &self.log {
            host_log::close(sink);
        }
    }
}

thread_local! {
    pub(super) static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(super) fn set_last_error(message: &str) {
    LAST_ERROR.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        m.push_str(message);
    });
}

/// Runs an export's body: a failure becomes its status (its message kept for
/// `mcfx_last_error`), a panic becomes `MCFX_E_PANIC`. Nothing unwinds into C.
pub(super) fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> mcfx_status {
    let _inside = crate::log::InExport::enter();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mcfx_status::MCFX_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.message));
            e.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = catch_unwind(|| tracing::error!(function = name, "panic: {what}"));
            set_last_error(&format!("{name}: internal panic: {what}"));
            mcfx_status::MCFX_E_PANIC
        }
    }
}

pub(super) fn invalid<T>(what: &str) -> Result<T> {
    fail(Status::MCFX_E_INVALID_ARGUMENT, what)
}

/// Live handles, so a double destroy is reported instead of freeing twice.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

pub(super) fn live() -> std::sync::MutexGuard<'static, Option<HashSet<usize>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A live transport borrowed by an export; while it lives, the thread's
/// log events go to the transport's log callback.
pub(super) struct Live<'a> {
    transport: &'a Transport,
    _log: Scope,
}

impl std::ops::Deref for Live<'_> {
    type Target = Transport;
    fn deref(&self) -> &Transport {
        self.transport
    }
}

/// Borrows the transport behind a handle the caller vouches is live.
pub(super) fn live_transport<'a>(t: *const mcfx_transport) -> Result<Live<'a>> {
    // SAFETY: non-NULL handles come from mcfx_create and, by the documented
    // contract, are not used after mcfx_destroy returned.
    match unsafe { t.as_ref() } {
        Some(t) => Ok(Live { transport: &t.inner, _log: Scope::enter_if_any(t.log.as_ref()) }),
        None => invalid("NULL transport"),
    }
}
