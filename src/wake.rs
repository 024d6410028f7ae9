//! The progress thread's sleep/wake protocol.
//!
//! One consumer (the progress thread) sleeps only after announcing it; many
//! producers wake it only when it announced. Invariant (no lost wake-up):
//!
//! - producer: publish work; `fence(SeqCst)`; load `state`; if `PARKED`,
//!   CAS it to `AWAKE` and unpark the consumer.
//! - consumer: store `PARKED`; `fence(SeqCst)`; re-check for work; sleep
//!   until `state` is no longer `PARKED`.
//!
//! The two fences order each side's write before its read, so either the
//! producer sees `PARKED` (and unparks) or the consumer sees the work (and
//! does not sleep). `Thread::unpark` keeps a token, so an unpark that lands
//! between the consumer's check and its `park` is not lost either. The model
//! in `tests/loom_wake.rs` checks this under every interleaving.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};
#[cfg(loom)]
use loom::thread::{self, Thread};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, Ordering};
#[cfg(not(loom))]
use std::thread::{self, Thread};

use std::sync::OnceLock;
use std::time::Duration;

const AWAKE: u32 = 0;
const PARKED: u32 = 1;

pub struct Wake {
    state: AtomicU32,
    consumer: OnceLock<Thread>,
}

impl Default for Wake {
    fn default() -> Self {
        Self::new()
    }
}

impl Wake {
    pub fn new() -> Wake {
        Wake { state: AtomicU32::new(AWAKE), consumer: OnceLock::new() }
    }

    /// Names the consumer thread; call once, from it, before it first parks.
    pub fn bind_current(&self) {
        let _ = self.consumer.set(thread::current());
        precise_naps();
        short_slice();
    }

    /// True on the consumer thread (e.g. inside a completion callback).
    pub fn is_consumer(&self) -> bool {
        self.consumer.get().is_some_and(|t| t.id() == thread::current().id())
    }

    /// Producer side, after publishing work. Returns true when it had to
    /// unpark the consumer (a wake-up syscall); false on the fast path.
    ///
    /// Hot path: a fence and a load; no syscall unless the consumer sleeps.
    pub fn notify(&self) -> bool {
        fence(Ordering::SeqCst);
        // Relaxed: the fence above orders this load after the producer's
        // publication; the CAS below is what synchronizes.
        if self.state.load(Ordering::Relaxed) != PARKED {
            return false;
        }
        if self.state.compare_exchange(PARKED, AWAKE, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            if let Some(t) = self.consumer.get() {
                t.unpark();
            }
            return true;
        }
        false
    }

    /// Consumer side: sleeps unless `has_work()` is true after announcing,
    /// until a producer notifies or `timeout` (if any) passes.
    pub fn park(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>) {
        self.state.store(PARKED, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() {
            self.state.store(AWAKE, Ordering::SeqCst);
            return;
        }
        match timeout {
            None => {
                // Acquire: pairs with the producer's SeqCst CAS.
                while self.state.load(Ordering::Acquire) == PARKED {
                    thread::park();
                }
            }
            Some(t) => {
                park_timeout(t);
            }
        }
        self.state.store(AWAKE, Ordering::SeqCst);
    }
}

/// Makes this thread's timed sleeps end when asked: Linux lets a sleep run
/// up to the thread's timer slack (50 us by default) late, which would turn
/// the progress thread's few-microsecond naps between polls of a running
/// transfer into 50 us overshoots of its completion.
#[cfg(not(loom))]
fn precise_naps() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and changes
    // only the calling thread's timer slack; no pointer is involved.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

#[cfg(loom)]
fn precise_naps() {}

/// The scheduler slice the progress thread asks for (`sched_runtime` of
/// `sched_setattr`, Linux's smallest): see `short_slice`.
#[cfg(all(target_os = "linux", not(loom)))]
const PROGRESS_SLICE_NS: u64 = 100_000;
/// `SCHED_FLAG_RESET_ON_FORK` of `linux/sched.h`.
#[cfg(all(target_os = "linux", not(loom)))]
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// `struct sched_attr` up to `sched_period` (`SCHED_ATTR_SIZE_VER0`), the
/// part this needs; the kernel takes the size from `size`.
#[cfg(all(target_os = "linux", not(loom)))]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks the scheduler for a short slice (Linux 6.12 and later: EEVDF's
/// custom slice; older kernels ignore it for normal threads). A woken thread
/// with a short slice gets an early deadline and so the CPU promptly, even
/// when the scheduler put it on the CPU of a caller that spins waiting for
/// its completions: on VMs whose scheduler packs woken threads onto busy
/// vCPUs, that wait took a whole slice of the caller's (2-3.5 ms at p99 for
/// an op after a pause; with this, about 0.1-0.3 ms). The progress thread
/// runs in short bursts, for which a short slice is what the kernel
/// recommends. Only a thread of the normal policy is changed, its nice value
/// kept; failure leaves the default slice.
#[cfg(all(target_os = "linux", not(loom)))]
fn short_slice() {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
    // SAFETY: sched_getattr(0 = this thread) writes at most `size` bytes
    // into `attr`, which is that large.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if got != 0 || attr.policy != libc::SCHED_OTHER as u32 {
        return;
    }
    attr.size = size;
    // Only SCHED_FLAG_RESET_ON_FORK is a lasting setting among the flags
    // sched_getattr reports; keep it (threads a callback spawns would
    // otherwise inherit the short slice).
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.runtime = PROGRESS_SLICE_NS;
    // SAFETY: sched_setattr(0 = this thread) reads `size` bytes of `attr`.
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
}

#[cfg(any(not(target_os = "linux"), loom))]
fn short_slice() {}

#[cfg(not(loom))]
fn park_timeout(t: Duration) {
    // One bounded sleep; a spurious or early return only costs an extra pass
    // of the progress loop.
    thread::park_timeout(t);
}

#[cfg(loom)]
fn park_timeout(_t: Duration) {
    // loom has no timed park; a timed sleep never relies on a wake-up, so
    // model it as an immediate return.
}
