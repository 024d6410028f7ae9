//! The in-flight accounting of one region slot, and the protocol between an
//! op's hold and unregister's closing flag.
//!
//! Invariant (an unregister that succeeds never has an op holding the
//! region; a hold never counts against a newer registration of the slot):
//!
//! - submitter ([`Holds::hold`]): add to `acquired`; then load `closing` and
//!   `generation`; if closing, or the generation is not the one the op found,
//!   take the add back and fail.
//! - unregister ([`Holds::try_close`], under the registry's writer lock):
//!   store `closing`; then read `released` (a load) before `acquired` (an
//!   RMW); if they differ, clear `closing` and fail (busy).
//!
//! Unregister reads `acquired` with a read-modify-write (`fetch_add(0)`),
//! which reads the latest value: either it sees the submitter's add (and
//! refuses), or the add comes after it in `acquired`'s modification order,
//! reads from it and so synchronizes with it, and then the submitter's load
//! sees `closing` (and backs out). (All SeqCst; the argument needs only
//! acquire/release through the RMW, which is also what loom, modeling SeqCst
//! accesses as AcqRel, can check; the submitter's hot path is unchanged: an
//! add and two loads.) `released` is read with a plain load, before
//! `acquired` (it keeps its single writer): an older value, or a completion
//! in between, can only make the answer larger (a spurious busy), never
//! smaller. `acquired` and `released` have one writer side each (submitters, the
//! progress thread) and sit on their own cache lines; `closing` and
//! `generation`, which a hold reads right after its add, share `acquired`'s
//! line (one line per op for the submitter, not two: with ops spread over
//! 65 536 regions every line an op touches is a miss). The model in
//! `tests/loom_holds.rs` checks this under every interleaving.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst};

pub struct Holds {
    /// What submitters touch.
    submit: CachePadded<SubmitSide>,
    /// What the progress thread touches.
    done: CachePadded<ProgressSide>,
}

/// The progress thread's line: the counter it adds to at completion and the
/// FlagCX id it reads at issue.
struct ProgressSide {
    /// Holds given back by completed ops; written by the progress thread
    /// only. In flight = acquired - released.
    released: AtomicU64,
    /// The FlagCX id (`MrId`) of the registration using the slot; written
    /// by `open` before the registration is published, so an op found in
    /// the published table reads its own registration's id.
    mr: AtomicU64,
}

/// The submitters' line: the counter they add to and what a hold checks.
struct SubmitSide {
    /// Holds taken by submitters (one per queued op; taken back for ops that
    /// were not queued). Never reset, also across slot reuse.
    acquired: AtomicU64,
    /// Set by unregister while it decides; a hold that sees it backs out.
    closing: AtomicBool,
    /// The generation of the registration using this slot (see
    /// `crate::registry`); a hold found under another one backs out.
    generation: AtomicU64,
}

impl Default for Holds {
    fn default() -> Self {
        Self::new()
    }
}

impl Holds {
    pub fn new() -> Holds {
        Holds {
            submit: CachePadded::new(SubmitSide {
                acquired: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                generation: AtomicU64::new(0),
            }),
            done: CachePadded::new(ProgressSide {
                released: AtomicU64::new(0),
                mr: AtomicU64::new(0),
            }),
        }
    }

    /// Gives the slot to registration `generation` of FlagCX id `mr` (under
    /// the registry's writer lock, while nothing holds the slot).
    pub fn open(&self, generation: u64, mr: u64) {
        // Relaxed: published with the table that names the registration
        // (its store is a release, a submitter's load an acquire, and the
        // op reaches the progress thread through the queue's release and
        // acquire).
        self.done.mr.store(mr, Relaxed);
        self.submit.generation.store(generation, SeqCst);
        self.submit.closing.store(false, SeqCst);
    }

    /// Takes `n` holds for ops found in registration `generation`; false,
    /// with nothing taken, when the region is closing or the slot now
    /// belongs to another registration.
    ///
    /// Hot path: one atomic add on a line only submitters write, two loads.
    #[inline]
    pub fn hold(&self, n: u64, generation: u64) -> bool {
        self.submit.acquired.fetch_add(n, SeqCst);
        if self.submit.closing.load(SeqCst) || self.submit.generation.load(SeqCst) != generation {
            self.unhold(n);
            return false;
        }
        true
    }

    /// Takes back `n` holds whose ops were never queued (caller threads).
    #[inline]
    pub fn unhold(&self, n: u64) {
        self.submit.acquired.fetch_sub(n, SeqCst);
    }

    /// Gives back the hold of a completed op. Progress thread only: it is
    /// the one writer of `released`, so a plain store does (no locked
    /// instruction on the completion path). Release ordering suffices: a
    /// reader that sees an older value only overestimates what is in flight.
    #[inline]
    pub fn release(&self) {
        self.done.released.store(self.done.released.load(Relaxed).wrapping_add(1), Release);
    }

    /// The FlagCX id of the registration using the slot (see `open`).
    #[inline]
    pub fn mr(&self) -> u64 {
        self.done.mr.load(Relaxed)
    }

    /// Closes the slot for unregister if nothing holds it; otherwise leaves
    /// it open and returns how many ops hold it. Under the registry's writer
    /// lock (one closer at a time).
    pub fn try_close(&self) -> Result<(), u64> {
        self.submit.closing.store(true, SeqCst);
        // released first, loaded (an older value only makes the answer
        // larger: a spurious BUSY, never a smaller one); acquired by an RMW
        // (see the module doc).
        let released = self.done.released.load(SeqCst);
        let busy = self.submit.acquired.fetch_add(0, SeqCst).wrapping_sub(released);
        if busy > 0 {
            self.submit.closing.store(false, SeqCst);
            return Err(busy);
        }
        Ok(())
    }
}

// Not under loom: its atomics are larger.
#[cfg(all(test, not(mcfx_loom)))]
mod tests {
    /// Two line pairs per region: the submitters' and the progress
    /// thread's (the registry's memory per region in docs/design.md counts
    /// on it; a third block came back once `closing` sat on its own).
    #[test]
    fn a_regions_counters_are_two_line_pairs() {
        assert_eq!(std::mem::size_of::<super::Holds>(), 256);
    }
}
