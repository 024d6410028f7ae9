//! Starting the library's threads (progress, connectors, standbys).
//!
//! Owns how a thread is started: its name (every one starts with
//! [`THREAD_PREFIX`], which the panic hook and the tests rely on), its
//! stack ([`THREAD_STACK`]), the route of its log events (the creating
//! thread's, see `logging::inherit`), and the check that there is room for
//! it before it starts.
//!
//! Invariant (issue 17): a thread starts only when a trial mapping of its
//! stack and its start-up room succeeds, so that a shortage is a status
//! ([`SpawnError::NoMemory`]) rather than an abort in std's or glibc's
//! start-up code, where nothing can catch it.

use std::fmt;
use std::thread::JoinHandle;

/// Prefix of the name of every thread the library starts.
pub const THREAD_PREFIX: &str = "mcfx-";

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
/// (see `logging::inherit`).
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
    let log = crate::logging::inherit();
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
