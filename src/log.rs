//! Logging: `tracing` events, shown only when `MCFX_LOG` is set.
//!
//! `MCFX_LOG` takes a `tracing-subscriber` filter (`warn`, `debug`,
//! `mooncake_flagcx=trace`, ...). Unset, the library installs nothing and
//! stays silent; if the host process already installed a global subscriber,
//! events go there and `MCFX_LOG` is ignored. The host's own logger gets the
//! events through `mcfx_config.log` instead (see `host_log`).
//!
//! Panics: the library catches every panic of its own (and of Rust
//! callbacks) and turns it into a status or a counter. So that the default
//! panic hook does not print them on stderr, [`init`] installs (once) a hook
//! that handles panics on the library's threads (named `mcfx-*`) and inside
//! its exported calls by logging them through `tracing`, and hands every
//! other panic to the hook that was installed before.
//!
//! Also here, for the paths that must not abort when memory runs out (issue
//! 17): [`message`], an error message formatted on the stack and copied to
//! a `String` when one can be had, and [`spawn`], which starts a library
//! thread only when there is room for it to run.

use std::cell::Cell;
use std::fmt;
use std::sync::{Once, OnceLock};
use std::thread::JoinHandle;

use crate::host_log::{Line, ENV};

/// Prefix of the name of every thread the library starts.
pub const THREAD_PREFIX: &str = "mcfx-";

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

/// Installs the process's subscriber (see `host_log::install`) when
/// `MCFX_LOG` is set, and the panic hook (see the module doc).
///
/// The hook captures nothing (the previous one is in a static), so boxing
/// it allocates nothing, and `MCFX_LOG` is looked up without a copy: the
/// first `mcfx_create` does not abort here when memory is short. (The
/// subscriber itself allocates, when `MCFX_LOG` is set.)
pub fn init() {
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
        // SAFETY: a NUL-terminated name; the result is only compared with
        // NULL. (std::env::var_os would copy the value onto the heap.)
        if !unsafe { libc::getenv(ENV.as_ptr()) }.is_null() {
            crate::host_log::install();
        }
    });
}

/// `args` formatted as a message (cut at 511 bytes) without the heap, then
/// copied into a `String` if memory allows; empty otherwise (the status of
/// the error still says what happened). For error messages on the paths
/// that must not abort when memory runs out.
pub(crate) fn message(args: fmt::Arguments<'_>) -> String {
    let mut line = Line::<512>::new();
    let _ = fmt::Write::write_fmt(&mut line, args);
    line.to_string_or_empty()
}

/// The stack of every thread the library starts: std's default, set
/// explicitly so that [`spawn`] knows what it needs.
pub(crate) const THREAD_STACK: usize = 2 << 20;
/// Address space a new thread needs besides its stack before its body runs
/// (std's signal stack, the TLS destructor list, malloc's per-thread arena
/// or the pages it falls back to): when it is not there, std and glibc abort
/// the process from the new thread.
const THREAD_START_ROOM: usize = 1 << 20;

/// Why [`spawn`] did not start a thread.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// No room for the thread's stack and start-up (or for the name).
    NoMemory,
    /// The system refused for another reason.
    Os(std::io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NoMemory => f.write_str("no memory for its stack"),
            SpawnError::Os(e) => write!(f, "{e}"),
        }
    }
}

/// Starts a library thread named `name` (which must start with
/// [`THREAD_PREFIX`]) with its log events routed as the calling thread's
/// (see `host_log::inherit`).
///
/// Only when the address space has room for the thread's stack and its
/// start-up (a trial mapping of both, undone at once): a thread started
/// without that room would abort the process in std's or glibc's start-up
/// code before its first line, where nothing can catch it. With the room,
/// pthread_create's own failure is what a shortage turns into
/// (`SpawnError::NoMemory`). The check and the start are not atomic: memory
/// another thread takes in between can still fail the start-up.
pub(crate) fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, SpawnError> {
    debug_assert!(name.starts_with(THREAD_PREFIX));
    if !room_for(THREAD_STACK + THREAD_START_ROOM) {
        return Err(SpawnError::NoMemory);
    }
    // Builder::name turns the name into a CString: with room for the NUL
    // already there, that takes no second allocation.
    let mut owned = String::new();
    if owned.try_reserve_exact(name.len() + 1).is_err() {
        return Err(SpawnError::NoMemory);
    }
    owned.push_str(name);
    let log = crate::host_log::inherit();
    let f = move || {
        log.enter();
        f()
    };
    std::thread::Builder::new().name(owned).stack_size(THREAD_STACK).spawn(f).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOMEM) => SpawnError::NoMemory,
            _ if e.kind() == std::io::ErrorKind::OutOfMemory => SpawnError::NoMemory,
            _ => SpawnError::Os(e),
        }
    })
}

/// Whether `len` bytes of address space (and commit charge, under strict
/// overcommit) can be had right now: maps them and unmaps them at once.
fn room_for(len: usize) -> bool {
    // SAFETY: a fresh private anonymous mapping that nothing else refers to.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: the mapping made just above, never handed out.
    unsafe { libc::munmap(p, len) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_the_formatted_text() {
        assert_eq!(message(format_args!("peer {}: {}", 7, "gone")), "peer 7: gone");
    }
}
