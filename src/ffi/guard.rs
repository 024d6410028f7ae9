//! The guard every export runs in (panics and errors become a status, the
//! message is kept for `mcfx_last_error`), the opaque handle, and the
//! admission of every call on a handle by its transport's gate.
//!
//! A handle is the address of the transport's slot (`crate::slots`), which
//! is never freed: a call on a handle that is being (or was) destroyed reads
//! a gate that refuses it, and a call admitted before destroy began is
//! waited for by destroy before the transport goes.

use std::cell::RefCell;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{fail, mcfx_status, message, Result, Status};
use crate::gate::{Admission, Refused};
use crate::logging::{self, Scope, SinkRef};
use crate::slots::{self, Slot};
use crate::transport::Transport;

/// An opaque transport handle (C sees only a pointer to it: the address of
/// the transport's slot).
pub struct mcfx_transport {
    _opaque: [u8; 0],
}

/// What a live handle owns, behind its slot's `body`.
pub(super) struct Body {
    /// Dropped by this body's `Drop`, inside its log scope.
    pub(super) inner: ManuallyDrop<Transport>,
    /// The host's log callback, if the config had one.
    pub(super) log: Option<SinkRef>,
}

impl Drop for Body {
    fn drop(&mut self) {
        // Shutdown's events go to this transport's callback, which is closed
        // before mcfx_destroy returns (detached threads see it closed).
        let _scope = Scope::enter(self.log.as_ref());
        // SAFETY: dropped exactly once, here; `inner` is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        if let Some(sink) = &self.log {
            logging::close(sink);
        }
    }
}

/// The handle of a new transport: publishes its body in its slot.
pub(super) fn publish(body: Body) -> *mut mcfx_transport {
    let slot = body.inner.slot();
    let raw = Box::into_raw(Box::new(body));
    slot.body.store(raw.cast::<c_void>(), std::sync::atomic::Ordering::Release);
    (slot as *const Slot).cast_mut().cast::<mcfx_transport>()
}

/// This thread's last error message: a fixed buffer, not a `String`. A
/// thread-local with a destructor makes glibc register it on the thread's
/// first use, which allocates and, with no memory left, aborts the process
/// ("failed to register TLS destructor"); this one has nothing to drop and
/// nothing to allocate.
pub(super) struct LastError {
    text: [u8; LAST_ERROR_CAP],
    len: usize,
}

/// The longest last-error message kept, in bytes (longer ones are cut at a
/// character boundary).
const LAST_ERROR_CAP: usize = 512;

impl LastError {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }

    fn push(&mut self, s: &str) {
        let room = LAST_ERROR_CAP - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.text[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }
}

thread_local! {
    pub(super) static LAST_ERROR: RefCell<LastError> =
        const { RefCell::new(LastError { text: [0; LAST_ERROR_CAP], len: 0 }) };
}

/// Keeps `name: message` as this thread's last error (at most 512 bytes).
/// Never allocates.
pub(super) fn set_last_error(name: &str, message: &str) {
    let _ = LAST_ERROR.try_with(|m| {
        let mut m = m.borrow_mut();
        m.len = 0;
        m.push(name);
        m.push(": ");
        m.push(message);
    });
}

/// Runs an export's body: a failure becomes its status (its message kept for
/// `mcfx_last_error`), a panic becomes `MCFX_E_PANIC`. Nothing unwinds into C.
pub(super) fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> mcfx_status {
    let _inside = crate::panic_hook::InExport::enter();
    crate::threads::prepare_current();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mcfx_status::MCFX_OK,
        Ok(Err(e)) => {
            set_last_error(name, &e.message);
            e.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = catch_unwind(|| tracing::error!(function = name, "panic: {what}"));
            set_last_error(name, &message(format_args!("internal panic: {what}")));
            mcfx_status::MCFX_E_PANIC
        }
    }
}

pub(super) fn invalid<T>(what: impl Into<std::borrow::Cow<'static, str>>) -> Result<T> {
    fail(Status::MCFX_E_INVALID_ARGUMENT, what)
}

/// A live transport borrowed by an export, admitted by its gate (destroy
/// waits until it is dropped); while it lives, the thread's log events go
/// to the transport's log callback.
pub(super) struct Live<'a> {
    // Fields drop in order: the log scope, then the admission (leaving the
    // gate is the last use of the body).
    _log: Scope,
    transport: &'a Transport,
    admission: Admission<'static>,
}

impl std::ops::Deref for Live<'_> {
    type Target = Transport;
    fn deref(&self) -> &Transport {
        self.transport
    }
}

impl Live<'_> {
    pub(super) fn admission(&self) -> &Admission<'static> {
        &self.admission
    }
}

/// The slot a handle names (NULL: `MCFX_E_INVALID_ARGUMENT`).
pub(super) fn slot_of(t: *const mcfx_transport) -> Result<&'static Slot> {
    // SAFETY: non-NULL handles come from mcfx_create: slot addresses, never
    // freed (a pointer that never came from mcfx_create is outside the
    // contract).
    match unsafe { slots::from_handle(t) } {
        Some(slot) => Ok(slot),
        None => invalid("NULL transport"),
    }
}

/// The status of a call its handle's gate refused.
pub(super) fn refused<T>(why: Refused) -> Result<T> {
    match why {
        Refused::Closing => fail(Status::MCFX_E_SHUTTING_DOWN, "the transport is being destroyed"),
        Refused::Gone => invalid("not a live transport (destroyed?)"),
        Refused::Forked => fail(
            Status::MCFX_E_FORKED,
            "the transport belongs to the parent process (this is a forked child): only \
             mcfx_destroy is allowed",
        ),
    }
}

/// Admits a call on a handle and borrows its transport until the call ends.
pub(super) fn live_transport<'a>(t: *const mcfx_transport) -> Result<Live<'a>> {
    let slot = slot_of(t)?;
    let admission = slot.gate.admit().or_else(refused)?;
    let body = slots::body(slot).cast::<Body>();
    if body.is_null() {
        // Admitted just as destroy claimed the handle.
        return fail(Status::MCFX_E_SHUTTING_DOWN, "the transport is being destroyed");
    }
    // SAFETY: the body was published before the handle was handed out and
    // is freed only after destroy closed the gate, which waits for this
    // admission to end (it lives as long as the borrow: see `Live`).
    let body: &'a Body = unsafe { &*body };
    Ok(Live { _log: Scope::enter_if_any(body.log.as_ref()), transport: &body.inner, admission })
}
