//! Transport settings: defaults, limits and validation.
//!
//! The C config struct (`ffi::mcfx_config`) maps onto [`Config`] field by
//! field (in `ffi::config`); the rule that a zero in a numeric C field means
//! "the default below" (every field but `submit_wait_us`, whose default is
//! zero) is [`or_default`], here.
//!
//! Invariant: a [`Config`] that passed [`Config::validate`] (every
//! transport's does) has each field within its maximum, so what the config
//! sizes (queue, slots, threads) is bounded.

use std::time::Duration;

use crate::error::{fail, message, Result, Status};

/// Validated transport settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Slots in the submission queue (ops accepted but not yet taken by the
    /// progress thread).
    pub queue_capacity: usize,
    /// How long a submit waits for room (queue slots or `max_in_flight`)
    /// before `MCFX_E_QUEUE_FULL`, asleep, woken as room frees (zero: fail at
    /// once).
    pub submit_wait: Duration,
    /// Deadline of an op, counted from its submit.
    pub op_timeout: Duration,
    /// How long an op waits for its peer's connection.
    pub connect_timeout: Duration,
    /// How long the progress thread spins for new work before parking.
    pub spin_grace: Duration,
    /// Ops the progress thread takes from the queue per pass.
    pub max_batch: usize,
    /// Longest piece of an op handed to FlagCX as one entry; longer ops are
    /// split and complete once, after every piece.
    pub max_slice_bytes: u64,
    /// Threads that resolve and connect peers (a slow peer holds one).
    pub connect_threads: usize,
    /// On destroy, how long ops already handed to FlagCX may take to finish
    /// before they complete as canceled.
    pub shutdown_timeout: Duration,
    /// Start FlagCX's RPC server so peers can connect to this transport.
    pub serve_peers: bool,
    /// The idle progress thread sleeps pinned to the CPU it runs on, and
    /// gets its own affinity back when it wakes (`MCFX_FLAG_NO_PIN_ASLEEP`
    /// turns it off; see docs/design.md, "Idle policy and caller-driven progress").
    pub pin_asleep: bool,
    /// Ops the transport holds at once (queued, waiting for a connection,
    /// inside FlagCX); a submit beyond it waits `submit_wait` and then gets
    /// `MCFX_E_QUEUE_FULL`. Bounds the memory a slow or dead peer can make
    /// the transport hold.
    pub max_in_flight: usize,
    /// Regions registered at once; one more is `MCFX_E_TOO_MANY_REGIONS`.
    pub max_regions: usize,
}

// ---- every default and maximum, once -------------------------------------
//
// In the units of the C config's fields, exported to the C header as
// `MCFX_DEFAULT_*` and `MCFX_MAX_*` (cbindgen), used by the config checks
// below, `mcfx_config_init`, the C++ baseline and the tests. A value above
// a maximum is MCFX_E_BAD_CONFIG: the maxima keep every allocation and every
// wait the caller sizes bounded.

