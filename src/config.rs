//! Transport settings: defaults, limits and validation.
//!
//! The C config struct (`ffi::mcfx_config`) maps onto [`Config`] field by
//! field (in `ffi::config`); the rule that a zero in a numeric C field means
//! "the default below" (every field but `submit_wait_us`, whose default is
//! zero) is [`or_default`], here.

use std::time::Duration;

use crate::error::{fail, Result, Status};

/// Validated transport settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Slots in the submission queue (ops accepted but not yet taken by the
    /// progress thread).
    pub queue_capacity: usize,
    /// How long a submit waits for queue space before `MCFX_E_QUEUE_FULL`
    /// (zero: fail at once).
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
    /// turns it off; see docs/design.md, "Wake-up").
    pub pin_asleep: bool,
    /// Ops the transport holds at once (queued, waiting for a connection,
    /// inside FlagCX); a submit beyond it waits `submit_wait` and then gets
    /// `MCFX_E_QUEUE_FULL`. Bounds the memory a slow or dead peer can make
    /// the transport hold.
    pub max_in_flight: usize,
    /// Regions registered at once; one more is `MCFX_E_TOO_MANY_REGIONS`.
    pub max_regions: usize,
}

pub(crate) const DEFAULT_QUEUE_CAPACITY: usize = 4096;
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 20;
pub(crate) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough that an op arriving within a millisecond of the last one finds
/// the progress thread awake: waking a parked thread cost 60 us at p50 on
/// the 2-vCPU VMs this was measured on (the idle vCPU halts; examples/hotpath
/// `--gap-us 200`: 62 us per op with a 50 us grace, 0.8-1.9 us with 1 ms).
/// An idle transport still parks within a millisecond.
pub(crate) const DEFAULT_SPIN_GRACE: Duration = Duration::from_millis(1);
pub(crate) const DEFAULT_MAX_BATCH: usize = 256;
/// FlagCX cuts entries into 1 GiB slices itself; matching it keeps one of our
/// pieces per FlagCX slice. Descriptors carry a u32 size, so 4 GiB - 1 is the
/// hard limit.
pub(crate) const DEFAULT_MAX_SLICE_BYTES: u64 = 1 << 30;
pub(crate) const DEFAULT_CONNECT_THREADS: usize = 4;
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// Fits a vLLM-shaped burst (10 threads, each a request of 2 048 pages)
/// three times over.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 65536;
pub(crate) const DEFAULT_MAX_REGIONS: usize = 65536;

// Maxima of the numeric settings (documented in the C header): a value
// beyond one is MCFX_E_BAD_CONFIG. They keep every allocation and every wait
// the caller sizes bounded.
pub(crate) const MAX_SUBMIT_WAIT: Duration = Duration::from_secs(10);
pub(crate) const MAX_OP_TIMEOUT: Duration = Duration::from_secs(3600);
pub(crate) const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// The idle progress thread spins at most this long before parking.
pub(crate) const MAX_SPIN_GRACE: Duration = Duration::from_millis(10);
pub(crate) const MAX_MAX_BATCH: usize = 65536;
pub(crate) const MAX_CONNECT_THREADS: usize = 64;
pub(crate) const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const MAX_MAX_IN_FLIGHT: usize = 1 << 24;
pub(crate) const MAX_MAX_REGIONS: usize = 1 << 22;

/// Longest endpoint (`host:port`, without the NUL) a resolver may return
/// (longer is `MCFX_E_RESOLVE`). The resolver callback gets a buffer of
/// `MAX_ENDPOINT_LEN + 1` bytes (the C header's `MCFX_MAX_ENDPOINT_LEN`).
pub(crate) const MAX_ENDPOINT_LEN: usize = 255;

impl Default for Config {
    fn default() -> Config {
        Config {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            submit_wait: Duration::ZERO,
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
        let bad = |what: String| fail(Status::MCFX_E_BAD_CONFIG, what);
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            return bad(format!(
                "queue_capacity {} is outside 1..={MAX_QUEUE_CAPACITY}",
                self.queue_capacity
            ));
        }
        if self.max_batch == 0 || self.max_batch > MAX_MAX_BATCH {
            return bad(format!("max_batch {} is outside 1..={MAX_MAX_BATCH}", self.max_batch));
        }
        if self.max_slice_bytes == 0 || self.max_slice_bytes > flagcx_sys::MAX_DESC_LEN {
            return bad(format!(
                "max_slice_bytes {} is outside 1..={} (FlagCX descriptors carry a 32-bit size)",
                self.max_slice_bytes,
                flagcx_sys::MAX_DESC_LEN
            ));
        }
        if self.connect_threads == 0 || self.connect_threads > MAX_CONNECT_THREADS {
            return bad(format!(
                "connect_threads {} is outside 1..={MAX_CONNECT_THREADS}",
                self.connect_threads
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_MAX_IN_FLIGHT {
            return bad(format!(
                "max_in_flight {} is outside 1..={MAX_MAX_IN_FLIGHT}",
                self.max_in_flight
            ));
        }
        if self.max_regions == 0 || self.max_regions > MAX_MAX_REGIONS {
            return bad(format!(
                "max_regions {} is outside 1..={MAX_MAX_REGIONS}",
                self.max_regions
            ));
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
                return bad(format!("{name} {value:?} is above its maximum {max:?}"));
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
