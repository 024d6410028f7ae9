//! Starting the library's threads (progress, connectors, standbys).
//!
//! Owns how a thread is started: its name (every one starts with
//! [`THREAD_PREFIX`], which the panic hook and the tests rely on), its
//! stack ([`THREAD_STACK`]), the route of its log events (the creating
//! thread's, see `logging::inherit`), and the check that there is room for
//! it before it starts.
//!
//! Invariants (issue 17): a thread starts only when a trial mapping of its
//! stack and its start-up room and a trial allocation of its start-up heap
//! succeed, so that a shortage is a status ([`SpawnError::NoMemory`])
//! rather than an abort in std's or glibc's start-up code, where nothing
//! can catch it; [`spawn`] returns once the thread is past that start-up
//! (so the next spawn's trials see what it took); every library thread at
//! its start, and every host thread at its first call, makes its
//! parking_lot data at once ([`prepare_current`]), not at its first wait
//! for a lock.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::thread::JoinHandle;

use crate::fallible::TryArc;

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
/// Heap a new thread takes before its body runs and while it prepares
/// (std's signal stack handler, glibc's thread-exit destructor list,
/// parking_lot's thread data and table of threads: a few KiB), with
/// margin: a trial allocation of this much must succeed first.
const THREAD_START_HEAP: usize = 64 << 10;

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
    if !room_for(THREAD_STACK + THREAD_START_ROOM) || !heap_for(THREAD_START_HEAP) {
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
    let started = TryArc::try_new(AtomicBool::new(false)).map_err(|_| SpawnError::NoMemory)?;
    let up = started.clone();
    let f = move || {
        log.enter();
        prepare_current();
        up.store(true, Release);
        drop(up);
        f()
    };
    let handle =
        std::thread::Builder::new().name(owned).stack_size(THREAD_STACK).spawn(f).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOMEM) => SpawnError::NoMemory,
                _ if e.kind() == std::io::ErrorKind::OutOfMemory => SpawnError::NoMemory,
                _ => SpawnError::Os(e),
            }
        })?;
    // Until the thread is past its start-up (std's signal stack, its
    // parking_lot data): the next spawn's room trial then sees what this
    // one took (create starts several threads in a row, and a start-up
    // that lost its room to a sibling's aborted the process).
    while !started.load(Acquire) && !handle.is_finished() {
        std::thread::yield_now();
    }
    Ok(handle)
}

thread_local! {
    /// This thread's parking_lot data exists (see [`prepare_current`]).
    static PREPARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the calling thread's parking_lot data now, once per thread: at a
/// library thread's start and at a host thread's first call into the
/// library. Otherwise it is made the first time the thread waits for a
/// lock, and making it allocates (glibc's thread-exit destructor list,
/// parking_lot's table of threads): under an exhausted heap that is a
/// glibc fatal error, not a status (found by `tests/oom_address_limit.rs`:
/// the progress thread's first wait for the connector pool's lock). Where
/// memory is already gone at this point, the thread's start itself needs
/// more than this.
#[inline]
pub(crate) fn prepare_current() {
    if !PREPARED.with(|p| p.replace(true)) {
        prepare_parking();
    }
}

#[cold]
#[inline(never)]
fn prepare_parking() {
    // Nobody parks on this address: the park below finds it invalid.
    static KEY: u8 = 0;
    // SAFETY: a validate callback that returns false makes `park` return
    // at once, without sleeping and without calling the other callbacks;
    // the key is an address of ours that no thread parks on.
    unsafe {
        parking_lot_core::park(
            std::ptr::addr_of!(KEY) as usize,
            || false,
            || {},
            |_, _| {},
            parking_lot_core::DEFAULT_PARK_TOKEN,
            None,
        );
    }
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

/// Whether the heap can give `len` bytes right now (a trial allocation,
/// freed at once): a thread's start-up allocates from it, and std and
/// glibc abort the process when that fails.
fn heap_for(len: usize) -> bool {
    // SAFETY: malloc and free of a block nothing else sees.
    unsafe {
        let p = libc::malloc(len);
        if p.is_null() {
            return false;
        }
        libc::free(p);
    }
    true
}