/// Default `mcfx_config.queue_capacity` (submission queue slots): a burst
/// of 10 threads x 2 048 ops (a vLLM-shaped one) fits, for about 2.9 MB of
/// ring per transport.
pub const MCFX_DEFAULT_QUEUE_CAPACITY: u32 = 32768;
/// Largest `mcfx_config.queue_capacity`.
pub const MCFX_MAX_QUEUE_CAPACITY: u32 = 1 << 20;
/// Default `mcfx_config.submit_wait_us` (0: a full queue fails at once).
pub const MCFX_DEFAULT_SUBMIT_WAIT_US: u32 = 0;
/// Largest `mcfx_config.submit_wait_us` (10 s).
pub const MCFX_MAX_SUBMIT_WAIT_US: u32 = 10_000_000;
/// Default `mcfx_config.op_timeout_ms` (30 s).
pub const MCFX_DEFAULT_OP_TIMEOUT_MS: u32 = 30_000;
/// Largest `mcfx_config.op_timeout_ms` (1 h).
pub const MCFX_MAX_OP_TIMEOUT_MS: u32 = 3_600_000;
/// Default `mcfx_config.connect_timeout_ms` (10 s).
pub const MCFX_DEFAULT_CONNECT_TIMEOUT_MS: u32 = 10_000;
/// Largest `mcfx_config.connect_timeout_ms` (10 min).
pub const MCFX_MAX_CONNECT_TIMEOUT_MS: u32 = 600_000;
/// Default `mcfx_config.spin_grace_us`: long enough that an op arriving
/// within a millisecond of the last one finds the progress thread awake
/// (waking a parked thread cost 60 us at p50 on the 2-vCPU VMs measured;
/// see docs/design.md, "Idle policy and caller-driven progress").
pub const MCFX_DEFAULT_SPIN_GRACE_US: u32 = 1000;
/// Largest `mcfx_config.spin_grace_us` (10 ms).
pub const MCFX_MAX_SPIN_GRACE_US: u32 = 10_000;
/// Default `mcfx_config.max_batch` (ops taken from the queue per pass).
pub const MCFX_DEFAULT_MAX_BATCH: u32 = 256;
/// Largest `mcfx_config.max_batch`.
pub const MCFX_MAX_MAX_BATCH: u32 = 65536;
/// Default `mcfx_config.max_slice_bytes`: FlagCX cuts entries into 1 GiB
/// slices itself; matching it keeps one of our pieces per FlagCX slice.
pub const MCFX_DEFAULT_MAX_SLICE_BYTES: u64 = 1 << 30;
/// Largest `mcfx_config.max_slice_bytes`: FlagCX descriptors carry a
/// 32-bit size.
pub const MCFX_MAX_MAX_SLICE_BYTES: u64 = 0xffff_ffff;
/// Default `mcfx_config.connect_threads`.
pub const MCFX_DEFAULT_CONNECT_THREADS: u32 = 4;
/// Largest `mcfx_config.connect_threads`.
pub const MCFX_MAX_CONNECT_THREADS: u32 = 64;
/// Default `mcfx_config.shutdown_timeout_ms` (1 s).
pub const MCFX_DEFAULT_SHUTDOWN_TIMEOUT_MS: u32 = 1000;
/// Largest `mcfx_config.shutdown_timeout_ms` (1 min).
pub const MCFX_MAX_SHUTDOWN_TIMEOUT_MS: u32 = 60_000;
/// Default `mcfx_config.max_in_flight`: a vLLM-shaped burst (10 threads,
/// each a request of 2 048 pages) three times over.
pub const MCFX_DEFAULT_MAX_IN_FLIGHT: u32 = 65536;
/// Largest `mcfx_config.max_in_flight`.
pub const MCFX_MAX_MAX_IN_FLIGHT: u32 = 1 << 24;
/// Default `mcfx_config.max_regions`.
pub const MCFX_DEFAULT_MAX_REGIONS: u32 = 65536;
/// Largest `mcfx_config.max_regions`.
pub const MCFX_MAX_MAX_REGIONS: u32 = 1 << 22;

const fn ms(v: u32) -> Duration {
    Duration::from_millis(v as u64)
}
const fn us(v: u32) -> Duration {
    Duration::from_micros(v as u64)
}

