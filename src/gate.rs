//! The transport's one shutdown flag, with the admission protocol of the
//! submission queue built on it.
//!
//! States, in order: `OPEN` (submitters are admitted), `CLOSING` (no new
//! submitter is admitted; those inside may still push), `CLOSED` (nobody is
//! inside any more and nobody can enter: everything ever pushed is
//! published), then `FREE` once the transport is gone (the gate lives in a
//! handle slot that is reused, see `crate::slots`; `reopen` starts it over
//! at `OPEN`). `FORKED` is zero on purpose: it is what a gate reads in a
//! forked child, whose copy of the slot's page the kernel zeroed. Every C
//! call on a handle is admitted here (not only submits), so destroy waits
//! for the calls already inside before it frees anything. Invariant (no op
//! after close, none lost):
//!
//! - submitter: increment `inside`; load `state`; proceed only if `OPEN`;
//!   decrement `inside` when done (also when refused).
//! - closer: store `CLOSING`; wait until `inside` is 0; store `CLOSED`.
//!
//! The closer reads `inside` with a read-modify-write (`fetch_add(0)`), which
//! reads the latest count: either it sees the submitter's increment (and
//! waits for it to leave), or the increment comes after it in `inside`'s
//! modification order, reads from it and so synchronizes with it, and then
//! the submitter's load sees `CLOSING` (and backs out). So once `close`
//! returns no submitter is or will be pushing. (All SeqCst; the argument
//! needs only acquire/release through the RMW, which is also what loom,
//! modeling SeqCst accesses as AcqRel, can check. The submitter's side, the
//! hot path, is a plain increment and load.)
//!
//! Why two steps and not one flag: the progress thread exits (and drains the
//! queue one last time) on `CLOSED`; had it exited on `CLOSING`, an admitted
//! submitter could still push after the final drain, and its op would never
//! complete. The connector threads stop on `CLOSING` (they serve only the
//! progress thread, which cancels every op still waiting for a peer). The
//! model in `tests/loom_gate.rs` checks this under every interleaving.

use crate::sync::{thread, AtomicU8, AtomicUsize, Ordering::SeqCst};

const FORKED: u8 = 0;
const OPEN: u8 = 1;
const CLOSING: u8 = 2;
const CLOSED: u8 = 3;
const FREE: u8 = 4;

/// Why a gate refused entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Closing began: the transport is being destroyed.
    Closing,
    /// The transport is gone (destroyed; the slot may wait for reuse).
    Gone,
    /// The gate was inherited through `fork` (the page was wiped).
    Forked,
}

pub struct Gate {
    /// `OPEN`, then `CLOSING`, then `CLOSED`, then `FREE`; back to `OPEN`
    /// only through `reopen` (slot reuse).
    state: AtomicU8,
    /// Submitters between `enter` and the drop of their [`Admission`];
    /// `close` waits for it to reach 0 after leaving `OPEN`.
    inside: AtomicUsize,
}

/// Proof that a submitter was admitted; leaving is automatic on drop.
pub struct Admission<'a> {
    gate: &'a Gate,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.gate.inside.fetch_sub(1, SeqCst);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate { state: AtomicU8::new(OPEN), inside: AtomicUsize::new(0) }
    }

    /// Admits a submitter, or `None` once closing began.
    pub fn enter(&self) -> Option<Admission<'_>> {
        self.admit().ok()
    }

    /// Admits a caller, or says why not.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission<'_>, Refused> {
        self.inside.fetch_add(1, SeqCst);
        let admission = Admission { gate: self };
        match self.state.load(SeqCst) {
            OPEN => Ok(admission),
            CLOSING => Err(Refused::Closing),
            FORKED => Err(Refused::Forked),
            _ => Err(Refused::Gone),
        }
    }

    /// Marks a closed gate free (its transport is gone).
    pub(crate) fn free(&self) {
        self.state.store(FREE, SeqCst);
    }

    /// Opens a free (or wiped) gate for a new transport.
    pub(crate) fn reopen(&self) {
        self.state.store(OPEN, SeqCst);
    }

    /// Stops admitting, waits for the admitted to leave, then marks the gate
    /// closed. Idempotent (the state never goes back). A caller that is
    /// itself inside (holds an `Admission`) must drop it first.
    pub fn close(&self) {
        let _ = self.state.compare_exchange(OPEN, CLOSING, SeqCst, SeqCst);
        // An RMW, not a load: see the module doc.
        while self.inside.fetch_add(0, SeqCst) != 0 {
            thread::yield_now();
        }
        // CLOSING -> CLOSED only: a second close of a freed (or reopened)
        // gate changes nothing.
        let _ = self.state.compare_exchange(CLOSING, CLOSED, SeqCst, SeqCst);
    }

    /// Closing began: nothing new is admitted (new registrations and
    /// connects are refused too).
    pub fn is_closing(&self) -> bool {
        self.state.load(SeqCst) != OPEN
    }

    /// `close` finished: nobody pushes any more; the progress thread may
    /// drain for the last time and exit.
    pub fn is_closed(&self) -> bool {
        self.state.load(SeqCst) >= CLOSED
    }

    /// Whether the gate was inherited through `fork` (see `FORKED`).
    pub(crate) fn is_forked(&self) -> bool {
        self.state.load(SeqCst) == FORKED
    }

    /// Claims the gate for the one destroyer: `OPEN` -> `CLOSING`; false when
    /// another call got there first (or the gate is not open).
    pub(crate) fn begin_close(&self) -> bool {
        self.state.compare_exchange(OPEN, CLOSING, SeqCst, SeqCst).is_ok()
    }
}
