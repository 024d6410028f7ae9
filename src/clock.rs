//! The monotonic clock ops are stamped with (exact) and compared against
//! (coarse).
//!
//! Owns [`MonoTime`]: a reading of the monotonic clock in ns, either
//! coarse (`coarse`: `CLOCK_MONOTONIC_COARSE` on Linux, the time of the last
//! timer tick, read from the vDSO without a counter read: a few ns) or
//! exact (`exact`: `CLOCK_MONOTONIC`, about 20 ns). Submit reads the exact
//! clock once per call to stamp its ops' deadlines, and a connector reads
//! it before each FlagCX connect; the progress thread reads the coarse one
//! at most once per pass to compare deadlines.
//!
//! Invariants: both are one system-wide timeline that only grows, and a
//! coarse reading is the exact time of the last tick, so it is never ahead
//! of an exact reading taken after it. An op whose deadline an exact stamp
//! set and a coarse reading found passed never timed out early. How far a
//! coarse reading lags is not bounded by the tick: on a tickless or busy
//! VM ticks are late (here, with 4 ms ticks: up to 8 ms on a quiet
//! 2-vCPU KVM guest, 20 ms beside busy loops), so a coarse stamp plus one
//! tick let an op time out early (a 3 s deadline fired 1.7 ms early in CI).

/// A reading of the monotonic clock, coarse or exact, in ns (see the module
/// doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MonoTime(u64);

#[inline]
fn read(clock: libc::clockid_t) -> MonoTime {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on
    // this target, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    MonoTime(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(target_os = "linux")]
const COARSE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(not(target_os = "linux"))]
const COARSE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

impl MonoTime {
    /// A coarse reading: the time of the last timer tick (see the module
    /// doc), for comparing against stamps.
    #[inline]
    pub fn coarse() -> MonoTime {
        read(COARSE_CLOCK)
    }

    /// An exact reading: for stamps that coarse readings are compared with
    /// later (see the module doc).
    #[inline]
    pub fn exact() -> MonoTime {
        read(libc::CLOCK_MONOTONIC)
    }

    /// The reading in ns.
    #[inline]
    pub fn ns(self) -> u64 {
        self.0
    }

    /// The deadline for ops submitted at `self` (an exact reading): `after`
    /// (an op timeout, see `TransportState::deadline_after_ns`) later.
    #[inline]
    pub fn plus_ns(self, after: u64) -> MonoTime {
        MonoTime(self.0.saturating_add(after))
    }

    /// `before` earlier (at 0 at the earliest).
    #[inline]
    pub fn minus_ns(self, before: u64) -> MonoTime {
        MonoTime(self.0.saturating_sub(before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coarse reading is never ahead of an exact one taken after it, and
    /// both only grow: what makes an exact stamp compared with a coarse
    /// reading never time out early.
    #[test]
    fn a_coarse_reading_is_never_ahead_of_a_later_exact_one() {
        let mut last = MonoTime::exact();
        for _ in 0..100_000 {
            let coarse = MonoTime::coarse();
            let exact = MonoTime::exact();
            assert!(coarse <= exact, "coarse {coarse:?} ahead of exact {exact:?}");
            assert!(exact >= last, "the exact clock went back");
            last = exact;
        }
    }
}