pub(crate) const DEFAULT_QUEUE_CAPACITY: usize = MCFX_DEFAULT_QUEUE_CAPACITY as usize;
pub(crate) const MAX_QUEUE_CAPACITY: usize = MCFX_MAX_QUEUE_CAPACITY as usize;
pub(crate) const DEFAULT_SUBMIT_WAIT: Duration = us(MCFX_DEFAULT_SUBMIT_WAIT_US);
pub(crate) const DEFAULT_OP_TIMEOUT: Duration = ms(MCFX_DEFAULT_OP_TIMEOUT_MS);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = ms(MCFX_DEFAULT_CONNECT_TIMEOUT_MS);
pub(crate) const DEFAULT_SPIN_GRACE: Duration = us(MCFX_DEFAULT_SPIN_GRACE_US);
pub(crate) const DEFAULT_MAX_BATCH: usize = MCFX_DEFAULT_MAX_BATCH as usize;
pub(crate) const DEFAULT_MAX_SLICE_BYTES: u64 = MCFX_DEFAULT_MAX_SLICE_BYTES;
pub(crate) const DEFAULT_CONNECT_THREADS: usize = MCFX_DEFAULT_CONNECT_THREADS as usize;
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = ms(MCFX_DEFAULT_SHUTDOWN_TIMEOUT_MS);
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = MCFX_DEFAULT_MAX_IN_FLIGHT as usize;
pub(crate) const DEFAULT_MAX_REGIONS: usize = MCFX_DEFAULT_MAX_REGIONS as usize;
pub(crate) const MAX_SUBMIT_WAIT: Duration = us(MCFX_MAX_SUBMIT_WAIT_US);
pub(crate) const MAX_OP_TIMEOUT: Duration = ms(MCFX_MAX_OP_TIMEOUT_MS);
pub(crate) const MAX_CONNECT_TIMEOUT: Duration = ms(MCFX_MAX_CONNECT_TIMEOUT_MS);
pub(crate) const MAX_SPIN_GRACE: Duration = us(MCFX_MAX_SPIN_GRACE_US);
pub(crate) const MAX_MAX_BATCH: usize = MCFX_MAX_MAX_BATCH as usize;
pub(crate) const MAX_CONNECT_THREADS: usize = MCFX_MAX_CONNECT_THREADS as usize;
pub(crate) const MAX_SHUTDOWN_TIMEOUT: Duration = ms(MCFX_MAX_SHUTDOWN_TIMEOUT_MS);
pub(crate) const MAX_MAX_IN_FLIGHT: usize = MCFX_MAX_MAX_IN_FLIGHT as usize;
pub(crate) const MAX_MAX_REGIONS: usize = MCFX_MAX_MAX_REGIONS as usize;
const _: () = assert!(MCFX_MAX_MAX_SLICE_BYTES == flagcx_sys::MAX_DESC_LEN);

/// Longest endpoint (`host:port`, without the NUL) a resolver may return
/// (longer is `MCFX_E_RESOLVE`). The resolver callback gets a buffer of
/// `MAX_ENDPOINT_LEN + 1` bytes (the C header's `MCFX_MAX_ENDPOINT_LEN`).
pub(crate) const MAX_ENDPOINT_LEN: usize = 255;

impl Default for Config {
    fn default() -> Config {
        Config {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            submit_wait: DEFAULT_SUBMIT_WAIT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            spin_grace: DEFAULT_SPIN_GRACE,
            max_batch: DEFAULT_MAX_BATCH,
            max_slice_bytes: DEFAULT_MAX_SLICE_BYTES,
            connect_threads: DEFAULT_CONNECT_THREADS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            serve_peers: true,
            pin_asleep: true,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_regions: DEFAULT_MAX_REGIONS,
        }
    }
}

/// A C config field's value, or `default` when it is zero (the C config's
/// zero-means-default rule; zero `Duration`s included).
pub(crate) fn or_default<T: Copy + PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

