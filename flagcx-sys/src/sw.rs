//! Controls of the in-tree software provider (`provider/include/flagcx_sw.h`):
//! fault-injection knobs and misuse counters. Test support (the
//! `test-support` feature); the product asks only
//! [`crate::is_software_provider`].
//!
//! The symbols are looked up at run time, so this module also works against a
//! real FlagCX, where every function reports that the provider is absent
//! (`None` / `false`).

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

/// A provider knob (`FLAGCX_SW_*` environment variable at start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Knob {
    /// `FLAGCX_SW_LATENCY_NS`: transfers report done this long after submit.
    LatencyNs = 0,
    /// `FLAGCX_SW_FAIL_OP`: the Nth transfer from now finishes failed.
    FailOp = 1,
    /// `FLAGCX_SW_HANG_OP`: the Nth transfer from now never finishes.
    HangOp = 2,
    /// `FLAGCX_SW_CONNECT_DELAY_MS`: every handshake waits this long first.
    ConnectDelayMs = 3,
    /// `FLAGCX_SW_REFUSE_CONNECT`: non-zero fails every new connection.
    RefuseConnect = 4,
    /// `FLAGCX_SW_CONNECT_TIMEOUT_MS`: handshake socket timeout.
    ConnectTimeoutMs = 5,
    /// `FLAGCX_SW_NIC_GBPS`: non-zero turns on the modeled NIC, a link of this
    /// many Gb/s (10^9 bit/s) per local engine; 0 (default) is copy mode.
    ///
    /// In NIC mode transfers move **no bytes**: ranges and keys are checked
    /// as in copy mode (bad accesses still fail), and a good transfer reports
    /// done when the engine's link, shared FIFO by all its transfers, would
    /// have delivered it. For throughput benchmarks only; correctness tests
    /// stay in copy mode.
    NicGbps = 6,
    /// `FLAGCX_SW_NIC_LATENCY_NS`: NIC mode only, added to every transfer's
    /// completion after its last bit left the link (default 0).
    NicLatencyNs = 7,
    /// `FLAGCX_SW_NEW_ID_ON_REREGISTER`: non-zero makes registering a base
    /// that is already registered hand out a new id (and rkey) and keep the
    /// earlier registration until its own id is destroyed, as a FlagCX built
    /// on `ibv_reg_mr` does; 0 (default): the base's one registration is
    /// resized and keeps its id.
    NewIdOnReregister = 8,
}

/// Misuse the provider caught (all zero in a correct program).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Violations {
    /// An id polled again after it reported done.
    pub repeated_poll: u64,
    /// One id polled by two threads at once.
    pub concurrent_poll: u64,
    /// An id the provider never issued.
    pub unknown_poll: u64,
}

impl Violations {
    pub fn total(&self) -> u64 {
        self.repeated_poll + self.concurrent_poll + self.unknown_poll
    }
}

type SetKnobFn = unsafe extern "C" fn(c_int, u64) -> c_int;
type GetFn = unsafe extern "C" fn(c_int) -> u64;
type CountFn = unsafe extern "C" fn() -> u64;
type ResetFn = unsafe extern "C" fn();

struct Symbols {
    set_knob: SetKnobFn,
    get_knob: GetFn,
    violations: GetFn,
    reset_violations: ResetFn,
    issued: CountFn,
    outstanding: CountFn,
}

fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: RTLD_DEFAULT searches the loaded objects; name is NUL-terminated.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

fn resolve() -> Option<Symbols> {
    // SAFETY (every transmute below): each symbol is declared in flagcx_sw.h
    // with exactly the signature of the function-pointer type it becomes.
    unsafe {
        Some(Symbols {
            set_knob: std::mem::transmute::<*mut c_void, SetKnobFn>(lookup(c"flagcxSwSetKnob")?),
            get_knob: std::mem::transmute::<*mut c_void, GetFn>(lookup(c"flagcxSwGetKnob")?),
            violations: std::mem::transmute::<*mut c_void, GetFn>(lookup(c"flagcxSwViolations")?),
            reset_violations: std::mem::transmute::<*mut c_void, ResetFn>(lookup(
                c"flagcxSwResetViolations",
            )?),
            issued: std::mem::transmute::<*mut c_void, CountFn>(lookup(
                c"flagcxSwTransfersIssued",
            )?),
            outstanding: std::mem::transmute::<*mut c_void, CountFn>(lookup(
                c"flagcxSwTransfersOutstanding",
            )?),
        })
    }
}

fn symbols() -> Option<&'static Symbols> {
    static SYMBOLS: OnceLock<Option<Symbols>> = OnceLock::new();
    SYMBOLS.get_or_init(resolve).as_ref()
}

/// Whether the loaded libflagcx is the software provider.
pub fn available() -> bool {
    symbols().is_some()
}

/// Sets a knob; `false` when the provider is absent.
pub fn set_knob(knob: Knob, value: u64) -> bool {
    // SAFETY: valid knob number, plain value.
    symbols().is_some_and(|s| unsafe { (s.set_knob)(knob as c_int, value) } == 0)
}

pub fn knob(knob: Knob) -> Option<u64> {
    // SAFETY: valid knob number.
    symbols().map(|s| unsafe { (s.get_knob)(knob as c_int) })
}

pub fn violations() -> Option<Violations> {
    symbols().map(|s| {
        // SAFETY: kinds 0..3 are defined.
        let v = |k| unsafe { (s.violations)(k) };
        Violations { repeated_poll: v(0), concurrent_poll: v(1), unknown_poll: v(2) }
    })
}

pub fn reset_violations() {
    if let Some(s) = symbols() {
        // SAFETY: no arguments.
        unsafe { (s.reset_violations)() }
    }
}

/// Transfers the provider accepted so far, process-wide.
pub fn transfers_issued() -> Option<u64> {
    // SAFETY: no arguments.
    symbols().map(|s| unsafe { (s.issued)() })
}

/// Transfers accepted and not yet reported finished.
pub fn transfers_outstanding() -> Option<u64> {
    // SAFETY: no arguments.
    symbols().map(|s| unsafe { (s.outstanding)() })
}
