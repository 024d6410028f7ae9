//! Counters, readable at any time from any thread.
//!
//! All counters are monotonically increasing `Relaxed` atomics: each is an
//! independent tally, nothing is published through them, and a reader only
//! needs an eventually consistent snapshot. Hot-path updates happen once per
//! submit call or per progress pass, not per op, where that is possible.
//!
//! One promise holds beyond that: an op's completion counters are stored
//! before its callback runs (`Progress::complete`), so a thread that has seen
//! the completion (synchronized with the callback) reads them counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Grouped by writer, each group on its own cache lines (128 bytes: the
/// adjacent-line prefetcher pairs lines), so a caller's `submitted` update and
/// the progress thread's `completed` update never bounce one line between
/// cores on every op.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Stats {
    // Written by submitting callers.
    pub submitted: AtomicU64,
    pub queue_full: AtomicU64,
    pub wakeups: AtomicU64,
    _callers: [u64; 13],
    // Written by the progress thread.
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub canceled: AtomicU64,
    pub bytes: AtomicU64,
    pub flagcx_transfers: AtomicU64,
    pub callback_panics: AtomicU64,
    _progress: [u64; 9],
    // Written by connector threads.
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        let z = || AtomicU64::new(0);
        Stats {
            submitted: z(),
            queue_full: z(),
            wakeups: z(),
            _callers: [0; 13],
            completed: z(),
            failed: z(),
            timed_out: z(),
            canceled: z(),
            bytes: z(),
            flagcx_transfers: z(),
            callback_panics: z(),
            _progress: [0; 9],
            connects: z(),
            connect_failures: z(),
            reconnects: z(),
        }
    }
}

const _: () = assert!(std::mem::offset_of!(Stats, completed) == 128);
const _: () = assert!(std::mem::offset_of!(Stats, connects) == 256);

/// A plain copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Ops accepted by submit.
    pub submitted: u64,
    /// Ops completed successfully.
    pub completed: u64,
    /// Ops completed with an error other than timeout or cancel.
    pub failed: u64,
    /// Ops completed with `MCFX_E_TIMEOUT`.
    pub timed_out: u64,
    /// Ops completed with `MCFX_E_CANCELED`.
    pub canceled: u64,
    /// Bytes moved by successful ops.
    pub bytes: u64,
    /// Submit calls refused (in part or whole) because the queue was full.
    pub queue_full: u64,
    /// Times a submitter had to wake the sleeping progress thread.
    pub wakeups: u64,
    /// Peer connections established (including reconnects).
    pub connects: u64,
    /// Connection attempts that failed (resolve or connect).
    pub connect_failures: u64,
    /// Reconnects made to refresh a peer's region list.
    pub reconnects: u64,
    /// FlagCX vector transfers issued.
    pub flagcx_transfers: u64,
    /// Completion callbacks that panicked (caught).
    pub callback_panics: u64,
}

impl Stats {
    /// For counters several threads write.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// For counters only the progress thread writes: a plain load and store
    /// (no locked instruction on the completion path).
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Takes back part of an `add` (ops counted but not queued).
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        // Completions first, then submitted: an op is counted submitted
        // before it can complete, so this order never shows more completed
        // than submitted (in_flight also saturates at zero).
        let completed = self.completed.load(Relaxed);
        let failed = self.failed.load(Relaxed);
        let timed_out = self.timed_out.load(Relaxed);
        let canceled = self.canceled.load(Relaxed);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        Snapshot {
            submitted: self.submitted.load(Relaxed),
            completed,
            failed,
            timed_out,
            canceled,
            bytes: self.bytes.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            wakeups: self.wakeups.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            flagcx_transfers: self.flagcx_transfers.load(Relaxed),
            callback_panics: self.callback_panics.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// Ops accepted and not yet completed.
    pub fn in_flight(&self) -> u64 {
        let done = self.completed + self.failed + self.timed_out + self.canceled;
        self.submitted.saturating_sub(done)
    }
}
