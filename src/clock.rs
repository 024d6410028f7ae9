//! The coarse monotonic clock ops are stamped with and compared against.
//!
//! Owns [`CoarseTime`]: `CLOCK_MONOTONIC_COARSE` on Linux (the time of the
//! last timer tick, read from the vDSO without a counter read: a few ns;
//! resolution 1-4 ms), in ns. Submit reads it once per call to stamp its
//! ops' deadlines; the progress thread reads it at most once per pass to
//! compare them; a connector reads it before each FlagCX connect.
//!
//! Invariants: a reading lags the true time by less than [`resolution`]
//! (so a deadline adds it, and an op never times out early); the clock is
//! one system-wide value that only grows, so a reading greater than
//! another was taken after it (equal readings, one tick, may be in either
//! order).
//!
//! [`resolution`]: CoarseTime::resolution

use std::time::Duration;

/// A reading of the coarse monotonic clock, in ns (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseTime(u64);

#[cfg(target_os = "linux")]
const COARSE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(not(target_os = "linux"))]
const COARSE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

impl CoarseTime {
    #[inline]
    pub fn now() -> CoarseTime {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the clock id exists on
        // this target, so the call cannot fail.
        unsafe { libc::clock_gettime(COARSE_CLOCK, &mut ts) };
        CoarseTime(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// The clock's tick: a reading lags the true time by less than this.
    pub fn resolution() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: as in `now`.
        let ok = unsafe { libc::clock_getres(COARSE_CLOCK, &mut ts) } == 0;
        if !ok {
            return Duration::from_millis(10);
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// The reading in ns.
    #[inline]
    pub fn ns(self) -> u64 {
        self.0
    }

    /// The deadline for ops submitted at `self`: `after` (an op timeout plus
    /// the clock's resolution, see `Transport`) later.
    #[inline]
    pub fn plus_ns(self, after: u64) -> CoarseTime {
        CoarseTime(self.0.saturating_add(after))
    }

    /// `before` earlier (at 0 at the earliest).
    #[inline]
    pub fn minus_ns(self, before: u64) -> CoarseTime {
        CoarseTime(self.0.saturating_sub(before))
    }
}