impl Config {
    /// Checks ranges; called by `Transport::create`.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: std::borrow::Cow<'static, str>| fail(Status::MCFX_E_BAD_CONFIG, what);
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            return bad(message(format_args!(
                "queue_capacity {} is outside 1..={MAX_QUEUE_CAPACITY}",
                self.queue_capacity
            )));
        }
        if self.max_batch == 0 || self.max_batch > MAX_MAX_BATCH {
            return bad(message(format_args!(
                "max_batch {} is outside 1..={MAX_MAX_BATCH}",
                self.max_batch
            )));
        }
        if self.max_slice_bytes == 0 || self.max_slice_bytes > flagcx_sys::MAX_DESC_LEN {
            return bad(message(format_args!(
                "max_slice_bytes {} is outside 1..={} (FlagCX descriptors carry a 32-bit size)",
                self.max_slice_bytes,
                flagcx_sys::MAX_DESC_LEN
            )));
        }
        if self.connect_threads == 0 || self.connect_threads > MAX_CONNECT_THREADS {
            return bad(message(format_args!(
                "connect_threads {} is outside 1..={MAX_CONNECT_THREADS}",
                self.connect_threads
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_MAX_IN_FLIGHT {
            return bad(message(format_args!(
                "max_in_flight {} is outside 1..={MAX_MAX_IN_FLIGHT}",
                self.max_in_flight
            )));
        }
        if self.max_regions == 0 || self.max_regions > MAX_MAX_REGIONS {
            return bad(message(format_args!(
                "max_regions {} is outside 1..={MAX_MAX_REGIONS}",
                self.max_regions
            )));
        }
        if self.op_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive".into());
        }
        for (name, value, max) in [
            ("submit_wait", self.submit_wait, MAX_SUBMIT_WAIT),
            ("op_timeout", self.op_timeout, MAX_OP_TIMEOUT),
            ("connect_timeout", self.connect_timeout, MAX_CONNECT_TIMEOUT),
            ("spin_grace", self.spin_grace, MAX_SPIN_GRACE),
            ("shutdown_timeout", self.shutdown_timeout, MAX_SHUTDOWN_TIMEOUT),
        ] {
            if value > max {
                return bad(message(format_args!("{name} {value:?} is above its maximum {max:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_means_the_default() {
        assert_eq!(or_default(0usize, DEFAULT_MAX_BATCH), DEFAULT_MAX_BATCH);
        assert_eq!(or_default(7usize, DEFAULT_MAX_BATCH), 7);
        assert_eq!(or_default(Duration::ZERO, DEFAULT_OP_TIMEOUT), DEFAULT_OP_TIMEOUT);
        let ms = Duration::from_millis(5);
        assert_eq!(or_default(ms, DEFAULT_OP_TIMEOUT), ms);
    }

    #[test]
    fn out_of_range_values_are_bad_config() {
        for c in [
            Config { queue_capacity: 0, ..Config::default() },
            Config { max_slice_bytes: 1 << 32, ..Config::default() },
            Config { connect_threads: 0, ..Config::default() },
            Config { max_batch: 0, ..Config::default() },
            Config { max_batch: MAX_MAX_BATCH + 1, ..Config::default() },
            Config { spin_grace: MAX_SPIN_GRACE + Duration::from_nanos(1), ..Config::default() },
            Config { submit_wait: MAX_SUBMIT_WAIT * 2, ..Config::default() },
            Config { op_timeout: MAX_OP_TIMEOUT * 2, ..Config::default() },
            Config { connect_timeout: MAX_CONNECT_TIMEOUT * 2, ..Config::default() },
            Config { shutdown_timeout: MAX_SHUTDOWN_TIMEOUT * 2, ..Config::default() },
            Config { connect_threads: MAX_CONNECT_THREADS + 1, ..Config::default() },
            Config { max_in_flight: 0, ..Config::default() },
            Config { max_in_flight: MAX_MAX_IN_FLIGHT + 1, ..Config::default() },
            Config { max_regions: 0, ..Config::default() },
            Config { max_regions: MAX_MAX_REGIONS + 1, ..Config::default() },
        ] {
            assert_eq!(c.validate().unwrap_err().status, Status::MCFX_E_BAD_CONFIG);
        }
    }

    #[test]
    fn every_maximum_itself_is_valid() {
        Config {
            queue_capacity: MAX_QUEUE_CAPACITY,
            submit_wait: MAX_SUBMIT_WAIT,
            op_timeout: MAX_OP_TIMEOUT,
            connect_timeout: MAX_CONNECT_TIMEOUT,
            spin_grace: MAX_SPIN_GRACE,
            max_batch: MAX_MAX_BATCH,
            max_slice_bytes: flagcx_sys::MAX_DESC_LEN,
            connect_threads: MAX_CONNECT_THREADS,
            shutdown_timeout: MAX_SHUTDOWN_TIMEOUT,
            max_in_flight: MAX_MAX_IN_FLIGHT,
            max_regions: MAX_MAX_REGIONS,
            ..Config::default()
        }
        .validate()
        .unwrap();
    }
}
