//! Operations: what a caller submits and what travels through the queue.

use std::time::Duration;

use crate::registry::RegionRef;

/// Direction of a transfer, from the local side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Remote memory -> local memory.
    Read,
    /// Local memory -> remote memory.
    Write,
}

/// One transfer as the caller describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRequest {
    pub opcode: Opcode,
    /// Local address (inside a registered region).
    pub local: usize,
    pub len: u64,
    /// The peer (Mooncake's segment id), resolved to an endpoint on first use.
    pub peer: u64,
    /// Absolute remote virtual address.
    pub remote: u64,
    /// Returned untouched in the op's completion.
    pub user_data: u64,
}

/// Anything a submit can read ops from: the Rust [`OpRequest`] or the C
/// `mcfx_op` (decoded in place, so a submit copies nothing into a buffer).
pub trait OpSource {
    fn request(&self) -> crate::error::Result<OpRequest>;
}

impl OpSource for OpRequest {
    fn request(&self) -> crate::error::Result<OpRequest> {
        Ok(*self)
    }
}

/// An accepted op: the request, the region it holds and its deadline. Moved
/// by value through the queue (no allocation per op).
#[derive(Debug)]
pub struct Op {
    pub req: OpRequest,
    pub region: RegionRef,
    /// When it fails with `MCFX_E_TIMEOUT`: `op_timeout` after the submit
    /// call that queued it (see [`CoarseTime`]), wherever it is by then (in
    /// the queue, waiting for a connection, or in FlagCX).
    pub deadline: CoarseTime,
}

/// A reading of the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on
/// Linux: the time of the last timer tick, read from the vDSO in a few ns,
/// resolution 1-4 ms), in ns. Submit reads it once per call to stamp its
/// ops' deadlines; the progress thread compares against the same clock.
///
/// The clock is one value for the whole system, updated at each tick: a
/// reading greater than another was taken after it (equal readings may be
/// in either order). `peers::Connection::made` relies on this.
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
